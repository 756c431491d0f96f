"""Confidence intervals shared by the run summaries and the embedding benchmark (numpy only, so
neither side pulls in the other's stack)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement).

    Over cross-validation folds the interval is optimistic: repeated k-fold folds share training
    data and are not independent draws, so read it together with the fold and seed spreads.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def seeds_bootstrap_ci(groups: list[np.ndarray], level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Two-level percentile bootstrap of a mean over seeds of per-seed fold means.

    ``groups[i]`` holds seed i's values (paired differences, fold by fold, when comparing two
    encoders). Each replicate draws the seeds with replacement and then, within every drawn seed,
    its folds with replacement, so the interval carries both the seed-to-seed spread (a different
    pre-training run) and the fold spread (a different probe split). With few seeds the seed level
    is coarse: three seeds give at most ten distinct seed draws.
    """
    groups = [np.asarray(g, dtype=float)[np.isfinite(np.asarray(g, dtype=float))] for g in groups]
    groups = [g for g in groups if len(g)]
    if not groups or sum(len(g) for g in groups) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(groups), len(groups))
        means[b] = np.mean([groups[i][rng.integers(0, len(groups[i]), len(groups[i]))].mean() for i in picked])
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))
