"""Loading and plotting helpers for the study summary notebook (notebooks/study_summary.ipynb).

They read only files the runner wrote into the results folder (spec.json, trials.json, runs.csv),
never the study's storage: that may be a database behind a password, or a journal on a file system
the reader cannot see. Parameter importances need an optuna Study, so one is rebuilt in memory from
trials.json. Partial studies (no complete trial yet, one parameter, only pruned trials) give a
message instead of a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from eolab.runner.store import RUNS_TABLE_NAME, SPEC_NAME
from eolab.runner.study import TRIALS_JSON_NAME

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
PRUNED_STYLE = {"color": "0.6", "linestyle": "--", "linewidth": 1.0}


@dataclass
class StudyResults:
    """Everything the study summary shows, loaded once."""

    results_dir: Path
    spec: dict[str, Any]  # spec.json
    meta: dict[str, Any]  # trials.json without its trials: study, direction, metric, intermediate, n_trials
    trials: pd.DataFrame  # one row per trial: number, state, value, run_id, duration_s, <params>
    intermediate: pd.DataFrame  # long: number, state, step, value
    runs: pd.DataFrame  # runs.csv
    distributions: dict[str, dict[str, Any]]  # parameter -> optuna distribution JSON (from the trials)

    @property
    def params(self) -> list[str]:
        """The searched parameters, in the spec's order (then any others seen in trials)."""
        space = list((self.spec.get("study") or {}).get("space") or {})
        return [p for p in space if p in self.trials.columns] + [
            p for p in self.distributions if p not in space and p in self.trials.columns
        ]

    @property
    def maximize(self) -> bool:
        return self.meta.get("direction", "maximize") == "maximize"

    @property
    def metric(self) -> str:
        return str(self.meta.get("metric", "value"))

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == COMPLETE] if not self.trials.empty else self.trials


def load_study_results(results_dir: str | Path) -> StudyResults:
    """Read a study's results folder (as written by `python -m eolab ablate` with a `study:` spec)."""
    results_dir = Path(results_dir).resolve()
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    spec = _read_json(results_dir / SPEC_NAME)
    meta = _read_json(results_dir / TRIALS_JSON_NAME)
    raw = meta.pop("trials", [])
    distributions: dict[str, dict[str, Any]] = {}
    for trial in raw:
        distributions.update(trial.get("distributions") or {})
    trials = pd.DataFrame(
        [{k: t.get(k) for k in ("number", "state", "value", "run_id", "duration_s", "reused", "error")} | t["params"]
         for t in raw]
    )
    intermediate = pd.DataFrame(
        [{"number": t["number"], "state": t["state"], "step": int(s), "value": v}
         for t in raw for s, v in (t.get("intermediate") or {}).items()],
        columns=["number", "state", "step", "value"],
    )
    runs_path = results_dir / RUNS_TABLE_NAME
    runs = pd.read_csv(runs_path) if runs_path.is_file() and runs_path.stat().st_size else pd.DataFrame()
    return StudyResults(results_dir, spec, meta, trials, intermediate.sort_values(["number", "step"]), runs,
                        distributions)


def describe_study(results: StudyResults) -> str:
    """A markdown paragraph: objective, search space, trial counts, best trial, results folder."""
    spec, study = results.spec, results.spec.get("study") or {}
    lines = [f"**{spec.get('name', results.results_dir.name)}**: {spec.get('description') or '(no description)'}", ""]
    lines.append(f"- objective: {results.meta.get('direction', '?')} `{results.metric}` over "
                 f"{results.meta.get('n_trials', '?')} trials (complete + pruned)")
    lines.append(f"- sampler `{study.get('sampler')}`, pruner `{study.get('pruner')}`"
                 + (f" on `health/{study['intermediate']}`" if study.get("intermediate") else ""))
    for name, dim in (study.get("space") or {}).items():
        lines.append(f"- searched `{name}`: {_describe_dim(dim)}")
    if spec.get("base"):
        lines.append("- fixed: " + ", ".join(f"`{k}={v}`" for k, v in spec["base"].items()))
    if not results.trials.empty:
        counts = results.trials["state"].value_counts()
        lines.append("- trials: " + ", ".join(f"{n} {state.lower()}" for state, n in counts.items()))
    best = best_trials(results, k=1)
    if not best.empty:
        row = best.iloc[0]
        params = ", ".join(f"`{p}={_short(row[p])}`" for p in results.params if p in row)
        lines.append(f"- best: trial {int(row['number'])}, {results.metric} = {row['value']:.4g} with {params}")
    lines.append(f"- storage: `{study.get('storage')}`; results folder: `{results.results_dir}`")
    return "\n".join(lines)


def best_trials(results: StudyResults, k: int = 10) -> pd.DataFrame:
    """The k best complete trials, best first: number, value, parameters, duration, run id."""
    complete = results.complete
    if complete.empty:
        return pd.DataFrame(columns=["number", "value", *results.params])
    ranked = complete.sort_values("value", ascending=not results.maximize).head(k)
    columns = ["number", "value", *results.params, "duration_s", "run_id"]
    return ranked[[c for c in columns if c in ranked.columns]].reset_index(drop=True)


