"""A run's training history as figures: loss and the health columns against the step, and the
in-loop k-NN accuracy of several runs against training seconds and FLOPs (time to quality)."""

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


QUALITY = "knn_accuracy"
"""The in-loop quality a time-to-quality plot follows: EuroSAT k-NN accuracy (``KnnProbe``)."""


def quality_curves(histories: pd.DataFrame, arms: dict[str, str], flops_per_step: dict[str, float]) -> pd.DataFrame:
    """Every k-NN probe of every run, against its wall-clock training seconds and training FLOPs.

    ``histories``: long format (``run_id``, ``step``, ``time_s``, ``knn_accuracy``, ... as
    ``eolab.reports.runs.load_histories`` reads them); ``arms``: run id -> arm label (runs of one arm
    with several seeds share it); ``flops_per_step``: run id -> training FLOPs of one optimiser step
    (runs.csv). Returns one row per probe: run_id, arm, step, seconds, tflops, knn_accuracy. A run
    without a FLOP count keeps its seconds and gets NaN TFLOPs; runs without probes are left out."""
    columns = ["run_id", "arm", "step", "seconds", "tflops", QUALITY]
    needed = {"run_id", "step", "time_s", QUALITY}
    if histories.empty or not needed <= set(histories.columns):
        return pd.DataFrame(columns=columns)
    probes = histories.dropna(subset=[QUALITY])[["run_id", "step", "time_s", QUALITY]]
    probes = probes[probes["run_id"].isin(arms.keys())]
    frame = probes.assign(
        arm=probes["run_id"].map(arms),
        seconds=probes["time_s"],
        tflops=probes["step"] * probes["run_id"].map(lambda r: flops_per_step.get(r, float("nan"))) / 1e12,
    )
    return frame[columns].sort_values(["arm", "run_id", "step"]).reset_index(drop=True)


def time_to_reach(curves: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
    """Per arm, the first training seconds and TFLOPs at which each run's k-NN accuracy reached
    ``level`` (mean over the arm's runs; NaN where a run never did). Default ``level``: the lowest
    of the arms' best accuracies, a quality every arm reaches, so the table ranks arms by how fast
    they get there rather than by where they end."""
    if curves.empty:
        return pd.DataFrame(columns=["arm", "level", "runs", "reached", "seconds", "tflops", "best_knn_accuracy"])
    if level is None:
        level = float(curves.groupby("arm")[QUALITY].max().min())
    rows = []
    for arm, group in curves.groupby("arm"):
        firsts = []
        for _, run in group.groupby("run_id"):
            hit = run[run[QUALITY] >= level]
            firsts.append(hit.iloc[0] if len(hit) else None)
        reached = [f for f in firsts if f is not None]
        rows.append({
            "arm": arm, "level": level, "runs": len(firsts), "reached": len(reached),
            "seconds": float(pd.Series([f["seconds"] for f in reached]).mean()) if reached else float("nan"),
            "tflops": float(pd.Series([f["tflops"] for f in reached]).mean()) if reached else float("nan"),
            "best_knn_accuracy": float(group[QUALITY].max()),
        })
    return pd.DataFrame(rows).sort_values(["seconds", "arm"]).reset_index(drop=True)


def plot_time_to_quality(curves: pd.DataFrame, title: str = ""):
    """k-NN accuracy against training seconds (left) and training TFLOPs (right), one line per run,
    one colour per arm; None when no run has probes."""
    if curves.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), squeeze=False, sharey=True)
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(sorted(curves["arm"].unique()))}
    for ax, x, label in zip(axes[0], ("seconds", "tflops"), ("wall-clock training seconds", "training TFLOPs"), strict=True):
        shown = set()
        for (arm, _), run in curves.groupby(["arm", "run_id"]):
            values = run.dropna(subset=[x])
            if values.empty:
                continue
            ax.plot(values[x], values[QUALITY], marker=".", color=colours[arm], label=None if arm in shown else arm)
            shown.add(arm)
        ax.set(xlabel=label, ylabel="in-loop k-NN accuracy")
        ax.grid(alpha=0.3)
    axes[0][1].legend(title="arm", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.suptitle(title or "time to quality")
    fig.tight_layout()
    return fig
