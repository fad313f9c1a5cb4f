"""The learning curve as a PNG (matplotlib, Agg backend): test accuracy and loss per round, bytes moved.

``write_curve(path, curve, title, compare=None)``: ``curve`` is a list of
``[round, loss, accuracy, bytes, seconds]`` (driver.py's status, or the
simulation's); ``compare`` an optional second accuracy curve (``[(round,
accuracy)]``, e.g. the in-process run) drawn dashed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_curve(path: str | Path, curve: Sequence[Sequence], title: str,
                compare: Sequence[tuple[int, float]] | None = None, compare_label: str = "in-process") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    rounds = [p[0] for p in curve]
    ax.plot(rounds, [100 * p[2] for p in curve], color="tab:blue", label="test accuracy")
    if compare:
        ax.plot([c[0] for c in compare], [100 * c[1] for c in compare], "--", color="tab:gray", label=compare_label)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    losses = [(p[0], p[1]) for p in curve if p[1] is not None]
    if losses:
        lx = ax.twinx()
        lx.plot([r for r, _ in losses], [v for _, v in losses], color="tab:orange", alpha=0.6, label="loss")
        lx.set_ylabel("training loss (mean over the round's updates)")
        lx.legend(loc="center right")
    ax.legend(loc="lower right")
    bx.plot([p[3] / 1e6 for p in curve], [100 * p[2] for p in curve], color="tab:green")
    bx.set_xlabel("MB moved (parameters down, updates up)")
    bx.set_ylabel("test accuracy (%)")
    bx.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
