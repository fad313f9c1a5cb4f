"""Writing a jobs run's results: ``report.json`` and PNG plots (matplotlib, Agg backend).

``write_jobs_report(out_dir, report, series)`` writes

* ``report.json`` — the report dict (keys documented in ``jobs.py`` and the issue);
* ``job_latency.png`` — the distribution of job latencies (submission to the final report), median and p99;
* ``tasks_per_peer.png`` — how many runs each peer finished (every peer that ever started, churned ones too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import _save, histogram, write_report

JOB_PLOTS = ("job_latency.png", "tasks_per_peer.png")


def write_jobs_report(out_dir: str | Path, report: dict, series: dict[str, Any]) -> list[Path]:
    """Write report.json and the plots into ``out_dir`` (created); return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = write_report(out_dir, report, None, plots=False)[0]
    out = path.parent
    title = (f"{report['peers']} peers, {report['jobs']} jobs, load {report['load']:g}, "
             f"{report['placement']}, seed {report['seed']}")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    lat = series["latencies"]
    histogram(ax, lat, report["job_latency_s"], bins=min(60, max(5, len(lat) // 20)), colour="tab:blue",
              alpha=0.85, digits=1)
    ax.set_xlabel("job latency (s), submission to the final report")
    ax.set_ylabel("jobs")
    ax.set_title(f"Job latency — {title}", fontsize=9)
    written = [path, _save(fig, out / JOB_PLOTS[0], plt)]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    per_peer = sorted(series["tasks_per_peer"], reverse=True)
    if per_peer:
        ax.bar(range(len(per_peer)), per_peer, width=1.0, color="tab:green")
    ax.set_xlabel("peers (every peer that ever started, most runs first; churned and new peers were up for less time)")
    ax.set_ylabel("runs finished")
    ax.set_title(f"Tasks per peer — {title}", fontsize=9)
    written.append(_save(fig, out / JOB_PLOTS[1], plt))
    return written
