"""``status``, ``id``, ``peers``, ``ping``, ``connect``, ``stop``: commands for a running daemon."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..node.client import ControlClient
from ..node.config import default_data_dir
from .daemon import add_data_dir
from .output import add_json_flag, console, peer_labels, print_json


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="show the local daemon: peer ID, addresses, uptime, peers, resources",
                       description="Ask the daemon of the data dir for its status.")
    add_data_dir(s)
    add_json_flag(s)
    s.set_defaults(func=cmd_status)

    i = sub.add_parser("id", help="print this peer's ID and the addresses it announces",
                       description="Print the peer ID of the daemon of the data dir and the addresses it "
                       "announces: give one of them to others as --bootstrap, or to `p2pcompute connect`.")
    add_data_dir(i)
    add_json_flag(i)
    i.set_defaults(func=cmd_id)

    p = sub.add_parser("peers", help="list the peers the local daemon knows, connected ones first",
                       description="List the daemon's peer table: connection state, addresses, declared resources.")
    add_data_dir(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_peers)

    g = sub.add_parser("ping", help="measure the round trip from the local daemon to a peer",
                       description="Send pings from the local daemon to PEER_ID and print the round-trip times. "
                                   "A peer the daemon is not connected to is looked up in the DHT first.")
    g.add_argument("peer", metavar="PEER_ID", help="the peer to ping (12D3KooW...), connected or not")
    g.add_argument("-n", "--count", type=int, default=3, help="how many pings (default 3)")
    add_data_dir(g)
    add_json_flag(g)
    g.set_defaults(func=cmd_ping)

    c = sub.add_parser("connect", help="connect the local daemon to a peer at an address",
                       description="Dial ADDR from the local daemon (as a bootstrap peer is dialled) and "
                       "print the peer ID that answered.")
    c.add_argument("address", metavar="ADDR", help="the peer's address, /ip4/HOST/tcp/PORT/p2p/12D3KooW...")
    add_data_dir(c)
    add_json_flag(c)
    c.set_defaults(func=cmd_connect)

    s = sub.add_parser("stop", help="stop the daemon of a data dir and wait until it has exited",
                       description="Stop the daemon of the data dir as Ctrl-C does (it says goodbye to its "
                       "peers and removes its api files) and wait until it has exited.")
    s.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a clean stop (default 30)")
    s.add_argument("--force", action="store_true",
                   help="if it has not stopped by then, end it at once (no goodbye to peers)")
    add_data_dir(s)
    add_json_flag(s)
    s.set_defaults(func=cmd_stop)


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data dir a command points at (flag, else P2PCOMPUTE_HOME, else ~/.p2pcompute); no config read."""
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def client_for(args: argparse.Namespace) -> ControlClient:
    return ControlClient(data_dir_of(args))


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_status(args: argparse.Namespace) -> int:
    status = client_for(args).status()
    if args.json:
        print_json(status)
        return 0
    res = status["resources"]
    console.print(f"[bold]peer[/]       {status['peer_id']}")
    console.print(f"agent      {status['agent']}   up {status['uptime_s']:.0f} s")
    console.print(f"peers      {status['connected_peers']} connected, {status['known_peers']} known")
    labels = ", ".join(f"{k}={v}" for k, v in res["labels"].items()) or "none"
    console.print(f"offers     {res['cpus']:g} CPUs, {human_bytes(res['memory'])} memory, labels: {labels}")
    console.print(f"messages   {status['messages_sent']} sent, {status['messages_received']} received")
    console.print("addresses")
    for a in status["addresses"]:
        console.print(f"  {a}", highlight=False)
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    peers = client_for(args).peers()
    if args.json:
        print_json(peers)
        return 0
    if not peers:
        console.print("no peers known yet (is a bootstrap peer reachable? see `p2pcompute status`)")
        return 0
    from rich.table import Table

    ids = peer_labels([p["peer_id"] for p in peers])
    table = Table("peer", "state", "address", "cpus", "memory", "labels", "last seen")
    table.columns[0].no_wrap = True  # a peer ID is never cut: peer_labels shortens it uniquely instead
    table.columns[0].min_width = max(len(label) for label in ids.values())
    for column in table.columns[1:]:
        column.overflow = "fold"  # wrap addresses and the rest rather than cut them
    for p in peers:
        colour = {"alive": "green", "connected": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
        state = p.get("state", "known")
        state = f"[{colour[state]}]{state}[/]" if state in colour else state
        if p["connected"] and p.get("state") not in ("connected", None):
            state += " (connected)"
        seen = "-" if p["last_seen_s_ago"] is None else f"{p['last_seen_s_ago']:.0f} s ago"
        table.add_row(ids[p["peer_id"]], state, (p["addresses"] or ["-"])[0],
                      "-" if p["cpus"] is None else f"{p['cpus']:g}", human_bytes(p["memory"]),
                      ", ".join(f"{k}={v}" for k, v in p["labels"].items()), seen)
    console.print(table)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    status = client_for(args).status()
    info = {"peer_id": status["peer_id"], "addresses": status["addresses"]}
    if args.json:
        print_json(info)
        return 0
    console.print(info["peer_id"], highlight=False)
    for a in info["addresses"]:
        console.print(f"  {a}", highlight=False)
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    result = client_for(args).connect(args.address)
    if args.json:
        print_json(result)
        return 0
    console.print(f"connected to {result['peer_id']}", highlight=False)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from ..node.daemon import stop_daemon

    data_dir = data_dir_of(args)
    pid = stop_daemon(data_dir, timeout=args.timeout, force=args.force)
    if args.json:
        print_json({"stopped": pid, "data_dir": str(data_dir)})
    else:
        console.print(f"stopped the daemon of {data_dir} (pid {pid})", highlight=False)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    client = client_for(args)
    results = [client.ping(args.peer) for _ in range(max(1, args.count))]
    if args.json:
        print_json(results)
        return 0
    for r in results:
        console.print(f"pong from {r['peer']}: {r['rtt_ms']:.2f} ms", highlight=False)
    return 0
