"""job.yaml for local runs (``p2pcompute run job.yaml --local``): schema, checks, execution.

Schema (relative paths are relative to the job file's directory)::

    name: cloud-detection             # optional, shown in output
    inputs:                           # input name -> file, or {path, band, raw}
      blue: {path: scene.tif, band: 0}    # band N of a multi-band image
      weights: weights.npy                # .tensor, .npy, .tif/.tiff
    ops: {opset: 1, inputs: ..., nodes: [...], outputs: [...]}   # an operator graph, or
    program: detect.wat               # a WebAssembly program (.wat/.wasm; builtin:NAME ships with us)
    args: [--threshold, "0.3"]        # program only: its arguments
    env: {MODE: fast}                 # program only: its environment
    outputs:
      dir: out                        # where output files go (default: <job name>-out)
      formats: {mask: png}            # per output: tensor (default), npy, png, raw
    limits:                           # sizes as bytes or with KiB/MiB/GiB (KB/MB/GB)
      memory: 1GiB
      cpu_seconds: 60
      wall_seconds: 120
      output_bytes: 1GiB
      fuel: 10000000000               # program only
      wasm_memory: 512MiB             # program only

For a graph, the inputs must be exactly the graph's inputs; their dtypes and
shapes are read from the file headers (no pixel data) and the whole graph is
inferred before any worker starts. A program sees each input as
``/inputs/<name>.tensor`` (or the file itself as ``/inputs/<name>`` with
``raw: true``) and writes ``/outputs/<name>.tensor`` for every declared
output; files it writes beyond those are kept as raw outputs.

Every mistake raises ``UserError`` naming the key (``inputs.blue.band``,
``limits.memory``) and what would be valid.

This is the single-task subset of job.yaml version 1 (docs/job-spec.md, the
JSON Schema in ``scheduler/job_schema.json``, ``p2pcompute validate``). Of the
keys v1 adds, ``version``, ``resources``, ``constraints``, ``retries``,
``priority`` and ``verification`` are accepted here and checked against that
schema (``resources.memory`` and ``resources.timeout`` stand in for
``limits.memory`` and ``limits.wall_seconds`` when those are not given; a local
run has nothing to place or retry); ``map``, ``split`` and ``stages`` make a
job of many tasks, which runs across the network, and are refused with a
pointer to ``validate``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import UserError, WireError
from . import tensor_format
from .graph import Graph
from .opset import Spec
from .tasks import OUTPUT_FORMATS, InputFile, Limits, Task, TaskResult

TOP_KEYS = ("name", "inputs", "ops", "program", "args", "env", "outputs", "limits")
PLACEMENT_KEYS = ("version", "resources", "constraints", "retries", "priority", "verification")  # v1, checked
NETWORK_KEYS = ("map", "split", "stages")                                                        # v1, many tasks
MAX_JOB_BYTES = 16 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
BUILTIN = Path(__file__).parent


@dataclass(frozen=True)
class Job:
    name: str
    task: Task
    output_dir: Path
    graph: Graph | None = None
    fetched: Path | None = None  # a local copy of an ipfs:// program, removed by ``run_local``


def load(path: str | Path, fetch: Callable[[str], Path] | None = None) -> Job:
    """Parse a job file; ``fetch(cid)`` makes a local copy of an ``ipfs://CID`` program.

    The copy belongs to the job: ``run_local`` removes it (and its directory, if that is
    then empty) when the run ends, however it ends; so does a parse error after the fetch."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JOB_BYTES:
            raise UserError(f"{path} is larger than {MAX_JOB_BYTES} bytes")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read job file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    return parse(data, base=path.resolve().parent, default_name=path.stem, fetch=fetch)


def parse(data: Any, base: Path, default_name: str = "job", fetch: Callable[[str], Path] | None = None) -> Job:
    if not isinstance(data, dict):
        raise UserError("job.yaml must be a mapping with inputs, ops or program, outputs, limits")
    network = [k for k in NETWORK_KEYS if k in data]
    if network:
        raise UserError(f"job.yaml: `{network[0]}` makes a job of many tasks, which runs across the network "
                        "(submit); `run --local` runs a single task. Check the file with `p2pcompute validate`")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS + PLACEMENT_KEYS)
    if unknown:
        raise UserError(f"job.yaml: unknown key(s) {unknown}; expected {', '.join(TOP_KEYS)}")
    data = _placement(data)
    name = str(data.get("name") or default_name)
    if ("ops" in data) == ("program" in data):
        raise UserError("job.yaml needs exactly one of `ops` (an operator graph) or `program` "
                        "(a WebAssembly .wat/.wasm file)")
    inputs = _inputs(data.get("inputs") or {}, base)
    formats, out_dir = _outputs(data.get("outputs") or {}, base, name)
    limits = _limits(data.get("limits") or {})
    if "ops" in data:
        for key in ("args", "env"):
            if key in data:
                raise UserError(f"job.yaml: `{key}` is for programs; a graph takes none")
        try:
            graph = Graph.from_dict(data["ops"])
        except UserError as exc:
            raise UserError(f"job.yaml ops: {exc}") from None
        _check_graph(graph, inputs, formats)
        task = Task("graph", inputs=inputs, outputs=formats, limits=limits, graph=graph.to_cbor())
        return Job(name, task, out_dir, graph)
    program = _program(data["program"], base, fetch)
    fetched = program if str(data["program"]).startswith("ipfs://") else None
    try:
        args, env = _args(data.get("args") or []), _env(data.get("env") or {})
        task = Task("wasm", inputs=inputs, outputs=formats, limits=limits, program=str(program),
                    args=args, env=env)
    except BaseException:
        _remove_copy(fetched)
        raise
    return Job(name, task, out_dir, fetched=fetched)


