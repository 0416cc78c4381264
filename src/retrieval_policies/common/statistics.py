"""How sure a difference is: paired bootstrap intervals and the sign test over per-item (per-query) differences,
for claims that carry their uncertainty (the evidence, the faithfulness test)."""

from __future__ import annotations

import math

import numpy as np


def paired_bootstrap_ci(differences, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile interval of the mean of paired per-item differences, resampling items with replacement."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or len(differences) == 0:
        raise ValueError("a bootstrap needs a non-empty list of per-item differences")
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def sign_test(differences) -> dict:
    """Two-sided exact sign test: how many items got better and worse (ties left out), and the probability of a
    split at least that uneven if better and worse were equally likely."""
    differences = np.asarray(differences, dtype=np.float64)
    better, worse = int((differences > 0).sum()), int((differences < 0).sum())
    n, k = better + worse, min(better, worse)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"better": better, "worse": worse, "p_value": p}


def bootstrap_ci(statistic, n: int, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile interval of ``statistic(indices)`` over resamples of ``n`` paired items with replacement: for a
    statistic that is not a mean of per-item differences (a difference of two correlations, say)."""
    if n <= 0:
        raise ValueError("a bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=np.float64)
    tail = 100 * (1 - level) / 2
    return [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))]
