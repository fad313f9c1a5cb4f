"""JobSpec (+ the CIDs its inputs resolved to) -> JobPlan: map, split and stages as a static DAG. Pure.

Theory of operation. ``plan_job`` does no I/O: the caller (``submit``) has
added local files and resolved URIs and handles, and passes for every job
input the list of its items as ``Resolved`` (CID, size, and for a split
matmul the shape the task sees). Stages are planned in ``JobSpec.stages``
order, which puts producers first, so every dependency points backwards.

* A stage without ``map`` is one task (id ``main``, or the stage's name).
* A mapped stage makes one task per ``batch`` items (``map/00017``, or
  ``<stage>/00017``). Item ``j`` of the zipped ``over`` references is bound
  to input ``<name>/<label>`` (label: ``j`` zero-padded to at least 5
  digits). The payload lists the labels (``items``) and the per-item input
  names (``per_item``): the executing peer runs the task once per item,
  binding ``<name>`` to ``<name>/<label>``, and names each output
  ``<output>/<label>``. A later stage reading it per item depends on the task
  that holds the same item; a ``when`` on a mapped stage becomes, per item,
  a ``Condition`` on that task's ``<output>/<label>``.
* ``split: {op: matmul, tile: t}`` cuts C = A @ B (A m x k, B k x n) into
  ceil(m/t) x ceil(n/t) blocks: task ``tile/i-j`` multiplies row block i of
  A (rows i*t.., all k columns) by column block j of B; ``combine`` (kind
  ``combine``) depends on every tile and joins the blocks with ``concat``,
  row by row then the rows. ``split_cuts(spec)`` names the blocks a split
  reads (``Cut``: input, axis, tile, band); when the caller passes them as
  ``blocks`` (submit slices a local input and adds each block: a CID of its
  own), a tile reads exactly its two blocks, 2·t·k elements instead of all
  of A and B. Without them (an ``ipfs://`` input nobody holds here) a tile
  reads all of A and B and slices them itself (opset 1 ``slice``). Tiles are
  listed by diagonals, (0,0) (1,1) .. then (0,1) (1,2) ..: the first tiles
  dispatched share no block, so they spread over peers, and each later tile
  shares its row block with one of them and its column block with another,
  whose holders placement prefers (the coordinator notes a granted peer as
  holding the task's inputs).

A plan past ``MAX_TASKS_PER_JOB`` tasks, or a task past
``MAX_INPUTS_PER_TASK`` inputs, is refused before it is built, naming the
limit. A task's payload is ``ops/tasks.py``'s ``Task.to_wire()`` in CBOR with
input paths left empty. A mapped stage's ``Task`` is stored once, as the
plan's template named after the stage, and each of its tasks' payloads is only
``{template, items, per_item}`` (100,000 map tasks would otherwise repeat the
graph 100,000 times in the job record); ``full_payload(plan, task)`` merges
them into what the executing peer gets, ``decode_payload`` reads that back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from ..errors import P2PComputeError
from ..ops.graph import Graph
from ..ops.opset import Spec
from ..ops.tasks import InputFile, Task
from .model import (MAX_INPUTS_PER_TASK, MAX_PAYLOAD_BYTES, MAX_TASKS_PER_JOB, Condition, InputRef, JobPlan,
                    PlanError, RetryPolicy, TaskSpec)
from .spec import JobSpec, Source, StageInput, StageSpec

CONCAT_MAX = 64          # inputs of one concat node (ops/op_shape.py)
COMBINE = "combine"


class Unresolved(PlanError):
    """The plan needs something only submit knows (the shapes of a split's inputs)."""


@dataclass(frozen=True)
class Resolved:
    """One item of a job input as submit resolved it. ``shape``/``dtype``: what the task sees (after
    ``band``), needed only by a split."""

    cid: str
    size: int | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class Cut:
    """Job input ``input`` (with ``band``) cut along ``axis`` (0: row blocks of A, 1: column blocks of B)
    in blocks of ``tile``."""

    input: str
    axis: int
    tile: int
    band: int | None = None


def block_bounds(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) of each block of ``length`` in blocks of ``tile`` (the last one shorter; one empty
    block for length 0, as the tile grid has)."""
    return [(i * tile, min(length, (i + 1) * tile)) for i in range(math.ceil(length / tile) or 1)]


def split_cuts(spec: JobSpec) -> list[Cut]:
    """The blocks the split stages of ``spec`` read: for each split, A's row blocks and B's column blocks
    (only of job inputs: a stage's output is not cut)."""
    out = []
    for s in spec.stages:
        if s.kind != "split" or not s.split_inputs:
            continue
        for axis, name in enumerate(s.split_inputs):
            i = next(x for x in s.inputs if x.name == name)
            if i.ref.kind == "input":
                band = i.band if i.band is not None else spec.inputs[i.ref.name].band
                out.append(Cut(i.ref.name, axis, s.tile, band))
    return list(dict.fromkeys(out))


def diagonals(rows: int, cols: int) -> list[tuple[int, int]]:
    """Every (i, j) of a rows x cols grid once, by diagonals: j = (i + d) mod cols for d = 0, 1, .."""
    return [(i, (i + d) % cols) for d in range(cols) for i in range(rows)]


@dataclass
class _Made:
    """What planning a stage produced, for the stages after it."""

    task: str | None = None                        # its one task (the combine task of a split)
    item_tasks: list[str] = field(default_factory=list)  # mapped: the task holding item j
    labels: list[str] = field(default_factory=list)


def plan_job(spec: JobSpec, resolved: Mapping[str, Sequence[Resolved]], job_id: str,
             programs: Mapping[str, str] | None = None,
             blocks: Mapping[Cut, Sequence[Resolved]] | None = None) -> JobPlan:
    """The plan of ``spec``; ``programs`` maps a stage's local program path to its ``ipfs://CID``;
    ``blocks`` some of ``split_cuts(spec)`` to their blocks, in order (``block_bounds``)."""
    return _Planner(spec, resolved, programs or {}, blocks or {}).plan(job_id)


def count_tasks(spec: JobSpec, resolved: Mapping[str, Sequence[Resolved]]) -> int:
    """How many tasks ``plan_job`` would make (``PlanError`` if it cannot tell or would refuse)."""
    return _Planner(spec, resolved, {}).count()


def resolution(spec: JobSpec, resolve: Callable[[Source, Spec | None], Resolved]) -> dict[str, tuple[Resolved, ...]]:
    """Every input's items as ``resolve(source, hint)`` makes them (the caller does the I/O: add a local
    file, look up a handle), in the order ``plan_job`` expects."""
    return {name: tuple(resolve(src, inp.hint) for src in inp.sources) for name, inp in spec.inputs.items()}


def placeholders(spec: JobSpec) -> dict[str, tuple[Resolved, ...]]:
    """A resolution without I/O, for ``validate``: a fake CID per item, shapes from the spec's hints."""
    out = {}
    for name, inp in spec.inputs.items():
        hint = inp.hint
        out[name] = tuple(Resolved(f"unresolved:{name}/{j}", None, hint.shape if hint else None,
                                   hint.dtype.name if hint else None) for j in range(len(inp.sources)))
    return out


def full_payload(plan: JobPlan, task: TaskSpec) -> bytes:
    """What the executing peer gets for ``task``: its payload with the plan's template it names merged in."""
    data = _load_map(task.payload)
    name = data.pop("template", None)
    if name is None:
        return task.payload
    template = dict(plan.templates).get(name) if isinstance(name, str) else None
    if template is None:
        raise PlanError(f"task {task.task_id}: its payload names template {str(name)[:80]!r}, not in the plan")
    return cbor2.dumps({**_load_map(template), **data})


def decode_payload(payload: bytes) -> tuple[Task, list[str], list[str]]:
    """(task, item labels, per-item input names) of a full payload (``full_payload``); [] and [] if not
    mapped. A payload comes from a peer: anything malformed is a ``PlanError`` saying what."""
    data = _load_map(payload)
    items, per_item = data.get("items", []), data.get("per_item", [])
    if not (isinstance(items, list) and isinstance(per_item, list) and len(items) <= MAX_INPUTS_PER_TASK
            and all(isinstance(x, str) and 0 < len(x) <= 16 and x.isdigit() for x in items)
            and all(isinstance(x, str) for x in per_item)):
        raise PlanError(f"task payload: items must be at most {MAX_INPUTS_PER_TASK} labels of digits and "
                        "per_item a list of input names")
    try:
        task = Task.from_wire(data)
    except (KeyError, TypeError, ValueError, AttributeError, P2PComputeError) as exc:
        raise PlanError(f"task payload is not a task: {exc}") from None
    if not set(per_item) <= set(task.inputs) or bool(items) != bool(per_item):
        raise PlanError("task payload: per_item must name inputs of the task, and come with items")
    return task, list(items), list(per_item)


def bind_item(task: Task, label: str | None, per_item: Sequence[str], paths: Mapping[str, str]) -> Task:
    """The ``Task`` an executing peer runs for one item (``label``; None for a task that is not mapped):
    each input bound to the local file of its ``InputRef`` (``NAME/<label>`` for a per-item input,
    ``NAME`` otherwise) in ``paths``. Its outputs are to be kept as ``item_output(name, label)``."""
    inputs = {}
    for name, f in task.inputs.items():
        ref = f"{name}/{label}" if label is not None and name in per_item else name
        if ref not in paths:
            raise PlanError(f"input {ref} has no local file")
        inputs[name] = InputFile(paths[ref], f.band, f.as_tensor, f.data)
    return Task(task.kind, inputs=inputs, outputs=dict(task.outputs), limits=task.limits, graph=task.graph,
                program=task.program, args=task.args, env=dict(task.env))


def item_output(name: str, label: str | None) -> str:
    """The name a mapped task's output ``name`` has for item ``label`` in the plan (``mask/00017``)."""
    return name if label is None else f"{name}/{label}"


def _load_map(payload: bytes) -> dict[str, Any]:
    if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
        raise PlanError(f"task payload: bytes of at most {MAX_PAYLOAD_BYTES}")
    try:
        data = cbor2.loads(payload)
    except Exception:  # cbor2 raises several types on garbage
        raise PlanError("task payload is not valid CBOR") from None
    if not isinstance(data, dict):
        raise PlanError("task payload is not a map")
    return data


def tile_graph(a: str, b: str, rows: tuple[int, int] | None, cols: tuple[int, int] | None) -> Graph:
    """Block (rows of A) @ (cols of B) as an opset-1 graph with output ``block``; ``rows``/``cols`` None:
    that input is already the block (no ``slice``)."""
    nodes: list[dict[str, Any]] = []
    for name, src, span, axis in (("a_rows", a, rows, 0), ("b_cols", b, cols, 1)):
        if span is not None:
            nodes.append({"name": name, "op": "slice", "inputs": [src], "starts": [span[0]], "ends": [span[1]],
                          "axes": [axis]})
    nodes.append({"name": "block", "op": "matmul", "inputs": ["a_rows" if rows is not None else a,
                                                              "b_cols" if cols is not None else b]})
    return Graph.from_dict({"opset": 1, "inputs": {a: {}, b: {}}, "nodes": nodes, "outputs": ["block"]})


def combine_graph(grid: tuple[int, int], output: str) -> Graph:
    """Join blocks ``tile_<i>_<j>`` (a rows x cols grid) into ``output``: each row along axis 1, then the rows."""
    rows, cols = grid
    inputs = {f"tile_{i}_{j}": {} for i in range(rows) for j in range(cols)}
    nodes: list[dict[str, Any]] = []
    row_names = [_concat_tree([f"tile_{i}_{j}" for j in range(cols)], 1, f"row_{i}", nodes) for i in range(rows)]
    _concat_tree(row_names, 0, "rows", nodes, final=output)
    return Graph.from_dict({"opset": 1, "inputs": inputs, "nodes": nodes, "outputs": [output]})


def _concat_tree(names: list[str], axis: int, prefix: str, nodes: list[dict[str, Any]],
                 final: str | None = None) -> str:
    """Concatenate ``names`` along ``axis`` in groups of at most ``CONCAT_MAX``; the name of the result
    (``final`` if given)."""
    level = 0
    while len(names) > 1 or level == 0:
        groups = [names[i:i + CONCAT_MAX] for i in range(0, len(names), CONCAT_MAX)]
        names = []
        for g, group in enumerate(groups):
            name = final if final and len(groups) == 1 else f"{prefix}_{level}_{g}"
            nodes.append({"name": name, "op": "concat", "inputs": group, "axis": axis})
            names.append(name)
        level += 1
    return names[0]


def _label(j: int, n: int) -> str:
    return f"{j:0{max(5, len(str(max(n - 1, 0))))}d}"


class _Planner:
    def __init__(self, spec: JobSpec, resolved: Mapping[str, Sequence[Resolved]], programs: Mapping[str, str],
                 blocks: Mapping[Cut, Sequence[Resolved]] | None = None):
        self.spec = spec
        self.resolved = resolved
        self.programs = programs
        self.blocks = blocks or {}
        self.items: dict[str, int] = {}
        self.made: dict[str, _Made] = {}
        self.tasks: list[TaskSpec] = []
        self.templates: list[tuple[str, bytes]] = []

    # --- counting (before anything is built) --------------------------------------------------------

    def _items_of(self, s: StageSpec) -> int:
        counts = set()
        for ref in s.over:
            counts.add(len(self._inputs(ref.name)) if ref.kind == "input" else self.items[ref.name])
        if len(counts) != 1:
            raise PlanError(f"stage {s.name}: the inputs it maps over have different numbers of items {sorted(counts)}")
        return counts.pop()

    def _grid(self, s: StageSpec) -> tuple[int, int]:
        a, b = (self._split_input(s, n) for n in s.split_inputs)
        if a.shape is None or b.shape is None:
            raise Unresolved(f"stage {s.name}: split needs the shapes of {s.split_inputs[0]} and {s.split_inputs[1]} "
                            "(declare inputs.NAME.shape, or resolve them with their shapes)")
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[1] != b.shape[0]:
            raise PlanError(f"stage {s.name}: split matmul of shapes {list(a.shape)} and {list(b.shape)}: "
                            "needs A (m x k) and B (k x n)")
        grid = (math.ceil(a.shape[0] / s.tile) or 1, math.ceil(b.shape[1] / s.tile) or 1)
        if grid[0] * grid[1] > MAX_INPUTS_PER_TASK:
            raise PlanError(f"stage {s.name}: {a.shape[0]} x {b.shape[1]} in tiles of {s.tile} makes {grid[0]} x "
                            f"{grid[1]} = {grid[0] * grid[1]:,} tiles; the combine task reads at most "
                            f"{MAX_INPUTS_PER_TASK:,} (MAX_INPUTS_PER_TASK): use a larger tile")
        return grid

    def _split_input(self, s: StageSpec, name: str) -> Resolved:
        i = next(x for x in s.inputs if x.name == name)
        return self._inputs(i.ref.name)[0]

    def _inputs(self, name: str) -> Sequence[Resolved]:
        items = self.resolved.get(name)
        if not items:
            raise PlanError(f"input {name} was not resolved to any CID")
        if not self.spec.inputs[name].collection and len(items) != 1:
            raise PlanError(f"input {name} is one item but was resolved to {len(items)}")
        return items

    def count(self) -> int:
        total = 0
        for s in self.spec.stages:
            if s.kind == "split":
                rows, cols = self._grid(s)
                total += rows * cols + 1
            elif s.mapped:
                self.items[s.name] = n = self._items_of(s)
                per_item = sum(1 for i in s.inputs if i.ref in s.over)
                if s.batch * per_item + len(s.inputs) - per_item > MAX_INPUTS_PER_TASK:
                    raise PlanError(f"stage {s.name}: a task of batch {s.batch} reads {s.batch * per_item:,} "
                                    f"inputs; at most {MAX_INPUTS_PER_TASK:,} (MAX_INPUTS_PER_TASK): use a smaller batch")
                total += math.ceil(n / s.batch)
            else:
                total += 1
        if total > MAX_TASKS_PER_JOB:
            raise PlanError(f"the plan has {total:,} tasks; a job may have at most {MAX_TASKS_PER_JOB:,} "
                            "(MAX_TASKS_PER_JOB): use a larger batch or tile")
        return total

    # --- building ---------------------------------------------------------------------------------

    def plan(self, job_id: str) -> JobPlan:
        self.count()
        for s in self.spec.stages:
            if s.kind == "split":
                self._split(s)
            else:
                self._stage(s)
        plan = JobPlan(job_id=job_id, name=self.spec.name, tasks=tuple(self.tasks),
                       retry=RetryPolicy(retries=self.spec.retries), priority=self.spec.priority,
                       verification=self.spec.verification, outputs=tuple(self._outputs()),
                       templates=tuple(self.templates))
        plan.check()
        return plan

    def _id(self, s: StageSpec, suffix: str | None) -> str:
        if self.spec.single:
            return suffix if suffix is not None else s.name
        return s.name if suffix is None else f"{s.name}/{suffix}"

    def _base(self, s: StageSpec) -> dict[str, Any]:
        files = {}
        for i in s.inputs:
            inp = self.spec.inputs.get(i.ref.name) if i.ref.kind == "input" else None
            band = i.band if i.band is not None else (inp.band if inp else None)
            raw = i.raw if i.raw is not None else (inp.raw if inp else False)
            files[i.name] = InputFile("", band, not raw)
        if s.kind == "graph":
            task = Task("graph", inputs=files, outputs=dict(s.formats), limits=s.limits, graph=s.graph.to_cbor())
        else:
            program = s.program or ""
            if not program.startswith(("builtin:", "ipfs://")):
                if program not in self.programs:
                    raise PlanError(f"stage {s.name}: program {program} is a local file: add it and pass its "
                                    "ipfs:// CID (submit does)")
                program = self.programs[program]
            task = Task("wasm", inputs=files, outputs=dict(s.formats), limits=s.limits, program=program,
                        args=s.args, env=dict(s.env))
        return task.to_wire()

    def _ref(self, i: StageInput, j: int | None, label: str | None) -> InputRef:
        """The input ``i`` of the task for item ``j`` (None: a task that is not per item)."""
        per_item = j is not None and label is not None
        name = f"{i.name}/{label}" if per_item else i.name
        if i.ref.kind == "input":
            items = self._inputs(i.ref.name)
            got = items[j] if per_item and self.spec.inputs[i.ref.name].collection else items[0]
            return InputRef(name, cid=got.cid, size=got.size)
        made = self.made[i.ref.name]
        if made.task is not None:
            return InputRef(name, task=made.task, output=i.ref.output)
        return InputRef(name, task=made.item_tasks[j], output=f"{i.ref.output}/{made.labels[j]}")

    def _condition(self, s: StageSpec, j: int | None) -> Condition | None:
        w = s.when
        if w is None:
            return None
        made = self.made[w.stage]
        if made.task is not None:
            return Condition(made.task, w.output, w.op, w.value)
        if j is None or s.batch != 1:
            raise PlanError(f"stage {s.name}: its condition on {w.stage} is per item: map with batch 1")
        return Condition(made.item_tasks[j], f"{w.output}/{made.labels[j]}", w.op, w.value)

    def _stage(self, s: StageSpec) -> None:
        base = self._base(s)
        kind = "graph" if s.kind == "graph" else "wasm"
        if not s.mapped:
            task_id = self._id(s, None if not self.spec.single else "main")
            refs = [self._ref(i, None, None) for i in s.inputs]
            self._add(s, task_id, kind, cbor2.dumps(base), refs, None)
            self.made[s.name] = _Made(task=task_id)
            return
        n = self.items[s.name]
        labels = [_label(j, n) for j in range(n)]
        made = _Made(labels=labels)
        per_item = [i for i in s.inputs if i.ref in s.over]
        shared = [self._ref(i, None, None) for i in s.inputs if i.ref not in s.over]
        self.templates.append((s.name, cbor2.dumps(base)))  # once, not once per task
        count = math.ceil(n / s.batch)
        for t in range(count):
            task_id = self._id(s, ("map/" if self.spec.single else "") + _label(t, count))
            js = range(t * s.batch, min(n, (t + 1) * s.batch))
            refs = [self._ref(i, j, labels[j]) for j in js for i in per_item] + shared
            payload = cbor2.dumps({"template": s.name, "items": [labels[j] for j in js],
                                   "per_item": [i.name for i in per_item]})
            self._add(s, task_id, kind, payload, refs, self._condition(s, js[0]) if s.when else None)
            made.item_tasks.extend([task_id] * len(js))
        self.made[s.name] = made

    def _split(self, s: StageSpec) -> None:
        a_name, b_name = s.split_inputs
        a, b = self._split_input(s, a_name), self._split_input(s, b_name)
        rows, cols = self._grid(s)
        spans = (block_bounds(a.shape[0], s.tile), block_bounds(b.shape[1], s.tile))
        sides = [self._side(s, name, axis, spans[axis]) for axis, name in enumerate((a_name, b_name))]
        tiles = []
        for i, j in diagonals(rows, cols):
            refs, cut = [], []
            for (name, blocks, whole), k, span in zip(sides, (i, j), (spans[0][i], spans[1][j])):
                if blocks is not None:             # its own block, a CID of its own: read as it is
                    refs.append(InputRef(name, cid=blocks[k].cid, size=blocks[k].size))
                    cut.append(None)
                else:                               # all of the input: the tile slices it
                    refs.append(whole)
                    cut.append(span)
            graph = tile_graph(a_name, b_name, cut[0], cut[1])
            task = Task("graph", inputs={a_name: InputFile(""), b_name: InputFile("")},
                        outputs={"block": "tensor"}, limits=s.limits, graph=graph.to_cbor())
            task_id = self._id(s, f"tile/{i}-{j}")
            self._add(s, task_id, "graph", cbor2.dumps(task.to_wire()), refs, None)
            tiles.append((i, j, task_id))
        tiles.sort()                                # the combine reads them by position
        graph = combine_graph((rows, cols), s.split_output)
        task = Task("graph", inputs={f"tile_{i}_{j}": InputFile("") for i, j, _ in tiles},
                    outputs=dict(s.formats) or {s.split_output: "tensor"}, limits=s.limits, graph=graph.to_cbor())
        combine = self._id(s, COMBINE)
        self._add(s, combine, "combine", cbor2.dumps(task.to_wire()),
                  [InputRef(f"tile_{i}_{j}", task=t, output="block") for i, j, t in tiles], None)
        self.made[s.name] = _Made(task=combine)

    def _side(self, s: StageSpec, name: str, axis: int, spans: list[tuple[int, int]]
              ) -> tuple[str, Sequence[Resolved] | None, InputRef | None]:
        """(name, its blocks if the caller cut it, else None and the ref to all of it)."""
        i = next(x for x in s.inputs if x.name == name)
        if i.ref.kind == "input":
            band = i.band if i.band is not None else self.spec.inputs[i.ref.name].band
            blocks = self.blocks.get(Cut(i.ref.name, axis, s.tile, band))
            if blocks is not None:
                if len(blocks) != len(spans) or not all(isinstance(r, Resolved) and r.cid for r in blocks):
                    raise PlanError(f"stage {s.name}: input {name} cut in {len(blocks)} blocks; "
                                    f"its tiles need {len(spans)}")
                return name, blocks, None
        return name, None, self._ref(i, None, None)

    def _add(self, s: StageSpec, task_id: str, kind: str, payload: bytes, refs: list[InputRef],
             condition: Condition | None) -> None:
        deps = list(dict.fromkeys([r.task for r in refs if r.task] + ([condition.task] if condition else [])))
        self.tasks.append(TaskSpec(task_id=task_id, stage=s.name, kind=kind, payload=payload, inputs=tuple(refs),
                                   deps=tuple(deps), condition=condition, requirements=s.requirements))

    def _outputs(self) -> list[tuple[str, str]]:
        read = set().union(*(s.reads() for s in self.spec.stages)) if self.spec.stages else set()
        out = []
        for s in self.spec.stages:
            if s.name in read:
                continue
            made = self.made[s.name]
            if made.task is not None:
                out += [(made.task, o) for o in s.outputs]
            else:
                out += [(t, f"{o}/{label}") for t, label in zip(made.item_tasks, made.labels) for o in s.outputs]
        return out
