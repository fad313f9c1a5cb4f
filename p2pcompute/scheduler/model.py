"""What the scheduler's parts pass between them: a planned job, its tasks, requirements, conditions.

Theory of operation. ``spec.py`` reads a job.yaml into a ``JobSpec``;
``plan.py`` turns it into a ``JobPlan``: a static DAG of ``TaskSpec``s
(map tasks, matmul tiles and their combine task, pipeline stages), each with
the tasks it waits for (``deps``) and, for a pipeline stage, an optional
``Condition`` on one of its dependencies' small outputs. The job state
machine (``job_state.py``) runs the plan: a task is ready once its deps are
done; a task whose condition is false, or that depends on a skipped task, is
skipped, not run. Everything here is plain data: frozen, CBOR-friendly
(``to_wire`` / ``from_wire``), and bounded by the limits below, checked on
receipt as every message from a peer is.

Inputs are references, never bytes: a CID (``cid``), or an output of another
task of the same job (``task`` + ``output``), resolved to a CID by the
coordinator once that task is done.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

# bounds of one job (issue 10: "Bounded"); a plan past them is refused with the limit named
MAX_TASKS_PER_JOB = 100_000
MAX_INPUTS_PER_TASK = 1024
MAX_DEPS_PER_TASK = 100_000
MAX_ID_LEN = 128
MAX_PAYLOAD_BYTES = 1 << 20        # a task's executor payload (graph CBOR, program ref, args)
MAX_LABELS = 32
MAX_TEMPLATES = 256                # shared payload parts of one plan (a mapped stage's task, stored once)

CONDITION_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
                 "==": operator.eq, "!=": operator.ne}


class PlanError(ValueError):
    """A plan or a part of one is malformed or past a bound; the message names the part."""


@dataclass(frozen=True)
class Requirements:
    """What a peer must offer to run a task (matched against capability records)."""

    cpus: float = 1.0
    memory: int = 1 << 30            # bytes
    timeout_s: float = 3600.0        # wall time of one attempt
    labels: dict[str, str] = field(default_factory=dict)  # all must match the peer's labels ("peer-id": that peer)
    arch: str | None = None          # e.g. "x86_64", "arm64"; None: any
    opset: int | None = None         # operator set version needed (graphs); None: any
    wasm: bool = False               # needs WebAssembly

    def to_wire(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory": self.memory, "timeout_s": self.timeout_s,
                "labels": dict(self.labels), "arch": self.arch, "opset": self.opset, "wasm": self.wasm}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Requirements:
        r = cls(cpus=float(d["cpus"]), memory=int(d["memory"]), timeout_s=float(d["timeout_s"]),
                labels={str(k): str(v) for k, v in dict(d.get("labels", {})).items()},
                arch=d.get("arch"), opset=d.get("opset"), wasm=bool(d.get("wasm", False)))
        r.check()
        return r

    def check(self) -> None:
        for name, value, low, high in (("cpus", self.cpus, 0.01, 1 << 16), ("memory", self.memory, 1, 1 << 50),
                                       ("timeout_s", self.timeout_s, 0.001, 30 * 86400)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise PlanError(f"{name} {value!r} out of range [{low}, {high}]")
        if len(self.labels) > MAX_LABELS:
            raise PlanError(f"more than {MAX_LABELS} labels")


@dataclass(frozen=True)
class InputRef:
    """One input of a task: a CID, or another task's output (resolved to a CID when that task is done)."""

    name: str
    cid: str | None = None
    task: str | None = None          # task_id in the same job
    output: str | None = None        # that task's output name
    size: int | None = None          # bytes, when known (placement prefers peers holding big inputs)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "cid": self.cid, "task": self.task, "output": self.output, "size": self.size}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> InputRef:
        ref = cls(name=str(d["name"]), cid=d.get("cid"), task=d.get("task"), output=d.get("output"),
                  size=d.get("size"))
        if (ref.cid is None) == (ref.task is None):
            raise PlanError(f"input {ref.name!r}: give either a cid or a task output")
        return ref


