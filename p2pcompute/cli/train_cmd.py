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
                       "(the run goes on in the daemon). In train.yaml, param_shards: P cuts the parameters into P "
                       "parts, each aggregated on its own peer (the live peer closest to the part's key), and "
                       "peer_memory: BYTES refuses a configuration whose aggregation does not fit one peer; "
                       "spot_check: R has the trust layer recompute a share R of tasks on this peer and ban a "
                       "peer whose result is far from it (examples/synthetic-linear.train.yaml).")
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
    if s.get("param_shards", 1) > 1:
        table.add_row("parameter parts", f"{s['param_shards']} aggregated on "
                      f"{len(set(s.get('owners') or ())) or '-'} peer(s) last round, "
                      f"{len(s.get('part_owners') or {})} in all")
    table.add_row("elapsed", f"{s['elapsed_s']:.1f} s")
    return table


def _report(s: dict) -> dict:
    return {"id": s["id"], "name": s["name"], "state": s["state"], "error": s["error"], "mode": s["mode"],
            "rounds": s["round"], "final_accuracy": s["accuracy"], "final_loss": s["loss"],
            "bytes_moved": s["bytes"], "bytes_per_round": s["bytes"] / max(1, s["round"]),
            "data_bytes": s["data_bytes"], "wall_s": s["elapsed_s"], "peers_seen": s["peers_seen"],
            "jobs": s["jobs"], "final": s["final"], "checkpoints": s["checkpoints"], "stats": s["stats"],
            "curve": s["curve"], "param_shards": s.get("param_shards", 1), "part_owners": s.get("part_owners", {}),
            "aggregate_jobs": s.get("aggregate_jobs", 0), "verification": s.get("verification", "none"),
            "part_bytes": s.get("part_bytes", 0), "peer_memory": s.get("peer_memory", 0)}


def _compare(spec: Any) -> dict:
    from ..training import data
    from ..training.inprocess import run

    split = data.load(spec)
    rep = run(spec.run_config(), split)
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
    if r.get("param_shards", 1) > 1:
        limit = f" (peer_memory {human_bytes(r['peer_memory'])})" if r.get("peer_memory") else ""
        console.print(f"  {r['param_shards']} parameter parts, {human_bytes(r['part_bytes'])} held to aggregate "
                      f"one{limit}; aggregated on:", highlight=False)
    for peer, st in (r.get("part_owners") or {}).items():
        console.print(f"    {peer}: {st['parts']} part tasks, {human_bytes(st['bytes'])} read in all", highlight=False)
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


# --- simulate train (registered under `simulate` by simulate_cmd.py) ------------------------------------

SIM_EPILOG = """\
formats as for 'simulate churn' (churn FRACTION/PERIOD such as 10%/10min, 0 for none).
Writes DIR/report.json and DIR/curve.png. The same --seed gives the same report (except wall time).
"""


