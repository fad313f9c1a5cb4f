"""``devnet`` (N real daemons on loopback until Ctrl-C) and ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
import time
from pathlib import Path

from rich.table import Table

from ..node.devnet import Devnet
from .output import add_json_flag, console, err_console, peer_labels, print_json

DEVNET_HELP = """\
Start N real peers on this machine, each a separate OS process with its own
data dir under --dir (default: a new temporary dir), listening on 127.0.0.1.
Peer 0 starts the network and the others bootstrap to it. Prints each peer's
ID, address and control API, then runs until Ctrl-C, which stops them all.

Talk to one of them with e.g. `p2pcompute peers --data-dir DIR/peer3`.
"""

DEMO_HELP = """\
Start a small local network (a devnet of --peers real daemons on loopback),
wait until every peer has found every other, then show it working:
  1. membership: peer 0's view of the others (state, capabilities) and round trips;
  2. data: a random file added on one peer is fetched by another through the DHT
     and bitswap, and checked byte for byte;
  3. compute: an operator graph runs on a peer's sandboxed executor (its inputs
     sent as CIDs) and matches the same graph run here;
  4. a job: cloud detection mapped over 4 scenes, submitted to one peer and run
     across the network; each cloud fraction is checked against numpy here.
With --pipeline it runs instead the two-stage pipeline over 100 small scenes:
cloud detection on each, then a PNG mask only for scenes more than half cloudy
(a `when` condition), and checks that exactly those scenes got one.
Then it stops them. Needs no external daemon and nothing but this package.
"""


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("devnet", help="run N real peers on loopback until Ctrl-C",
                       description=DEVNET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--peers", type=int, default=5, metavar="N", help="number of peers (default 5)")
    d.add_argument("--dir", type=Path, metavar="DIR", help="where the peers' data dirs go (default: a temp dir, removed on exit)")
    d.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the peers' log level")
    add_json_flag(d)
    d.set_defaults(func=cmd_devnet)

    m = sub.add_parser("demo", help="run a local network end to end and show what it does",
                       description=DEMO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--peers", type=int, default=4, metavar="N", help="number of peers (default 4, at least 3)")
    m.add_argument("--pipeline", action="store_true",
                   help="run the two-stage pipeline over 100 small scenes instead of steps 2-4")
    add_json_flag(m)
    m.set_defaults(func=cmd_demo)


def _peer_table(net: Devnet) -> Table:
    ids = peer_labels([(p.status or {}).get("peer_id", "?") for p in net.peers])
    table = Table("#", "peer ID", "address", "API", "data dir")
    table.columns[1].no_wrap, table.columns[1].min_width = True, max(map(len, ids.values()), default=1)
    for p in net.peers:
        s = p.status or {}
        addr = next((a for a in s.get("addresses", []) if "/127.0.0.1/" in a), "-")
        table.add_row(str(p.index), ids[s.get("peer_id", "?")], addr.split("/p2p/")[0], _api_url(p.data_dir), str(p.data_dir))
    return table


def _api_url(data_dir: Path) -> str:
    try:
        return (data_dir / "api").read_text().strip()
    except OSError:
        return "-"


def _start(net: Devnet, json_mode: bool) -> None:
    if json_mode:
        net.start()
        if not net.wait_connected():
            err_console.print("warning: not every peer connected to and saw every other alive within 30 s")
        return
    with console.status(f"starting {net.n} peers…") as status:
        net.start(progress=lambda i: status.update(f"peer {i + 1}/{net.n} serving…"))
        status.update("waiting until every peer sees every other…")
        if not net.wait_connected():
            err_console.print("[yellow]warning:[/] not every peer connected to and saw every other alive within 30 s")


@contextlib.contextmanager
def _step(args: argparse.Namespace, text: str):
    if args.json:
        yield
    else:
        with console.status(text):
            yield


@contextlib.contextmanager
def _stopped_by_signals(net: Devnet):
    """SIGTERM and SIGHUP stop the devnet as Ctrl-C does (KeyboardInterrupt); its peers stop with it.

    While the peers are being stopped, a second signal kills those still running.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, lambda signum, frame: net.kill())
        try:
            net.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)