@dataclass(frozen=True)
class Condition:
    """``output`` of dependency ``task`` compared with ``value``; the output must be a scalar held inline."""

    task: str
    output: str
    op: str
    value: float

    def holds(self, outputs_of_task: dict[str, Any]) -> bool:
        """True/False for the finished task's inline outputs; PlanError if the output is missing or not a number."""
        if self.output not in outputs_of_task:
            raise PlanError(f"condition on {self.task}.{self.output}: the task has no such output")
        got = outputs_of_task[self.output]
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            raise PlanError(f"condition on {self.task}.{self.output}: {got!r} is not a finite number")
        return CONDITION_OPS[self.op](got, self.value)

    def to_wire(self) -> dict[str, Any]:
        return {"task": self.task, "output": self.output, "op": self.op, "value": self.value}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Condition:
        cond = cls(task=str(d["task"]), output=str(d["output"]), op=str(d["op"]), value=float(d["value"]))
        if cond.op not in CONDITION_OPS:
            raise PlanError(f"condition operator {cond.op!r}: use one of {' '.join(CONDITION_OPS)}")
        return cond


@dataclass(frozen=True)
class TaskSpec:
    """One task of a plan. ``payload``: the executor's task in CBOR (ops/tasks.py ``Task.to_wire`` with
    inputs left as names: the executing peer binds ``inputs`` to local files after fetching their CIDs).
    ``kind`` is ``graph``, ``wasm`` or ``combine`` (recombining tiles, run by any peer like a graph)."""

    task_id: str
    stage: str
    kind: str
    payload: bytes
    inputs: tuple[InputRef, ...] = ()
    deps: tuple[str, ...] = ()
    condition: Condition | None = None
    requirements: Requirements = field(default_factory=Requirements)

    def to_wire(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "stage": self.stage, "kind": self.kind, "payload": self.payload,
                "inputs": [i.to_wire() for i in self.inputs], "deps": list(self.deps),
                "condition": self.condition.to_wire() if self.condition else None,
                "requirements": self.requirements.to_wire()}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> TaskSpec:
        spec = cls(task_id=str(d["task_id"]), stage=str(d["stage"]), kind=str(d["kind"]),
                   payload=bytes(d["payload"]), inputs=tuple(InputRef.from_wire(i) for i in d.get("inputs", ())),
                   deps=tuple(str(x) for x in d.get("deps", ())),
                   condition=Condition.from_wire(d["condition"]) if d.get("condition") else None,
                   requirements=Requirements.from_wire(d["requirements"]))
        spec.check()
        return spec

    def check(self) -> None:
        if not self.task_id or len(self.task_id) > MAX_ID_LEN:
            raise PlanError(f"task id {self.task_id[:MAX_ID_LEN]!r}: 1 to {MAX_ID_LEN} characters")
        if self.kind not in ("graph", "wasm", "combine"):
            raise PlanError(f"task {self.task_id}: kind {self.kind!r} is not graph, wasm or combine")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise PlanError(f"task {self.task_id}: payload over {MAX_PAYLOAD_BYTES} bytes")
        if len(self.inputs) > MAX_INPUTS_PER_TASK or len(self.deps) > MAX_DEPS_PER_TASK:
            raise PlanError(f"task {self.task_id}: over {MAX_INPUTS_PER_TASK} inputs or {MAX_DEPS_PER_TASK} deps")
        if self.condition and self.condition.task not in self.deps:
            raise PlanError(f"task {self.task_id}: its condition names {self.condition.task}, not one of its deps")
        self.requirements.check()


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3                 # attempts after the first
    backoff_s: float = 1.0           # first wait; doubles per attempt
    backoff_max_s: float = 60.0
    same_failure_peers: int = 2      # the same failure on this many distinct peers: the job's fault, fail fast

    def to_wire(self) -> dict[str, Any]:
        return {"retries": self.retries, "backoff_s": self.backoff_s, "backoff_max_s": self.backoff_max_s,
                "same_failure_peers": self.same_failure_peers}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> RetryPolicy:
        p = cls(int(d["retries"]), float(d["backoff_s"]), float(d["backoff_max_s"]), int(d["same_failure_peers"]))
        if not (0 <= p.retries <= 100 and 0 <= p.backoff_s <= p.backoff_max_s <= 86400 and p.same_failure_peers >= 1):
            raise PlanError(f"retry policy out of range: {p}")
        return p