def register_simulate(psub: Any) -> None:
    s = psub.add_parser("train", help="distributed training on a churning network: the real coordinator, the "
                        "real numeric work on a small model, byzantine peers",
                        description="Simulate N peers (membership and DHT as in 'simulate churn'); peer 0 runs "
                        "the training coordinator over the others, every update is computed for real (the digits "
                        "MLP's opset-2 graphs), liars send attacked updates, peers are replaced; measure final "
                        "accuracy, rounds, bytes per round, wall time.",
                        epilog=SIM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--peers", type=int, default=100, help="number of peers, the coordinator included (default 100)")
    s.add_argument("--mode", choices=("sync", "local", "async"), default="sync")
    s.add_argument("--byzantine", default="0", help="share of peers that lie (0.2 or 20%%; default 0)")
    s.add_argument("--attack", choices=("sign_flip", "scaled", "biased"), default="sign_flip")
    s.add_argument("--rule", choices=("mean", "median", "trimmed_mean", "centered_clip"),
                   help="aggregation (default: mean without liars, centered_clip with)")
    s.add_argument("--churn", default="10%/10min", help="FRACTION/PERIOD of peers replaced (default 10%%/10min)")
    s.add_argument("--kill-per-round", type=int, default=0, help="also crash this many shard holders mid-round")
    s.add_argument("--rounds", type=int, help="rounds (default: sync/async 120, local 8)")
    s.add_argument("--shards", type=int, default=20, help="updates per round (default 20)")
    s.add_argument("--local-steps", type=int, default=10, help="H, local mode's steps per round (default 10)")
    s.add_argument("--task-seconds", type=float, default=1.0, help="compute seconds of one step (default 1)")
    s.add_argument("--spot-check", type=float, default=0.0, metavar="SHARE",
                   help="share of updates the coordinator recomputes before a round closes; a peer whose update "
                        "is far from the recomputation is banned and its shards handed out again (default 0)")
    s.add_argument("--param-shards", type=int, default=1, metavar="P",
                   help="cut the parameter vector into P parts, each aggregated by the peer closest to the part's "
                        "key (default 1)")
    s.add_argument("--peer-memory", default="0", metavar="SIZE",
                   help="a peer's memory limit for aggregating (e.g. 64KiB; default: none); parameters that do "
                        "not fit are refused unless --param-shards splits them")
    s.add_argument("--linear", action="store_true", help="a linear model (64 -> 10) instead of the 64-32-10 MLP")
    s.add_argument("--compare-clean", action="store_true",
                   help="also run the same seed without liars and churn, and report the accuracy difference")
    s.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    s.add_argument("--out", metavar="DIR", default="sim-train", help="output directory (default ./sim-train)")
    add_json_flag(s)
    s.set_defaults(func=cmd_simulate_train)


def cmd_simulate_train(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from ..training.plot import write_curve
    from ..node.config import parse_size
    from ..training.simulate import TrainScenario, TrainSim, simulate
    from .simulate_cmd import parse_churn, parse_fraction

    byz = parse_fraction(args.byzantine, "byzantine share")
    fraction, period = parse_churn(args.churn)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rounds = args.rounds or (8 if args.mode == "local" else 120)
    rule = args.rule or ("centered_clip" if byz > 0 else "mean")
    try:
        scenario = TrainScenario(peers=args.peers, mode=args.mode, shards=args.shards, rounds=rounds,
                                 local_steps=args.local_steps, byzantine=byz, attack=args.attack, rule=rule,
                                 churn_fraction=fraction, churn_period=period, kill_per_round=args.kill_per_round,
                                 task_s=args.task_seconds, seed=seed, spot_check=args.spot_check,
                                 param_shards=args.param_shards, peer_memory=parse_size(args.peer_memory),
                                 linear=args.linear)
        scenario.run_config()
        TrainSim.check(scenario)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not args.json:
        console.print(f"seed {seed}: {scenario.peers} peers, {args.mode}, {rounds} rounds of {args.shards} shards, "
                      f"byzantine {byz:.0%} ({args.attack}, {rule}), churn {fraction:.0%}/{period:g} s",
                      highlight=False)
    report = simulate(scenario)
    if args.compare_clean:
        clean = simulate(dataclasses.replace(scenario, byzantine=0.0, churn_fraction=0.0, kill_per_round=0))
        report["clean_accuracy"] = clean["final_accuracy"]
        report["accuracy_drop_points"] = 100 * (clean["final_accuracy"] - report["final_accuracy"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    png = write_curve(out / "curve.png", report["curve"],
                      f"simulate train: {args.peers} peers, {args.mode}, byzantine {byz:.0%} {args.attack} ({rule}), "
                      f"churn {fraction:.0%}/{period:g} s, seed {seed}")
    if args.json:
        print_json({k: v for k, v in report.items() if k != "curve"})
    else:
        console.print(f"final accuracy {100 * report['final_accuracy']:.2f}% after {report['rounds']} rounds "
                      f"({report['updates']} updates); {report['bytes_per_round'] / 1e6:.2f} MB per round; "
                      f"{report['crashes']} crashes ({report['kills_mid_round']} mid-round), "
                      f"{report['coordinator']['reassigned']} shards reassigned, {report['lying_updates']} lying "
                      f"updates; {report['virtual_s']:.0f} virtual s in {report['wall_s']:.1f} wall s", highlight=False)
        if "clean_accuracy" in report:
            console.print(f"clean run, same seed: {100 * report['clean_accuracy']:.2f}% "
                          f"({report['accuracy_drop_points']:+.2f} points lost)", highlight=False)
        console.print(f"wrote {out / 'report.json'}, {png}", highlight=False)
    return 0 if report["finished"] else 1
