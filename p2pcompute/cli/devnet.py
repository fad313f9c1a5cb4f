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

from ..errors import UserError
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
Start a local network (a devnet of --peers real daemons on loopback, 10 by
default), wait until every peer has found every other, then show it working:
  1. membership: peer 0's view of the others (state, capabilities) and round trips;
  2. the scene: a synthetic Landsat-style scene (5 bands; 10.5 MB as a GeoTIFF at
     the default 1024 px) is made here and added on one peer, which pins it and
     announces it in the DHT; another peer finds it there;
  3. compute: an operator graph runs on a peer's sandboxed executor (its inputs
     sent as CIDs) and matches the same graph run here;
  4. the job: cloud detection (WebAssembly) over the scene's CID is submitted to
     that other peer; it asks the DHT who holds the scene and runs the task there.
     The mask is written as a PNG to --output, and the cloud fraction and the
     result CIDs are printed; the fraction and the mask are checked against numpy.
Then it prints each step's wall time and stops the daemons (Ctrl-C stops them too).
With --pipeline it runs instead the two-stage pipeline over 100 small scenes:
cloud detection on each, then a PNG mask only for scenes more than half cloudy
(a `when` condition), and checks that exactly those scenes got one.
Needs no external daemon and nothing but this package.
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
    m.add_argument("--peers", type=int, metavar="N",
                   help="number of peers (default 10; 4 with --pipeline; at least 3)")
    m.add_argument("--scene-size", type=int, default=1024, metavar="PX",
                   help="the scene's width and height in pixels (default 1024: 10.5 MB; 64 to 4096)")
    m.add_argument("-o", "--output", type=Path, default=Path("p2pcompute-demo"), metavar="DIR",
                   help="where the cloud mask PNG is written (default ./p2pcompute-demo)")
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
    from ..node.demo import timed

    if not 64 <= args.scene_size <= 4096:
        raise UserError("--scene-size is 64 to 4096 pixels")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="p2pcompute-demo-"))
    net = Devnet(root, max(3, args.peers or (4 if args.pipeline else 10)), log_level="warning")
    timings: dict[str, float] = {}
    try:
        with _stopped_by_signals(net):
            code, report = _run_demo(net, args, timings)
            stopping = time.monotonic()
        timings["stop the daemons"] = round(time.monotonic() - stopping, 3)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: the {net.n} daemons are stopped")
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = round(time.monotonic() - started, 2)
    if args.json:
        print_json({**report, "timings_s": timings, "wall_seconds": wall})
        return code
    table = Table("step", "seconds", title="timings (wall clock, this machine)", title_justify="left")
    for step, seconds in timings.items():
        table.add_row(step, f"{seconds:.2f}")
    table.add_row("[b]all of `p2pcompute demo`[/]", f"[b]{wall:.2f}[/]")
    console.print(table)
    console.print(f"{net.n} daemons on loopback did all of this over libp2p; all stopped now.")
    return code


def _run_demo(net: Devnet, args: argparse.Namespace, timings: dict[str, float]) -> tuple[int, dict]:
    from ..node import demo

    try:
        with demo.timed(timings, f"start {net.n} daemons, wait until all see each other"):
            _start(net, args.json)
        if args.pipeline:
            return _run_pipeline(net, args, timings)
        holder, submitter = demo.roles(net)
        with _step(args, "1/4 membership: peer 0's view, pings…"), demo.timed(timings, "1 membership, 5 pings a peer"):
            members = demo.membership_step(net)
        with _step(args, f"2/4 the scene: made here, added on peer {holder.index}, looked up by peer "
                         f"{submitter.index}…"):
            scene = demo.scene_step(net, args.scene_size)
        timings["2 make the scene here (and numpy's detection)"] = scene["made_seconds"]
        timings[f"2 add it on peer {holder.index} (pinned, announced)"] = scene["add_seconds"]
        timings[f"2 peer {submitter.index} finds its provider in the DHT"] = scene["lookup_seconds"]
        with _step(args, "3/4 compute: run a graph on a peer's sandboxed executor…"), \
                demo.timed(timings, "3 a graph on a peer's executor"):
            compute = demo.compute_step(net)
        with _step(args, f"4/4 the job: cloud detection submitted to peer {submitter.index}…"):
            job = demo.job_step(net, scene, args.output)
        timings["4 the job: submit, place, run, results pulled"] = job["seconds"]
        if "results_seconds" in job:
            timings["4 read the results, write the PNG"] = job["results_seconds"]
        ok = compute["identical"] and job["correct"] and job["ran_on_holder"]
        report = {"peers": [p.status for p in net.peers], "membership": members, "scene": scene,
                  "compute": compute, "job": job}
        if not args.json:
            _print_demo(net, members, scene, compute, job)
        return (0 if ok else 1), report
    except Exception:
        for p in net.peers:
            err_console.print(f"[red]peer {p.index} log ({p.log_path}):[/]\n{p.log_tail()}")
        raise