@dataclass(frozen=True)
class JobPlan:
    """A job as the scheduler runs it: a static DAG of tasks, in an order where deps come first."""

    job_id: str
    name: str
    tasks: tuple[TaskSpec, ...]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    priority: int = 0
    verification: str = "none"
    outputs: tuple[tuple[str, str], ...] = ()   # (task_id, output name) pairs that form the job's result
    # (name, payload part) shared by many tasks: a mapped stage's task is stored once, and each of its
    # tasks' payload names it (plan.py: ``full_payload(plan, task)`` is what an executor gets)
    templates: tuple[tuple[str, bytes], ...] = ()
    # where the inputs came from, for ``describe``: (input, "file" | "url" | "handle" | "cid", source, CID),
    # the first MAX_SOURCES items (submit_sources.origins)
    sources: tuple[tuple[str, str, str, str], ...] = ()
    submitter: str = ""      # the peer the job was submitted through: it may cancel the job (jobs_api.py)

    def to_wire(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "name": self.name, "tasks": [t.to_wire() for t in self.tasks],
                "retry": self.retry.to_wire(), "priority": self.priority, "verification": self.verification,
                "outputs": [list(o) for o in self.outputs], "templates": [[k, v] for k, v in self.templates],
                "sources": [list(s) for s in self.sources], "submitter": self.submitter}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> JobPlan:
        tasks = d.get("tasks", ())
        if len(tasks) > MAX_TASKS_PER_JOB:
            raise PlanError(f"{len(tasks)} tasks: a job may have at most {MAX_TASKS_PER_JOB}")
        templates = d.get("templates", ())
        if not isinstance(templates, (list, tuple)) or len(templates) > MAX_TEMPLATES or not all(
                isinstance(t, (list, tuple)) and len(t) == 2 and isinstance(t[1], bytes) for t in templates):
            raise PlanError(f"templates: at most {MAX_TEMPLATES} [name, bytes] pairs")
        plan = cls(job_id=str(d["job_id"]), name=str(d.get("name", "")),
                   tasks=tuple(TaskSpec.from_wire(t) for t in tasks), retry=RetryPolicy.from_wire(d["retry"]),
                   priority=int(d.get("priority", 0)), verification=str(d.get("verification", "none")),
                   outputs=tuple((str(a), str(b)) for a, b in d.get("outputs", ())),
                   templates=tuple((str(k), bytes(v)) for k, v in templates),
                   sources=_sources(d.get("sources", ())), submitter=str(d.get("submitter", "")))
        plan.check()
        return plan

    def check(self) -> None:
        """Ids unique, deps and task inputs point backwards (so the graph has no cycle), within bounds."""
        if len(self.tasks) > MAX_TASKS_PER_JOB:
            raise PlanError(f"{len(self.tasks)} tasks: a job may have at most {MAX_TASKS_PER_JOB}")
        seen: set[str] = set()
        for t in self.tasks:
            t.check()
            if t.task_id in seen:
                raise PlanError(f"task id {t.task_id} appears twice")
            for dep in (*t.deps, *(i.task for i in t.inputs if i.task)):
                if dep not in seen:
                    raise PlanError(f"task {t.task_id} depends on {dep}, which is not an earlier task")
            seen.add(t.task_id)
        for task_id, _ in self.outputs:
            if task_id not in seen:
                raise PlanError(f"job output names task {task_id}, which is not in the plan")
        names = [k for k, _ in self.templates]
        if len(names) > MAX_TEMPLATES or len(set(names)) != len(names):
            raise PlanError(f"templates: at most {MAX_TEMPLATES}, each name once")
        if any(len(v) > MAX_PAYLOAD_BYTES for _, v in self.templates):
            raise PlanError(f"a template is over {MAX_PAYLOAD_BYTES} bytes")
        if len(self.submitter) > 128:
            raise PlanError("submitter: a peer id of at most 128 characters")


MAX_SOURCES = 256            # input items whose origin a plan keeps
MAX_SOURCE_TEXT = 4096


def _sources(raw: Any) -> tuple[tuple[str, str, str, str], ...]:
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_SOURCES or not all(
            isinstance(s, (list, tuple)) and len(s) == 4 and all(isinstance(x, str) and len(x) <= MAX_SOURCE_TEXT
                                                                for x in s) for s in raw):
        raise PlanError(f"sources: at most {MAX_SOURCES} [input, kind, source, cid] lists of short strings")
    return tuple((a, b, c, d) for a, b, c, d in raw)