def _placement(data: dict[str, Any]) -> dict[str, Any]:
    """Check the v1 placement keys against the shared schema; fold ``resources`` into ``limits``."""
    given = {k: data[k] for k in PLACEMENT_KEYS if k in data}
    if not given:
        return data
    from ..scheduler.spec_check import schema_problems  # the one schema of job.yaml

    problems = [p for p in schema_problems({**given, "program": "x"}) if p.path.split(".")[0] in given]
    if problems:
        raise UserError(f"job.yaml {problems[0]}")
    if "verification" in given:
        from ..scheduler.verification.policy import parse as parse_verification

        try:
            parse_verification(given["verification"])
        except ValueError as exc:
            raise UserError(f"job.yaml verification: {exc}") from None
    limits, resources = data.get("limits") or {}, given.get("resources") or {}
    if isinstance(limits, dict):
        limits = dict(limits)
        if "memory" in resources:
            limits.setdefault("memory", resources["memory"])
        if "timeout" in resources:
            limits.setdefault("wall_seconds", parse_duration(resources["timeout"], "resources.timeout"))
    return {**data, "limits": limits}


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a positive number or text like 90s, 10m, 2h, 1d."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"job.yaml {where}: {value!r} is not a duration (seconds, or e.g. 90s, 10m, 2h, 1d)")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


def _inputs(raw: Any, base: Path) -> dict[str, InputFile]:
    if not isinstance(raw, dict):
        raise UserError("job.yaml inputs: must map input names to files")
    out = {}
    for name, spec in raw.items():
        where = f"inputs.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}", name):
            raise UserError(f"job.yaml {where}: {name!r} is not a valid input name")
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or \
                set(spec) - {"path", "band", "raw"}:
            raise UserError(f"job.yaml {where}: give a file path, or {{path, band, raw}}")
        band = spec.get("band")
        if band is not None and (not isinstance(band, int) or isinstance(band, bool) or band < 0):
            raise UserError(f"job.yaml {where}.band: must be a band number (0 is the first)")
        raw_flag = spec.get("raw", False)
        if not isinstance(raw_flag, bool) or (raw_flag and band is not None):
            raise UserError(f"job.yaml {where}.raw: true or false, and not together with band")
        path = (base / spec["path"]).resolve()
        if not path.is_file():
            raise UserError(f"job.yaml {where}: file {spec['path']} not found (looked at {path})")
        out[name] = InputFile(str(path), band, not raw_flag)
    return out


def _outputs(raw: Any, base: Path, name: str) -> tuple[dict[str, str], Path]:
    if not isinstance(raw, dict) or set(raw) - {"dir", "formats"}:
        raise UserError("job.yaml outputs: a mapping with `dir` and `formats`")
    formats = raw.get("formats") or {}
    if not isinstance(formats, dict) or any(f not in OUTPUT_FORMATS for f in formats.values()):
        raise UserError(f"job.yaml outputs.formats: map output names to one of {', '.join(OUTPUT_FORMATS)}")
    directory = raw.get("dir", f"{name}-out")
    if not isinstance(directory, str):
        raise UserError("job.yaml outputs.dir: must be a directory path")
    return {str(k): v for k, v in formats.items()}, (base / directory).resolve()


def parse_size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise UserError(f"job.yaml {where}: {value!r} is not a size (use bytes, or e.g. 512MiB, 1GiB)")
    number = float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    if number < 1:
        raise UserError(f"job.yaml {where}: must be positive")
    return int(number)


