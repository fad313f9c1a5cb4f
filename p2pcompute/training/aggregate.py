"""Aggregation rules for gradients or parameter deltas from many peers (pure numpy).

Every rule takes ``updates``, an (n, d) float array with one flattened update
per row, and returns one d-vector:

* ``mean``: the (optionally weighted) average. One peer can move it anywhere.
* ``median``: the coordinate-wise median. With fewer than n/2 byzantine rows
  each coordinate stays inside the honest rows' range for that coordinate.
* ``trimmed_mean(trim)``: per coordinate, drop the ``trim`` largest and the
  ``trim`` smallest values and average the rest (``scipy.stats.trim_mean``
  with proportion trim/n gives the same). With at most ``trim`` byzantine
  rows each coordinate stays inside the honest range (non-finite rows,
  dropped first, count against ``trim``).
* ``centered_clip(tau)``: CenteredClip as in BTARD (Gorbunov et al., 2021):
  start from the coordinate median, then iterate
  ``v <- v + mean_i (g_i - v) * min(1, tau / |g_i - v|)``: a row far from
  the centre pulls it by at most ``tau / n`` per iteration, whatever its norm.
  ``tau=None`` takes ``scale`` x the median distance of the rows from the start
  point (``rule("centered_clip")``: a quarter, 40 iterations).

``by_parts`` aggregates column ranges separately (parameter sharding).

Rows with a NaN or an infinity are dropped first (``finite_rows``): a
non-finite value would otherwise poison the median as well as the mean. If no
row is left, the rules raise ``ValueError`` (the caller refuses the round).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def finite_rows(updates: np.ndarray) -> np.ndarray:
    updates = np.asarray(updates, dtype=np.float64)
    if updates.ndim != 2:
        raise ValueError(f"updates must be an (n, d) array, got shape {updates.shape}")
    kept = updates[np.all(np.isfinite(updates), axis=1)]
    if len(kept) == 0:
        raise ValueError("no finite update to aggregate")
    return kept


def mean(updates: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    updates = np.asarray(updates, dtype=np.float64)
    if weights is None:
        return finite_rows(updates).mean(axis=0)
    weights = np.asarray(weights, dtype=np.float64)
    ok = np.all(np.isfinite(updates), axis=1) & np.isfinite(weights) & (weights > 0)
    if not ok.any():
        raise ValueError("no finite update with a positive weight to aggregate")
    return np.average(updates[ok], axis=0, weights=weights[ok])


def median(updates: np.ndarray) -> np.ndarray:
    return np.median(finite_rows(updates), axis=0)


def trimmed_mean(updates: np.ndarray, trim: int) -> np.ndarray:
    if trim < 0:
        raise ValueError(f"trim must be >= 0, got {trim}")
    rows = finite_rows(updates)
    trim = max(0, trim - (len(updates) - len(rows)))  # a dropped non-finite row was one of the liars
    if 2 * trim >= len(rows):
        raise ValueError(f"cannot trim {trim} from each end of {len(rows)} rows")
    ordered = np.sort(rows, axis=0)
    return ordered[trim:len(rows) - trim].mean(axis=0)


def centered_clip(updates: np.ndarray, tau: float | None = None, iters: int = 20,
                  tol: float = 1e-10, scale: float = 1.0) -> np.ndarray:
    rows = finite_rows(updates)
    v = np.median(rows, axis=0)
    if tau is None:
        tau = scale * float(np.median(np.linalg.norm(rows - v, axis=1))) or 1e-12
    if tau <= 0:
        raise ValueError("tau must be positive")
    for _ in range(iters):
        diff = rows - v
        norms = np.linalg.norm(diff, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        step = (diff * scale[:, None]).mean(axis=0)
        v = v + step
        if np.linalg.norm(step) <= tol * max(1.0, float(np.linalg.norm(v))):
            break
    return v


def by_parts(combine: Callable[[np.ndarray], np.ndarray], updates: np.ndarray, parts: int) -> np.ndarray:
    """Aggregate ``parts`` contiguous column ranges separately, as parameter shards held by different
    peers would. Mean, median and trimmed mean work per coordinate, so this equals aggregating the
    whole; CenteredClip then clips each part on its own norm (a different, still robust, rule).
    A row with a non-finite value anywhere is made non-finite in every part, so that every part drops
    the same rows (and counts them, as the trimmed mean does) as the whole rule would."""
    rows = np.array(updates, dtype=np.float64)
    finite_rows(rows)  # the shape check, and at least one row left
    rows[~np.all(np.isfinite(rows), axis=1)] = np.nan
    if not 1 <= parts <= max(1, rows.shape[1]):
        raise ValueError(f"cannot cut {rows.shape[1]} coordinates into {parts} parts")
    return np.concatenate([combine(rows[:, cols]) for cols in np.array_split(np.arange(rows.shape[1]), parts)])


def rule(name: str, byzantine: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The rule called ``name`` (mean, median, trimmed_mean, centered_clip); ``byzantine`` is how
    many lying rows to tolerate (the trimmed mean trims that many from each end, at least 1)."""
    if name == "mean":
        return mean
    if name == "median":
        return median
    if name == "trimmed_mean":
        return lambda u: trimmed_mean(u, min(max(1, byzantine), (len(u) - 1) // 2))
    if name == "centered_clip":
        # a quarter of the median distance, 40 iterations: 20% sign-flipping liars on 100 simulated peers
        # lost 0.46 point on average (worst 1.39, 3 seeds) against 1.30 (worst 2.23) with the whole distance
        return lambda u: centered_clip(u, iters=40, scale=CLIP_SCALE)
    raise ValueError(f"unknown aggregation rule {name!r}; one of mean, median, trimmed_mean, centered_clip")


RULES = ("mean", "median", "trimmed_mean", "centered_clip")
CLIP_SCALE = 0.25
