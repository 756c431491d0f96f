"""Loading and plotting helpers for the summary notebook (kept here so they can be tested and reused).

They read only the runner's outputs (spec.json, table.csv, runs.csv, runs/*/history.csv) and cope
with partial results: missing folds, missing histories or failed runs give a message, not a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from eolab.history import LOSS_WINDOW, ends
from eolab.intervals import bootstrap_ci
from eolab.reports import history as history_report
from eolab.runner.store import (
    HISTORY_NAME,
    RUNS_DIRNAME,
    RUNS_TABLE_NAME,
    SPEC_NAME,
    TABLE_NAME,
)

ENCODER_ORDER = ("pretrained", "random_init", "band_stats")
"""Linear-probe baselines, in the order they are plotted (pretrained first, the two controls after)."""



@dataclass
class AblationResults:
    """Everything the summary shows, loaded once."""

    results_dir: Path
    spec: dict[str, Any]
    table: pd.DataFrame  # one row per (run, encoder, fold)
    runs: pd.DataFrame  # one row per run
    histories: pd.DataFrame  # long format: run_id, step, loss, ...

    @property
    def grid_keys(self) -> list[str]:
        """The ablated parameters (spec.json's grid), restricted to those present in the table."""
        return [k for k in self.spec.get("grid", {}) if k in self.table.columns or k in self.runs.columns]


def load_results(results_dir: str | Path) -> AblationResults:
    """Read an ablation's results folder (as written by `python -m eolab ablate`)."""
    results_dir = Path(results_dir).resolve()
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    spec_path = results_dir / SPEC_NAME
    spec = json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else {}
    return AblationResults(
        results_dir=results_dir,
        spec=spec,
        table=_read_csv(results_dir / TABLE_NAME),
        runs=_read_csv(results_dir / RUNS_TABLE_NAME),
        histories=load_histories(results_dir),
    )


def load_histories(results_dir: Path) -> pd.DataFrame:
    """Concatenate every run's history.csv with a `run_id` column (empty frame if there are none)."""
    frames = [
        pd.read_csv(path).assign(run_id=path.parent.name)
        for path in sorted((results_dir / RUNS_DIRNAME).glob(f"*/{HISTORY_NAME}"))
    ]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "step", "loss"])


def run_label(run_id: str) -> str:
    """The readable part of a run id (`mask_ratio=0.5-seed=0`), for legends."""
    head, _, tail = run_id.rpartition("-")
    return head if head and len(tail) == 12 else run_id


def loss_fell(history: pd.DataFrame, window: float = LOSS_WINDOW) -> bool | None:
    """Whether the mean loss over the last `window` of steps is below that over the first.

    A cheap sanity check that pre-training learned anything; None if there are too few steps.
    """
    first_last = ends(history, "loss", window)
    return None if first_last is None else bool(first_last[1] < first_last[0])


