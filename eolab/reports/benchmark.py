"""Views of a benchmark table (``eolab.evaluate.battery.evaluate``) for notebooks and the command line.

Every figure shows the interval the table carries (``ci_low``, ``ci_high``); plotting libraries are
imported inside the plotting functions so that the command line does not load them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("task", "encoder", "protocol", "split", "pool", "block", "variant", "adapter", "metric", "ci_method",
                "fold_values", "temporal_pooling", "not_applicable", "note")
SPLIT_ORDER = ("random", "blocked", "official")


def read_table(path: str | Path) -> pd.DataFrame:
    """A ``benchmark.csv`` as ``evaluate`` returned it (empty text cells stay empty strings)."""
    table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS})
    for col in TEXT_COLUMNS:
        if col not in table:  # a table written before the column existed
            table[col] = ""
        table[col] = table[col].fillna("").astype(str)
    return table


def _cell(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def _first_metric(table: pd.DataFrame) -> pd.Series:
    """The headline metric of each task: the first one its rows name (accuracy, micro_f1, r2)."""
    named = table[table["metric"] != ""]
    return named.groupby("task", sort=False)["metric"].first()


def headline(table: pd.DataFrame, protocol: str = "linear") -> pd.DataFrame:
    """One row per task and encoder: the task's headline metric under ``protocol`` for every split as
    'value [low, high]', and why an encoder could not be run where it could not."""
    rows = table[table["protocol"] == protocol]
    index = ["task", "encoder", "pool", "block"]
    if rows.empty:  # e.g. a diagnostics-only table: no headline to show, an empty frame of the usual shape
        columns = ["metric", *SPLIT_ORDER, "not_applicable"]
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=index))
    metric = _first_metric(rows)
    out = {}
    for key, part in rows.groupby(index, sort=False):
        line = {"metric": metric.get(key[0], "")}
        for split in SPLIT_ORDER:
            hit = part[(part["split"] == split) & (part["metric"] == line["metric"])]
            line[split] = _cell(*hit[["value", "ci_low", "ci_high"]].iloc[0]) if len(hit) else ""
        reasons = part.loc[(part["not_applicable"] != "") & (part["split"] == ""), "not_applicable"]
        line["not_applicable"] = reasons.iloc[0] if len(reasons) else ""
        out[key] = line
    return pd.DataFrame.from_dict(out, orient="index").rename_axis(index)


def spatial_gap(table: pd.DataFrame, task: str = "eurosat", protocol: str = "linear") -> pd.DataFrame:
    """Random-split minus blocked-split score per encoder and metric: how much of a score comes from
    having seen the place. The interval is approximate: the two intervals' half-widths combined in
    quadrature (the splits' folds are not paired)."""
    rows = table[(table["task"] == task) & (table["protocol"] == protocol) & (table["not_applicable"] == "")]
    out = []
    for (enc, pool, block, metric), part in rows.groupby(["encoder", "pool", "block", "metric"], sort=False):
        if not {"random", "blocked"} <= set(part["split"]):
            continue
        r, b = (part[part["split"] == s].iloc[0] for s in ("random", "blocked"))
        half = np.hypot((r["ci_high"] - r["ci_low"]) / 2, (b["ci_high"] - b["ci_low"]) / 2)
        gap = r["value"] - b["value"]
        out.append({"encoder": enc, "pool": pool, "block": block, "metric": metric, "random": r["value"],
                    "blocked": b["value"], "gap": gap, "gap_low": gap - half, "gap_high": gap + half})
    return pd.DataFrame(out)


def not_applicable(table: pd.DataFrame) -> pd.DataFrame:
    """Every (task, encoder, protocol, split) that was not run, with the reason."""
    na = table[table["not_applicable"] != ""]
    return na[["task", "encoder", "protocol", "split", "variant", "not_applicable"]].reset_index(drop=True)


def diagnostics(table: pd.DataFrame) -> pd.DataFrame:
    """Label-free diagnostics, one column per statistic, as 'value [low, high]'."""
    d = table[(table["protocol"] == "diagnostics") & (table["not_applicable"] == "")]
    d = d.assign(cell=[_cell(v, lo, hi) for v, lo, hi in zip(d["value"], d["ci_low"], d["ci_high"], strict=True)])
    return d.pivot_table(index=["task", "encoder", "pool", "block"], columns="metric", values="cell", aggfunc="first")


def _panels(n: int, width: float = 4.0, height: float = 3.2):
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def encoder_labels(rows: pd.DataFrame, width: int = 26) -> pd.Series:
    """A readable label per row's encoder: a run id loses its 12-hex hash (kept where two would then
    read alike), the pooling and block follow in brackets, and long labels wrap at `width`."""
    def short(name: str) -> str:
        head, _, tail = name.rpartition("-")
        return head if head and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else name

    names = rows["encoder"].astype(str)
    shorts = {n: short(n) for n in names.unique()}
    taken = pd.Series(shorts).value_counts()
    base = names.map(lambda n: shorts[n] if taken[shorts[n]] == 1 else n)
    full = base + np.where(rows["pool"] != "", " (" + rows["pool"].astype(str) + ", " + rows["block"].astype(str) + ")", "")
    return full.map(lambda text: textwrap.fill(text, width, break_on_hyphens=True))


def _hpoints(ax, part: pd.DataFrame, y: str, order: list[str], hue: str, hue_order, palette) -> None:
    """Horizontal points with their interval as error bars: one row per ``y`` (in ``order``, top
    down), ``hue`` dodged within the row. Labels read horizontally however long they are."""
    height = 0.7 / max(len(hue_order), 1)
    for k, h in enumerate(hue_order):
        sub = part[part[hue] == h].drop_duplicates(y).set_index(y).reindex(order)
        pos = np.arange(len(order)) + (k - (len(hue_order) - 1) / 2) * height
        err = np.abs(np.vstack([sub["value"] - sub["ci_low"], sub["ci_high"] - sub["value"]]))
        ax.errorbar(sub["value"], pos, xerr=np.nan_to_num(err), fmt="o", capsize=3, color=palette[k], label=h)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)


