"""``p2pcompute train TRAIN.yaml``: a training run coordinated by the local daemon, with a live view.

The daemon's TrainingService (training/service.py) runs it: each round's gradients (or local steps) are
jobs on the network. This command posts the train.yaml, shows the run live (round, loss, accuracy, peers,
bytes moved) and, at the end, writes DIR/curve.png and DIR/report.json. ``--compare`` also trains the same
model in this process with the same seed (training/inprocess.py) and reports both accuracies and the
wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .control import client_for, human_bytes
from .daemon import add_data_dir
from .output import add_json_flag, console, print_json

POLL_S = 0.5
ACTIVE = ("waiting for peers", "running")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model on the network (train.yaml), with a live view",
                       description="Have the local daemon train the model of TRAIN.yaml on the network: each "
                       "round's gradients (sync, async) or local steps (local) run as jobs on peers; parameters "
                       "and checkpoints are CIDs. Shows round, loss, accuracy, peers and bytes moved; at the end "
                       "writes DIR/curve.png (the learning curve) and DIR/report.json. Ctrl-C stops watching "
                       "(the run goes on in the daemon).")
    t.add_argument("spec", type=Path, metavar="TRAIN.yaml", help="the training file (examples/digits.train.yaml)")
    t.add_argument("--resume", metavar="CID", help="continue from a checkpoint (a CID printed by a run)")
    t.add_argument("--out", "-o", type=Path, metavar="DIR", help="where to write curve.png and report.json "
                   "(default: ./train-<name>)")
    t.add_argument("--compare", action="store_true", help="also train in this process with the same seed and "
                   "report both accuracies and the wall-time ratio")
    t.add_argument("--detach", action="store_true", help="print the run's id and return at once")
    add_data_dir(t)
    add_json_flag(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.spec import parse

    path = args.spec.expanduser()
    if not path.is_file():
        raise UserError(f"{args.spec}: no such file")
    text = path.read_text()
    spec = parse(text)                      # the daemon parses it again; a problem is shown before we connect
    client = client_for(args)
    status = client._call("POST", "/v1/train", json={"spec": text, "resume": args.resume})
    run_id = status["id"]
    if args.detach:
        if args.json:
            print_json(status)
        else:
            print(run_id)
        return 0
    show = not args.json and sys.stderr.isatty()
    if not args.json:
        console.print(f"training run {run_id} ({spec.name}, {spec.mode}, {spec.rounds} rounds over {spec.shards} "
                      f"shards, {spec.peers} peers)", highlight=False)
    status = _watch(client, run_id, show)
    out = args.out or Path(f"train-{spec.name}")
    report = _report(status)
    compare = None
    if args.compare and status["state"] == "done":
        compare = _compare(spec)
        report["inprocess"] = {k: v for k, v in compare.items() if k != "curve"}
        report["wall_ratio"] = status["elapsed_s"] / max(1e-9, compare["wall_s"])
    written = _write(out, spec, status, report, compare)
    if args.json:
        print_json(report | {"written": [str(p) for p in written]})
    else:
        _print_end(report, written)
    return 0 if status["state"] == "done" else 1


def _watch(client: Any, run_id: str, show: bool) -> dict:
    def get() -> dict:
        return client._call("GET", f"/v1/train/{run_id}")

    if not show:
        while (status := get())["state"] in ACTIVE:
            time.sleep(POLL_S)
        return status
    from rich.live import Live

    with Live(console=console.__class__(stderr=True), refresh_per_second=4, transient=True) as live:
        while True:
            status = get()
            live.update(_panel(status))
            if status["state"] not in ACTIVE:
                return status
            time.sleep(POLL_S)


def _panel(s: dict) -> Any:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    acc = "-" if s.get("accuracy") is None else f"{100 * s['accuracy']:.2f}%"
    loss = "-" if s.get("loss") is None else f"{s['loss']:.4f}"
    table.add_row("state", s["state"])
    table.add_row("round", f"{s['round']}/{s['rounds']}  (parameters v{s['version']})")
    table.add_row("loss", loss)
    table.add_row("test accuracy", acc)
    table.add_row("peers", f"{s['peers']} this round, {s['peers_seen']} in all")
    table.add_row("bytes moved", f"{human_bytes(s['bytes'])} parameters and updates, "
                                 f"{human_bytes(s['data_bytes'])} minibatches")
    table.add_row("jobs", f"{s['jobs']}  (reassigned {s['stats'].get('reassigned', 0)}, "
                          f"refused {s['stats'].get('refused', 0)})")
    table.add_row("elapsed", f"{s['elapsed_s']:.1f} s")
    return table


def _report(s: dict) -> dict:
    return {"id": s["id"], "name": s["name"], "state": s["state"], "error": s["error"], "mode": s["mode"],
            "rounds": s["round"], "final_accuracy": s["accuracy"], "final_loss": s["loss"],
            "bytes_moved": s["bytes"], "bytes_per_round": s["bytes"] / max(1, s["round"]),
            "data_bytes": s["data_bytes"], "wall_s": s["elapsed_s"], "peers_seen": s["peers_seen"],
            "jobs": s["jobs"], "final": s["final"], "checkpoints": s["checkpoints"], "stats": s["stats"],
            "curve": s["curve"]}


def _compare(spec: Any) -> dict:
    from ..training import data
    from ..training.inprocess import run

    split = data.digits(spec.seed)
    rep = run(spec.run_config(split.x_train.shape[1], int(split.y_train.max()) + 1), split)
    return {"accuracy": rep.test_accuracy, "wall_s": rep.wall_seconds, "rounds": rep.rounds,
            "bytes_moved": rep.bytes_moved, "curve": [(r, a) for r, _, a in rep.curve]}


def _write(out: Path, spec: Any, status: dict, report: dict, compare: dict | None) -> list[Path]:
    from ..training.plot import write_curve

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    written = [out / "report.json"]
    if status["curve"]:
        written.append(write_curve(out / "curve.png", status["curve"],
                                   f"{spec.name}: {spec.mode}, {spec.shards} shards, {status['peers_seen']} peers",
                                   compare["curve"] if compare else None))
    return written


def _print_end(r: dict, written: list[Path]) -> None:
    colour = "green" if r["state"] == "done" else "red"
    acc = "-" if r["final_accuracy"] is None else f"{100 * r['final_accuracy']:.2f}%"
    console.print(f"[{colour}]{r['state']}[/] after {r['rounds']} rounds, {r['wall_s']:.1f} s: test accuracy {acc}, "
                  f"{human_bytes(r['bytes_moved'])} moved, {r['peers_seen']} peers, {r['jobs']} jobs", highlight=False)
    if r["error"]:
        console.print(f"  {r['error']}", highlight=False)
    if "inprocess" in r:
        ip = r["inprocess"]
        console.print(f"  in this process, same seed: {100 * ip['accuracy']:.2f}% in {ip['wall_s']:.1f} s "
                      f"(network / in-process wall time: {r['wall_ratio']:.1f}x)", highlight=False)
    if r["final"]:
        console.print(f"  final parameters (a checkpoint: --resume it): {r['final']}", highlight=False)
    for rnd, cid in r["checkpoints"]:
        console.print(f"  checkpoint after round {rnd}: {cid}", highlight=False)
    for p in written:
        console.print(f"  wrote {p}", highlight=False)
