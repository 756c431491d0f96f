"""Ablations side by side, and an index of everything under results/.

    python -m eolab compare results/a results/b [...] [--reference ABLATION/RUN | --versus KEY=VALUE] [--csv FILE] [--summary DIR]
    python -m eolab results index [--root results]

`compare_runs` reads each ablation's table.csv (one row per run, encoder and fold, as the runner
writes it) and gives, per ablation and run, the pre-trained encoder's linear-probe accuracy and
the baselines' (mean, fold sd, 95% bootstrap interval over folds), and the pre-trained minus each
baseline paired fold by fold (every encoder of a run is probed on the same folds). With a
reference run, every run with the same seed and folds is also paired against it, fold by fold,
across ablations: runs of one seed are probed on the same folds (the probe's split is seeded), so
this is how the README's cross-ablation tables are made. Intervals: eolab.intervals.bootstrap_ci
(optimistic over repeated k-fold folds; read them with the fold spread).

`results_index` lists every folder under results/: ablations (runs done of all, the best run's
pre-trained accuracy, the date its last run ended, the commits that made them) and the other
result folders (benchmarks), with what they carry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eolab.intervals import bootstrap_ci
from eolab.runner.store import RUNS_DIRNAME, RUNS_TABLE_NAME, SPEC_NAME, STATUS_NAME, TABLE_NAME, read_json

REFERENCE_ENCODER = "pretrained"
BASELINES = ("random_init", "band_stats")
INDEX_NAME = "index.md"
INDEX_CSV_NAME = "index.csv"


class CompareError(ValueError):
    """A folder that is not an ablation's results, or a reference run that is not there."""


@dataclass
class Ablation:
    """One results folder as the comparison reads it."""

    name: str
    path: Path
    spec: dict[str, Any]
    table: pd.DataFrame  # one row per run, encoder and fold
    runs: pd.DataFrame  # one row per run

    @property
    def varied(self) -> list[str]:
        """The ablated parameters that are columns of the table (the spec's grid keys)."""
        return [k for k in self.spec.get("grid", {}) if k in self.table.columns]


def load_ablation(path: str | Path) -> Ablation:
    """An ablation's results folder; CompareError naming the folder when it is not one."""
    path = Path(path)
    if not (path / RUNS_DIRNAME).is_dir() or not (path / TABLE_NAME).is_file():
        raise CompareError(f"{path} is not an ablation results folder (needs {RUNS_DIRNAME}/ and {TABLE_NAME})")
    spec = read_json(path / SPEC_NAME) or {}
    table = _read_csv(path / TABLE_NAME)
    missing = {"run_id", "encoder", "fold", "accuracy"} - set(table.columns)
    if missing and not table.empty:
        raise CompareError(f"{path / TABLE_NAME} lacks column(s) {', '.join(sorted(missing))}: no probe folds to compare")
    return Ablation(name=spec.get("name") or path.name, path=path, spec=spec, table=table,
                    runs=_read_csv(path / RUNS_TABLE_NAME))


def run_label(run_id: str) -> str:
    """The readable part of a run id (`mask_ratio=0.5-seed=0`)."""
    head, _, tail = run_id.rpartition("-")
    return head if head and len(tail) == 12 else run_id


def compare_runs(paths: list[str | Path], reference: str | None = None, versus: str | None = None) -> pd.DataFrame:
    """One row per ablation and run (done runs with probe folds), numeric; see the module docstring.

    `reference` is `ABLATION/RUN`, where RUN is a run id, its readable part or its 12-hex hash: every
    run of its seed is paired with it. `versus` is `KEY=VALUE`: every run is paired with the run (of
    any of the ablations, its own first) whose settings are the same but KEY=VALUE, and seed alike -
    `--versus mask=random` gives block minus random at each mask ratio.
    """
    if reference and versus:
        raise CompareError("give --reference or --versus, not both")
    ablations = [load_ablation(p) for p in paths]
    folds = {(a.name, run_id): run for a in ablations if not a.table.empty
             for run_id, run in a.table.groupby("run_id", sort=True)}
    if not folds:
        raise CompareError(f"no probe folds in any of {', '.join(map(str, paths))}")
    partners: dict[tuple[str, str], tuple[str, str] | None] = {}
    references: set[tuple[str, str]] = set()
    if reference:
        ref_key = _find_reference(reference, folds)
        partners, references = {key: (None if key == ref_key else ref_key) for key in folds}, {ref_key}
    elif versus:
        partners = _versus_partners(versus, ablations, folds)
        references = {key for key, partner in partners.items() if partner == key}
        partners = {key: (None if partner == key else partner) for key, partner in partners.items()}
    rows = []
    for ablation in ablations:
        for run_id in sorted({r for (name, r) in folds if name == ablation.name}):
            key = (ablation.name, run_id)
            row = _run_row(ablation, run_id, folds[key])
            if reference or versus:
                partner = partners.get(key)
                row["is_reference"] = key in references
                row["reference"] = f"{partner[0]}/{run_label(partner[1])}" if partner else ""
                row.update(_versus_reference(folds[key], folds[partner] if partner else None))
            rows.append(row)
    return pd.DataFrame(rows)