def _limits(raw: Any) -> Limits:
    if not isinstance(raw, dict):
        raise UserError("job.yaml limits: a mapping like {memory: 1GiB, cpu_seconds: 60}")
    fields = {"memory": "size", "output_bytes": "size", "wasm_memory": "size",
              "cpu_seconds": "seconds", "wall_seconds": "seconds", "fuel": "count"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"job.yaml limits: unknown key(s) {unknown}; expected {', '.join(fields)}")
    values: dict[str, Any] = {}
    for key, kind in fields.items():
        if key not in raw:
            continue
        value = raw[key]
        if kind == "size":
            values[key] = parse_size(value, f"limits.{key}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
                (kind == "count" and not isinstance(value, int)):
            what = "a positive integer" if kind == "count" else "a positive number of seconds"
            raise UserError(f"job.yaml limits.{key}: {value!r} is not {what}")
        else:
            values[key] = value
    return Limits(**values)


def builtin_program(value: str) -> Path:
    """The file of ``builtin:NAME.wat``; UserError naming the programs we ship otherwise."""
    path = BUILTIN / value.removeprefix("builtin:")
    if path.suffix != ".wat" or not path.is_file() or path.parent != BUILTIN:
        shipped = ", ".join(f"builtin:{p.name}" for p in sorted(BUILTIN.glob("*.wat")))
        raise UserError(f"no built-in program {value!r}; built-ins: {shipped}")
    return path


def _program(value: Any, base: Path, fetch: Callable[[str], Path] | None = None) -> Path:
    if not isinstance(value, str) or not value:
        raise UserError("job.yaml program: a path to a .wat or .wasm file")
    if value.startswith("builtin:"):
        try:
            return builtin_program(value)
        except UserError as exc:
            raise UserError(f"job.yaml program: {exc}") from None
    if value.startswith("ipfs://"):
        if fetch is None:
            raise UserError("job.yaml program: ipfs:// programs need a blockstore to read them from")
        return fetch(value.removeprefix("ipfs://").strip("/"))
    path = (base / value).resolve()
    if path.suffix not in (".wat", ".wasm"):
        raise UserError(f"job.yaml program: {value} must be a .wat or .wasm file")
    if not path.is_file():
        raise UserError(f"job.yaml program: file {value} not found (looked at {path})")
    return path


def _args(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(a, (str, int, float)) for a in raw) or len(raw) > 256:
        raise UserError("job.yaml args: a list of at most 256 strings")
    return tuple(str(a) for a in raw)


def _env(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or len(raw) > 256 or not all(
            isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in raw):
        raise UserError("job.yaml env: a mapping of variable names to values")
    return {k: str(v) for k, v in raw.items()}


def _check_graph(graph: Graph, inputs: dict[str, InputFile], formats: dict[str, str]) -> None:
    names = [d.name for d in graph.inputs]
    missing, extra = [n for n in names if n not in inputs], sorted(set(inputs) - set(names))
    if missing or extra:
        raise UserError(f"job.yaml inputs must match the graph's inputs {names}: "
                        f"missing {missing}, not in the graph {extra}")
    unknown = sorted(set(formats) - set(graph.outputs))
    if unknown:
        raise UserError(f"job.yaml outputs.formats: {unknown} are not graph outputs {graph.outputs}")
    specs = {name: peek_spec(f, name) for name, f in inputs.items()}
    try:
        graph.infer(specs)
    except UserError as exc:
        raise UserError(f"job.yaml ops: {exc}") from None


def peek_spec(f: InputFile, name: str) -> Spec:
    """Dtype and shape of an input file from its header only."""
    path = Path(f.path)
    try:
        if path.suffix == ".tensor":
            with open(path, "rb") as fh:
                dtype, shape, _ = tensor_format.decode_header(fh.read(8 + 8 * tensor_format.MAX_NDIM))
        elif path.suffix == ".npy":
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = series.shape, series.dtype
        else:
            raise UserError(f"unknown file type {path.suffix!r} (use .tensor, .npy, .tif)")
    except (OSError, ValueError, WireError) as exc:
        raise UserError(f"job.yaml inputs.{name}: cannot read {path.name}: {exc}") from None
    shape = tuple(shape)
    if f.band is not None:
        if len(shape) != 3 or f.band >= shape[0]:
            raise UserError(f"job.yaml inputs.{name}.band: {path.name} has shape {list(shape)}; "
                            f"band {f.band} needs a 3-D (bands, rows, cols) image with that band")
        shape = shape[1:]
    return Spec(np.dtype(np.dtype(dtype).name), shape)


def run_local(job: Job, cpus: int = 1) -> TaskResult:
    """Run the job's task in this machine's executor; outputs land in ``job.output_dir``."""
    from .executor import run_tasks

    try:
        if cpus < 1:
            raise UserError("--cpus must be at least 1")
        [result] = run_tasks([(job.task, job.output_dir)], cpus=cpus)
        return result
    finally:
        _remove_copy(job.fetched)


def _remove_copy(path: Path | None) -> None:
    """Remove a fetched program and its directory if that is then empty."""
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
        os.rmdir(path.parent)
    except OSError:
        pass  # not empty: not only ours
