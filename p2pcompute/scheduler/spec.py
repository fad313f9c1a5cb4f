"""job.yaml version 1 -> ``JobSpec``: one schema for ``run --local`` and the network.

Theory of operation. ``check(data, base)`` first runs the JSON Schema
(``job_schema.json`` via ``spec_check``), then builds a ``JobSpec`` and makes
the checks a schema cannot: files and globs exist, URIs and handles parse,
graphs are valid and their inputs match, references name a known input, stage
and output, stages form no cycle, per-item inputs are mapped over with equal
counts, conditions are on a scalar output of an upstream stage. Every problem
is collected with its path (``stages[1].inputs.mask``), never only the first;
a part the schema already refused is not checked again. ``check`` does only
local reads (stat, glob, file headers); it never fetches anything.

A job without ``stages:`` is one stage named ``main`` whose inputs are the
job's inputs by name. Inside ``stages:``, a stage input is a reference
(``inputs.NAME``, ``stages.S.outputs.O``, or ``{from: REF, band: N}``) or a
source of its own, which becomes the job input ``<stage>.<input>``.
``JobSpec.stages`` is in an order where every stage comes after the stages it
reads from; ``plan.py`` turns it into a ``JobPlan``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import P2PComputeError, UserError
from ..ops.graph import Graph
from ..ops.jobfile import MAX_JOB_BYTES, builtin_program, parse_duration, parse_size
from ..ops.tasks import Limits
from .model import PlanError, Requirements
from .spec_check import Problem, lines_of, schema_problems, with_lines
from .spec_inputs import MAX_ITEMS, InputReader, InputSpec, Source, at, classify  # noqa: F401 (part of the API)
from .verification.policy import canonical

MAX_VALUES = 5_000_000           # values in one job file, aliases counted each time they are used
_WHEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)\.(\S+?)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


class SpecError(UserError):
    """A job file with problems; ``problems`` has every one, the message lists them."""

    def __init__(self, problems: list[Problem], source: str = "job.yaml") -> None:
        self.problems = problems
        lines = [f"{source}:{p.line}: {p}" if p.line else f"{source}: {p}" for p in problems]
        super().__init__(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {source}:\n  "
                         + "\n  ".join(lines))


@dataclass(frozen=True)
class Ref:
    kind: str                         # "input" or "stage"
    name: str
    output: str | None = None

    def __str__(self) -> str:
        return f"inputs.{self.name}" if self.kind == "input" else f"stages.{self.name}.outputs.{self.output}"


@dataclass(frozen=True)
class StageInput:
    name: str                         # what the graph or program calls it
    ref: Ref
    band: int | None = None           # overrides the input's band (``from:`` form)
    raw: bool | None = None


@dataclass(frozen=True)
class When:
    stage: str
    output: str
    op: str
    value: float


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str                         # "graph", "wasm" or "split"
    where: str                        # its path in the file ("" for a job without stages)
    inputs: tuple[StageInput, ...] = ()
    graph: Graph | None = None
    program: str | None = None        # builtin:NAME, ipfs://CID, or an absolute local path
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()     # the outputs it declares
    limits: Limits = field(default_factory=Limits)
    requirements: Requirements = field(default_factory=Requirements)
    over: tuple[Ref, ...] = ()        # map: the per-item references, zipped
    batch: int = 1
    split_op: str | None = None
    tile: int = 0
    split_inputs: tuple[str, str] | None = None
    split_output: str = "product"
    when: When | None = None

    @property
    def mapped(self) -> bool:
        return bool(self.over)

    def reads(self) -> set[str]:
        """Names of the stages this one depends on (its inputs, its map, its condition)."""
        names = {i.ref.name for i in self.inputs if i.ref.kind == "stage"} | \
                {r.name for r in self.over if r.kind == "stage"}
        return names | ({self.when.stage} if self.when else set())


@dataclass(frozen=True)
class JobSpec:
    name: str
    inputs: dict[str, InputSpec]
    stages: tuple[StageSpec, ...]     # every stage after the stages it reads
    single: bool                      # no ``stages:`` in the file: task ids map/..., tile/..., combine
    output_dir: Path
    retries: int = 3
    priority: int = 0
    verification: str = "none"

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def local_files(self) -> list[str]:
        """What submit adds and pins before the job starts: every local input file and local program,
        each once, in the order of the file."""
        files = [src.text for i in self.inputs.values() for src in i.sources if src.kind == "file"]
        files += [s.program for s in self.stages if s.program and not s.program.startswith(("builtin:", "ipfs://"))]
        return list(dict.fromkeys(files))


def load(path: str | Path) -> JobSpec:
    """Read and check a job file; ``SpecError`` lists every problem with its line."""
    spec, problems = check_file(path)
    if problems:
        raise SpecError(problems, str(path))
    assert spec is not None
    return spec


def check_file(path: str | Path) -> tuple[JobSpec | None, list[Problem]]:
    """(spec, []) for a good file, (None, problems with lines) otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JOB_BYTES:
            return None, [Problem("", f"the file is larger than {MAX_JOB_BYTES} bytes")]
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        return None, [Problem("", f"cannot read the job file: {exc.strerror or exc}")]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [Problem("", f"not valid YAML: {exc}")]
    if _values_in(data, MAX_VALUES) > MAX_VALUES:
        return None, [Problem("", f"the file holds more than {MAX_VALUES:,} values (YAML aliases expanding?)")]
    spec, problems = check(data, path.resolve().parent, default_name=path.stem)  # as run --local names it
    return spec, sorted(with_lines(problems, lines_of(text)), key=lambda p: (p.line or 0, p.path))