def _settings(run: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    first = run.iloc[0]
    return {k: first[k] for k in keys if k in run.columns and pd.notna(first[k])}


def _versus_partners(versus: str, ablations: list[Ablation],
                     folds: dict[tuple[str, str], pd.DataFrame]) -> dict[tuple[str, str], tuple[str, str] | None]:
    """For each run, the run with the same settings but `KEY=VALUE` (and the same seed), itself for a
    run that has KEY=VALUE, or None."""
    key, sep, value = versus.partition("=")
    if not sep or not key:
        raise CompareError(f"--versus must be KEY=VALUE (e.g. mask=random), got {versus!r}")
    keys = list(dict.fromkeys(k for a in ablations for k in a.varied if k != "seed"))
    if key not in keys:
        raise CompareError(f"--versus {key}: not a parameter the ablations vary ({', '.join(keys) or 'none'})")
    settings = {k: _settings(run, [*keys, "seed"]) for k, run in folds.items()}
    out: dict[tuple[str, str], tuple[str, str] | None] = {}
    for run_key, mine in settings.items():
        if str(mine.get(key)) == value:
            out[run_key] = run_key  # a reference itself
            continue
        wanted = {**mine, key: value}
        found = [k for k, theirs in settings.items() if k != run_key
                 and all(str(theirs[p]) == str(v) for p, v in wanted.items() if p in theirs)
                 and str(theirs.get(key)) == value]
        found.sort(key=lambda k: k[0] != run_key[0])  # its own ablation's run first
        out[run_key] = found[0] if found else None
    return out


def _run_row(ablation: Ablation, run_id: str, run: pd.DataFrame) -> dict[str, Any]:
    wide = run.pivot_table(index="fold", columns="encoder", values="accuracy", aggfunc="first")
    first = run.iloc[0]
    row: dict[str, Any] = {
        "ablation": ablation.name, "run_id": run_id, "run": run_label(run_id),
        "setting": ", ".join(f"{k}={first[k]}" for k in ablation.varied if k != "seed"),
        "seed": first.get("seed"), "folds": int(wide.shape[0]),
    }
    for encoder in (REFERENCE_ENCODER, *BASELINES):
        values = wide[encoder].dropna().to_numpy() if encoder in wide else np.array([])
        lo, hi = bootstrap_ci(values)
        row.update({f"{encoder}_mean": values.mean() if len(values) else np.nan,
                    f"{encoder}_sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                    f"{encoder}_ci_low": lo, f"{encoder}_ci_high": hi})
    for baseline in BASELINES:
        diff = (wide[REFERENCE_ENCODER] - wide[baseline]).dropna() if {REFERENCE_ENCODER, baseline} <= set(wide) else pd.Series(dtype=float)
        lo, hi = bootstrap_ci(diff.to_numpy())
        row.update({f"minus_{baseline}": diff.mean() if len(diff) else np.nan,
                    f"minus_{baseline}_ci_low": lo, f"minus_{baseline}_ci_high": hi})
    commits = sorted({str(c) for c in run.get("git_commit", pd.Series(dtype=str)).dropna()})
    row["git_commit"] = ",".join(c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in commits)
    row["ended_at"] = (read_json(ablation.path / RUNS_DIRNAME / run_id / STATUS_NAME) or {}).get("ended_at")
    return row


def _versus_reference(run: pd.DataFrame, ref: pd.DataFrame | None) -> dict[str, Any]:
    """The run's pre-trained accuracy minus the reference run's, paired by fold (same seed only)."""
    empty = {"minus_reference": np.nan, "minus_reference_ci_low": np.nan, "minus_reference_ci_high": np.nan}
    if ref is None:
        return empty
    seeds = {frozenset(r["seed"].dropna().unique()) if "seed" in r else frozenset() for r in (run, ref)}
    if len(seeds) != 1:  # different seeds: different probe folds, nothing to pair
        return empty
    mine, theirs = (r[r["encoder"] == REFERENCE_ENCODER].set_index("fold")["accuracy"] for r in (run, ref))
    diff = (mine - theirs).dropna()
    lo, hi = bootstrap_ci(diff.to_numpy())
    return {"minus_reference": diff.mean() if len(diff) else np.nan, "minus_reference_ci_low": lo,
            "minus_reference_ci_high": hi}


def _find_reference(reference: str, folds: dict[tuple[str, str], pd.DataFrame]) -> tuple[str, str]:
    name, sep, run = reference.partition("/")
    if not sep or not run:
        raise CompareError(f"--reference must be ABLATION/RUN (e.g. mask_ratio/mask_ratio=0.75-seed=0), got {reference!r}")
    matches = [k for k in folds if k[0] == name and run in (k[1], run_label(k[1]), k[1].rpartition("-")[2])]
    if len(matches) != 1:
        known = ", ".join(f"{a}/{run_label(r)}" for a, r in folds)
        raise CompareError(f"reference {reference!r} matches {len(matches)} runs; runs compared: {known}")
    return matches[0]


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """`compare_runs` as the README writes it: 'mean +- sd' per encoder, '+0.022 [-0.01, +0.05]' per
    paired difference, and the pre-trained encoder's 95% interval."""
    out = frame[["ablation", "run", "seed", "folds"]].copy()
    out["pretrained"] = [_mean_sd(m, s) for m, s in zip(frame["pretrained_mean"], frame["pretrained_sd"], strict=True)]
    out["pretrained 95% CI"] = [_interval(lo, hi) for lo, hi in
                                zip(frame["pretrained_ci_low"], frame["pretrained_ci_high"], strict=True)]
    for baseline in BASELINES:
        out[baseline] = [_mean_sd(m, s) for m, s in zip(frame[f"{baseline}_mean"], frame[f"{baseline}_sd"], strict=True)]
    for baseline in BASELINES:
        out[f"minus {baseline} (paired)"] = _differences(frame, f"minus_{baseline}")
    if "minus_reference" in frame:
        if frame["reference"].nunique() > 1:  # --versus: each run has its own partner
            out["reference"] = frame["reference"]
        out["minus reference (paired)"] = [
            "(reference)" if is_ref else text for is_ref, text in
            zip(frame["is_reference"], _differences(frame, "minus_reference"), strict=True)]
    out["commit"] = frame["git_commit"]
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no extra dependency)."""
    cells = frame.astype(object).where(frame.notna(), "").astype(str)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.to_numpy()]
    return "\n".join(lines) + "\n"


def plot_compare(frame: pd.DataFrame):
    """Pre-trained accuracy (95% interval over folds) of every run, ablations stacked, with the
    baselines as open markers: the figure of a comparison."""
    import matplotlib.pyplot as plt

    labels = [f"{a} / {r}" for a, r in zip(frame["ablation"], frame["run"], strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.38 * len(frame)))
    y = np.arange(len(frame))
    err = np.abs(np.vstack([frame["pretrained_mean"] - frame["pretrained_ci_low"],
                            frame["pretrained_ci_high"] - frame["pretrained_mean"]]))
    ax.errorbar(frame["pretrained_mean"], y, xerr=np.nan_to_num(err), fmt="o", capsize=3, label="pretrained (95% CI)")
    for baseline, marker in zip(BASELINES, ("s", "D"), strict=True):
        ax.scatter(frame[f"{baseline}_mean"], y, marker=marker, facecolors="none", edgecolors="grey", label=baseline)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.set_xlabel("linear-probe accuracy (mean over folds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


COMPARE_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare.ipynb"


def render_compare(paths: list[str | Path], out_dir: Path, reference: str = "", versus: str = "",
                   notebook: Path = COMPARE_NOTEBOOK) -> tuple[Path | None, str | None]:
    """Execute the compare notebook on `paths` into `out_dir`/compare.ipynb and render it to
    compare.html beside it; (html, error), the page rendered even when the notebook failed."""
    from papermill.exceptions import PapermillExecutionError

    from eolab.runner.notebook import execute_notebook
    from eolab.runner.render import render_html

    for path in paths:
        load_ablation(path)  # bad folders: an error naming them, before a kernel starts
    executed = Path(out_dir) / "compare.ipynb"
    error = None
    try:
        execute_notebook(notebook, executed, {"results_dirs": ",".join(_from_notebook(p, notebook) for p in paths),
                                              "reference": reference, "versus": versus})
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    if not executed.is_file():
        return None, error
    _relative_papermill_paths(executed, notebook.resolve().parents[1])
    return render_html(executed), error


def _relative_papermill_paths(executed: Path, repo: Path) -> None:
    """papermill records the notebook's input and output paths as given (absolute here): keep them
    relative to the repository, so that a committed comparison names no machine's folders."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        value = meta.get(key)
        if value and Path(value).resolve().is_relative_to(repo):
            meta[key] = str(Path(value).resolve().relative_to(repo))
    nbformat.write(nb, executed)


def _from_notebook(path: str | Path, notebook: Path) -> str:
    """`path` as the notebook (run in its own folder) reaches it: relative inside the repository,
    so that the executed notebook carries no machine's absolute paths."""
    path, repo = Path(path).resolve(), notebook.resolve().parents[1]
    return os.path.relpath(path, notebook.resolve().parent) if path.is_relative_to(repo) else str(path)


# --- the index of results/ -----------------------------------------------------------------------


def results_index(root: str | Path) -> pd.DataFrame:
    """One row per folder under `root`: name, kind, runs, best metric, date, commit, page."""
    root = Path(root)
    if not root.is_dir():
        raise CompareError(f"results folder not found: {root}")
    rows = [_index_row(d, root) for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    return pd.DataFrame(rows, columns=["name", "kind", "runs", "best", "best run", "date", "commit", "page", "description"])


def write_index(root: str | Path) -> tuple[Path, Path]:
    """Write `root`/index.md (links to each page) and index.csv; return both paths."""
    from eolab.io import write_text_atomic

    root = Path(root)
    index = results_index(root)
    md = index.copy()
    md["name"] = [f"[{n}]({p})" if p else n for n, p in zip(index["name"], index["page"], strict=True)]
    md = md.drop(columns=["page"])
    text = ("# Results\n\nEvery folder under `results/`, written by `python -m eolab results index` from the files in "
            "them. **best**: the highest mean linear-probe accuracy of a pre-trained encoder over its folds (ablations), "
            "or what a benchmark reports. **date**: when its last run ended (UTC).\n\n" + to_markdown(md))
    md_path, csv_path = root / INDEX_NAME, root / INDEX_CSV_NAME
    write_text_atomic(md_path, text)
    write_text_atomic(csv_path, index.to_csv(index=False))
    return md_path, csv_path


def _index_row(folder: Path, root: Path) -> dict[str, Any]:
    page = next((p for p in ("summary.html", "benchmark.html", "compare.html", "report.md") if (folder / p).is_file()), "")
    row: dict[str, Any] = {"name": folder.name, "page": f"{folder.name}/{page}" if page else "",
                           "runs": "", "best": "", "best run": "", "date": "", "commit": "", "description": ""}
    if (folder / RUNS_DIRNAME).is_dir():
        return {**row, **_ablation_summary(folder)}
    jsons = sorted(folder.glob("*.json"))
    commits, dates, best = set(), set(), ""
    for path in jsons:
        obj = read_json(path) or {}
        commits |= {str(obj[k])[:7] for k in ("git_commit", "commit") if obj.get(k)}
        for part in (obj, *[v for v in obj.values() if isinstance(v, dict)]):  # report.json nests its sections
            dates |= {str(part[k])[:10] for k in ("date", "started_at", "ended_at") if part.get(k)}
            commits |= {str(part[k])[:7] for k in ("git_commit", "commit") if isinstance(part.get(k), str)}
    if (folder / "benchmark.csv").is_file():
        best = _benchmark_best(folder / "benchmark.csv")
    compared = _read_csv(folder / "compare.csv")  # a saved `compare --csv`: its runs' dates and commits
    if {"ended_at", "git_commit", "ablation"} <= set(compared.columns):
        dates |= {str(d)[:10] for d in compared["ended_at"].dropna()}
        commits |= {c for cs in compared["git_commit"].dropna() for c in str(cs).split(",")}
        best = f"{compared['ablation'].nunique()} ablations, {len(compared)} runs"
    kind = ("comparison" if (folder / "compare.ipynb").is_file()
            else "benchmark" if jsons or (folder / "benchmark.csv").is_file() else "files")
    return {**row, "kind": kind, "runs": "", "best": best, "date": max(dates) if dates else "",
            "commit": _commits(commits), "description": ", ".join(p.name for p in sorted(folder.iterdir())[:6])}


def _ablation_summary(folder: Path) -> dict[str, Any]:
    spec = read_json(folder / SPEC_NAME) or {}
    runs = _read_csv(folder / RUNS_TABLE_NAME)
    table = _read_csv(folder / TABLE_NAME)
    statuses = runs["status"].value_counts().to_dict() if "status" in runs else {}
    best = best_run = ""
    if {"encoder", "accuracy", "run_id"} <= set(table.columns):
        means = table[table["encoder"] == REFERENCE_ENCODER].groupby("run_id")["accuracy"].mean()
        if len(means):
            best, best_run = f"{means.max():.3f} (pretrained accuracy)", run_label(str(means.idxmax()))
    elif "val_loss" in runs:  # e.g. the scaling grid: loss is what it fits
        v = runs.dropna(subset=["val_loss"])
        if len(v):
            at = v["val_loss"].idxmin()
            best, best_run = f"{v.loc[at, 'val_loss']:.3f} (val_loss, lowest)", run_label(str(v.loc[at, "run_id"]))
    ended = [(read_json(p) or {}).get("ended_at") for p in (folder / RUNS_DIRNAME).glob(f"*/{STATUS_NAME}")]
    ended = sorted(e for e in ended if e)
    commits = {str(c)[:7] + ("-dirty" if str(c).endswith("-dirty") else "")
               for c in runs.get("git_commit", pd.Series(dtype=str)).dropna()}
    done = statuses.get("done", 0)
    return {"kind": "study" if spec.get("study") else "ablation",
            "runs": f"{done} of {len(runs)}" + ("" if done == len(runs) else " (" + ", ".join(
                f"{n} {s}" for s, n in statuses.items() if s != "done") + ")"),
            "best run": best_run, "date": ended[-1][:10] if ended else "",
            "best": best or "(no probe folds)", "commit": _commits(commits), "description": spec.get("description") or ""}


def _commits(commits: set[str], shown: int = 3) -> str:
    """Up to `shown` commits, then how many more (a grid made over many commits says so)."""
    commits = sorted(commits)
    more = f" and {len(commits) - shown} more" if len(commits) > shown else ""
    return ", ".join(commits[:shown]) + more


def _benchmark_best(path: Path) -> str:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError):
        return ""
    need = {"task", "protocol", "split", "metric", "value", "encoder"}
    if not need <= set(table.columns):
        return ""
    rows = table[(table["task"] == "eurosat") & (table["protocol"] == "linear") & (table["split"] == "random")
                 & (table["metric"] == "accuracy")].dropna(subset=["value"])
    if rows.empty:
        return ""
    top = rows.loc[rows["value"].idxmax()]
    return f"{top['value']:.3f} (EuroSAT linear, random split, {run_label(str(top['encoder']))})"


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path)


def _mean_sd(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return ""
    return f"{mean:.3f} +- {sd:.3f}" if np.isfinite(sd) else f"{mean:.3f}"


def _interval(lo: float, hi: float, signed: bool = False) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _differences(frame: pd.DataFrame, column: str) -> list[str]:
    out = []
    for value, lo, hi in zip(frame[column], frame[f"{column}_ci_low"], frame[f"{column}_ci_high"], strict=True):
        out.append(f"{value:+.3f} {_interval(lo, hi, signed=True)}".strip() if np.isfinite(value) else "")
    return out
