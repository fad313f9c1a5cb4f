"""What the executor runs and what it reports: task specs, limits, results.

A ``Task`` is either an operator graph (``graph``: its canonical CBOR) or a
WebAssembly program (``program``: a local .wasm or .wat file), with inputs as
local files, declared outputs and ``Limits``. Tasks and results cross the
pipe to a worker as plain CBOR maps (``to_wire`` / ``from_wire``).

A ``TaskResult`` has a ``status``:

* ``ok`` — ``outputs`` describes each output: a file in the scratch dir, or for
  a tensor output of at most 64 KiB its bytes inline (``data``), which the
  executor writes where the caller wants it;
* ``resource_exceeded`` — ``resource`` names the limit (memory, cpu_time,
  wall_time, fuel, wasm_memory, output_size) and ``limit`` gives its figure;
* ``failed`` — the task itself is wrong (bad graph, bad input file, a trap,
  a non-zero exit code) or its worker crashed twice; ``message`` says what;
* ``rejected`` — the executor's queue was full or it is shutting down.

Whatever the status, ``stderr`` holds the last ``STDERR_MAX`` bytes (as text)
the task wrote to its stderr (a WebAssembly program's; a graph writes none).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

STATUSES = ("ok", "resource_exceeded", "failed", "rejected")
RESOURCES = ("memory", "cpu_time", "wall_time", "fuel", "wasm_memory", "output_size")
OUTPUT_FORMATS = ("tensor", "npy", "png", "raw")
STDERR_MAX = 64 << 10        # bytes of a task's stderr kept (the last ones)


@dataclass(frozen=True)
class Limits:
    memory: int = 1 << 30            # bytes of address space the task may add to its worker
    cpu_seconds: float = 60.0        # CPU time (rounded up to whole seconds by the kernel)
    wall_seconds: float = 120.0      # wall-clock time, enforced by the executor
    output_bytes: int = 1 << 30      # total (and per-file) size of the outputs
    fuel: int = 10_000_000_000       # WebAssembly instructions (about one fuel unit each)
    wasm_memory: int = 512 << 20     # WebAssembly linear memory

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Limits":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class InputFile:
    """A local file bound to an input name, or (``data``) a small tensor carried inline in
    the tensor format. ``band`` picks one band of a multi-band image; ``as_tensor`` (wasm
    only) hands the program the decoded array in the tensor format (``/inputs/<name>.tensor``)
    instead of the raw file (``/inputs/<name>``)."""

    path: str = ""
    band: int | None = None
    as_tensor: bool = True
    data: bytes = b""


@dataclass(frozen=True)
class Task:
    kind: str                                          # "graph" or "wasm"
    inputs: dict[str, InputFile] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)   # name -> format
    limits: Limits = field(default_factory=Limits)
    graph: bytes = b""                                 # kind == "graph": canonical CBOR
    program: str = ""                                  # kind == "wasm": path of .wasm / .wat
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("graph", "wasm"):
            raise UserError(f"task kind must be graph or wasm, not {self.kind!r}")
        bad = {k: v for k, v in self.outputs.items() if v not in OUTPUT_FORMATS}
        if bad:
            raise UserError(f"output format(s) {bad} unknown; use one of {', '.join(OUTPUT_FORMATS)}")

    def to_wire(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["args"] = list(self.args)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Task":
        inputs = {k: InputFile(**v) for k, v in data.get("inputs", {}).items()}
        return cls(kind=data["kind"], inputs=inputs, outputs=dict(data.get("outputs", {})),
                   limits=Limits.from_wire(data.get("limits", {})), graph=data.get("graph", b""),
                   program=data.get("program", ""), args=tuple(data.get("args", ())),
                   env=dict(data.get("env", {})))


@dataclass
class TaskResult:
    status: str
    message: str = ""
    resource: str | None = None
    limit: float | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    fuel_used: int | None = None
    exit_code: int | None = None
    attempts: int = 1
    stderr: str = ""              # a program's stderr, its last ``STDERR_MAX`` bytes

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "TaskResult":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def exceeded(cls, resource: str, limit: float, message: str = "") -> "TaskResult":
        return cls("resource_exceeded", message or f"{resource} limit of {limit:g} exceeded",
                   resource=resource, limit=limit)


def tail(path: Path, size: int) -> str:
    """The last ``size`` bytes of a file as text ("" if there is no such file)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