def _task_figure(rows: pd.DataFrame, hue: str, hue_order: list[str], title, legend_title: str, suptitle: str):
    """One panel per task, encoders as rows shared by all panels (labels on the left column only),
    figure height from the number of encoders and tasks; the legend above the panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    rows = rows.assign(label=encoder_labels(rows))
    tasks = list(dict.fromkeys(rows["task"]))
    order = list(dict.fromkeys(rows["label"]))
    cols = min(len(tasks), 3)
    nrows = int(np.ceil(len(tasks) / cols))
    lines = max(label.count("\n") + 1 for label in order)
    panel_h = 0.9 + 0.32 * len(order) * max(1, lines / 1.5) ** 0.5
    fig, axes = plt.subplots(nrows, cols, figsize=(2.2 + 3.8 * cols, 0.9 + panel_h * nrows), sharey=True, squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    palette = sns.color_palette("deep", len(hue_order))
    for ax, task in zip(axes.flat, tasks, strict=False):
        _hpoints(ax, rows[rows["task"] == task], "label", order, hue, hue_order, palette)
        ax.set_title(title(task), fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(suptitle, fontsize=11)
    fig.legend(handles, labels, title=legend_title, loc="upper center", ncol=len(hue_order), fontsize=8,
               title_fontsize=8, bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / fig.get_figheight()))
    return fig


def plot_splits(table: pd.DataFrame, protocol: str = "linear"):
    """Headline metric of every task per encoder, one point per split with its interval."""
    rows = table[(table["protocol"] == protocol) & (table["not_applicable"] == "")]
    metric = _first_metric(rows)
    rows = rows[rows["metric"] == rows["task"].map(metric)]
    splits = [s for s in SPLIT_ORDER if s in set(rows["split"])]
    return _task_figure(rows, "split", splits, lambda task: f"{task} ({metric[task]})", "split",
                        f"{protocol} probe: random vs spatially blocked vs documented split (95% intervals)")


def plot_few_shot(table: pd.DataFrame):
    """Few-shot accuracy against labels per class, one line per encoder, interval as a band."""
    import seaborn as sns

    rows = table[(table["protocol"] == "few_shot") & (table["not_applicable"] == "") & (table["metric"] == "accuracy")]
    rows = rows.assign(shots=rows["variant"].str.removeprefix("shots=").astype(int))
    tasks = list(dict.fromkeys(rows["task"]))
    if not tasks:
        return None
    fig, axes = _panels(len(tasks))
    encoders = list(dict.fromkeys(rows["encoder"] + rows["pool"] + rows["block"]))
    palette = dict(zip(encoders, sns.color_palette("deep", len(encoders)), strict=True))
    for ax, task in zip(axes, tasks, strict=True):
        for key, part in rows[rows["task"] == task].groupby(rows["encoder"] + rows["pool"] + rows["block"], sort=False):
            part = part.sort_values("shots")
            label = part["encoder"].iloc[0] + (f" ({part['pool'].iloc[0]}, {part['block'].iloc[0]})" if part["pool"].iloc[0] else "")
            ax.plot(part["shots"], part["value"], "o-", color=palette[key], label=label)
            ax.fill_between(part["shots"], part["ci_low"], part["ci_high"], color=palette[key], alpha=0.2)
        ax.set(xscale="log", xlabel="labelled samples per class", ylabel="accuracy", title=task)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_robustness(table: pd.DataFrame):
    """The same linear probe with all bands and with bands missing at test time, per encoder."""
    rob = table[(table["protocol"] == "robustness") & (table["not_applicable"] == "")]
    if rob.empty:
        return None
    metric = _first_metric(table[table["protocol"] == "linear"])
    keys = ["task", "encoder", "pool", "block", "split"]
    clean = table[(table["protocol"] == "linear") & (table["not_applicable"] == "")].merge(
        rob[keys].drop_duplicates(), on=keys).assign(variant="all bands")
    rows = pd.concat([clean, rob])
    rows = rows[rows["metric"] == rows["task"].map(metric)]
    variants = list(dict.fromkeys(rows["variant"]))
    split = rows.groupby("task", sort=False)["split"].first()
    return _task_figure(rows, "variant", variants, lambda task: f"{task} ({metric[task]}, {split[task]} split)",
                        "test inputs", "linear probe with bands missing at test time (95% intervals)")


def tasks_overview(tasks=None) -> pd.DataFrame:
    """What every task declares (``tasks``: names, task files or ``Task``s; default every built-in and
    registered one): kind, inputs (bands, steps, size), and its splits."""
    from eolab.data.downstream import get_task, task_names

    return pd.DataFrame([{"task": t.name, "kind": t.kind, "bands": ",".join(t.bands), "modalities": ",".join(dict.fromkeys(t.modality)),
                          "steps": t.num_dates, "dated": t.dated, "size_px": t.size, "gsd_m": t.gsd_m,
                          "splits": t.split, "smoke": t.smoke} for t in map(get_task, tasks or task_names())]).set_index("task")


# ----------------------------------------------------------------------------------------------
# Aggregation across tasks and seeds (GEO-Bench practice) and a leaderboard export


def _seeded(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a ``seed`` column (from ``attrs['seed']`` for a single call's table)."""
    return table if "seed" in table else table.assign(seed=table.attrs.get("seed", 0))


