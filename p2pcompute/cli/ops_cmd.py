"""``run JOB.yaml --local`` and ``ops list`` / ``ops scene``: the operator set and local jobs."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .output import add_json_flag, console, print_json

RUN_EPILOG = """\
job.yaml (paths relative to the job file):
  inputs:   {NAME: FILE | {path: FILE, band: N, raw: BOOL}}   .tensor, .npy, .tif
  ops:      an operator graph {opset: 1, inputs, nodes, outputs}   -- or --
  program:  FILE.wat | FILE.wasm | builtin:cloud_detect.wat  (with args: [...], env: {...})
  outputs:  {dir: DIR, formats: {NAME: tensor|npy|png|raw}}
  limits:   {memory: 1GiB, cpu_seconds: 60, wall_seconds: 120, output_bytes: 1GiB,
             fuel: 10000000000, wasm_memory: 512MiB}
Examples: examples/cloud-graph.job.yaml and examples/cloud-wasm.job.yaml
(make their scene first: p2pcompute ops scene examples/scene.tif).
"""


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a job.yaml on this machine (--local)",
                       description="Run the operator graph or WebAssembly program of a job.yaml in "
                       "sandboxed worker processes on this machine, under the job's limits.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("job", metavar="JOB.yaml", help="the job file (schema below)")
    r.add_argument("--local", action="store_true",
                   help="run on this machine, without a network (required for now)")
    r.add_argument("--cpus", type=int, default=1, help="most tasks run at once, each in its own worker process (default 1)")
    r.add_argument("--out", metavar="DIR", help="write the outputs to DIR instead of the job's outputs.dir")
    r.add_argument("--data-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                   help="where `program: ipfs://CID` is read from: this data dir's blockstore "
                        "(default: $P2PCOMPUTE_HOME or ~/.p2pcompute; put it there with `p2pcompute add`)")
    add_json_flag(r)
    r.set_defaults(func=cmd_run)

    o = sub.add_parser("ops", help="the operator set: list operators, make the example scene",
                       description="Inspect the operator set this peer supports.")
    osub = o.add_subparsers(dest="ops_command", metavar="SUBCOMMAND")
    o.set_defaults(func=lambda args: (o.print_help(), 2)[1])
    lst = osub.add_parser("list", help="show every operator with its signature and semantics",
                          description="List the operators of opset 1: name, category, signature "
                          "(inputs; attributes with defaults) and semantics.")
    lst.add_argument("--category", help="show only this category (e.g. arithmetic, reduction, shape)")
    add_json_flag(lst)
    lst.set_defaults(func=cmd_ops_list)
    sc = osub.add_parser("scene", help="write the synthetic Landsat-style GeoTIFF of the example",
                         description="Write a deterministic 5-band (blue, green, red, nir, swir1) 16-bit "
                         "GeoTIFF with clouds, land and water, as used by the cloud-detection example.")
    sc.add_argument("path", metavar="OUT.tif", help="file to write")
    sc.add_argument("--size", type=int, default=1024,
                    help="pixels per side (default 1024, which makes a 10.5 MB file)")
    sc.add_argument("--seed", type=int, default=5, help="random seed (default 5)")
    add_json_flag(sc)
    sc.set_defaults(func=cmd_ops_scene)


def _fetch_program(data_dir: Path | None, cid_text: str) -> Path:
    """A local copy of the program ``cid_text`` from the data dir's blockstore (.wasm or .wat)."""
    import tempfile

    from ..errors import P2PComputeError
    from ..node.config import Config
    from ..storage.blockstore import Blockstore
    from ..storage.cid import Cid
    from ..storage.exporter import read_file

    store = Blockstore.for_data_dir(Config.load(data_dir).data_dir)
    try:
        data = read_file(store.get, Cid.parse(cid_text))
    except P2PComputeError as exc:
        raise UserError(f"program ipfs://{cid_text}: {exc} (add it first with `p2pcompute add FILE`)") from None
    suffix = ".wasm" if data.startswith(b"\0asm") else ".wat"
    path = Path(tempfile.mkdtemp(prefix="p2pcompute-program-")) / f"program{suffix}"
    path.write_bytes(data)
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from ..ops import jobfile

    if not args.local:
        raise UserError("`run` runs jobs on this machine only, for now: add --local")
    job = jobfile.load(args.job, fetch=lambda cid: _fetch_program(args.data_dir, cid))
    if args.out:
        job = dataclasses.replace(job, output_dir=Path(args.out).resolve())
    started = time.perf_counter()
    result = jobfile.run_local(job, cpus=args.cpus)
    elapsed = time.perf_counter() - started
    outputs = {name: {k: v for k, v in info.items() if k != "data"} for name, info in result.outputs.items()}
    if args.json:
        print_json({"job": job.name, "status": result.status, "message": result.message,
                    "resource": result.resource, "limit": result.limit, "outputs": outputs,
                    "seconds": elapsed, "cpu_seconds": result.cpu_seconds,
                    "fuel_used": result.fuel_used, "output_dir": str(job.output_dir)})
        return 0 if result.ok else 1
    _print_result(job.name, result, outputs, elapsed)
    return 0 if result.ok else 1


