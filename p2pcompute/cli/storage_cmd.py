"""``add``, ``cat``, ``get``, ``pin add|ls|rm``, ``car export|import``, ``storage gc|pins|unpin``: content-addressed data.

These commands work on the block store of a data dir (``<data dir>/blocks``)
directly, so they need no running daemon; a running daemon shares that store
safely (atomic writes, GC lock). Fetching from other peers comes with the
daemon's block exchange.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .daemon import add_data_dir
from .output import add_json_flag, console, err_console, print_json

PROGRESS_MIN = 16 * 1024 * 1024  # show a progress bar from this many bytes on
FETCH_TIMEOUT = 60.0  # as the daemon's: a DHT lookup alone may take 30 s; a transfer that moves never times out

STORE_NOTE = """\
Works on the block store of the data dir (<data dir>/blocks) directly: no daemon
needs to run, and a running daemon shares the store safely. When blocks are
missing and a daemon runs on the data dir, it fetches them first: providers
from the DHT, blocks over bitswap, each one verified (a status line on stderr
says how it goes; Ctrl-C stops the daemon's fetch too). Fetched data is not
pinned (as in kubo), so `storage gc` may remove it: `get --pin` or `pin add`
keeps it. `add` with a daemon running also has it pin and announce the root.
"""

TIMEOUT_HELP = ("give up when no block arrives for S seconds: from the start (not found) or mid-transfer "
                f"(default {FETCH_TIMEOUT:g}; a DHT lookup alone may take 30)")

ADD_HELP = """\
Import a file, or a directory tree (as `ipfs add -r`), into the block store and
print its CID. The DAG and CID are byte for byte those `ipfs add` makes with the
same options: 256 KiB chunks, balanced DAG of 174 links per node, CIDv0 (Qm...)
by default; --cid-version 1 gives bafy.../bafk... with raw leaves (as kubo,
unless --no-raw-leaves). The root is pinned unless --no-pin or --only-hash.

""" + STORE_NOTE + """
examples:
  p2pcompute add data.bin
  p2pcompute add --cid-version 1 --raw-leaves photos/
  CID=$(p2pcompute add --only-hash big.iso)
"""


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("add", help="import a file or directory; print its CID (as `ipfs add`)",
                       description=ADD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("path", metavar="FILE|DIR", type=Path, help="what to import (a directory recursively)")
    a.add_argument("--cid-version", type=int, choices=[0, 1], default=0, help="CID version (default 0)")
    a.add_argument("--raw-leaves", action=argparse.BooleanOptionalAction, default=None,
                   help="store file chunks as raw blocks (default: on for CIDv1, off for CIDv0, as kubo)")
    a.add_argument("--only-hash", action="store_true", help="compute the CID without storing anything")
    a.add_argument("--hidden", action="store_true", help="include files whose names start with a dot")
    a.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the root (GC may remove it)")
    _common(a)
    a.set_defaults(func=cmd_add)

    c = sub.add_parser("cat", help="write a file's bytes to stdout (fetched from peers if missing here)",
                       description="Write the bytes of the UnixFS file CID to stdout, verified block by "
                       "block.\n\n" + STORE_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("cid", metavar="CID")
    c.add_argument("--offset", type=int, default=0, help="first byte to write (default 0)")
    c.add_argument("--length", type=int, help="number of bytes to write (default: to the end)")
    c.add_argument("--timeout", type=float, default=FETCH_TIMEOUT, metavar="S", help=TIMEOUT_HELP)
    add_data_dir(c)
    c.set_defaults(func=cmd_cat)

    g = sub.add_parser("get", help="write a file or directory to a path (fetched from peers if missing here)",
                       description="Write the UnixFS file or directory CID to PATH, verified block by "
                       "block.\n\n" + STORE_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("cid", metavar="CID")
    g.add_argument("-o", "--output", type=Path, required=True, metavar="PATH", help="where to write it (must not exist)")
    g.add_argument("--pin", action="store_true", help="also pin it here (and announce it), so gc keeps it")
    g.add_argument("--timeout", type=float, default=FETCH_TIMEOUT, metavar="S", help=TIMEOUT_HELP)
    _common(g)
    g.set_defaults(func=cmd_get)

    car = sub.add_parser("car", help="export or import CAR files (a DAG's blocks in one file)")
    car_sub = car.add_subparsers(dest="car_command", metavar="ACTION")
    car.set_defaults(func=lambda args: (car.print_help(), 2)[1])
    ex = car_sub.add_parser("export", help="write the DAG under CID as a CARv1 file",
                            description="Write every block of the DAG under CID, depth-first, as a CARv1 "
                            "file with CID as its root (as `ipfs dag export`).")
    ex.add_argument("cid", metavar="CID")
    ex.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    _common(ex)
    ex.set_defaults(func=cmd_car_export)
    im = car_sub.add_parser("import", help="store the blocks of a CARv1 file (each verified) and pin its roots",
                            description="Read a CARv1 file, check every block against its CID, store the "
                            "blocks and pin the roots whose DAG is complete (as `ipfs dag import`).")
    im.add_argument("file", type=Path, metavar="FILE")
    im.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the roots")
    _common(im)
    im.set_defaults(func=cmd_car_import)

    pn = sub.add_parser("pin", help="pin data so gc keeps it: pin add|ls|rm (as `ipfs pin`)")
    pn_sub = pn.add_subparsers(dest="pin_command", metavar="ACTION")
    pn.set_defaults(func=lambda args: (pn.print_help(), 2)[1])
    pa = pn_sub.add_parser("add", help="pin CID (fetched from peers first if missing here) and announce it")
    pa.add_argument("cid", metavar="CID")
    pa.add_argument("--timeout", type=float, default=FETCH_TIMEOUT, metavar="S", help=TIMEOUT_HELP)
    _common(pa)
    pa.set_defaults(func=cmd_pin_add)
    pl = pn_sub.add_parser("ls", help="list the pinned roots and the store's size")
    _common(pl)
    pl.set_defaults(func=cmd_pins)
    pr = pn_sub.add_parser("rm", help="unpin CID (its blocks go at the next gc)")
    pr.add_argument("cid", metavar="CID")
    _common(pr)
    pr.set_defaults(func=cmd_unpin)

    st = sub.add_parser("storage", help="the local block store: pins and garbage collection")
    st_sub = st.add_subparsers(dest="storage_command", metavar="ACTION")
    st.set_defaults(func=lambda args: (st.print_help(), 2)[1])
    gc = st_sub.add_parser("gc", help="delete every block that no pin reaches")
    _common(gc)
    gc.set_defaults(func=cmd_gc)
    pins = st_sub.add_parser("pins", help="list the pinned roots (the same as `pin ls`)")
    _common(pins)
    pins.set_defaults(func=cmd_pins)
    un = st_sub.add_parser("unpin", help="unpin a root (the same as `pin rm`)")
    un.add_argument("cid", metavar="CID")
    _common(un)
    un.set_defaults(func=cmd_unpin)


def _common(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    add_json_flag(p)


def _store(args: argparse.Namespace):
    from ..node.config import default_data_dir
    from ..storage.blockstore import Blockstore

    return Blockstore.for_data_dir(args.data_dir or default_data_dir())


def _cid(text: str):
    from ..storage.cid import Cid

    return Cid.parse(text)


@contextlib.contextmanager
def _progress(total: int | None, label: str, enabled: bool) -> Iterator:
    """Yield an ``advance(n)`` callable; a rich bar on stderr when enabled and on a terminal."""
    if not enabled or not err_console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _tree_size(path: Path, hidden: bool) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        if not hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            files = [f for f in files if not f.startswith(".")]
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def cmd_add(args: argparse.Namespace) -> int:
    from ..storage.importer import import_path

    if not args.path.exists() and not args.path.is_symlink():
        raise UserError(f"{args.path} does not exist")
    options = {"cid_version": args.cid_version, "raw_leaves": args.raw_leaves, "hidden": args.hidden}
    total = _tree_size(args.path, args.hidden)
    with _progress(total, f"adding {args.path.name}", total >= PROGRESS_MIN and not args.json) as advance:
        if args.only_hash:
            result = import_path(args.path, None, progress=advance, **options)
            pinned = False
        else:
            store = _store(args)
            with store.session():
                result = import_path(args.path, lambda cid, data: store.put(cid, data, verified=True),
                                     progress=advance, **options)
                if args.pin:
                    store.pin(result.cid)
            pinned = args.pin
    announced = pinned and _tell_daemon(args, result.cid)
    if args.json:
        print_json({"cid": str(result.cid), "size": result.size, "blocks": result.blocks,
                    "path": str(args.path), "pinned": pinned, "stored": not args.only_hash,
                    "announced": announced})
    else:
        print(result.cid)
    return 0


def _tell_daemon(args: argparse.Namespace, root) -> bool:
    """If a daemon runs on this data dir, have it pin ``root`` and announce it in the DHT."""
    from ..errors import P2PComputeError
    from ..node.client import ControlClient
    from ..node.config import default_data_dir

    try:
        client = ControlClient(args.data_dir or default_data_dir(), timeout=60)
        return bool(client._call("POST", "/v1/pin", {"cid": str(root)}).get("announced"))
    except P2PComputeError:
        return False  # no daemon: the blocks are here, pinned; a daemon announces them when it starts


def _ensure_local(args: argparse.Namespace, store, root, *, pin: bool = False) -> None:
    """Bring ``root``'s DAG here through the daemon (DHT providers + bitswap) if blocks are missing."""
    from ..errors import StorageError

    try:
        for _ in store.walk(root):
            pass
        return
    except StorageError:
        pass
    daemon_fetch(args.data_dir, root, pin=pin, timeout=args.timeout, show=not getattr(args, "json", False))


def daemon_fetch(data_dir, root, *, pin: bool, timeout: float, show: bool) -> dict:
    """Have the daemon of ``data_dir`` fetch ``root``, with a status line on stderr while it searches.

    The request streams the daemon's progress; leaving (Ctrl-C) closes it, which stops the daemon's fetch.
    """
    import json

    import httpx

    from ..node.client import ControlClient
    from ..node.config import default_data_dir

    if not 0 < timeout <= 86400:
        raise UserError("--timeout must be over 0 and at most 86400 seconds")
    try:
        client = ControlClient(data_dir or default_data_dir())
    except UserError:
        raise UserError(f"{root} is not (wholly) in the local blockstore and no daemon runs to fetch it: "
                        "start one with `p2pcompute join`") from None
    body = {"cid": str(root), "pin": pin, "timeout": timeout, "progress": True}
    status = err_console.status(f"looking for {root}…") if show and err_console.is_terminal else None
    result: dict = {}
    try:
        with contextlib.ExitStack() as stack:
            if status is not None:
                stack.enter_context(status)
            resp = stack.enter_context(client._http.stream(
                "POST", "/v1/fetch", json=body, timeout=httpx.Timeout(30, read=timeout + 60)))
            if resp.status_code != 200:
                resp.read()
                raise UserError(_error_of(resp))
            for line in resp.iter_lines():
                event = json.loads(line) if line.strip() else {}
                if event.get("phase") == "error":
                    raise UserError(event.get("error") or "the fetch failed")
                if event.get("phase") == "done":
                    result = event
                elif status is not None:
                    status.update(_describe(root, event))
    except httpx.ConnectError:
        raise UserError(f"the daemon of {client.data_dir} does not answer at {client.url}: is it running? "
                        "(`p2pcompute join`)") from None
    except httpx.HTTPError as exc:
        raise UserError(f"lost the daemon while fetching {root}: {exc}") from None
    finally:
        client.close()
    if not result:
        raise UserError(f"the daemon stopped answering while fetching {root}")
    return result


def _describe(root, event: dict) -> str:
    if event.get("phase") == "fetching":
        return f"fetching {root}: {event.get('blocks', 0)} block(s), {_size(event.get('bytes', 0))}"
    if event.get("done"):
        return f"asking peers for {root} ({event.get('providers', 0)} provider(s) in the DHT)…"
    return f"looking for providers of {root} in the DHT…"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _error_of(resp) -> str:
    try:
        return str(resp.json()["error"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or f"the daemon answered {resp.status_code}"


def cmd_cat(args: argparse.Namespace) -> int:
    from ..storage import exporter

    store = _store(args)
    root = _cid(args.cid)
    _ensure_local(args, store, root)
    kind = exporter.stat(store.get, root).kind
    if kind not in ("file", "raw"):
        raise UserError(f"{root} is a {kind}, not a file: use `p2pcompute get {root} -o PATH`")
    if args.offset < 0 or (args.length is not None and args.length < 0):
        raise UserError("--offset and --length must not be negative")
    out = sys.stdout.buffer
    for piece in exporter.iter_file(store.get, root, args.offset, args.length):
        out.write(piece)
    out.flush()
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from ..storage import exporter

    store = _store(args)
    root = _cid(args.cid)
    if args.output.exists() or args.output.is_symlink():
        raise UserError(f"{args.output} already exists: choose a new path")
    _ensure_local(args, store, root)
    if args.pin:
        store.pin(root)
        _tell_daemon(args, root)
    info = exporter.stat(store.get, root)
    total = info.size if info.kind in ("file", "raw") else None
    with _progress(total, f"getting {root}", not args.json) as advance:
        files, size = _write_tree(store, root, args.output, advance, depth=0)
    if args.json:
        print_json({"cid": str(root), "path": str(args.output), "kind": info.kind, "files": files, "bytes": size,
                    "pinned": args.pin})
    else:
        console.print(f"wrote {root} to {args.output} ({files} file(s), {size} bytes)", highlight=False)
    return 0


def _write_tree(store, cid, path: Path, advance, depth: int) -> tuple[int, int]:
    from ..errors import BadBlock
    from ..storage import exporter

    if depth > 64:
        raise BadBlock(f"{cid}: directories nested deeper than 64")
    kind = exporter.stat(store.get, cid).kind
    if kind == "directory":
        path.mkdir()
        files = size = 0
        for entry in exporter.list_directory(store.get, cid):
            f, s = _write_tree(store, entry.cid, path / entry.name, advance, depth + 1)
            files, size = files + f, size + s
        return files, size
    if kind == "symlink":
        os.symlink(os.fsdecode(exporter.read_symlink(store.get, cid)), path)
        return 1, 0
    tmp = path.with_name(f".{path.name}.part")
    size = 0
    try:
        with open(tmp, "wb") as f:
            for piece in exporter.iter_file(store.get, cid):
                f.write(piece)
                size += len(piece)
                advance(len(piece))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return 1, size


def cmd_car_export(args: argparse.Namespace) -> int:
    from ..storage.car import export_dag

    store = _store(args)
    root = _cid(args.cid)
    tmp = args.output.with_name(f".{args.output.name}.part")
    try:
        with open(tmp, "wb") as f, _progress(None, f"exporting {root}", not args.json) as advance:
            blocks = export_dag(store.get, root, f, progress=advance)
        os.replace(tmp, args.output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if args.json:
        print_json({"root": str(root), "file": str(args.output), "blocks": blocks})
    else:
        console.print(f"wrote {blocks} block(s) of {root} to {args.output}", highlight=False)
    return 0


def cmd_car_import(args: argparse.Namespace) -> int:
    from ..errors import BlockNotFound
    from ..storage.car import CarReader

    store = _store(args)
    if not args.file.is_file():
        raise UserError(f"{args.file} is not a file")
    pinned, incomplete = [], []
    with open(args.file, "rb") as f, store.session():
        reader = CarReader(f)
        new = 0
        for cid, data in reader:
            new += store.put(cid, data, verified=True)
        for root in reader.roots if args.pin else ():
            try:
                store.pin(root)
                pinned.append(str(root))
            except BlockNotFound:
                incomplete.append(str(root))
    result = {"roots": [str(r) for r in reader.roots], "blocks": reader.blocks, "new_blocks": new,
              "bytes": reader.bytes, "pinned": pinned, "incomplete": incomplete}
    if args.json:
        print_json(result)
        return 0
    for root in reader.roots:
        print(root)
    err_console.print(f"{reader.blocks} block(s) verified, {new} new; pinned {len(pinned)} root(s)"
                      + (f"; not pinned (DAG incomplete): {', '.join(incomplete)}" if incomplete else ""),
                      highlight=False)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    store = _store(args)
    removed, freed = store.gc()
    if args.json:
        print_json({"removed": removed, "freed_bytes": freed, "total_bytes": store.total_bytes})
    else:
        console.print(f"removed {removed} block(s), freed {freed} bytes; {store.total_bytes} bytes remain",
                      highlight=False)
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    store = _store(args)
    pins = sorted(str(c) for c in store.pins)
    if args.json:
        print_json({"pins": pins, "total_bytes": store.total_bytes, "blocks": len(store)})
    else:
        for cid in pins:
            print(cid)
        err_console.print(f"{len(pins)} pin(s); {len(store)} block(s), {store.total_bytes} bytes", highlight=False)
    return 0


def cmd_pin_add(args: argparse.Namespace) -> int:
    store = _store(args)
    root = _cid(args.cid)
    _ensure_local(args, store, root)
    store.pin(root)
    announced = _tell_daemon(args, root)
    if args.json:
        print_json({"pinned": str(root), "announced": announced})
    else:
        console.print(f"pinned {root}" + (" and announced it" if announced else ""), highlight=False)
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    store = _store(args)
    root = _cid(args.cid)
    if not store.unpin(root):
        raise UserError(f"{root} is not pinned (see `p2pcompute pin ls`)")
    if args.json:
        print_json({"unpinned": str(root)})
    else:
        console.print(f"unpinned {root}; run `p2pcompute storage gc` to free its blocks", highlight=False)
    return 0
