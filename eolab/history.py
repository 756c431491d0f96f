"""Summaries of a training history (one row per step), shared by run records and summary notebooks,
so "the loss fell" means the same thing in a record.json and in a rendered summary. Plotting a
history is report code: ``eolab.reports.history``."""

from __future__ import annotations

import math

import pandas as pd

LOSS_WINDOW = 0.1
"""Fraction of the steps averaged at each end of a curve."""


def window_steps(n_steps: int, window: float = LOSS_WINDOW) -> int:
    """How many steps make up ``window`` of ``n_steps`` (at least one)."""
    return max(1, math.ceil(n_steps * window))


def ends(history: pd.DataFrame, column: str = "loss", window: float = LOSS_WINDOW) -> tuple[float, float] | None:
    """Mean of ``column`` over the first and the last ``window`` of steps; None with fewer than two."""
    if column not in history:
        return None
    values = (history.sort_values("step") if "step" in history else history)[column].dropna()
    if len(values) < 2:
        return None
    k = window_steps(len(values), window)
    return float(values.iloc[:k].mean()), float(values.iloc[-k:].mean())


HEALTH = ("embedding_std", "effective_rank", "knn_accuracy")
"""Health columns of a history, logged every few steps (NaN in between)."""
