"""``fetch URI`` and ``data register|show|sign``: bring data in from any source; the data registry.

``fetch`` works on the data dir's block store directly (no daemon needed),
except for ``ipfs://`` CIDs the store lacks, which the daemon fetches from
the network (DHT providers, bitswap). ``data ...`` talks to its registry service.
"""

from __future__ import annotations

import argparse
import re

from ..errors import UserError
from .daemon import add_data_dir
from .output import add_json_flag, console, err_console, print_json

FETCH_HELP = """\
Fetch the data URI names, verify it, import it into the data dir's block store
and print its CID. URI is one of:
  ipfs://CID[/path]                 local store, else peers (the daemon's bitswap)
  https://host/file                 a web server (--header, --range, --credentials)
  https://gw/ipfs/CID?format=car    a trustless gateway: every block checked
  kubo-rpc://HOST:PORT/CID          a kubo daemon's RPC API (or ipfs://CID --ipfs-api URL)
  PATH or file:///PATH              a local file
--expect CID|sha256:HEX refuses data that does not match.

examples:
  p2pcompute fetch https://example.org/data.npy --expect sha256:9f86d0...
  p2pcompute fetch ipfs://bafy... --ipfs-api http://127.0.0.1:5001
  p2pcompute fetch https://example.org/big.bin --range 0-1048575 --credentials env:DATA_TOKEN
"""


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fetch", help="fetch data from ipfs://, http(s), a gateway, kubo or a file; print its CID",
                       description=FETCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("uri", metavar="URI")
    f.add_argument("--ipfs-api", metavar="URL", help="fetch ipfs:// through this kubo RPC API (http://127.0.0.1:5001)")
    f.add_argument("--header", action="append", default=[], metavar="K:V", help="extra HTTP header (repeatable)")
    f.add_argument("--credentials", metavar="env:VAR|file:NAME",
                   help="send the secret in $VAR or <data dir>/credentials/NAME as Authorization")
    f.add_argument("--range", metavar="A-B", help="inclusive byte range, e.g. 0-1023 or 4096-")
    f.add_argument("--expect", metavar="CID|sha256:HEX", help="refuse data that does not match")
    f.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the result")
    f.add_argument("--max-size", type=int, default=64 << 30, metavar="BYTES", help="refuse more (default 64 GiB)")
    f.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="per network operation; for ipfs://, no block for this long fails it (default 30)")
    add_data_dir(f)
    add_json_flag(f)
    f.set_defaults(func=cmd_fetch)

    d = sub.add_parser("data", help="the data registry: register data with metadata, show it, sign links")
    d_sub = d.add_subparsers(dest="data_command", metavar="ACTION")
    d.set_defaults(func=lambda args: (d.print_help(), 2)[1])
    r = d_sub.add_parser("register", help="register a CID or URL with metadata; print its handle",
                         description="Sign a registry record for CID|URL with this peer's key, keep it and "
                         "publish it in the DHT so any peer resolves the handle.")
    r.add_argument("ref", metavar="CID|URL")
    r.add_argument("--dtype", help="element type, e.g. float32")
    r.add_argument("--shape", help="comma-separated dimensions, e.g. 1000,3")
    r.add_argument("--partitioning", help="how the data splits, e.g. rows:4")
    r.add_argument("--checksum", action="append", default=[], metavar="ALGO:HEX", help="e.g. sha256:... (repeatable)")
    r.add_argument("--meta", action="append", default=[], metavar="K=V", help="free metadata (repeatable)")
    _common(r)
    r.set_defaults(func=cmd_register)
    s = d_sub.add_parser("show", help="show the verified record of a handle (from this peer or the DHT)")
    s.add_argument("handle", metavar="HANDLE")
    _common(s)
    s.set_defaults(func=cmd_show)
    g = d_sub.add_parser("sign", help="print a short-lived link that serves the data (with byte ranges)",
                         description="Make a signed link to the data of HANDLE (or --cid): anyone who can reach "
                         "the daemon's API reads it without the API token until it expires.")
    g.add_argument("handle", metavar="HANDLE", nargs="?")
    g.add_argument("--cid", help="sign a link to a CID instead of a handle")
    g.add_argument("--ttl", default="10m", help="lifetime: 90s, 10m, 2h, 1d (default 10m)")
    g.add_argument("--range", metavar="A-B", help="allow only these bytes")
    _common(g)
    g.set_defaults(func=cmd_sign)


