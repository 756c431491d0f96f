"""Arms of one or more ablations over seeds: which differences exceed seed noise.

    python -m eolab results seeds results/objectives_seeds [results/sampler_seeds ...] [--versus KEY=VALUE] [--out DIR]

An *arm* is a setting of the parameters that vary across the loaded runs, seed left out
(``objective=mae``, or ``objective=mae, batch_sampling=diverse`` when two ablations are read
together). Every done run gives, per *score*, the pre-trained encoder's metric on each probe fold
and, on the same folds, its baselines':

- ``eurosat_random``: the run's own EuroSAT-273 linear probe (record.json ``folds``: ``mean_std``
  pooling, folds x repeats seeded by the run's seed), against the random-init encoder and the band
  statistics probed in the same run;
- ``<task>_<split>`` for every linear-probe row of the run's embedding benchmark (``benchmark.csv``,
  written when the run's ``benchmark`` parameter names tasks; its ``fold_values`` column),
  against the benchmark's ``random_init`` twin and ``band_stats`` rows of the same run.

Per arm and score: the mean over seeds of the per-seed fold means; the seed sd (of those per-seed
means); the interquartile mean (IQM) of all (seed, fold) values pooled; and, against each baseline
(and, with ``versus``, against the arm that differs only in KEY=VALUE, paired by seed and fold),
the mean paired difference with a two-level bootstrap interval (seeds, then folds within a seed;
``eolab.intervals.seeds_bootstrap_ci``). ``exceeds_noise`` says whether that interval excludes 0.
Folds of one seed share training data, so the fold level is optimistic; with three seeds the seed
level is coarse. Read the intervals with the seed sd.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import trim_mean

from eolab.intervals import seeds_bootstrap_ci
from eolab.io import write_atomic, write_text_atomic
from eolab.run_folder import BENCHMARK_NAME, RECORD_NAME
from eolab.runner.store import RUNS_DIRNAME

from .benchmark import read_table

PRETRAINED = "pretrained"
BASELINES = ("random_init", "band_stats")
MAIN_SCORE = "eurosat_random"
"""The run's own EuroSAT probe (the score every earlier ablation reports)."""
IGNORED_KEYS = ("seed", "output_dir", "data_root")
"""Parameters that never make an arm (the seed is the replicate; paths are where, not what)."""


class SeedsError(ValueError):
    """A folder without done runs, or a ``versus`` that names no parameter of the runs."""


@dataclass
class Run:
    """One done run as the seeds report reads it: its parameters and, per score and encoder,
    the metric of every fold (the folds of a score are the same for all of a run's encoders)."""

    run_id: str
    ablation: str
    params: dict[str, Any]
    seed: int
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def load_runs(folders: list[str | Path], metric: str = "accuracy") -> list[Run]:
    """Every run with a record.json under ``folder/runs/`` of each folder."""
    runs = []
    for folder in map(Path, folders):
        run_dirs = sorted(p for p in (folder / RUNS_DIRNAME).glob("*") if (p / RECORD_NAME).is_file())
        if not run_dirs:
            raise SeedsError(f"{folder}: no done runs (no {RUNS_DIRNAME}/*/{RECORD_NAME})")
        for run_dir in run_dirs:
            record = json.loads((run_dir / RECORD_NAME).read_text())
            run = Run(record["run_id"], folder.name, record["params"], int(record["seed"]))
            run.scores[MAIN_SCORE] = _record_folds(record)
            if (run_dir / BENCHMARK_NAME).is_file():
                run.scores.update(_benchmark_folds(read_table(run_dir / BENCHMARK_NAME), metric))
            runs.append(run)
    return runs


def _record_folds(record: dict) -> dict[str, np.ndarray]:
    folds = pd.DataFrame(record["folds"]).sort_values(["encoder", "fold"])
    return {enc: g["accuracy"].to_numpy(float) for enc, g in folds.groupby("encoder")}


def _benchmark_folds(table: pd.DataFrame, metric: str) -> dict[str, dict[str, np.ndarray]]:
    """Linear-probe rows over folds (random and blocked splits) -> score -> encoder -> folds."""
    rows = table[(table["protocol"] == "linear") & (table["metric"] == metric) & (table["not_applicable"] == "")
                 & (table["fold_values"] != "") & (table["variant"] == "")]
    scores: dict[str, dict[str, np.ndarray]] = {}
    for _, row in rows.iterrows():
        values = np.array([float(v) for v in row["fold_values"].split(";")])
        scores.setdefault(f"{row['task']}_{row['split']}", {})[row["encoder"]] = values
    return scores


def arm_keys(runs: list[Run], ignore: tuple[str, ...] = ()) -> list[str]:
    """The parameters whose values differ between the runs (seed, paths and ``ignore`` left out),
    in the order of the first run's parameters."""
    keys = []
    for key in runs[0].params:
        if key not in (*IGNORED_KEYS, *ignore) and len({json.dumps(r.params.get(key), sort_keys=True) for r in runs}) > 1:
            keys.append(key)
    return keys