def failed_trials(results: StudyResults) -> pd.DataFrame:
    """Trials that failed, with the error the runner recorded (empty if none)."""
    if results.trials.empty:
        return pd.DataFrame(columns=["number", "run_id", "error"])
    failed = results.trials[results.trials["state"] == FAIL]
    return failed[["number", "run_id", "error"]].reset_index(drop=True)


def in_memory_study(results: StudyResults) -> optuna.Study:
    """The finished trials as an in-memory optuna Study (what optuna's analysis functions take)."""
    study = optuna.create_study(direction=results.meta.get("direction", "maximize"))
    raw = _read_json(results.results_dir / TRIALS_JSON_NAME).get("trials", [])
    for trial in raw:
        if trial["state"] not in (COMPLETE, PRUNED):
            continue
        distributions = {
            k: optuna.distributions.json_to_distribution(json.dumps(d)) for k, d in trial["distributions"].items()
        }
        study.add_trial(
            optuna.trial.create_trial(
                state=getattr(optuna.trial.TrialState, trial["state"]),
                value=trial["value"] if trial["state"] == COMPLETE else None,
                params=trial["params"],
                distributions=distributions,
                intermediate_values={int(s): v for s, v in (trial.get("intermediate") or {}).items()},
                user_attrs={"run_id": trial.get("run_id")},
            )
        )
    return study


def param_importances(results: StudyResults, evaluator: str = "fanova") -> pd.Series:
    """Share of the objective's variance each parameter explains over the complete trials
    (fANOVA: a random forest on the trials, then a functional ANOVA; "ped" for PED-ANOVA).

    With few trials this is a rough ranking, not a measurement: read it together with the slice plots.
    """
    study = in_memory_study(results)
    n_complete = len(results.complete)
    if n_complete < 2 or len(results.params) < 1:
        print(f"Parameter importances need at least 2 complete trials (have {n_complete}).")
        return pd.Series(dtype=float, name="importance")
    evaluators = {
        "fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
        "ped": lambda: optuna.importance.PedAnovaImportanceEvaluator(),
    }
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=evaluators[evaluator]())
    except (RuntimeError, ValueError) as exc:  # e.g. every complete trial has the same parameters
        print(f"Parameter importances unavailable: {exc}")
        return pd.Series(dtype=float, name="importance")
    return pd.Series(importances, name="importance")


def plot_importances(importances: pd.Series) -> Figure | None:
    """Horizontal bars, most important parameter on top."""
    if importances.empty:
        return None
    ordered = importances.sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(ordered)))
    ax.barh(ordered.index, ordered.values, color="tab:blue")
    ax.set_xlabel("importance (share of explained variance)")
    ax.set_xlim(0, max(1.0, float(ordered.max())))
    for y, value in enumerate(ordered.values):
        ax.text(value + 0.01, y, f"{value:.2f}", va="center", fontsize="small")
    fig.tight_layout()
    return fig


def plot_parallel_coordinates(results: StudyResults) -> Figure | None:
    """One line per trial across the parameter axes and the objective; complete trials coloured by
    their value, pruned trials dashed grey (they have no objective value and stop at the last axis
    before it). Each axis is scaled to its range (log axes in log space; categories evenly spaced)."""
    trials = results.trials
    params = results.params
    if trials.empty or not params:
        print("No trials yet: no parallel-coordinates plot.")
        return None
    shown = trials[trials["state"].isin([COMPLETE, PRUNED])]
    if shown.empty:
        print("No complete or pruned trials: no parallel-coordinates plot.")
        return None
    columns = [*params, "value"]
    complete = shown["state"] == COMPLETE
    scaled, labels = {}, {}
    for column in params:
        scaled[column], labels[column] = _scaled_axis(shown[column], results.distributions.get(column))
    # a pruned trial's `value` is its last intermediate value, not the objective: scale on complete ones
    objective = shown["value"].where(complete, shown.loc[complete, "value"].min() if complete.any() else 0.0)
    scaled["value"], labels["value"] = _scaled_axis(objective, None)
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(columns), 4.5))
    values = shown.loc[complete, "value"].astype(float)
    norm = plt.Normalize(values.min(), values.max()) if not values.empty else None
    cmap = plt.get_cmap("viridis")
    xs = np.arange(len(columns))
    for index, row in shown.iterrows():
        ys = [scaled[c].loc[index] for c in columns]
        if row["state"] == COMPLETE and norm is not None:
            ax.plot(xs, ys, color=cmap(norm(row["value"])), linewidth=1.6, alpha=0.9)
        else:
            ax.plot(xs[:-1], ys[:-1], **PRUNED_STYLE)
    for x, column in zip(xs, columns, strict=True):
        ax.axvline(x, color="black", linewidth=0.8)
        low, high = labels[column]
        ax.text(x, -0.06, low, ha="center", va="top", fontsize="small")
        ax.text(x, 1.06, high, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(xs, [*params, results.metric])
    ax.tick_params(axis="x", pad=18)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if norm is not None:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=results.metric, pad=0.02)
    ax.plot([], [], label="pruned", **PRUNED_STYLE)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def plot_slices(results: StudyResults) -> Figure | None:
    """The objective against each parameter (complete trials, coloured by trial number, so drift
    of the sampler shows); ticks at the bottom mark where pruned trials sampled."""
    params = results.params
    complete = results.complete
    if complete.empty or not params:
        print("No complete trials: no slice plots.")
        return None
    pruned = results.trials[results.trials["state"] == PRUNED]
    fig, axes = plt.subplots(
        1, len(params), figsize=(1.5 + 3.6 * len(params), 3.8), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, param in zip(axes[0], params, strict=True):
        dist = results.distributions.get(param) or {}
        x_complete, ticks = _positions(complete[param], dist)
        points = ax.scatter(x_complete, complete["value"], c=complete["number"], cmap="plasma", s=28, zorder=3)
        if not pruned.empty:
            x_pruned, _ = _positions(pruned[param], dist)
            ax.plot(x_pruned, np.zeros(len(x_pruned)), "|", color="0.5", markersize=12,
                    transform=ax.get_xaxis_transform(), label="pruned")
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks)
        elif (dist.get("attributes") or {}).get("log"):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 3x10^-3-style labels would overlap
        ax.set_xlabel(param)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(results.metric)
    if not pruned.empty:
        axes[0][0].legend(fontsize="small", loc="best")
    fig.colorbar(points, ax=axes[0].tolist(), label="trial number", pad=0.01)
    return fig