def check(data: Any, base: Path, default_name: str = "job") -> tuple[JobSpec | None, list[Problem]]:
    """Schema then semantic checks of a parsed job.yaml; relative paths are relative to ``base``."""
    problems = schema_problems(data)
    if not isinstance(data, dict):
        return None, problems or [Problem("", "a job file is a mapping")]
    nul = _nul_paths(data)
    if nul:                                  # no path, name or text of a job holds one (the OS refuses them)
        return None, sorted(set(problems + [Problem(p, "contains a NUL character") for p in nul]))
    builder = _Builder(Path(base), problems)
    spec = builder.build(data, default_name)
    return (None if builder.problems else spec), sorted(set(builder.problems))


def _nul_paths(data: Any, where: str = "") -> list[str]:
    """The paths of the strings (values or keys) in ``data`` that hold a NUL character."""
    if isinstance(data, str):
        return [where] if "\x00" in data else []
    out: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            at = f"{where}.{k}" if where else str(k)
            out += ([at] if isinstance(k, str) and "\x00" in k else []) + _nul_paths(v, at)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _nul_paths(v, f"{where}[{i}]")
    return out


def _values_in(data: Any, limit: int) -> int:
    """How many values ``data`` holds, counting shared ones (YAML aliases) each time; stops past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


class _Builder:
    def __init__(self, base: Path, problems: list[Problem]) -> None:
        self.base = base
        self.problems = list(problems)
        self._bad = [p.path for p in problems]
        self.inputs: dict[str, InputSpec] = {}
        self.known_inputs: set[str] = set()     # including broken ones, so they are not reported as unknown
        self.defaults: dict[str, Any] = {}
        self.map_broken: set[str] = set()       # stages whose `map` the schema refused
        self.reader = InputReader(base, self.add)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def bad(self, path: str) -> bool:
        """True if the schema refused ``path`` or something under or above it."""
        return any(p == path or p.startswith(path + ".") or p.startswith(path + "[") or
                   path.startswith(p + ".") or path.startswith(p + "[") for p in self._bad) \
            if path else bool(self._bad)

    # --- the job ---------------------------------------------------------------------------------

    def build(self, data: dict[str, Any], default_name: str) -> JobSpec | None:
        name = data.get("name") if isinstance(data.get("name"), str) else default_name
        self.defaults = {k: data.get(k) for k in ("limits", "resources", "constraints")}
        for key, raw in _dict(data.get("inputs")).items():
            self.known_inputs.add(str(key))
            if not self.bad(at("inputs", str(key))):
                self._add_input(str(key), raw, at("inputs", str(key)), allow_from=False)
        stages: list[StageSpec] = []
        single = "stages" not in data
        known_stages: set[str] = set()
        if single:
            stage = self._stage(data, "", "main", single=True)
            stages = [stage] if stage else []
        else:
            seen: set[str] = set()
            for i, raw in enumerate(data["stages"] if isinstance(data["stages"], list) else []):
                where = at("stages", i)
                sname = raw.get("name") if isinstance(raw, dict) else None
                if isinstance(sname, str) and sname in seen:
                    self.add(at(where, "name"), f"stage name {sname!r} is used twice")
                if isinstance(sname, str):
                    seen.add(sname)
                    known_stages.add(sname)
                stage = self._stage(raw, where, sname, single=False) if isinstance(raw, dict) and \
                    isinstance(sname, str) and not self.bad(at(where, "name")) else None
                if stage:
                    stages.append(stage)
        from .spec_link import link_stages  # the cross-stage checks; it imports the names above
        ordered = link_stages(self, stages, known_stages)
        out = _dict(data.get("outputs"))
        if not single and "formats" in out:
            self.add("outputs.formats", "in a pipeline, each stage lists its output formats (stages[N].outputs.formats)")
        directory = out.get("dir") if isinstance(out.get("dir"), str) else f"{name}-out"
        return JobSpec(name, dict(self.inputs), tuple(ordered), single, (self.base / directory).resolve(),
                       retries=_int(data.get("retries"), 3), priority=_int(data.get("priority"), 0),
                       verification=self._verification(data))

    def _verification(self, data: dict[str, Any]) -> str:
        """The canonical text of the job's strategy (verification/policy.py), or a problem."""
        if "verification" not in data or self.bad("verification"):
            return "none"
        try:
            return canonical(data["verification"])
        except ValueError as exc:
            self.add("verification", str(exc))
            return "none"

    # --- inputs ----------------------------------------------------------------------------------

    def _add_input(self, name: str, raw: Any, where: str, allow_from: bool) -> None:
        spec = self.reader.read(name, raw, where, allow_from)
        if spec is not None:
            self.inputs[name] = spec

    # --- one stage -------------------------------------------------------------------------------

    def _stage(self, raw: dict[str, Any], where: str, name: str, single: bool) -> StageSpec | None:
        kind = "graph" if "ops" in raw else "wasm" if "program" in raw else "split" if "split" in raw else None
        if kind is None or self.bad(at(where, {"graph": "ops", "wasm": "program", "split": "split"}[kind])):
            return None
        stage = StageSpec(name=name, kind=kind, where=where)
        graph = program = None
        if kind == "graph":
            try:
                graph = Graph.from_dict(raw["ops"])
            except UserError as exc:
                self.add(at(where, "ops"), str(exc))
                return None
        elif kind == "wasm":
            program = self._program(raw["program"], at(where, "program"))
        inputs = self._stage_inputs(raw, where, name, single, graph)
        formats = {str(k): v for k, v in _dict(_dict(raw.get("outputs")).get("formats")).items()}
        declared = tuple(graph.outputs) if graph else tuple(formats) if kind == "wasm" else ()
        limits = self._limits(raw, where, single)
        stage = replace(stage, inputs=tuple(inputs), graph=graph, program=program,
                        args=tuple(str(a) for a in raw.get("args", []) if not self.bad(at(where, "args"))),
                        env={str(k): str(v) for k, v in _dict(raw.get("env")).items()},
                        formats=formats, outputs=declared, limits=limits,
                        requirements=self._requirements(raw, where, single, kind, graph, limits))
        if kind == "graph":
            unknown = sorted(set(formats) - set(graph.outputs))
            if unknown:
                self.add(at(where, "outputs", "formats"), f"{unknown} are not outputs of the graph {graph.outputs}")
        if "map" in raw and self.bad(at(where, "map", "over")):
            self.map_broken.add(name)  # its inputs are not reported as unmapped collections too
        elif "map" in raw:
            over = raw["map"]["over"]
            refs = [_parse_ref(r) for r in ([over] if isinstance(over, str) else over)]
            batch = 1 if self.bad(at(where, "map", "batch")) else int(raw["map"].get("batch", 1))
            stage = replace(stage, over=tuple(refs), batch=batch)
        if kind == "split" and not self.bad(at(where, "split")):
            sp = raw["split"]
            names = tuple(sp.get("inputs") or [i.name for i in inputs])
            if len(names) != 2:
                self.add(at(where, "split"), f"a split matmul reads two inputs (A @ B); this stage has {list(names)}: "
                                             "name them with split.inputs: [A, B]")
                return None
            stage = replace(stage, split_op=sp["op"], tile=sp["tile"], split_inputs=names,
                            split_output=sp.get("output", "product"), outputs=(sp.get("output", "product"),))
        if "when" in raw and not self.bad(at(where, "when")):
            m = _WHEN.match(raw["when"])
            if m:
                stage = replace(stage, when=When(m[1], m[2], m[3], float(m[4])))
        return stage

    def _stage_inputs(self, raw: dict[str, Any], where: str, name: str, single: bool,
                      graph: Graph | None) -> list[StageInput]:
        if single:
            return [StageInput(n, Ref("input", n)) for n in sorted(self.known_inputs)]
        if "inputs" not in raw:
            names = [d.name for d in graph.inputs] if graph else []
            return [StageInput(n, Ref("input", n)) for n in names]
        out = []
        for key, value in _dict(raw["inputs"]).items():
            place = at(where, "inputs", str(key))
            if self.bad(place):
                continue
            if isinstance(value, str) and value.startswith(("inputs.", "stages.")):
                ref = _parse_ref(value)
                if ref is None:
                    self.add(place, f"{value!r} is not a reference: write inputs.NAME or stages.STAGE.outputs.OUTPUT")
                    continue
                out.append(StageInput(str(key), ref))
            elif isinstance(value, dict) and "from" in value:
                ref = _parse_ref(value["from"])
                if ref is not None:
                    out.append(StageInput(str(key), ref, value.get("band"), value.get("raw")))
            else:
                own = f"{name}.{key}"
                if own in self.known_inputs:
                    self.add(place, f"the job already has an input named {own}")
                else:
                    self.known_inputs.add(own)
                    self._add_input(own, value, place, allow_from=True)
                out.append(StageInput(str(key), Ref("input", own)))
        return out

    def _program(self, value: str, where: str) -> str | None:
        if value.startswith("builtin:"):
            try:
                builtin_program(value)
            except UserError as exc:
                self.add(where, str(exc))
            return value
        if value.startswith("ipfs://"):
            from ..storage.cid import Cid
            try:
                Cid.parse(value.removeprefix("ipfs://").strip("/"))
            except P2PComputeError as exc:
                self.add(where, f"{value}: {exc}")
            return value
        path = (self.base / value).resolve()
        if path.suffix not in (".wat", ".wasm"):
            self.add(where, f"{value} must be a .wat or .wasm file, builtin:NAME or ipfs://CID")
        elif not path.is_file():
            self.add(where, f"file {value} not found (looked at {path})")
        return str(path)

    def _merged(self, raw: dict[str, Any], key: str, where: str, single: bool) -> dict[str, Any]:
        top = {} if self.bad(key) else _dict(self.defaults.get(key))
        own = {} if single or self.bad(at(where, key)) else _dict(raw.get(key))
        return {**top, **own}

    def _limits(self, raw: dict[str, Any], where: str, single: bool) -> Limits:
        values = self._merged(raw, "limits", where, single)
        resources = self._merged(raw, "resources", where, single)
        if "memory" not in values and "memory" in resources:
            values["memory"] = resources["memory"]
        if "wall_seconds" not in values and "timeout" in resources:
            values["wall_seconds"] = _duration(resources["timeout"])
        for key in ("memory", "output_bytes", "wasm_memory"):
            if key in values:
                values[key] = parse_size(values[key], f"limits.{key}")
        return Limits(**values)

    def _requirements(self, raw: dict[str, Any], where: str, single: bool, kind: str,
                      graph: Graph | None, limits: Limits) -> Requirements:
        res = self._merged(raw, "resources", where, single)
        con = self._merged(raw, "constraints", where, single)
        req = Requirements(cpus=float(res.get("cpus", 1.0)),
                           memory=parse_size(res["memory"], "resources.memory") if "memory" in res else limits.memory,
                           timeout_s=_duration(res["timeout"]) if "timeout" in res else float(limits.wall_seconds),
                           labels={str(k): str(v).lower() if isinstance(v, bool) else str(v)
                                   for k, v in _dict(con.get("labels")).items()},
                           arch=con.get("arch"), opset=con.get("opset", graph.opset if graph else None),
                           wasm=bool(con.get("wasm", kind == "wasm")))
        try:
            req.check()
        except (P2PComputeError, PlanError) as exc:
            self.add(at(where, "resources"), str(exc))
        return req


def _parse_ref(text: Any) -> Ref | None:
    if not isinstance(text, str):
        return None
    if text.startswith("inputs.") and len(text) > 7:
        return Ref("input", text[7:])
    m = re.fullmatch(r"stages\.([A-Za-z_][A-Za-z0-9_\-]*)\.outputs\.(.+)", text)
    return Ref("stage", m[1], m[2]) if m else None


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _duration(value: Any) -> float:
    try:
        return parse_duration(value, "resources.timeout")
    except UserError:
        return math.nan  # the schema has said why