def describe(results: AblationResults) -> str:
    """A markdown paragraph: what was ablated, over which values, and how many runs succeeded."""
    spec = results.spec
    lines = [f"**{spec.get('name', results.results_dir.name)}**: {spec.get('description') or '(no description)'}", ""]
    for key, values in spec.get("grid", {}).items():
        lines.append(f"- ablated `{key}`: {', '.join(map(str, values))}")
    if spec.get("seeds") is not None:
        lines.append(f"- seeds: {', '.join(map(str, spec['seeds']))}")
    if spec.get("base"):
        lines.append("- fixed: " + ", ".join(f"`{k}={v}`" for k, v in spec["base"].items()))
    if not results.runs.empty and "status" in results.runs:
        counts = results.runs["status"].value_counts()
        lines.append("- runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    lines.append(f"- results folder: `{results.results_dir}`")
    return "\n".join(lines)


def plot_accuracy(results: AblationResults) -> Figure | None:
    """Linear-probe accuracy versus the first ablated parameter, one series per encoder.

    Points are fold means with a +-1 sd bar; the individual folds are drawn behind them.
    Further grid parameters become one panel per combination.
    """
    table = results.table
    if table.empty or not {"encoder", "accuracy"} <= set(table.columns):
        print("No linear-probe folds in table.csv: nothing to plot.")
        return None
    table = table.dropna(subset=["accuracy"])
    keys = results.grid_keys
    x = keys[0] if keys else "run_id"
    facet_keys = keys[1:]
    panels = list(table.groupby(facet_keys, sort=True)) if facet_keys else [((), table)]
    encoders = [e for e in ENCODER_ORDER if e in set(table["encoder"])]
    encoders += sorted(set(table["encoder"]) - set(encoders))
    order = sorted(table[x].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(2 + 4.5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (facet_values, panel) in zip(axes[0], panels, strict=True):
        common = dict(data=panel, x=x, y="accuracy", hue="encoder", hue_order=encoders, order=order, ax=ax)
        sns.stripplot(**common, dodge=True, alpha=0.35, size=4, legend=False)
        sns.pointplot(**common, dodge=0.8 - 0.8 / len(encoders), errorbar="sd", capsize=0.1, markers="o")
        ax.set_title(_facet_title(facet_keys, facet_values))
        ax.set_ylabel("linear-probe accuracy")
        ax.grid(axis="y", alpha=0.3)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()  # one legend per figure is enough
    fig.tight_layout()
    return fig


def plot_loss_curves(results: AblationResults) -> Figure | None:
    """Pre-training loss per step, one line per run (log scale when the loss spans a decade)."""
    history = results.histories
    if history.empty or not {"step", "loss"} <= set(history.columns):
        print("No history.csv with `step` and `loss`: no loss curves.")
        return None
    history = history.dropna(subset=["loss"]).assign(run=history["run_id"].map(run_label))
    # Different objectives have losses on different scales (NT-Xent ~ log(batch), MSE ~ 1): then
    # each curve is shown relative to its own start, which still shows whether and how fast it fell.
    start = history.groupby("run_id")["loss"].transform(lambda v: v.iloc[: max(1, len(v) // 10)].mean())
    relative = start.max() > 3 * start.min() > 0
    y = "loss / start" if relative else "loss"
    if relative:
        history[y] = history["loss"] / start
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.lineplot(data=history, x="step", y=y, hue="run", ax=ax)
    positive = history[y] > 0
    if positive.all() and history[y].max() > 10 * history[y].min():
        ax.set_yscale("log")
    ax.set_ylabel("pre-training loss" + (" relative to its first 10% of steps" if relative else ""))
    ax.legend(title="run", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


HEALTH_COLUMNS = ("knn_accuracy", "effective_rank", "embedding_std")
"""Health values logged during training (every few steps; NaN in between)."""


def plot_health(results: AblationResults) -> Figure | None:
    """In-loop EuroSAT k-NN accuracy, effective rank and embedding spread against the step, per run."""
    history = results.histories
    columns = [c for c in HEALTH_COLUMNS if c in history.columns and history[c].notna().any()]
    if history.empty or not columns:
        print("No health values in the histories (runs from before they were logged).")
        return None
    history = history.assign(run=history["run_id"].map(run_label))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.5), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        sns.lineplot(data=history.dropna(subset=[column]), x="step", y=column, hue="run", marker=".", ax=ax,
                     legend=column == columns[-1])
        ax.grid(alpha=0.3)
    axes[0][-1].legend(title="run", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def arm_labels(results: AblationResults) -> dict[str, str]:
    """Run id -> its arm: the ablated values other than the seed (``objective=mae``), so that the
    seeds of one arm share a colour; the readable run id where runs.csv lacks them."""
    runs = results.runs
    keys = [k for k in results.grid_keys if k in runs.columns and k != "seed"]
    if runs.empty or "run_id" not in runs:
        return {r: run_label(r) for r in results.histories.get("run_id", pd.Series(dtype=str)).unique()}
    return {row["run_id"]: ", ".join(f"{k}={row[k]}" for k in keys) if keys else run_label(row["run_id"])
            for _, row in runs.iterrows()}


def quality_curves(results: AblationResults) -> pd.DataFrame:
    """Every run's in-loop k-NN accuracy against its training seconds and FLOPs (``flops_per_step``
    from runs.csv x the step), with its arm: ``eolab.reports.history.quality_curves``."""
    runs = results.runs
    flops = dict(zip(runs["run_id"], runs["flops_per_step"], strict=True)) if {"run_id", "flops_per_step"} <= set(runs) else {}
    return history_report.quality_curves(results.histories, arm_labels(results), flops)


def plot_time_to_quality(results: AblationResults) -> Figure | None:
    """k-NN accuracy against wall-clock seconds and training FLOPs per arm: which arm reaches a
    given quality first, not only which ends highest."""
    curves = quality_curves(results)
    if curves.empty:
        print("No in-loop k-NN accuracy in the histories (knn_every 0, or runs from before it was logged).")
        return None
    return history_report.plot_time_to_quality(curves, title=results.spec.get("name", ""))


def time_to_quality(results: AblationResults, level: float | None = None) -> pd.DataFrame:
    """Per arm, the seconds and TFLOPs its runs took to first reach k-NN accuracy ``level`` (default:
    the lowest of the arms' best, which every arm reaches): ``eolab.reports.history.time_to_reach``."""
    return history_report.time_to_reach(quality_curves(results), level).round(4)


COMPUTE_COLUMNS = {"flops_per_step": "GFLOP/step", "train_steps": "steps", "train_flops": "train TFLOP",
                   "train_time_s": "train s", "cpu_hours": "CPU h", "gpu_hours": "GPU h", "final_knn_accuracy": "final k-NN", "final_effective_rank": "final rank",
                   "collapsed": "collapsed", "collapsed_while_loss_fell": "collapsed, loss fell"}
"""Per-run cost and health columns of runs.csv shown by `compute_summary`, with display names."""


def compute_summary(results: AblationResults) -> pd.DataFrame:
    """What each run cost (FLOPs per step, steps, total training FLOPs, time) and how healthy it ended."""
    runs = results.runs
    present = [c for c in COMPUTE_COLUMNS if c in runs.columns]
    if runs.empty or not present:
        return pd.DataFrame()
    keys = [k for k in results.grid_keys if k in runs.columns]
    frame = runs[["run_id", *keys, *present]].copy()
    scale = {"flops_per_step": 1e9, "train_flops": 1e12}
    for column, factor in scale.items():
        if column in frame:
            frame[column] = frame[column] / factor
    return frame.rename(columns=COMPUTE_COLUMNS).round(3).sort_values([*keys, "run_id"]).reset_index(drop=True)


def accuracy_summary(results: AblationResults) -> pd.DataFrame:
    """Mean +- std accuracy per run (rows) and encoder (columns), plus the `loss fell` check."""
    table, runs = results.table, results.runs
    if not table.empty and {"encoder", "accuracy"} <= set(table.columns):
        keys = [k for k in results.grid_keys if k in table.columns]
        frame = _accuracy_cells(table, keys)
    elif not runs.empty:  # no folds recorded: still list the runs and their loss check
        keys = [k for k in results.grid_keys if k in runs.columns]
        frame = runs[["run_id", *keys]].copy()
    else:
        return pd.DataFrame()
    fell = loss_checks(results.histories)
    frame["loss fell"] = frame["run_id"].map(lambda run_id: fell.get(run_id))
    return frame.sort_values([*keys, "run_id"]).reset_index(drop=True)


def paired_gains(results: AblationResults, reference: str = "pretrained") -> pd.DataFrame:
    """Per run: accuracy of ``reference`` minus each baseline, paired fold by fold.

    Every encoder of a run is probed on the same folds, so per-fold differences remove the
    variance that comes from which patches land in the test fold. ``beats`` is True when the mean
    gain exceeds the standard deviation of the reference's fold accuracies (the margin the
    foundation issue asks for), False otherwise.
    """
    table = results.table
    if table.empty or not {"encoder", "fold", "accuracy"} <= set(table.columns):
        return pd.DataFrame()
    keys = [k for k in results.grid_keys if k in table.columns]
    rows = []
    for (run_id, *values), run in table.groupby(["run_id", *keys], dropna=False):
        wide = run.pivot_table(index="fold", columns="encoder", values="accuracy")
        if reference not in wide:
            continue
        for baseline in [c for c in wide.columns if c != reference]:
            diff = (wide[reference] - wide[baseline]).dropna()
            lo, hi = bootstrap_ci(diff.to_numpy())
            rows.append({
                "run_id": run_id, **dict(zip(keys, values, strict=True)), "baseline": baseline,
                "gain": diff.mean(), "gain_sd": diff.std(), "ci_low": lo, "ci_high": hi,
                "fold_sd": wide[reference].std(), "beats": bool(diff.mean() > wide[reference].std()),
            })
    return pd.DataFrame(rows).round(4)


def compare_arms(results: AblationResults, encoder: str = "pretrained", reference: str | None = None) -> pd.DataFrame:
    """Every run against a reference run of the same seed: accuracy difference paired fold by fold.

    Runs with the same seed are probed on the same folds (the probe's split is seeded), so their
    per-fold differences cancel which patches land in a test fold. Per comparison: the mean
    difference, its 95% bootstrap interval over folds, and, where the ablation has several seeds,
    the seed noise (standard deviation of each arm's mean accuracy across seeds; the larger of the
    two arms') and whether the difference exceeds twice that. The reference defaults to the run
    with the best mean accuracy.
    """
    table = results.table
    if table.empty or not {"encoder", "fold", "accuracy", "run_id"} <= set(table.columns):
        return pd.DataFrame()
    acc = table[table["encoder"] == encoder]
    keys = [k for k in results.grid_keys if k in acc.columns and k != "seed"]
    runs = acc.groupby("run_id").agg(mean=("accuracy", "mean"),
                                     seed=("seed", "first") if "seed" in acc.columns else ("accuracy", lambda _: 0),
                                     **{k: (k, "first") for k in keys})
    runs["arm"] = runs[keys].apply(tuple, axis=1) if keys else [()] * len(runs)
    reference = reference or str(runs["mean"].idxmax())
    ref_arm = runs.loc[reference, "arm"]
    # Seed noise of an arm: how much its mean accuracy moves between seeds (needs two or more).
    seed_sd = runs.groupby("arm")["mean"].std()
    folds = {run_id: run.set_index("fold")["accuracy"] for run_id, run in acc.groupby("run_id")}
    rows = []
    for run_id, run in runs.iterrows():
        if run["arm"] == ref_arm:
            continue
        partner = runs[(runs["arm"] == ref_arm) & (runs["seed"] == run["seed"])].index
        if partner.empty:
            continue
        paired = (folds[run_id] - folds[partner[0]]).dropna()  # same seed: the same folds
        lo, hi = bootstrap_ci(paired.to_numpy())
        spreads = [s for s in (seed_sd.get(run["arm"], np.nan), seed_sd.get(ref_arm, np.nan)) if np.isfinite(s)]
        noise = max(spreads) if spreads else float("nan")  # one seed per arm: no seed noise to compare with
        rows.append({"run_id": run_id, **{k: run[k] for k in keys}, "versus": partner[0],
                     "difference": paired.mean(), "ci_low": lo, "ci_high": hi, "interval_excludes_0": not lo <= 0 <= hi,
                     "seed_sd": noise, "exceeds_seed_noise": bool(abs(paired.mean()) > 2 * noise) if np.isfinite(noise) else None})
    return pd.DataFrame(rows).round(4)


def loss_checks(histories: pd.DataFrame) -> dict[str, bool | None]:
    """`loss_fell` for every run that has a history."""
    if histories.empty:
        return {}
    return {run_id: loss_fell(history) for run_id, history in histories.groupby("run_id")}


def _accuracy_cells(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per run, one 'mean ± std' column per encoder (known encoders first)."""
    stats = table.groupby(["run_id", *keys, "encoder"], dropna=False)["accuracy"].agg(["mean", "std", "count"])
    cells = stats.apply(_mean_std, axis=1).rename("accuracy").reset_index()
    frame = cells.pivot(index=["run_id", *keys], columns="encoder", values="accuracy").reset_index()
    frame.columns.name = None
    encoders = [e for e in ENCODER_ORDER if e in frame.columns]
    encoders += sorted(c for c in frame.columns if c not in {"run_id", *keys, *encoders})
    return frame[["run_id", *keys, *encoders]]


def failed_runs(results: AblationResults) -> pd.DataFrame:
    """Runs that did not finish, with their error (empty when all succeeded)."""
    runs = results.runs
    if runs.empty or "status" not in runs:
        return pd.DataFrame(columns=["run_id", "status", "error"])
    bad = runs[~runs["status"].isin(["done", "unknown"])]
    return bad[["run_id", "status", "error"]].reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    """A missing or empty table reads as an empty frame."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path)


def _mean_std(row: pd.Series) -> str:
    if row["count"] > 1 and not math.isnan(row["std"]):
        return f"{row['mean']:.3f} ± {row['std']:.3f}"
    return f"{row['mean']:.3f}"


def _facet_title(keys: list[str], values: Any) -> str:
    if not keys:
        return ""
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