def _print_result(name: str, result: Any, outputs: dict[str, dict[str, Any]], elapsed: float) -> None:
    if result.status == "resource_exceeded":
        console.print(f"[bold red]job {name}: {result.resource} limit exceeded[/] ({result.message})",
                      highlight=False)
        return
    if not result.ok:
        console.print(f"[bold red]job {name}: {result.status}[/]: {result.message}", highlight=False)
        return
    fuel = f", {result.fuel_used:,} fuel" if result.fuel_used else ""
    console.print(f"[bold green]job {name}: ok[/] in {elapsed:.2f} s (task {result.wall_seconds:.3f} s, "
                  f"cpu {result.cpu_seconds:.3f} s{fuel})", highlight=False)
    for out, info in outputs.items():
        kind = f"{info['dtype']}{info['shape']}" if "dtype" in info else f"{info['bytes']} bytes"
        value = f" = {info['value']}" if "value" in info else ""
        console.print(f"  {out:<16} {kind}{value}  {info.get('path', info['file'])}  "
                      f"sha256 {info['sha256'][:16]}", highlight=False)


def cmd_ops_list(args: argparse.Namespace) -> int:
    from ..ops.opset import OPSET_VERSION, SUPPORTED_OPSETS, all_ops

    ops = [op for op in all_ops() if args.category in (None, op.category)]
    if not ops:
        categories = sorted({op.category for op in all_ops()})
        raise UserError(f"no operators in category {args.category!r}; categories: {categories}")
    if args.json:
        print_json({"opset": OPSET_VERSION, "supported_opsets": list(SUPPORTED_OPSETS), "operators": [
            {"name": op.name, "category": op.category, "signature": op.signature(), "doc": op.doc,
             "inputs": [op.min_inputs, op.max_inputs], "since": op.since,
             "attributes": [{"name": a.name, "kind": a.kind, "doc": a.doc} for a in op.attrs]}
            for op in ops]})
        return 0
    from rich.table import Table

    from rich.markup import escape

    table = Table("operator", "category", "since", "signature", "semantics",
                  title=escape(f"opset {OPSET_VERSION} (this peer supports {list(SUPPORTED_OPSETS)})"))
    for op in ops:  # escaped: docs say [min, max], which rich would take for markup
        table.add_row(escape(op.name), op.category, f"v{op.since}", escape(op.signature()), escape(op.doc))
    console.print(table)
    return 0


def cmd_ops_scene(args: argparse.Namespace) -> int:
    from ..ops import scene

    if not 16 <= args.size <= 8192:
        raise UserError("--size must be between 16 and 8192 pixels")
    data = scene.make_scene(args.size, args.seed)
    path = Path(args.path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as the examples ask: examples/scenes/scene-0.tif
        scene.write_geotiff(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    info = {"path": str(path), "bands": list(scene.BANDS), "shape": list(data.shape),
            "dtype": str(data.dtype), "bytes": path.stat().st_size}
    if args.json:
        print_json(info)
    else:
        console.print(f"wrote {path}: {len(scene.BANDS)} bands ({', '.join(scene.BANDS)}), "
                      f"{args.size}x{args.size} uint16, {info['bytes']:,} bytes", highlight=False)
    return 0