def headline_scores(table: pd.DataFrame, protocol: str = "linear", split: str = "random") -> pd.DataFrame:
    """One score per (task, encoder, pool, block, seed): the task's headline metric under
    ``protocol`` and ``split``, rows that ran only, smoke tasks left out (too few samples to rank).
    A dense encoder's per-pixel rows (pool 'patch') count for each pooling it was run with, so that
    an encoder's aggregate covers its segmentation tasks too."""
    rows = _seeded(table)
    rows = rows[(rows["protocol"] == protocol) & (rows["split"] == split) & (rows["not_applicable"] == "")]
    if "smoke" in rows:
        rows = rows[~rows["smoke"].astype(str).str.lower().isin(["true", "1"])]
    metric = _first_metric(rows)
    rows = rows[rows["metric"] == rows["task"].map(metric)]
    pooled = rows[~rows["pool"].isin(["", "patch"])].groupby("encoder")["pool"].unique()
    dense = rows[rows["pool"] == "patch"]
    copies = [dense[dense["encoder"] == enc].assign(pool=p) for enc, pools in pooled.items() for p in pools]
    rows = pd.concat([rows[rows["pool"] != "patch"], *copies, dense[~dense["encoder"].isin(pooled.index)]])
    return rows[["task", "encoder", "pool", "block", "seed", "metric", "value"]].reset_index(drop=True)


