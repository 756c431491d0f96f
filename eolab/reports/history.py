"""A run's training history as a figure: loss and the health columns against the step."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from eolab.history import HEALTH


def plot_history(history: pd.DataFrame, title: str = ""):
    """Loss (log scale) and, where logged, the health columns against the step: one row of panels."""
    panels = ["loss"] + [c for c in HEALTH if c in history and history[c].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, column in zip(axes[0], panels, strict=True):
        values = history[["step", column]].dropna()
        ax.plot(values["step"], values[column], marker="." if column != "loss" else None)
        ax.set(xlabel="step", title=column, yscale="log" if column == "loss" else "linear")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
