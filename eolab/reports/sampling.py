"""Tables and plots of the sampling ablation (ablations/sampling.yaml), for notebooks/sampling_summary.ipynb.

The ablation pre-trains on the subset each sampler (notebook parameter ``sampling``) draws at each
budget (``n_pretrain``), for a few seeds, and probes EuroSAT. These helpers read only the runner's
outputs, loaded by ``eolab.reports.runs.load_results`` (table.csv: one row per run, encoder and
fold; runs.csv: one row per run with the ``sample_*`` representativeness metrics) plus each run's
``sample.json`` (the ids of the patches it drew), and cope with partial results: a missing seed,
sample file or scene cache gives a message and fewer rows, not a crash.

Statistics, and why:

- Runs with the same seed are probed on the same folds (the probe's split is seeded), so a sampler
  is compared with ``uniform`` fold by fold at equal budget and seed; the per-fold differences
  cancel which patches land in a test fold. Intervals are percentile bootstraps over those
  folds (``report.bootstrap_ci``): optimistic, since repeated k-fold folds share training data.
- What the folds cannot show is how much a different seed (weights, masks, data order *and* the
  drawn subset) moves the result. With two seeds that is the difference between the two seed
  means (``seed_spread``); a sampler's difference from uniform is called out only where it is
  larger than uniform's own seed spread at that budget.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from eolab.reports.runs import AblationResults, bootstrap_ci
from eolab.run_folder import SAMPLE_NAME
from eolab.runner.store import RUNS_DIRNAME, read_json
from eolab.text import split_names

SAMPLER, BUDGET = "sampling", "n_pretrain"
"""The ablated notebook parameters: which sampler drew the subset, and how many patches."""
REFERENCE = "uniform"
"""The sampler every other one is compared with."""
ENCODER = "pretrained"
"""The probed encoder whose accuracy is compared (random_init and band_stats are controls)."""
OK_STATES = ("done", "unknown")
"""Run states whose results count (``unknown``: a run folder without status.json, as in report)."""
SKIP_METRICS = ("sample_n", "sample_coverage_ref")
"""``sample_*`` values that are bookkeeping (the budget, the coverage reference size), not representativeness."""
SCATTER_METRICS = ("sample_vendi_rbf", "sample_coverage_mean", "sample_spectral_js", "sample_geo_js")
"""Default x axes of ``plot_accuracy_vs_representativeness``: diversity, coverage, spectral and geographic fit."""
SUMMARY_CSV, VERSUS_CSV = "sampling_summary.csv", "versus_uniform.csv"
"""File names the summary notebook writes ``sampling_table`` and ``versus_uniform`` to, in the results folder."""
POOL_PARAMS = ("sources", "img_size", "tile_stride")
"""The run parameters that define the pool (their defaults, for runs that do not record them, are the
parameter list's: ``eolab.config.defaults()``)."""

TileSource = pd.DataFrame | Callable[[dict[str, Any]], pd.DataFrame]
"""A window index (``SceneCache.tiles`` columns), or a function from a run's params to one."""


# ----------------------------------------------------------------------------------------------
# Per-fold scores and per-run metrics
# ----------------------------------------------------------------------------------------------


def fold_scores(results: AblationResults, encoder: str = ENCODER) -> pd.DataFrame:
    """One row per (run, fold) of ``encoder``: run_id, sampler, budget, seed, fold, accuracy.

    Only finished runs of the current spec (``_current``); where one (sampler, budget, seed) has
    several runs (an old folder left by an earlier spec), the first run id is kept, with a note.
    """
    columns = ["run_id", "sampler", "budget", "seed", "fold", "accuracy"]
    table = results.table
    if table.empty or not {"run_id", "encoder", "fold", "accuracy", SAMPLER, BUDGET} <= set(table.columns):
        return pd.DataFrame(columns=columns)
    rows = table[(table["encoder"] == encoder) & table["accuracy"].notna()]
    if "status" in rows:
        rows = rows[rows["status"].isin(OK_STATES)]
    rows = _current(rows, results)
    rows = rows.assign(seed=rows.get("seed", 0))
    rows = rows.rename(columns={SAMPLER: "sampler", BUDGET: "budget"})[columns]
    return _one_run_per_cell(rows, results).reset_index(drop=True)


def run_metrics(results: AblationResults) -> pd.DataFrame:
    """One row per finished run: run_id, sampler, budget, seed, accuracy (mean over folds, from
    ``<encoder>_acc_mean``) and every representativeness metric (``sample_*``)."""
    runs = results.runs
    if runs.empty or not {"run_id", SAMPLER, BUDGET} <= set(runs.columns):
        return pd.DataFrame(columns=["run_id", "sampler", "budget", "seed", "accuracy"])
    if "status" in runs:
        runs = runs[runs["status"].isin(OK_STATES)]
    runs = _current(runs, results)
    frame = pd.DataFrame({
        "run_id": runs["run_id"], "sampler": runs[SAMPLER], "budget": runs[BUDGET],
        "seed": runs.get("seed", 0),
        "accuracy": runs.get(f"{ENCODER}_acc_mean", np.nan),
    })
    metrics = metric_columns(runs)
    return pd.concat([frame, runs[metrics]], axis=1).reset_index(drop=True)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric ``sample_*`` columns (representativeness), bookkeeping ones left out."""
    return [c for c in frame.columns if c.startswith("sample_") and c not in SKIP_METRICS
            and pd.api.types.is_numeric_dtype(frame[c])]


def seed_spread(values: pd.Series | np.ndarray) -> float:
    """Spread of per-seed means: max minus min (with two seeds, their absolute difference); NaN for one."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.max() - values.min()) if len(values) >= 2 else float("nan")


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def sampling_table(results: AblationResults, encoder: str = ENCODER) -> pd.DataFrame:
    """One row per (sampler, budget): probe accuracy and the sample's representativeness.

    Columns: n_seeds, n_folds (scores pooled over seeds), acc_mean and its 95% bootstrap interval
    (ci_low, ci_high) over every (seed, fold) score, seed_spread (difference between the seed
    means, the noise a sampler must beat), the mean accuracy of each control encoder
    (``<encoder>_acc``), then each ``sample_*`` metric averaged over seeds.
    """
    scores = fold_scores(results, encoder)
    if scores.empty:
        print(f"No {encoder!r} probe folds with {SAMPLER} and {BUDGET} in table.csv: no sampling table.")
        return pd.DataFrame()
    keys = ["sampler", "budget"]
    rows = []
    for (sampler, budget), cell in scores.groupby(keys, sort=False):
        lo, hi = bootstrap_ci(cell["accuracy"].to_numpy())
        rows.append({"sampler": sampler, "budget": budget, "n_seeds": cell["seed"].nunique(), "n_folds": len(cell),
                     "acc_mean": cell["accuracy"].mean(), "ci_low": lo, "ci_high": hi,
                     "seed_spread": seed_spread(cell.groupby("seed")["accuracy"].mean())})
    frame = pd.DataFrame(rows)
    controls = sorted(set(results.table["encoder"].dropna()) - {encoder})
    for control in controls:
        other = fold_scores(results, control)
        means = other.groupby(keys)["accuracy"].mean().rename(f"{control}_acc")
        frame = frame.merge(means, left_on=keys, right_index=True, how="left")
    runs = run_metrics(results)
    metrics = metric_columns(runs)
    if metrics:
        frame = frame.merge(runs.groupby(keys)[metrics].mean(), left_on=keys, right_index=True, how="left")
    return _sorted(frame, results).round(4)


BENCHMARK_TABLE = Path("benchmark") / "benchmark.csv"
"""Where the sampling study keeps the embedding benchmark of its runs' encoders (written by
``python -m eolab benchmark --checkpoint <run>/encoder.pt ... --output <results>/benchmark``)."""


def benchmark_by_sampler(results: AblationResults, protocol: str = "linear") -> pd.DataFrame:
    """Each benchmark task's headline metric per (sampler, budget, split): mean over the seeds' runs,
    the seed spread, and the mean of each run's own interval bounds. Empty when the study's
    encoders were not benchmarked. Encoders are matched to runs by name (the run folder)."""
    path = Path(results.results_dir) / BENCHMARK_TABLE
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = table[(table["protocol"] == protocol) & table["value"].notna() & (table["variant"].fillna("") == "")]
    headline = rows.groupby("task", sort=False)["metric"].first()  # accuracy, micro_f1 or r2: the first a task names
    rows = rows[rows["metric"] == rows["task"].map(headline)]
    runs = run_metrics(results)[["run_id", "sampler", "budget", "seed"]]
    rows = rows.merge(runs, left_on="encoder", right_on="run_id", how="inner")
    out = rows.groupby(["task", "metric", "split", "sampler", "budget"], sort=False).agg(
        value=("value", "mean"), seed_spread=("value", seed_spread), ci_low=("ci_low", "mean"),
        ci_high=("ci_high", "mean"), n_seeds=("seed", "nunique")).reset_index()
    return out.round(4)


def paired_differences(results: AblationResults, reference: str = REFERENCE, encoder: str = ENCODER) -> pd.DataFrame:
    """Per fold: accuracy of each sampler minus that of ``reference`` at the same budget and seed.

    Long format: sampler, budget, seed, fold, run_id, versus (the reference run), difference.
    Folds are matched by number: the same seed gives the same probe split, so fold k of both runs
    tested the same EuroSAT patches.
    """
    columns = ["sampler", "budget", "seed", "fold", "run_id", "versus", "difference"]
    scores = fold_scores(results, encoder)
    ref = scores[scores["sampler"] == reference]
    parts = []
    for (sampler, budget, seed), run in scores[scores["sampler"] != reference].groupby(
            ["sampler", "budget", "seed"], sort=False):
        partner = ref[(ref["budget"] == budget) & (ref["seed"] == seed)]
        if partner.empty:
            continue
        diff = (run.set_index("fold")["accuracy"] - partner.set_index("fold")["accuracy"]).dropna()
        parts.append(pd.DataFrame({"sampler": sampler, "budget": budget, "seed": seed, "fold": diff.index,
                                   "run_id": run["run_id"].iloc[0], "versus": partner["run_id"].iloc[0],
                                   "difference": diff.to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def versus_uniform(results: AblationResults, reference: str = REFERENCE, encoder: str = ENCODER,
                   by_seed: bool = False) -> pd.DataFrame:
    """Each sampler minus ``reference`` at the same budget, paired by seed and fold.

    Pooled over seeds (default), one row per (sampler, budget): the mean paired difference, its
    95% bootstrap interval over all paired folds, whether the interval excludes 0, whether every
    seed's difference has the pooled sign (``same_sign``; None with one seed), the seed spread of
    the reference and of the sampler, and ``exceeds_seed_noise``: |difference| > the reference's
    seed spread (None when it has one seed). With two seeds a spread is itself a noisy estimate, so
    ``exceeds_both_seed_spreads`` applies the stricter margin of the larger of the two spreads.
    ``by_seed=True`` gives one row per seed instead.

    Unlike ``report.compare_arms`` (one reference run for every arm, a margin of twice the larger
    arm's seed sd) the reference here is uniform *at each budget*, and seeds are pooled.
    """
    diffs = paired_differences(results, reference, encoder)
    if diffs.empty:
        print(f"No runs to pair with {reference!r} (same {BUDGET} and seed): no comparison.")
        return pd.DataFrame()
    scores = fold_scores(results, encoder)
    seed_means = scores.groupby(["sampler", "budget", "seed"])["accuracy"].mean()
    spreads = seed_means.groupby(["sampler", "budget"]).agg(seed_spread)
    rows = []
    groups = ["sampler", "budget", "seed"] if by_seed else ["sampler", "budget"]
    for values, cell in diffs.groupby(groups, sort=False):
        key = dict(zip(groups, values, strict=True))
        mean = float(cell["difference"].mean())
        lo, hi = bootstrap_ci(cell["difference"].to_numpy())
        noise = float(spreads.get((reference, key["budget"]), np.nan))
        row: dict[str, Any] = {**key}
        if by_seed:
            row.update(run_id=cell["run_id"].iloc[0], versus=cell["versus"].iloc[0])
        else:
            per_seed = cell.groupby("seed")["difference"].mean()
            row.update(n_seeds=len(per_seed),
                       same_sign=bool((np.sign(per_seed) == np.sign(mean)).all()) if len(per_seed) > 1 else None)
        row.update(n_pairs=len(cell), difference=mean, ci_low=lo, ci_high=hi,
                   interval_excludes_0=bool(np.isfinite(lo) and not lo <= 0 <= hi),
                   reference_seed_spread=noise,
                   exceeds_seed_noise=bool(abs(mean) > noise) if math.isfinite(noise) else None)
        if not by_seed:
            own = float(spreads.get((key["sampler"], key["budget"]), np.nan))
            both = max(noise, own) if math.isfinite(noise) and math.isfinite(own) else float("nan")
            row.update(sampler_seed_spread=own,
                       exceeds_both_seed_spreads=bool(abs(mean) > both) if math.isfinite(both) else None)
        rows.append(row)
    return _sorted(pd.DataFrame(rows), results).round(4)


# ----------------------------------------------------------------------------------------------
# Where the samples are
# ----------------------------------------------------------------------------------------------


def pool_tiles(params: Mapping[str, Any], data_root: str | Path | None = None) -> pd.DataFrame:
    """The window index a run drew from: ``build_scene_cache(root, sources).tiles(img_size, tile_stride)``.

    Built from the run's ``sources``, ``img_size`` and ``tile_stride`` (pretrain.ipynb's defaults
    where absent); the scene cache is reused when it exists, and the index is cached per process.
    """
    from eolab.config import (
        defaults,  # the training stack's registries: only when a map is asked for
    )

    fallback = defaults()
    value = {k: params.get(k) for k in POOL_PARAMS}
    value = {k: fallback[k] if v is None or (isinstance(v, float) and math.isnan(v)) else v
             for k, v in value.items()}
    tiles = _pool_tiles(str(data_root or ""), str(value["sources"]), int(value["img_size"]), int(value["tile_stride"]))
    return tiles.copy()  # the cached index stays as built


@functools.lru_cache(maxsize=8)
def _pool_tiles(root: str, sources: str, img_size: int, tile_stride: int) -> pd.DataFrame:
    # rasterio and friends: imported only when a map is asked for
    from eolab.data.cache import build_scene_cache
    from eolab.data.paths import data_root

    return build_scene_cache(data_root(root or None), split_names(sources)).tiles(patch=img_size, stride=tile_stride)


def sample_locations(results: AblationResults, data_root: str | Path | None = None,
                     tiles: TileSource | None = None) -> pd.DataFrame:
    """One row per sampled patch of every finished run: run_id, sampler, budget, seed, id, scene,
    scene_id, source, lon, lat (plus row and col where the index has them).

    Ids come from each run's ``sample.json`` and are looked up in ``tiles``: a window index
    (DataFrame with ``SceneCache.tiles`` columns), a callable from the run's params to one, or by
    default ``pool_tiles(params, data_root)``, the run's own pool rebuilt from the scene cache. A
    run without sample.json, or whose pool cannot be built, is listed and skipped; ids missing
    from the index are counted; a pool whose id hash differs from the one the run drew from
    (``pool_sha1`` in sample.json) gives a note, since the windows then may not be the same.
    """
    columns = ["run_id", "sampler", "budget", "seed", "id", "scene", "scene_id", "source", "lon", "lat"]
    runs = results.runs
    if runs.empty or "run_id" not in runs:
        print("No runs in runs.csv: no sample locations.")
        return pd.DataFrame(columns=columns)
    if "status" in runs:
        runs = runs[runs["status"].isin(OK_STATES)]
    runs = _current(runs, results)
    indexed: dict[Any, tuple[pd.DataFrame, str]] = {}
    frames, notes = [], []
    for params in runs.to_dict(orient="records"):
        run_id = params["run_id"]
        sample = read_json(results.results_dir / RUNS_DIRNAME / run_id / SAMPLE_NAME)
        ids = sample.get("ids") if sample else None
        if not isinstance(ids, list):
            notes.append(f"{run_id}: no {SAMPLE_NAME} with ids")
            continue
        key = "given" if isinstance(tiles, pd.DataFrame) else tuple(str(params.get(k)) for k in POOL_PARAMS)
        if key not in indexed:
            try:
                pool = tiles if isinstance(tiles, pd.DataFrame) else (tiles or _default_tiles(data_root))(params)
            except (OSError, ValueError, KeyError) as exc:  # no data root, unknown source, bad cache
                notes.append(f"{run_id}: pool not available ({type(exc).__name__}: {exc})")
                continue
            pool_ids = pool["id"].astype(str)
            indexed[key] = (pool.assign(id=pool_ids).drop_duplicates("id").set_index("id"),
                            hashlib.sha1("\n".join(pool_ids).encode()).hexdigest())
        pool, sha1 = indexed[key]
        if sample.get("pool_sha1") and sample["pool_sha1"] != sha1:
            notes.append(f"{run_id}: the rebuilt pool differs from the one it drew from (pool_sha1); ids mapped anyway")
        known = pd.Index(ids).isin(pool.index)
        if not known.all():
            notes.append(f"{run_id}: {int((~known).sum())} of {len(ids)} ids not in the pool")
        found = pool.loc[[i for i, k in zip(ids, known, strict=True) if k]].reset_index()
        frames.append(found.assign(run_id=run_id, sampler=params.get(SAMPLER), budget=params.get(BUDGET),
                                   seed=params.get("seed", 0), scene_id=found["id"].str.split("@").str[0]))
    for note in notes:
        print(note)
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    extra = [c for c in ("row", "col") if c in out.columns]
    return _sorted(out[[c for c in columns if c in out.columns] + extra], results)


def run_pool(results: AblationResults, data_root: str | Path | None = None,
             tiles: TileSource | None = None) -> pd.DataFrame:
    """The pool (window index) of the first finished run, drawn behind the samples in the plots;
    an empty frame, with a message, when it cannot be built."""
    runs = results.runs
    if not runs.empty and "status" in runs:
        runs = runs[runs["status"].isin(OK_STATES)]
    if runs.empty:
        return pd.DataFrame()
    if isinstance(tiles, pd.DataFrame):
        return tiles
    params = runs.iloc[0].to_dict()
    try:
        return (tiles or _default_tiles(data_root))(params)
    except (OSError, ValueError, KeyError) as exc:
        print(f"Pool not available ({type(exc).__name__}: {exc}): plots without it.")
        return pd.DataFrame()


def scene_shares(locations: pd.DataFrame, pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """Share (%) of each sample in every scene: rows scenes (``source #scene``), columns
    (sampler, budget), mean over seeds; a ``pool`` column with the pool's own shares, and every
    pool scene listed, when the pool is given."""
    if locations.empty:
        return pd.DataFrame()
    counts = locations.groupby(["sampler", "budget", "seed", "run_id", "scene", "source"]).size().rename("n").reset_index()
    counts["share"] = 100 * counts["n"] / counts.groupby("run_id")["n"].transform("sum")
    counts["label"] = _scene_labels(counts)
    wide = counts.groupby(["label", "sampler", "budget"])["share"].sum().unstack(["sampler", "budget"])
    wide = wide / counts.groupby(["sampler", "budget"])["seed"].nunique()  # mean over seeds (0 where a seed missed it)
    order = _sampler_order(locations["sampler"])
    wide = wide[sorted(wide.columns, key=lambda c: (order.index(c[0]), c[1]))]
    if pool is not None and not pool.empty:
        labels = _scene_labels(pool)
        pool_share = 100 * labels.value_counts() / len(pool)
        wide = wide.reindex(pool_share.index.union(wide.index))
        wide[("pool", "")] = pool_share
    wide = wide.fillna(0.0)
    return wide.loc[sorted(wide.index, key=_label_key)]


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def plot_sampler_accuracy(results: AblationResults, encoder: str = ENCODER) -> Figure | None:
    """Probe accuracy per sampler, one panel per budget: the pooled mean with its 95% bootstrap
    interval (large marker) and each seed's mean (small markers), uniform's mean as a line."""
    table = sampling_table(results, encoder)
    scores = fold_scores(results, encoder)
    if table.empty:
        return None
    budgets = sorted(table["budget"].unique())
    order = _sampler_order(table["sampler"], results.spec)
    colors = _palette(order)
    fig, axes = plt.subplots(1, len(budgets), figsize=(1.5 + 4.5 * len(budgets), 4), sharey=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        rows = table[table["budget"] == budget].set_index("sampler")
        seeds = scores[scores["budget"] == budget].groupby(["sampler", "seed"])["accuracy"].mean().reset_index()
        for x, sampler in enumerate(order):
            if sampler not in rows.index:
                continue
            row = rows.loc[sampler]
            yerr = [[row["acc_mean"] - row["ci_low"]], [row["ci_high"] - row["acc_mean"]]]
            ax.errorbar([x], [row["acc_mean"]], yerr=None if np.isnan(row["ci_low"]) else yerr, fmt="o",
                        color=colors[sampler], markersize=8, capsize=4)
            mine = seeds[seeds["sampler"] == sampler]
            ax.scatter(np.full(len(mine), x + 0.15), mine["accuracy"], color=colors[sampler], s=18, marker="x")
        if REFERENCE in rows.index:
            ax.axhline(rows.loc[REFERENCE, "acc_mean"], color="0.5", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_title(f"{BUDGET} = {budget}")
        ax.set_ylabel(f"{encoder} linear-probe accuracy")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_scene_shares(locations: pd.DataFrame, pool: pd.DataFrame | None = None) -> Figure | None:
    """Heat map of ``scene_shares``: where each sampler's patches come from, next to the pool."""
    shares = scene_shares(locations, pool)
    if shares.empty:
        print("No sample locations: no scene shares.")
        return None
    shown = shares.copy()
    shown.columns = [f"{s}\n{b}" if b != "" else s for s, b in shown.columns]
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * shown.shape[1], 1.2 + 0.38 * shown.shape[0]))
    sns.heatmap(shown, annot=True, fmt=".0f", cmap="rocket_r", cbar_kws={"label": "% of the sample"}, ax=ax)
    ax.set_xlabel(f"{SAMPLER} / {BUDGET}")
    ax.set_ylabel("scene")
    fig.tight_layout()
    return fig


def plot_world(locations: pd.DataFrame, pool: pd.DataFrame | None = None) -> Figure | None:
    """Where each sampler's patches lie on Earth: a world panel per sampler (columns) and budget
    (rows); bubble area = share of the sample at each place (scenes within 0.5 degrees merged,
    mean over seeds); open grey circles = the pool's share there (what uniform draws on average).
    Country outlines where Natural Earth is at hand (``_world_outline``)."""
    if locations.empty:
        print("No sample locations: no map.")
        return None
    order = _sampler_order(locations["sampler"])
    budgets = sorted(locations["budget"].unique())
    colors = _palette(order)
    places = _places(pool if pool is not None and not pool.empty else locations)
    loc = locations.assign(place=locations["scene"].map(places["place"]))
    counts = loc.groupby(["sampler", "budget", "run_id", "place"]).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("run_id")["n"].transform("sum")
    n_seeds = loc.groupby(["sampler", "budget"])["run_id"].nunique()
    share = _mean_share(counts, n_seeds)
    centres = places.groupby("place")[["lon", "lat"]].mean()
    pool_share = (places.groupby("place")["n"].sum() / places["n"].sum()) if pool is not None and not pool.empty else None
    scale = 2500.0  # points^2 for a share of 1
    outline = _world_outline()
    fig, axes = plt.subplots(len(budgets), len(order), figsize=(3.3 * len(order), 1.9 * len(budgets) + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    for i, budget in enumerate(budgets):
        for j, sampler in enumerate(order):
            ax = axes[i][j]
            if outline is not None:
                outline.boundary.plot(ax=ax, color="0.75", linewidth=0.4)
            ax.set_xlim(-180, 180)
            ax.set_ylim(-90, 90)
            ax.set_aspect("equal")
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.axhline(0, color="0.85", linewidth=0.6)
            ax.grid(alpha=0.25)
            if pool_share is not None:
                ax.scatter(centres.loc[pool_share.index, "lon"], centres.loc[pool_share.index, "lat"],
                           s=scale * pool_share, facecolors="none", edgecolors="0.45", linewidths=0.8)
            if (sampler, budget) in share.index.droplevel("place"):
                mine = share.loc[(sampler, budget)]
                ax.scatter(centres.loc[mine.index, "lon"], centres.loc[mine.index, "lat"], s=scale * mine,
                           color=colors[sampler], alpha=0.7, edgecolors="none")
            if i == 0:
                ax.set_title(sampler)
            if j == 0:
                ax.set_ylabel(f"{BUDGET}={budget}\nlat")
            if i == len(budgets) - 1:
                ax.set_xlabel("lon")
    fig.tight_layout()
    return fig


def plot_scene_zoom(locations: pd.DataFrame, pool: pd.DataFrame | None = None, budget: Any = None,
                    seed: Any = None, n_scenes: int = 2) -> Figure | None:
    """Which windows of the dominant scenes each sampler took: one row per sampler, one column per
    scene (the ``n_scenes`` with most pool windows, or most sampled ones without a pool), the
    pool's window centres in grey behind the drawn ones. One budget (default the largest) and one
    seed (default the first)."""
    if locations.empty:
        print("No sample locations: no scene zoom.")
        return None
    budget = max(locations["budget"]) if budget is None else budget
    loc = locations[locations["budget"] == budget]
    seed = min(loc["seed"]) if seed is None and not loc.empty else seed
    loc = loc[loc["seed"] == seed]
    if loc.empty:
        print(f"No samples at {BUDGET}={budget}, seed {seed}: no scene zoom.")
        return None
    has_pool = pool is not None and not pool.empty
    ranking = (pool if has_pool else loc).groupby("scene").size().sort_values(ascending=False, kind="stable")
    scenes = list(ranking.index[:n_scenes])
    order = _sampler_order(loc["sampler"])
    colors = _palette(order)
    labels = dict(zip(loc["scene"], _scene_labels(loc), strict=True))
    if has_pool:
        labels.update(zip(pool["scene"], _scene_labels(pool), strict=True))
    fig, axes = plt.subplots(len(order), len(scenes), figsize=(3.4 * len(scenes) + 0.5, 2.9 * len(order)),
                             squeeze=False)
    for j, scene in enumerate(scenes):
        background = pool[pool["scene"] == scene] if has_pool else None
        for i, sampler in enumerate(order):
            ax = axes[i][j]
            if background is not None:
                ax.scatter(background["lon"], background["lat"], s=3, color="0.8", edgecolors="none")
            mine = loc[(loc["sampler"] == sampler) & (loc["scene"] == scene)]
            ax.scatter(mine["lon"], mine["lat"], s=9, color=colors[sampler], edgecolors="none")
            ref = background if background is not None else mine
            lat = float(ref["lat"].mean()) if len(ref) else 0.0
            ax.set_aspect(1 / max(math.cos(math.radians(lat)), 0.05), adjustable="datalim")
            ax.set_title(f"{sampler}: {labels.get(scene, scene)}\n{len(mine)} windows", fontsize="small")
            ax.tick_params(labelsize="x-small")
    fig.suptitle(f"{BUDGET}={budget}, seed {seed}", y=1.0)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_representativeness(results: AblationResults,
                                        metrics: Sequence[str] = SCATTER_METRICS) -> Figure | None:
    """Probe accuracy (mean over folds) against each representativeness metric, one point per run
    (colour = sampler, marker = budget). Panel titles give the Spearman rank correlation within
    each budget: the budget moves both axes, so pooling budgets would mostly show the budget."""
    runs = run_metrics(results)
    metrics = [m for m in metrics if m in runs.columns and runs[m].notna().any()]
    if runs.empty or not metrics or runs["accuracy"].isna().all():
        print("No runs with probe accuracy and representativeness metrics: nothing to plot.")
        return None
    order = _sampler_order(runs["sampler"], results.spec)
    budgets = sorted(runs["budget"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.5 + 4 * len(metrics), 4), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.scatterplot(data=runs, x=metric, y="accuracy", hue="sampler", hue_order=order, palette=_palette(order),
                        style="budget", style_order=budgets, s=60, ax=ax, legend=metric == metrics[-1])
        rhos = []
        for budget in budgets:
            cell = runs[runs["budget"] == budget][[metric, "accuracy"]].dropna()
            rho = cell[metric].corr(cell["accuracy"], method="spearman") if len(cell) >= 3 else float("nan")
            rhos.append(f"{budget}: {rho:+.2f}" if math.isfinite(rho) else f"{budget}: n/a")
        ax.set_title(f"{metric.removeprefix('sample_')}\nSpearman rho, {BUDGET} " + ", ".join(rhos), fontsize="small")
        ax.set_xlabel(metric.removeprefix("sample_"))
        ax.set_ylabel(f"{ENCODER} linear-probe accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------


def _default_tiles(data_root: str | Path | None) -> Callable[[dict[str, Any]], pd.DataFrame]:
    return functools.partial(pool_tiles, data_root=data_root)


def _current(frame: pd.DataFrame, results: AblationResults) -> pd.DataFrame:
    """Rows of runs the current spec lists (spec.json ``runs``); a results folder keeps the folders
    of runs an earlier version of the spec asked for, which would otherwise count twice."""
    listed = {r.get("run_id") for r in results.spec.get("runs") or [] if isinstance(r, dict)}
    if not listed or "run_id" not in frame:
        return frame
    keep = frame["run_id"].isin(listed)
    stale = frame.loc[~keep, "run_id"].nunique()
    if stale and keep.any():
        _note(results, f"Left out {stale} run(s) the current spec does not list (from an earlier spec).")
        return frame[keep]
    return frame


def _one_run_per_cell(rows: pd.DataFrame, results: AblationResults) -> pd.DataFrame:
    """Keep the first run id of each (sampler, budget, seed), with a note when there were several."""
    first = rows.groupby(["sampler", "budget", "seed"])["run_id"].transform("min")
    extra = rows.loc[rows["run_id"] != first, "run_id"].unique()
    if len(extra):
        _note(results, f"Several runs share a sampler, budget and seed; left out {', '.join(map(str, extra))}.")
    return rows[rows["run_id"] == first]


_NOTED: set[tuple[str, str]] = set()


def _note(results: AblationResults, message: str) -> None:
    """Print ``message`` once per results folder (every table calls the filters above)."""
    key = (str(results.results_dir), message)
    if key not in _NOTED:
        _NOTED.add(key)
        print(message)


def _sampler_order(samplers: pd.Series | Sequence[str], spec: Mapping[str, Any] | None = None) -> list[str]:
    """The spec's order of samplers where known (then any others sorted), else the reference first
    and the rest in order of appearance (``sample_locations`` returns rows in the spec's order)."""
    present = list(dict.fromkeys(map(str, samplers)))
    listed = [str(s) for s in ((spec or {}).get("grid") or {}).get(SAMPLER, [])]
    head = [s for s in listed if s in present]
    if head:
        return head + sorted(s for s in present if s not in head)
    return [s for s in present if s == REFERENCE] + [s for s in present if s != REFERENCE]


def _sorted(frame: pd.DataFrame, results: AblationResults) -> pd.DataFrame:
    """Rows in the spec's sampler order, then by budget (and seed where present)."""
    if frame.empty:
        return frame
    order = _sampler_order(frame["sampler"], results.spec)
    keys = ["sampler", "budget", *(["seed"] if "seed" in frame else [])]
    rank = frame["sampler"].astype(str).map(order.index)
    return (frame.assign(_rank=rank).sort_values(["_rank", *keys[1:]], kind="stable").drop(columns="_rank")
            .reset_index(drop=True))


def _palette(order: Sequence[str]) -> dict[str, Any]:
    """One colour per sampler, the same in every plot."""
    return dict(zip(order, sns.color_palette("tab10", max(len(order), 1)), strict=False))


def _scene_labels(frame: pd.DataFrame) -> pd.Series:
    """``source #scene`` (the scene's position in the cache, as in the tiles' ``scene`` column)."""
    return frame["source"].astype(str) + " #" + frame["scene"].astype(str)


def _label_key(label: str) -> tuple[int, str]:
    head, _, number = label.rpartition(" #")
    return (int(number), head) if number.isdigit() else (10**9, label)


@functools.lru_cache(maxsize=1)
def _world_outline() -> Any:
    """Country outlines for the world panels, or None: Natural Earth 1:110m as shipped with pyogrio
    (its test fixture; the map is only context, so without it the panels just lack outlines)."""
    try:
        import importlib.util

        import geopandas

        spec = importlib.util.find_spec("pyogrio")
        origin = Path(spec.origin).parent if spec and spec.origin else None
        path = origin / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp" if origin else None
        return geopandas.read_file(path) if path and path.is_file() else None
    except Exception:  # noqa: BLE001 (any failure only means no outlines)
        return None


def _places(tiles: pd.DataFrame) -> pd.DataFrame:
    """Per scene: its window count, centre and ``place`` (scenes whose centres round to the same
    half degree are one place: several dates or processing levels of one location)."""
    scenes = tiles.groupby("scene").agg(n=("lon", "size"), lon=("lon", "mean"), lat=("lat", "mean"))
    key = (scenes["lon"] * 2).round().astype(int).astype(str) + "," + (scenes["lat"] * 2).round().astype(int).astype(str)
    scenes["place"] = pd.factorize(key)[0]
    return scenes


def _mean_share(counts: pd.DataFrame, n_seeds: pd.Series) -> pd.Series:
    """Share of each (sampler, budget) sample at each place, averaged over its seeds (runs)."""
    total = counts.groupby(["sampler", "budget", "place"])["share"].sum()
    runs = n_seeds.reindex(total.index.droplevel("place")).to_numpy()
    return total / runs