def normalised_scores(table: pd.DataFrame, low: str = "random_init", high: str = "band_stats",
                      protocol: str = "linear", split: str = "random") -> pd.DataFrame:
    """Headline scores rescaled per task (and seed) so that the ``low`` baseline scores 0 and the
    ``high`` one 1 (GEO-Bench normalises between reference models in the same way): 1.2 means
    20 % of the baselines' gap beyond ``high``. Where a task lacks either baseline (it could not
    run), the task's lowest and highest score stand in, and ``reference`` says so; RMSE-like
    metrics where lower is better are not headline metrics here (accuracy, micro F1, R2 are)."""
    scores = headline_scores(table, protocol, split)
    out = []
    for (_task, _seed), part in scores.groupby(["task", "seed"], sort=False):
        by_encoder = part.groupby("encoder")["value"].max()
        lo = by_encoder.get(low, np.nan)
        hi = by_encoder.get(high, np.nan)
        reference = f"{low} = 0, {high} = 1"
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi == lo:
            lo, hi, reference = part["value"].min(), part["value"].max(), "task min = 0, max = 1"
        span = hi - lo if hi != lo else np.nan
        out.append(part.assign(normalised=(part["value"] - lo) / span, reference=reference))
    return pd.concat(out, ignore_index=True) if out else scores.assign(normalised=[], reference=[])


def capability_groups(tasks) -> dict[str, str]:
    """A capability group per task: 'per-pixel' (segmentation), 'time series' (pixel series),
    'multi-date image', 'image', or the task's kind for regression and multi-label tasks ('other'
    for a name that is no task here)."""
    from eolab.data.downstream import get_task

    out = {}
    for name in tasks:
        try:
            t = get_task(name)
        except ValueError:
            out[name] = "other"
            continue
        if t.kind == "segmentation":
            out[name] = "per-pixel"
        elif t.kind in ("regression", "multilabel"):
            out[name] = t.kind
        elif t.size == 1:
            out[name] = "time series"
        else:
            out[name] = "multi-date image" if t.num_dates > 1 else "image"
    return out


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (robust to outlier tasks,
    more efficient than the median; Agarwal et al. 2021, used by GEO-Bench)."""
    from scipy.stats import trim_mean

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(trim_mean(values, 0.25)) if len(values) else np.nan


def aggregate(table: pd.DataFrame, groups: dict[str, str] | None = None, n_boot: int = 1000, level: float = 0.95,
              seed: int = 0, **normalise) -> pd.DataFrame:
    """Per encoder (pool, block) and capability group (plus 'all'): the interquartile mean of the
    normalised scores over tasks and seeds, with a stratified bootstrap interval (seeds resampled
    within each task, GEO-Bench / rliable practice). With one seed per task the interval is a single
    point: it measures seed-to-seed spread, which one call does not have."""
    scores = normalised_scores(table, **normalise)
    if scores.empty:
        return pd.DataFrame(columns=["encoder", "pool", "block", "group", "iqm", "ci_low", "ci_high", "tasks", "seeds"])
    groups = groups or capability_groups(scores["task"].unique())
    scores = scores.assign(group=scores["task"].map(groups).fillna("other"))
    rng = np.random.default_rng(seed)
    out = []
    for key, part in scores.groupby(["encoder", "pool", "block"], sort=False):
        for group, sub in [*part.groupby("group", sort=True), ("all", part)]:
            per_task = [g["normalised"].to_numpy() for _, g in sub.groupby("task")]
            boot = [iqm(np.concatenate([v[rng.integers(0, len(v), len(v))] for v in per_task])) for _ in range(n_boot)]
            lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
            out.append({"encoder": key[0], "pool": key[1], "block": key[2], "group": group,
                        "iqm": iqm(sub["normalised"]), "ci_low": lo, "ci_high": hi, "tasks": sub["task"].nunique(),
                        "seeds": sub["seed"].nunique()})
    return pd.DataFrame(out)


def leaderboard(table: pd.DataFrame) -> pd.DataFrame:
    """Every computed score in the long leaderboard form (backbone, task, metric, seed, protocol,
    split, value, ci_low, ci_high), as public leaderboards (GEO-Bench, PANGAEA) collect results."""
    rows = _seeded(table)
    rows = rows[(rows["not_applicable"] == "") & (rows["metric"] != "")]
    backbone = rows["encoder"] + np.where(rows["pool"] != "", " (" + rows["pool"] + ", " + rows["block"] + ")", "")
    out = rows.assign(backbone=backbone)
    return out[["backbone", "task", "metric", "seed", "protocol", "split", "variant", "value", "ci_low", "ci_high",
                "n"]].reset_index(drop=True)


def write_leaderboard(table: pd.DataFrame, path: str | Path) -> Path:
    """``leaderboard(table)`` as CSV at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaderboard(table).to_csv(path, index=False)
    return path