def plot_intermediate(results: StudyResults) -> Figure | None:
    """Intermediate values per step, one line per trial: complete trials coloured, pruned trials
    dashed grey ending in an x where the pruner stopped them."""
    frame = results.intermediate
    if frame.empty:
        print("No intermediate values were reported (the notebook does not use trial_callbacks, "
              "or the spec has no `study.intermediate`).")
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    cmap = plt.get_cmap("viridis")
    numbers = sorted(frame["number"].unique())
    for i, (number, curve) in enumerate(frame.groupby("number")):
        state = curve["state"].iloc[0]
        if state == PRUNED:
            ax.plot(curve["step"], curve["value"], **PRUNED_STYLE)
            ax.plot(curve["step"].iloc[-1], curve["value"].iloc[-1], "x", color="tab:red", markersize=7)
        else:
            ax.plot(curve["step"], curve["value"], color=cmap(i / max(len(numbers) - 1, 1)), linewidth=1.4,
                    label=f"trial {number}" if len(numbers) <= 12 else None)
    ax.plot([], [], label="pruned", **PRUNED_STYLE)
    ax.plot([], [], "x", color="tab:red", label="pruned here")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"health/{results.meta.get('intermediate') or 'intermediate'}")
    ax.grid(alpha=0.3)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def _scaled_axis(column: pd.Series, dist: dict[str, Any] | None) -> tuple[pd.Series, tuple[str, str]]:
    """A column mapped to [0, 1] for a parallel-coordinates axis, and its (low, high) labels."""
    attributes = (dist or {}).get("attributes") or {}
    if "choices" in attributes or not pd.api.types.is_numeric_dtype(column):
        choices = [str(c) for c in attributes.get("choices", sorted(column.dropna().astype(str).unique()))]
        codes = column.astype(str).map({c: i for i, c in enumerate(choices)}).astype(float)
        return codes / max(len(choices) - 1, 1), (choices[0], choices[-1])
    values = column.astype(float)
    transformed = np.log10(values) if attributes.get("log") else values
    low, high = float(transformed.min()), float(transformed.max())
    span = (high - low) or 1.0
    return (transformed - low) / span, (_short(values.min()), _short(values.max()))


def _positions(column: pd.Series, dist: dict[str, Any]) -> tuple[np.ndarray, list[str] | None]:
    """x positions for a slice plot: values, or category indices (with their tick labels)."""
    choices = (dist.get("attributes") or {}).get("choices")
    if choices is None:
        return column.astype(float).to_numpy(), None
    labels = [str(c) for c in choices]
    index = {c: i for i, c in enumerate(labels)}
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(column))
    return column.astype(str).map(index).to_numpy(dtype=float) + jitter, labels


def _describe_dim(dim: dict[str, Any]) -> str:
    if dim.get("type") == "categorical":
        return "one of " + ", ".join(map(str, dim.get("choices", [])))
    scale = " (log scale)" if dim.get("log") else ""
    return f"{dim.get('type')} in [{dim.get('low')}, {dim.get('high')}]{scale}"


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def _read_json(path: Path) -> dict[str, Any]:
    """A missing file reads as {} (a study that has not exported its trials yet)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