def _common(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)
    add_json_flag(p)


def parse_ttl(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhd]?)\s*", text or "")
    if m is None:
        raise UserError(f"--ttl {text!r}: write a number with s, m, h or d, e.g. 10m")
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _pairs(items: list[str], sep: str, what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise UserError(f"{what} {item!r}: write KEY{sep}VALUE")
        out[key.strip()] = value.strip()
    return out


def _client(args: argparse.Namespace):
    from ..node.client import ControlClient
    from ..node.config import Config

    return ControlClient(Config.load(args.data_dir).data_dir)


# --- fetch --------------------------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace) -> int:
    import trio

    from ..node.config import default_data_dir
    from ..storage.blockstore import Blockstore
    from ..storage.dataref import DataRef
    from ..storage.sources import Limits, fetch
    from .storage_cmd import _progress, daemon_fetch

    data_dir = args.data_dir or default_data_dir()
    ref = DataRef.parse(args.uri, ipfs_api=args.ipfs_api, headers=_pairs(args.header, ":", "--header"),
                        credentials=args.credentials, range=args.range, expect=args.expect)
    store = Blockstore.for_data_dir(data_dir)

    async def network(cid) -> None:  # only for ipfs:// data the store lacks: the daemon fetches it (DHT + bitswap)
        await trio.to_thread.run_sync(lambda: daemon_fetch(data_dir, cid, pin=False, timeout=args.timeout,
                                                           show=False))  # fetch pins what it keeps

    limits = Limits(max_bytes=args.max_size, timeout=args.timeout)
    with _progress(ref.range.length if ref.range else None, f"fetching {ref.kind}", not args.json) as advance:
        result = trio.run(lambda: fetch(ref, store, data_dir=data_dir, limits=limits, progress=advance,
                                        network=network, pin=args.pin))
    if args.json:
        print_json({"cid": str(result.cid), "root": str(result.root), "size": result.size, "source": result.kind,
                    "transferred": result.transferred, "pinned": result.pinned, "ref": ref.to_json()})
    else:
        print(result.cid)
    return 0


# --- registry ------------------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    body: dict = {"ref": args.ref}
    if args.dtype:
        body["dtype"] = args.dtype
    if args.shape:
        try:
            body["shape"] = [int(x) for x in args.shape.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--shape {args.shape!r}: write integers separated by commas, e.g. 1000,3") from None
    if args.partitioning:
        body["partitioning"] = args.partitioning
    if args.checksum:
        body["checksums"] = _pairs(args.checksum, ":", "--checksum")
    if args.meta:
        body["meta"] = _pairs(args.meta, "=", "--meta")
    answer = _client(args)._call("POST", "/data/register", json=body)
    if args.json:
        print_json(answer)
        return 0
    print(answer["handle"])
    if not answer["dht"].get("published"):
        console.print(f"[yellow]kept on this peer only[/]: {answer['dht'].get('reason')}", highlight=False)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    answer = _client(args)._call("GET", f"/data/{args.handle}")
    if args.json:
        print_json(answer)
        return 0
    record = answer["record"]
    console.print(f"[bold]handle[/]   {answer['handle']}  (signature verified, from {answer['source']})",
                  highlight=False)
    console.print(f"ref      {record['ref']['uri']}", highlight=False)
    for key in ("dtype", "shape", "partitioning", "checksums", "meta", "owner", "created"):
        if key in record:
            console.print(f"{key:<8} {record[key]}", highlight=False)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    if (args.handle is None) == (args.cid is None):
        raise UserError("give a HANDLE or --cid CID (one of them)")
    body: dict = {"ttl": parse_ttl(args.ttl)}
    body.update({"handle": args.handle} if args.handle else {"cid": args.cid})
    if args.range:
        body["range"] = args.range
    client = _client(args)
    answer = client._call("POST", "/data/sign", json=body)
    url = answer.get("url") or client.url.rstrip("/") + answer["path"]
    if args.json:
        print_json(answer | {"url": url})
    else:
        print(url)
        if not answer.get("url"):
            err_console.print("note: this link works on this machine only; set links_listen "
                              "(e.g. P2PCOMPUTE_LINKS_LISTEN=0.0.0.0:8480) to serve links to others")
    return 0
