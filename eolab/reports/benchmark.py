"""Views of a benchmark table (``eolab.evaluate.battery.evaluate``) for notebooks and the command line.

Every figure shows the interval the table carries (``ci_low``, ``ci_high``); plotting libraries are
imported inside the plotting functions so that the command line does not load them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("task", "encoder", "protocol", "split", "pool", "block", "variant", "adapter", "metric", "ci_method",
                "not_applicable")
SPLIT_ORDER = ("random", "blocked", "official")


def read_table(path: str | Path) -> pd.DataFrame:
    """A ``benchmark.csv`` as ``evaluate`` returned it (empty text cells stay empty strings)."""
    table = pd.read_csv(path)
    for col in TEXT_COLUMNS:
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
    metric = _first_metric(rows)
    out = {}
    for key, part in rows.groupby(["task", "encoder", "pool", "block"], sort=False):
        line = {"metric": metric.get(key[0], "")}
        for split in SPLIT_ORDER:
            hit = part[(part["split"] == split) & (part["metric"] == line["metric"])]
            line[split] = _cell(*hit[["value", "ci_low", "ci_high"]].iloc[0]) if len(hit) else ""
        reasons = part.loc[(part["not_applicable"] != "") & (part["split"] == ""), "not_applicable"]
        line["not_applicable"] = reasons.iloc[0] if len(reasons) else ""
        out[key] = line
    return pd.DataFrame.from_dict(out, orient="index").rename_axis(["task", "encoder", "pool", "block"])


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


def _points(ax, part: pd.DataFrame, x: str, hue: str, hue_order, palette) -> None:
    """Points with their interval as error bars, ``hue`` dodged along ``x``."""
    xs = list(dict.fromkeys(part[x]))
    width = 0.7 / max(len(hue_order), 1)
    for k, h in enumerate(hue_order):
        sub = part[part[hue] == h].set_index(x).reindex(xs)
        pos = np.arange(len(xs)) + (k - (len(hue_order) - 1) / 2) * width
        err = np.abs(np.vstack([sub["value"] - sub["ci_low"], sub["ci_high"] - sub["value"]]))
        ax.errorbar(pos, sub["value"], yerr=np.nan_to_num(err), fmt="o", capsize=3, color=palette[k], label=h)
    ax.set_xticks(range(len(xs)), xs, rotation=20, ha="right")


def plot_splits(table: pd.DataFrame, protocol: str = "linear"):
    """Headline metric of every task per encoder, one point per split with its interval."""
    import seaborn as sns

    rows = table[(table["protocol"] == protocol) & (table["not_applicable"] == "")]
    metric = _first_metric(rows)
    rows = rows[rows["metric"] == rows["task"].map(metric)]
    rows = rows.assign(encoder=rows["encoder"] + np.where(rows["pool"] != "", " (" + rows["pool"] + ", " + rows["block"] + ")", ""))
    tasks = list(dict.fromkeys(rows["task"]))
    fig, axes = _panels(len(tasks))
    splits = [s for s in SPLIT_ORDER if s in set(rows["split"])]
    palette = sns.color_palette("deep", len(splits))
    for ax, task in zip(axes, tasks, strict=True):
        _points(ax, rows[rows["task"] == task], "encoder", "split", splits, palette)
        ax.set_title(f"{task} ({metric[task]})", fontsize=10)
    axes[0].legend(title="split", fontsize=8)
    fig.suptitle(f"{protocol} probe: random vs spatially blocked vs documented split (95% intervals)")
    fig.tight_layout()
    return fig


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
    import seaborn as sns

    rob = table[(table["protocol"] == "robustness") & (table["not_applicable"] == "")]
    if rob.empty:
        return None
    metric = _first_metric(table[table["protocol"] == "linear"])
    keys = ["task", "encoder", "pool", "block", "split"]
    clean = table[(table["protocol"] == "linear") & (table["not_applicable"] == "")].merge(
        rob[keys].drop_duplicates(), on=keys).assign(variant="all bands")
    rows = pd.concat([clean, rob])
    rows = rows[rows["metric"] == rows["task"].map(metric)]
    tasks = list(dict.fromkeys(rows["task"]))
    fig, axes = _panels(len(tasks))
    variants = list(dict.fromkeys(rows["variant"]))
    palette = sns.color_palette("deep", len(variants))
    for ax, task in zip(axes, tasks, strict=True):
        _points(ax, rows[rows["task"] == task], "encoder", "variant", variants, palette)
        ax.set_title(f"{task} ({metric[task]}, {rows.loc[rows['task'] == task, 'split'].iloc[0]} split)", fontsize=10)
    axes[0].legend(title="test inputs", fontsize=8)
    fig.tight_layout()
    return fig


def tasks_overview() -> pd.DataFrame:
    """What every task declares: kind, inputs (bands, steps, size), and its splits."""
    from eolab.data.downstream import TASKS

    return pd.DataFrame([{"task": t.name, "kind": t.kind, "bands": ",".join(t.bands), "modalities": ",".join(dict.fromkeys(t.modality)),
                          "steps": t.num_dates, "dated": t.dated, "size_px": t.size, "gsd_m": t.gsd_m,
                          "splits": t.split, "smoke": t.smoke} for t in TASKS.values()]).set_index("task")