def _print_demo(net: Devnet, members: dict, scene: dict, compute: dict, job: dict) -> None:
    holder, submitter = scene["holder"], scene["submitter"]
    view = {row["peer_id"]: row for row in members["peer0_view"]}
    ids = peer_labels([(p.status or {}).get("peer_id", "?") for p in net.peers])
    table = Table("#", "peer ID", "address", "seen by peer 0", "RTT from peer 0", "role in the job",
                  title=f"{net.n} daemons on loopback", title_justify="left")
    table.columns[1].no_wrap, table.columns[1].min_width = True, max(map(len, ids.values()), default=1)
    for p in net.peers:
        s = p.status or {}
        row = view.get(s.get("peer_id"), {})
        rtt = members["median_rtt_ms"].get(s.get("peer_id"))
        addr = next((a for a in s.get("addresses", []) if "/127.0.0.1/" in a), "-").split("/p2p/")[0]
        role = {holder: "holds the scene", submitter: "job submitted here"}.get(p.index, "")
        seen = "itself" if p.index == 0 else row.get("state", "-") + (f", {row['cpus']:g} cpus" if row.get("cpus") else "")
        table.add_row(str(p.index), ids[s.get("peer_id", "?")], addr, seen, "-" if rtt is None else f"{rtt:.2f} ms", role)
    console.print(table)
    providers = ", ".join(f"peer {i}" for i in scene["providers_found_by_submitter"]) or "none"
    console.print(f"[b]scene[/]: {scene['size_px']}×{scene['size_px']} px, 5 bands, a {scene['bytes'] / 1e6:.1f} MB "
                  f"GeoTIFF, added on peer {holder} as {scene['cid']}; peer {submitter}'s DHT lookup found its "
                  f"provider(s): {providers}", highlight=False)
    console.print(f"[b]compute[/]: {compute['graph']} on peer {compute['peer']} = {compute['remote']:.6f}; "
                  f"identical to the local result: {compute['identical']}", highlight=False)
    ran = job["ran_on"]
    where = (f"ran on peer {ran}, the scene's holder: the scene did not move" if job["ran_on_holder"] else
             f"ran on peer {ran}, NOT the scene's holder (peer {holder})")
    console.print(f"[b]job[/]: cloud detection (WebAssembly) over the scene, submitted to peer "
                  f"{job['submitted_to']}, {where}; {job['state']} in {job['seconds']:.2f} s"
                  + (f" ({job['reason']})" if job["reason"] else ""), highlight=False)
    if "cloud_fraction" in job:
        same = abs(job["cloud_fraction"] - job["numpy_fraction"]) < 1e-9
        console.print(f"  cloud fraction {job['cloud_fraction']:.6f} (numpy here: {job['numpy_fraction']:.6f}, "
                      f"{'equal' if same else 'DIFFERENT'})", highlight=False)
    if "mask_png" in job:
        console.print(f"  mask: {job['mask_png']} ({job['mask_bytes']:,} bytes PNG; pixels equal to numpy's "
                      f"mask: {job['correct']})", highlight=False)
    for output, cid in sorted(job["outputs"].items()):
        console.print(f"  result {output}: {cid}", highlight=False)


def _run_pipeline(net: Devnet, args: argparse.Namespace, timings: dict[str, float]) -> tuple[int, dict]:
    from ..node import demo

    with _step(args, "pipeline: 100 scenes, detect clouds, masks where more than half cloudy…"):
        result = demo.pipeline_step(net)
    timings["the pipeline job: submit to done"] = result["seconds"]
    if not args.json:
        console.print(_peer_table(net))
        stages = "; ".join(f"{name}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                           for name, counts in result["stages"].items())
        per_peer = ", ".join(f"peer {p}: {n}" for p, n in sorted(result["tasks_per_peer"].items()))
        console.print(f"pipeline: {result['tasks']} tasks over {result['scenes']} scenes, submitted to peer "
                      f"{result['coordinator']}, {result['state']} in {result['seconds']:.1f} s ({stages}); tasks "
                      f"run by {per_peer}; masks made for exactly the {result['cloudy_scenes']} scenes more than "
                      f"half cloudy: {result['correct']}" + (f" ({result['reason']})" if result["reason"] else ""),
                      highlight=False)
    return (0 if result["correct"] else 1), {"peers": [p.status for p in net.peers], "pipeline": result}
