"""How fast and how big `simulate churn` is as N grows: wall, CPU, events and peak RSS per N.

    python bench/bench_simspeed.py                       # N = 100, 300, 1000; 60 measured virtual s
    python bench/bench_simspeed.py --peers 100 300 1000 3000 --seconds 60 --plot sizes.png
    python bench/bench_simspeed.py --ref /work/main      # the same runs with another checkout, for A/B

Each N runs in its own child process (the issue's scenario: 10% churn per 10 min, 1% loss,
20-120 ms, seed 7 unless --seed; a converged start, 30 s warm-up, then --seconds measured), so
the peak RSS (ru_maxrss) is that N's alone. Printed per N: set-up time (building the converged
network), wall and CPU seconds of the whole run, events, CPU µs per event, CPU seconds per
virtual second after set-up, and peak RSS. Then two extrapolations, labelled as such:
a 1000-peer virtual hour (CPU per virtual second at 1000 × 3630 s + set-up), and 10,000 peers
for 10 virtual minutes from the power law through the two largest N of CPU per virtual second,
set-up CPU and RSS above the interpreter's (news per peer grows with N and every peer holds
every other, so the cost grows faster than N and the local slope is the honest one).
Figures on a shared machine vary with its load: compare runs made side by side (--ref).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time


def child(peers: int, seconds: float, seed: int) -> dict:
    from p2pcompute.simulations.churn import ChurnRun, Scenario

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter and imports
    t0, c0 = time.perf_counter(), time.process_time()
    run = ChurnRun(Scenario(peers=peers, duration=seconds, seed=seed))
    run.engine.run_until(0.0)  # the converged start
    setup_wall, setup_cpu = time.perf_counter() - t0, time.process_time() - c0
    report = run.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    virtual = run.end
    return {
        "peers": peers, "virtual_s": virtual, "setup_wall_s": round(setup_wall, 2), "setup_cpu_s": round(setup_cpu, 2),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "events": report["events"],
        "us_per_event": round(1e6 * (cpu - setup_cpu) / max(1, report["events"]), 2),
        "cpu_per_virtual_s": round((cpu - setup_cpu) / virtual, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "base_rss_mib": round(base_rss, 1),
        "detection_median_s": report["detection_s"]["median"], "false_deaths": report["false_positive_deaths"],
        "lookup_success": report["lookup_success"],
    }


def run_child(peers: int, seconds: float, seed: int, path: str | None) -> dict:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(peers), str(seconds), str(seed)],
                         env=env, cwd="/tmp", check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def power_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """y = a · x^b by least squares on logs; returns (a, b)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    b = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)
    return math.exp(my - b * mx), b


def table(rows: list[dict], label: str) -> None:
    print(f"\n{label}")
    print(f"{'N':>6} {'set-up s':>9} {'wall s':>8} {'CPU s':>8} {'events':>10} {'µs/event':>9} "
          f"{'CPU s/virt s':>12} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['peers']:>6} {r['setup_cpu_s']:>9.1f} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['events']:>10} "
              f"{r['us_per_event']:>9.2f} {r['cpu_per_virtual_s']:>12.3f} {r['peak_rss_mib']:>13.0f}")


def extrapolate(rows: list[dict]) -> dict:
    out: dict = {}
    by_n = {r["peers"]: r for r in rows}
    if 1000 in by_n:
        r = by_n[1000]
        out["1000_peers_1h_cpu_s"] = round(r["setup_cpu_s"] + r["cpu_per_virtual_s"] * 3630, 0)
    if len(rows) >= 2:
        top = sorted(rows, key=lambda r: r["peers"])[-2:]  # the local slope at the largest N: the steepest
        ns = [r["peers"] for r in top]
        a, b = power_fit(ns, [r["cpu_per_virtual_s"] for r in top])
        ra, rb = power_fit(ns, [max(1.0, r["peak_rss_mib"] - r["base_rss_mib"]) for r in top])
        sa, sb = power_fit(ns, [max(0.01, r["setup_cpu_s"]) for r in top])
        out["cpu_per_virtual_s_exponent"] = round(b, 2)
        out["rss_exponent"] = round(rb, 2)
        out["10000_peers_10min_cpu_s"] = round(sa * 10_000 ** sb + a * 10_000 ** b * 630, 0)
        out["10000_peers_rss_gib"] = round((ra * 10_000 ** rb + rows[-1]["base_rss_mib"]) / 1024, 1)
    return out


def plot(path: str, runs: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in runs.items():
        ns = [r["peers"] for r in rows]
        a1.loglog(ns, [r["cpu_per_virtual_s"] for r in rows], "o-", label=label)
        a2.loglog(ns, [r["peak_rss_mib"] for r in rows], "o-", label=label)
    a1.set_xlabel("peers")
    a1.set_ylabel("CPU s per virtual s (after set-up)")
    a2.set_xlabel("peers")
    a2.set_ylabel("peak RSS (MiB)")
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    fig.suptitle("simulate churn: cost against N (10%/10min churn, 1% loss, 20-120 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured virtual seconds after the 30 s warm-up")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ref", help="also run with this checkout first on PYTHONPATH (A/B)")
    ap.add_argument("--plot", help="write a PNG of CPU per virtual second and RSS against N")
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: dict[str, list[dict]] = {}
    for label, path in (("this checkout", here), *((("ref " + args.ref, args.ref),) if args.ref else ())):
        rows = []
        for n in args.peers:
            rows.append(run_child(n, args.seconds, args.seed, path))
            print(json.dumps({"label": label, **rows[-1]}), flush=True)
        runs[label] = rows
    for label, rows in runs.items():
        table(rows, f"{label} ({args.seconds:g} measured virtual s + 30 s warm-up, seed {args.seed})")
        print("extrapolated (not measured):", json.dumps(extrapolate(rows)))
    if args.plot:
        plot(args.plot, runs)
        print("wrote", args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: {"rows": v, "extrapolated": extrapolate(v)} for k, v in runs.items()}, f, indent=2)


if __name__ == "__main__":
    main()