def cmd_devnet(args: argparse.Namespace) -> int:
    root = args.dir or Path(tempfile.mkdtemp(prefix="p2pcompute-devnet-"))
    net = Devnet(root, args.peers, log_level=args.log_level)
    try:
        with _stopped_by_signals(net):
            return _run_devnet(net, args, root)
    except KeyboardInterrupt:
        return 0
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _run_devnet(net: Devnet, args: argparse.Namespace, root: Path) -> int:
    try:
        _start(net, args.json)
        if args.json:
            print_json([{"index": p.index, "data_dir": str(p.data_dir), "api": _api_url(p.data_dir), **(p.status or {})}
                        for p in net.peers])
        else:
            console.print(_peer_table(net))
            console.print(f"{net.n} peers running; logs in {root}/peer*/daemon.log. Ctrl-C stops them all.")
        while True:
            time.sleep(1.0)
            for p in net.dead():
                err_console.print(f"[red]peer {p.index} exited (code {p.process.returncode}):[/]\n{p.log_tail()}")
                net.peers.remove(p)
    except KeyboardInterrupt:
        err_console.print("stopping…")  # stderr: stdout holds only the table or the JSON
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="p2pcompute-demo-"))
    net = Devnet(root, max(3, args.peers), log_level="warning")
    try:
        with _stopped_by_signals(net):
            return _run_demo(net, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_demo(net: Devnet, args: argparse.Namespace) -> int:
    from ..node import demo

    try:
        _start(net, args.json)
        if args.pipeline:
            return _run_pipeline(net, args)
        with _step(args, "1/4 membership: peer 0's view, pings…"):
            members = demo.membership_step(net)
        with _step(args, "2/4 data: add a file on one peer, fetch it from another…"):
            data = demo.data_step(net)
        with _step(args, "3/4 compute: run a graph on a peer's sandboxed executor…"):
            compute = demo.compute_step(net)
        with _step(args, "4/4 a job: cloud detection over 4 scenes, submitted to one peer, run across the network…"):
            job = demo.job_step(net)
        ok = data["intact"] and compute["identical"] and job["correct"]
        if args.json:
            print_json({"peers": [p.status for p in net.peers], "membership": members, "data": data,
                        "compute": compute, "job": job})
            return 0 if ok else 1
        console.print(_peer_table(net))
        ids = peer_labels([row["peer_id"] for row in members["peer0_view"]])
        table = Table("peer (as seen by peer 0)", "state", "cpus", "arch", "labels", "median RTT (5 pings)")
        table.columns[0].no_wrap, table.columns[0].min_width = True, max(map(len, ids.values()), default=1)
        for row in members["peer0_view"]:
            rtt = members["median_rtt_ms"].get(row["peer_id"])
            table.add_row(ids[row["peer_id"]], row.get("state", "known"),
                          "-" if row["cpus"] is None else f"{row['cpus']:g}", row.get("arch", ""),
                          ", ".join(f"{k}={v}" for k, v in row["labels"].items()),
                          "-" if rtt is None else f"{rtt:.2f} ms")
        console.print(table)
        console.print(f"data: {data['bytes'] >> 20} MiB added on peer {data['added_on']} as {data['cid']}; peer "
                      f"{data['fetched_by']} found {data['providers_found']} provider(s) in the DHT and fetched "
                      f"{data['blocks']} blocks over bitswap in {data['seconds']:.2f} s; "
                      f"bytes intact: {data['intact']}", highlight=False)
        console.print(f"compute: {compute['graph']} on peer {compute['peer']} = {compute['remote']:.6f} in "
                      f"{compute['seconds']:.2f} s; identical to the local result: {compute['identical']}",
                      highlight=False)
        fractions = ", ".join(f"{v:.4f}" for _, v in sorted(job["cloud_fractions"].items()))
        console.print(f"job: {job['tasks']} cloud-detection tasks (WebAssembly) submitted to peer {job['coordinator']}, "
                      f"run on peers {', '.join(map(str, job['ran_on_peers']))}, {job['state']} in "
                      f"{job['seconds']:.2f} s; cloud fractions {fractions}; equal to numpy's here: {job['correct']}"
                      + (f" ({job['reason']})" if job["reason"] else ""), highlight=False)
        console.print(f"{net.n} daemons on loopback did all of this over libp2p; all stopped now.")
        return 0 if ok else 1
    except Exception:
        for p in net.peers:
            err_console.print(f"[red]peer {p.index} log ({p.log_path}):[/]\n{p.log_tail()}")
        raise


def _run_pipeline(net: Devnet, args: argparse.Namespace) -> int:
    from ..node import demo

    with _step(args, "pipeline: 100 scenes, detect clouds, masks where more than half cloudy…"):
        result = demo.pipeline_step(net)
    if args.json:
        print_json({"peers": [p.status for p in net.peers], "pipeline": result})
        return 0 if result["correct"] else 1
    console.print(_peer_table(net))
    stages = "; ".join(f"{name}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                       for name, counts in result["stages"].items())
    per_peer = ", ".join(f"peer {p}: {n}" for p, n in sorted(result["tasks_per_peer"].items()))
    console.print(f"pipeline: {result['tasks']} tasks over {result['scenes']} scenes, submitted to peer "
                  f"{result['coordinator']}, {result['state']} in {result['seconds']:.1f} s ({stages}); tasks run by "
                  f"{per_peer}; masks made for exactly the {result['cloudy_scenes']} scenes more than half cloudy: "
                  f"{result['correct']}" + (f" ({result['reason']})" if result["reason"] else ""), highlight=False)
    return 0 if result["correct"] else 1