def arm_label(params: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={params.get(k)}" for k in keys) or "all runs"


def seeds_table(runs: list[Run], versus: str = "", level: float = 0.95, ignore: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per arm and score (see the module docstring); numeric columns, no formatting.
    ``ignore``: parameters that do not make arms (ones the arms' objectives do not read, such as
    ``koleo_weight`` beside a MAE), so runs that differ only there are seeds of one arm."""
    keys = arm_keys(runs, ignore)
    versus_key, _, versus_value = versus.partition("=")
    if versus and versus_key not in keys:
        raise SeedsError(f"--versus {versus!r}: {versus_key!r} is not a parameter that varies across these runs "
                         f"(those are: {', '.join(keys) or 'none'})")
    arms: dict[str, list[Run]] = {}
    for run in runs:
        arms.setdefault(arm_label(run.params, keys), []).append(run)
    rows = []
    for label, members in arms.items():
        partner = None
        if versus:
            # matched by the value's text, as `compare --versus` matches (arm labels print values with str)
            wanted = {**members[0].params, versus_key: versus_value}
            partner = arms.get(arm_label(wanted, keys))
            if partner is members:
                partner = None
        for score in sorted({s for r in members for s in r.scores}, key=lambda s: (s != MAIN_SCORE, s)):
            row = _arm_row(label, members, score, level)
            if row is None:
                continue
            if partner is not None:
                row.update(_versus_cells(members, partner, score, level, f"vs_{versus_key}"))
                row[f"vs_{versus_key}_arm"] = arm_label(partner[0].params, keys)
            rows.append({**{k: members[0].params.get(k) for k in keys}, **row})
    return pd.DataFrame(rows)


def _arm_row(label: str, members: list[Run], score: str, level: float) -> dict[str, Any] | None:
    with_score = [r for r in members if PRETRAINED in r.scores.get(score, {})]
    if not with_score:
        return None
    per_seed = [r.scores[score][PRETRAINED] for r in with_score]
    means = np.array([np.nanmean(v) for v in per_seed])
    row: dict[str, Any] = {
        "arm": label, "score": score, "seeds": len(with_score),
        "seed_list": ",".join(str(r.seed) for r in sorted(with_score, key=lambda r: r.seed)),
        "mean": float(means.mean()), "seed_sd": float(means.std(ddof=1)) if len(means) > 1 else float("nan"),
        "iqm": float(trim_mean(np.concatenate(per_seed), 0.25)),
    }
    for baseline in BASELINES:
        base = [r.scores[score].get(baseline) for r in with_score]
        if any(b is None for b in base):
            continue
        row[f"{baseline}_mean"] = float(np.mean([np.nanmean(b) for b in base]))
        diffs = [p - b for p, b in zip(per_seed, base, strict=True)]  # same folds within a run
        row.update(_difference_cells(diffs, f"minus_{baseline}", level))
    return row


def _versus_cells(members: list[Run], partner: list[Run], score: str, level: float, prefix: str) -> dict[str, Any]:
    """This arm minus the partner arm, paired by seed (same probe folds) and fold."""
    other = {r.seed: r.scores.get(score, {}).get(PRETRAINED) for r in partner}
    diffs = [r.scores[score][PRETRAINED] - other[r.seed] for r in members
             if PRETRAINED in r.scores.get(score, {}) and other.get(r.seed) is not None
             and len(other[r.seed]) == len(r.scores[score][PRETRAINED])]
    cells = _difference_cells(diffs, prefix, level)
    cells[f"{prefix}_seeds"] = len(diffs)
    return cells


def _difference_cells(diffs: list[np.ndarray], prefix: str, level: float) -> dict[str, Any]:
    if not diffs:
        return {}
    low, high = seeds_bootstrap_ci(diffs, level=level)
    return {prefix: float(np.mean([np.nanmean(d) for d in diffs])), f"{prefix}_low": low, f"{prefix}_high": high,
            f"{prefix}_exceeds_noise": bool(low > 0 or high < 0)}


def to_markdown(table: pd.DataFrame, scores: list[str] | None = None) -> str:
    """Arms as rows, scores as columns: mean over seeds, seed sd and the paired interval against
    band statistics (and random init), a star where that interval excludes 0."""
    scores = scores or list(dict.fromkeys(table["score"]))
    lines = ["| arm | " + " | ".join(scores) + " |", "| --- |" + " --- |" * len(scores)]
    for arm in dict.fromkeys(table["arm"]):
        cells = []
        for score in scores:
            hit = table[(table["arm"] == arm) & (table["score"] == score)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for baseline in BASELINES:
        cells = []
        for score in scores:
            hit = table[table["score"] == score]
            col = f"{baseline}_mean"
            cells.append(f"{hit[col].iloc[0]:.3f}" if col in hit and len(hit) and pd.notna(hit[col].iloc[0]) else "")
        lines.append(f"| *{baseline}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row: pd.Series) -> str:
    text = f"{row['mean']:.3f} ± {row['seed_sd']:.3f}" if pd.notna(row["seed_sd"]) else f"{row['mean']:.3f}"
    for baseline, short in (("band_stats", "bs"), ("random_init", "ri")):
        col = f"minus_{baseline}"
        if col in row and pd.notna(row[col]):
            star = "*" if row[f"{col}_exceeds_noise"] else ""
            text += f"<br>{short} {row[col]:+.3f} [{row[f'{col}_low']:+.3f}, {row[f'{col}_high']:+.3f}]{star}"
    return text


def write_seeds(folders: list[str | Path], out_dir: str | Path, versus: str = "",
                ignore: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write ``seeds.csv`` (every number) and ``seeds.md`` (the table) into ``out_dir``."""
    table = seeds_table(load_runs(folders), versus=versus, ignore=ignore)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "seeds.csv", out / "seeds.md"
    write_atomic(csv_path, lambda tmp: table.to_csv(tmp, index=False))
    write_text_atomic(md_path, to_markdown(table) + "\n")
    return csv_path, md_path
