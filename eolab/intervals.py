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
