"""Datasets for training: scikit-learn's handwritten digits (shipped with the package: no download),
a seeded train/test split, shards and minibatches.

``digits(seed)`` gives 1797 8x8 images as 64 float64 features scaled to
[0, 1] and int64 labels 0..9, split 80/20 with a seeded permutation.
``synthetic(seed, examples, features, classes, informative)`` is a seeded
classification problem from scikit-learn's ``make_classification`` (made
here, nothing downloaded), split the same way; ``load(spec)`` picks one.
``shard(x, y, k, n)`` is the k-th of n contiguous, near-equal slices;
``batches(n, size, epoch, seed)`` yields index arrays of a seeded shuffle,
so every peer that is told (shard, epoch) draws the same minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits(seed: int = 0, test_fraction: float = 0.2) -> Split:
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64) / 16.0
    y = np.asarray(data.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return Split(x[train], y[train], x[test], y[test])


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> Split:
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return Split(x[train], y[train], x[test], y[test])


def synthetic(seed: int, examples: int, features: int, classes: int, informative: int,
              test_fraction: float = 0.2) -> Split:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=examples, n_features=features, n_informative=informative,
                               n_redundant=0, n_classes=classes, n_clusters_per_class=1, class_sep=2.0,
                               random_state=seed)
    return _split(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64), seed, test_fraction)


def load(spec: object) -> Split:
    """The dataset a ``TrainSpec`` names (digits, or its synthetic problem)."""
    if getattr(spec, "dataset") == "synthetic":
        examples, features, classes, informative = getattr(spec, "synthetic")
        return synthetic(getattr(spec, "seed"), examples, features, classes, informative)
    return digits(getattr(spec, "seed"))


def shard(x: np.ndarray, y: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-th of n contiguous slices (sizes differ by at most one)."""
    if not 0 <= k < n:
        raise ValueError(f"shard {k} of {n}")
    lo, hi = len(y) * k // n, len(y) * (k + 1) // n
    return x[lo:hi], y[lo:hi]


def batch_indices(n: int, size: int, step: int, seed: int) -> np.ndarray:
    """Indices of minibatch ``step`` over n examples: a seeded shuffle per epoch, full batches only."""
    per_epoch = max(1, n // size)
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[i * size:(i + 1) * size] if n >= size else order
