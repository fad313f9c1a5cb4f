"""``dht find-peer``, ``dht providers``, ``dht provide``: the daemon's Kademlia DHT.

These talk to a running daemon (``p2pcompute join``) through its control API;
the daemon runs the lookups.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlencode

from ..node.client import ControlClient
from ..node.config import Config
from .daemon import add_data_dir
from .output import add_json_flag, console, print_json

KEYS_HELP = """\
keys: KEY is a CID (Qm..., bafy...) or any other text. A CID stands for its
multihash bytes, as in IPFS, so provider records are the ones kubo reads and
writes; other text stands for its UTF-8 bytes. Either way the point in the
DHT's 256-bit key space is the SHA-256 of those bytes, and the record lives on
the k peers whose IDs (also hashed with SHA-256) are closest to it by XOR.
"""

FIND_PEER_HELP = """\
Look PEER_ID up in the DHT: ask the peers closest to it (in XOR distance of
the SHA-256 of the IDs), then the ones they name, until the peer itself
answers or nobody closer is left. Prints the addresses the network knows for
it, whether the daemon is now connected to it, and the hops it took.

example:
  p2pcompute dht find-peer 12D3KooW...
"""

PROVIDERS_HELP = """\
List the peers that announced they hold KEY (ours first, then those found by
a GET_PROVIDERS lookup), with their addresses.

""" + KEYS_HELP + """
examples:
  p2pcompute dht providers QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u
  p2pcompute dht providers "dataset:landsat-2026-11"
"""

PROVIDE_HELP = """\
Announce that the daemon's peer holds KEY: an ADD_PROVIDER to the k peers
closest to the key, repeated every 22 hours while the daemon runs (records
expire after 48 hours). Prints how many peers took the announcement.

""" + KEYS_HELP + """
example:
  p2pcompute dht provide bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi
"""


class DhtClient(ControlClient):
    """The DHT routes of the control API (``DhtService.api_routes``)."""

    def find_peer(self, peer: str) -> dict:
        return self._call("GET", "/v1/dht/find-peer?" + urlencode({"peer": peer}))

    def providers(self, key: str, limit: int = 20) -> dict:
        return self._call("GET", "/v1/dht/providers?" + urlencode({"key": key, "limit": limit}))

    def provide(self, key: str) -> dict:
        return self._call("POST", "/v1/dht/provide", {"key": key})


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dht", help="find peers and providers in the Kademlia DHT; announce content",
                       description="Kademlia DHT operations, run by the local daemon.\n\n" + KEYS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = d.add_subparsers(dest="dht_command", metavar="COMMAND")

    f = dsub.add_parser("find-peer", help="find a peer's addresses", description=FIND_PEER_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("peer", metavar="PEER_ID", help="the peer to find (12D3KooW...)")
    _common(f, cmd_find_peer)

    p = dsub.add_parser("providers", help="list the peers that provide KEY", description=PROVIDERS_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key", metavar="KEY", help="a CID or any text (see above)")
    p.add_argument("-n", "--limit", type=int, default=20, help="at most this many providers (default 20)")
    _common(p, cmd_providers)

    a = dsub.add_parser("provide", help="announce that this peer provides KEY", description=PROVIDE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("key", metavar="KEY", help="a CID or any text (see above)")
    _common(a, cmd_provide)
    d.set_defaults(func=lambda args: (d.print_help(), 2)[1])


def _common(parser: argparse.ArgumentParser, func) -> None:
    add_data_dir(parser)
    add_json_flag(parser)
    parser.set_defaults(func=func)


def _client(args: argparse.Namespace) -> DhtClient:
    return DhtClient(Config.load(args.data_dir).data_dir, timeout=90.0)


def cmd_find_peer(args: argparse.Namespace) -> int:
    answer = _client(args).find_peer(args.peer)
    if args.json:
        print_json(answer)
        return 0 if answer["found"] else 1
    if not answer["found"]:
        console.print(f"{args.peer} was not found ({answer['queries']} peers asked)")
        return 1
    state = "connected" if answer["connected"] else "not connected"
    hops = "-" if answer["hops"] is None else answer["hops"]
    console.print(f"[bold]{answer['peer_id']}[/]  {state}, {hops} hops, {answer['queries']} peers asked")
    for addr in answer["addresses"] or ["(no address known)"]:
        console.print(f"  {addr}", highlight=False)
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    answer = _client(args).providers(args.key, args.limit)
    if args.json:
        print_json(answer)
        return 0
    if not answer["providers"]:
        console.print(f"no provider found for {args.key}")
        return 1
    for row in answer["providers"]:
        console.print(f"[bold]{row['peer_id']}[/]", highlight=False)
        for addr in row["addresses"]:
            console.print(f"  {addr}", highlight=False)
    return 0


def cmd_provide(args: argparse.Namespace) -> int:
    answer = _client(args).provide(args.key)
    if args.json:
        print_json(answer)
        return 0
    console.print(f"providing {args.key}: announced to {answer['announced_to']} of the "
                  f"{answer['closest']} closest peers; repeated every 22 h while the daemon runs")
    return 0
