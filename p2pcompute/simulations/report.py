"""Writing a churn run's results: ``report.json`` and PNG plots (matplotlib, Agg backend).

``write_report(out_dir, report, series)`` writes

* ``report.json`` — the report dict (keys documented in ``churn.py`` and the issue);
* ``members_seen.png`` — live peers and the members the sampled peers see as alive, over time;
* ``detection.png`` — the distribution of failure-detection times;
* ``lookup_hops.png`` — how many hops lookups took.

The Agg backend is selected before pyplot is imported, so no display is needed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UserError

PLOTS = ("members_seen.png", "detection.png", "lookup_hops.png")


def write_report(out_dir: str | Path, report: dict, series: dict[str, Any] | None, plots: bool = True) -> list[Path]:
    """Write report.json and (``plots``) the churn plots into ``out_dir`` (created); return the files written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write the report into {out}: {exc}; choose another --out directory") from None
    return [path, *_plots(out, report, series)] if plots else [path]


def _plots(out: Path, report: dict, series: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    title = f"{report['peers']} peers, seed {report['seed']}"

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = series["members_seen"]
    if rows:
        t = [r[0] for r in rows]
        ax.plot(t, [r[1] for r in rows], label="live peers (truth)", color="black", linewidth=1.5)
        ax.plot(t, [r[2] for r in rows], label="seen alive (mean of sampled peers)", color="tab:blue")
        ax.fill_between(t, [r[3] for r in rows], [r[4] for r in rows], color="tab:blue", alpha=0.2,
                        label="seen alive (min..max)")
        ax.axvline(series["warmup"], color="grey", linestyle=":", label="measurement starts")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("members")
    ax.set_title(f"Members seen over time — {title}")
    ax.legend(loc="lower right", fontsize=8)
    written.append(_save(fig, out / PLOTS[0], plt))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    det = series["detections"]
    histogram(ax, det, report["detection_s"], bins=min(40, max(5, len(det) // 3)), colour="tab:red",
              alpha=0.8, digits=2)
    ax.set_xlabel("seconds from crash until every live peer has it dead")
    ax.set_ylabel("crashes")
    ax.set_title(f"Failure detection — {title}")
    written.append(_save(fig, out / PLOTS[1], plt))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    hops = Counter(series["lookup_hops"])
    if hops:
        xs = sorted(hops)
        ax.bar(xs, [hops[x] for x in xs], color="tab:green")
        ax.set_xticks(xs)
    ax.set_xlabel("hops (sequential requests to reach the closest peer)")
    ax.set_ylabel("lookups")
    ax.set_title(f"DHT lookup hops — {title}, success {report['lookup_success']}")
    written.append(_save(fig, out / PLOTS[2], plt))
    return written


def histogram(ax: Any, values: list[float], quantiles: dict, *, bins: int, colour: str, alpha: float,
              digits: int) -> None:
    """``values`` as a histogram with their median and p99 (from ``quantiles``) marked; nothing if empty."""
    if not values:
        return
    ax.hist(values, bins=bins, color=colour, alpha=alpha)
    for name, style in (("median", "--"), ("p99", ":")):
        ax.axvline(quantiles[name], color="black", linestyle=style, label=f"{name} {quantiles[name]:.{digits}f} s")
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)
    return path
