"""Training figures (issue 12) on scikit-learn's handwritten digits, all in one process.

    python bench/bench_training.py [--seed 0] [--json]

Prints:
  * the single-process reference trainer (opset-2 step graphs run by
    Graph.run): test accuracy and wall time for the MLP 64-32-10 and the
    linear model, and the same MLP step written in plain numpy, for the
    graphs' overhead;
  * the coordinator driven in-process (training/inprocess.py) in sync, local
    (DiLoCo, H local steps) and async modes: final accuracy, rounds, bytes
    moved in all and until the test accuracy first reached 95%, and the ratio
    sync / local;
  * sync with one peer killed mid-round in every round;
  * 20% byzantine peers (2 of 10, 10 shards a round) with each attack under
    each aggregation rule, beside the clean run of the same rule (test
    accuracy averaged over --byzantine-seeds seeds).

    python bench/bench_training.py --simulate 100 [--rounds 80] [--byzantine-seeds 3]

runs the simulate-train scenario (100 peers, 20% liars, 10%/10min churn) for
each rule and attack beside the clean run of the same seed and rule.

    python bench/bench_training.py --devnet 4 [--specs examples/digits.train.yaml ...]   (run from /tmp)

instead trains each train.yaml on a real N-peer devnet (one daemon per OS
process, loopback TCP; the daemon's TrainingService, every gradient or
local-steps task a scheduler job) and, in this process, the same model with
the same seed (training/inprocess.py): accuracy of both, wall time of both
and their ratio, bytes moved, jobs, peers that ran tasks.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from p2pcompute.training import data, reference
from p2pcompute.training.aggregate import RULES
from p2pcompute.training.coordinator import TrainConfig
from p2pcompute.training.inprocess import RunConfig, run
from p2pcompute.training.model import Model, init_params
from p2pcompute.training.optim import Sgd


def numpy_mlp(split: data.Split, epochs: int, batch: int, lr: float, momentum: float, seed: int) -> tuple[float, float]:
    """The same MLP and schedule by hand in numpy: (test accuracy, wall seconds)."""
    start = time.perf_counter()
    model = Model(64, (32,), 10)
    p = init_params(model, np.random.default_rng(seed))
    opt = Sgd(lr, momentum)
    per_epoch = len(split.y_train) // batch
    for step in range(epochs * per_epoch):
        idx = data.batch_indices(len(split.y_train), batch, step, seed)
        x, y = split.x_train[idx], split.y_train[idx]
        a0 = x @ p["W0"] + p["b0"]
        h0 = np.maximum(a0, 0)
        z = h0 @ p["W1"] + p["b1"]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        d = e / e.sum(axis=1, keepdims=True)
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        dh = (d @ p["W1"].T) * (a0 > 0)
        p = opt.step(p, {"W1": h0.T @ d, "b1": d.sum(0), "W0": x.T @ dh, "b0": dh.sum(0)})
    pred = np.argmax(np.maximum(split.x_test @ p["W0"] + p["b0"], 0) @ p["W1"] + p["b1"], axis=1)
    return float(np.mean(pred == split.y_test)), time.perf_counter() - start


def devnet(n: int, specs: list[str], as_json: bool) -> None:
    import tempfile
    from pathlib import Path

    from p2pcompute.node.client import ControlClient
    from p2pcompute.node.devnet import Devnet
    from p2pcompute.training.spec import parse

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as root:
        net = Devnet(Path(root), n, log_level="warning")
        try:
            net.start(timeout=120)
            if not net.wait_connected(60):
                raise SystemExit("the devnet did not connect")
            client = ControlClient(net.peers[0].data_dir, timeout=60)
            for path in specs:
                text = Path(path).read_text()
                spec = parse(text)
                run_id = client._call("POST", "/v1/train", json={"spec": text})["id"]
                while (st := client._call("GET", f"/v1/train/{run_id}"))["state"] in ("waiting for peers", "running"):
                    time.sleep(0.5)
                split = data.digits(spec.seed)
                ref = run(spec.run_config(), split)
                first95 = next((p for p in st["curve"] if p[2] >= 0.95), None)
                results.append({"spec": path, "mode": spec.mode, "state": st["state"], "error": st["error"],
                                "bytes_to_95": first95[3] if first95 else None,
                                "round_to_95": first95[0] if first95 else None,
                                "inprocess_bytes_to_95": ref.bytes_to_target,
                                "rounds": st["round"], "accuracy": st["accuracy"], "wall_s": st["elapsed_s"],
                                "bytes": st["bytes"], "data_bytes": st["data_bytes"], "jobs": st["jobs"],
                                "peers_seen": st["peers_seen"], "inprocess_accuracy": ref.test_accuracy,
                                "inprocess_wall_s": ref.wall_seconds, "inprocess_bytes": ref.bytes_moved,
                                "wall_ratio": st["elapsed_s"] / ref.wall_seconds})
        finally:
            net.stop()
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"{n}-peer devnet (machine shared), each train.yaml on the network and in this process, same seed:")
    for r in results:
        print(f"  {r['spec']}: {r['state']} {r['error']}  {r['mode']}  rounds {r['rounds']}  accuracy "
              f"{r['accuracy']:.4f} (in-process {r['inprocess_accuracy']:.4f})  wall {r['wall_s']:.1f} s "
              f"(in-process {r['inprocess_wall_s']:.2f} s, ratio {r['wall_ratio']:.0f}x)  bytes {r['bytes'] / 1e6:.2f} MB"
              f" (+{r['data_bytes'] / 1e6:.2f} MB minibatches)  jobs {r['jobs']}  peers {r['peers_seen']}  to 95%: "
              f"round {r['round_to_95']}, {r['bytes_to_95'] and r['bytes_to_95'] / 1e6} MB (in-process "
              f"{r['inprocess_bytes_to_95'] and r['inprocess_bytes_to_95'] / 1e6} MB)")
    by_mode = {r["mode"]: r for r in results if r["bytes_to_95"]}
    if "sync" in by_mode and "local" in by_mode:
        print(f"  sync / local bytes (parameters and updates) to first reach 95%: "
              f"{by_mode['sync']['bytes_to_95'] / by_mode['local']['bytes_to_95']:.1f}x")


def simulated(peers: int, rounds: int, seeds: list[int], rules: list[str], attacks: list[str], as_json: bool) -> None:
    """`simulate train`'s scenario (training/simulate.py): 20% liars and 10%/10min churn against the clean run
    (same seed and rule, no liars, no churn): final test accuracy and the points lost."""
    import dataclasses

    from p2pcompute.training.simulate import TrainScenario, simulate

    rows = []
    for rule in rules:
        for seed in seeds:
            base = TrainScenario(peers=peers, rounds=rounds, rule=rule, seed=seed)
            clean = simulate(base)["final_accuracy"]
            for attack in attacks:
                r = simulate(dataclasses.replace(base, byzantine=0.2, attack=attack, churn_fraction=0.1))
                rows.append({"rule": rule, "seed": seed, "attack": attack, "clean": clean,
                             "accuracy": r["final_accuracy"], "lost_points": 100 * (clean - r["final_accuracy"]),
                             "wall_s": r["wall_s"], "crashes": r["crashes"]})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"simulate train: {peers} peers, sync, {rounds} rounds of 20 shards, 20% liars, churn 10%/10min "
          f"(machine shared); points lost against the clean run of the same seed and rule:")
    for rule in rules:
        for attack in attacks:
            got = [r for r in rows if r["rule"] == rule and r["attack"] == attack]
            print(f"  {rule:<14} {attack:<10} accuracy {np.mean([r['accuracy'] for r in got]):.4f}  clean "
                  f"{np.mean([r['clean'] for r in got]):.4f}  lost {np.mean([r['lost_points'] for r in got]):+.2f} "
                  f"points (worst {max(r['lost_points'] for r in got):+.2f}, {len(got)} seeds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--byzantine-seeds", type=int, default=3, help="seeds averaged in the byzantine table")
    ap.add_argument("--devnet", type=int, metavar="N", help="train the --specs on a real N-peer devnet instead")
    ap.add_argument("--specs", nargs="+", default=["examples/digits.train.yaml"], metavar="TRAIN.yaml")
    ap.add_argument("--simulate", type=int, metavar="PEERS", help="the simulate-train byzantine table instead")
    ap.add_argument("--rounds", type=int, default=80, help="with --simulate (default 80)")
    ap.add_argument("--rules", nargs="+", default=["trimmed_mean", "median", "centered_clip"])
    ap.add_argument("--attacks", nargs="+", default=["sign_flip", "scaled", "biased"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.simulate:
        simulated(args.simulate, args.rounds, list(range(args.seed, args.seed + args.byzantine_seeds)), args.rules,
                  args.attacks, args.json)
        return
    if args.devnet:
        devnet(args.devnet, args.specs, args.json)
        return
    split = data.digits(seed=args.seed)
    out: dict = {"train_examples": len(split.y_train), "test_examples": len(split.y_test)}

    for name, model in (("mlp", Model(64, (32,), 10)), ("linear", Model(64, (), 10))):
        r = reference.train(model, split, epochs=20, batch=32, lr=0.1, momentum=0.9, seed=args.seed)
        out[f"reference_{name}"] = {"accuracy": r.test_accuracy, "wall_s": r.wall_seconds, "steps": r.steps,
                                    "params": model.param_count()}
    acc, wall = numpy_mlp(split, 20, 32, 0.1, 0.9, args.seed)
    out["numpy_mlp"] = {"accuracy": acc, "wall_s": wall}

    modes = {
        "sync": RunConfig(TrainConfig("sync", shards=4, rounds=150), seed=args.seed),
        "local": RunConfig(TrainConfig("local", shards=4, rounds=10, local_steps=20), seed=args.seed),
        "async": RunConfig(TrainConfig("async", shards=4, rounds=150, staleness_bound=4), seed=args.seed),
        "sync_killed": RunConfig(TrainConfig("sync", shards=4, rounds=150), kill_per_round=1, seed=args.seed),
    }
    for name, cfg in modes.items():
        r = run(cfg, split)
        out[name] = {"accuracy": r.test_accuracy, "rounds": r.rounds, "updates": r.version,
                     "bytes": r.bytes_moved, "bytes_to_95": r.bytes_to_target, "rounds_to_95": r.rounds_to_target,
                     "wall_s": r.wall_seconds, "kills": r.kills, "reassigned": r.stats["reassigned"]}
    if out["sync"]["bytes_to_95"] and out["local"]["bytes_to_95"]:
        out["sync_over_local_bytes_to_95"] = out["sync"]["bytes_to_95"] / out["local"]["bytes_to_95"]
    out["sync_over_local_bytes_total"] = out["sync"]["bytes"] / out["local"]["bytes"]

    byz: dict = {}
    base = TrainConfig("sync", shards=10, rounds=150)
    seeds = range(args.seed, args.seed + args.byzantine_seeds)

    def mean_accuracy(**kw) -> float:
        return float(np.mean([run(RunConfig(base, peers=10, seed=s, **kw), split).test_accuracy for s in seeds]))

    for rule in RULES:
        byz[rule] = {"clean": mean_accuracy(rule=rule)}
        for attack in ("sign_flip", "scaled", "biased"):
            byz[rule][attack] = mean_accuracy(byzantine=2, attack=attack, rule=rule)
    out["byzantine_20pct"] = byz

    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"digits: {out['train_examples']} train / {out['test_examples']} test examples (machine shared)")
    for name in ("reference_mlp", "reference_linear", "numpy_mlp"):
        v = out[name]
        print(f"  {name:<17} accuracy {v['accuracy']:.4f}  wall {v['wall_s']:.2f} s")
    for name in modes:
        v = out[name]
        print(f"  {name:<12} accuracy {v['accuracy']:.4f}  rounds {v['rounds']:>4}  updates {v['updates']:>4}  "
              f"bytes {v['bytes'] / 1e6:7.2f} MB  to 95%: {v['bytes_to_95'] and v['bytes_to_95'] / 1e6} MB "
              f"(round {v['rounds_to_95']})  kills {v['kills']}  wall {v['wall_s']:.2f} s")
    if "sync_over_local_bytes_to_95" in out:
        print(f"  sync / local bytes to reach 95%: {out['sync_over_local_bytes_to_95']:.1f}x;"
              f" in all: {out['sync_over_local_bytes_total']:.1f}x")
    print(f"  20% byzantine (2 of 10 peers; sign_flip sends -4x, scaled 1e4x, biased +0.05 sign(g)), test accuracy,"
          f" mean of {args.byzantine_seeds} seeds:")
    for rule, v in byz.items():
        print(f"    {rule:<14} clean {v['clean']:.4f}  " + "  ".join(
            f"{a} {v[a]:.4f}" for a in ("sign_flip", "scaled", "biased")))


if __name__ == "__main__":
    main()
