"""On-disk layout of an ablation's results, and the tables rebuilt from it.

Layout::

    results/<name>/
        spec.json              resolved spec (written by the executor, read by the summary notebook)
        table.csv              tidy: one row per (run, encoder, fold); rebuilt, never appended
        runs.csv               one row per run: params, scalar metrics, status, error
        summary.ipynb/.html    executed + rendered summary notebook (if the spec names one)
        runs/<run_id>/
            notebook.ipynb     executed (or partially executed) job notebook
            record.json        written by the job notebook
            history.csv        written by the job notebook
            status.json        written by the runner: running|done|failed
            trial.json         Optuna studies only: the trial this run was (number, state, value)

The record files are the source of truth; the CSV tables are derived and can always be rebuilt
(`python -m eolab table results/<name>`), so a crash mid-batch never corrupts them. Several
processes may rebuild at once (two `ablate` on one folder): each file is replaced atomically, and
rebuilds are serialised by an flock on `.table.lock`, so a rebuild that scanned the run folders
earlier can never overwrite the tables of one that scanned later (which would drop rows).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from eolab.io import exclusive_lock, write_json_atomic, write_text_atomic
from eolab.run_folder import HISTORY_NAME, RECORD_NAME
from eolab.runner.claim import process_alive
from eolab.secrets import known_secrets, redact, redact_values

RUNS_DIRNAME = "runs"
NOTEBOOK_NAME = "notebook.ipynb"
STATUS_NAME = "status.json"
SPEC_NAME = "spec.json"
TABLE_NAME = "table.csv"
RUNS_TABLE_NAME = "runs.csv"
TABLE_LOCK_NAME = ".table.lock"
TRIAL_NAME = "trial.json"
PRUNED_MARKER_NAME = "pruned.json"
"""Written into the run folder by a notebook whose trial the study's pruner stopped."""

RUNNING, DONE, FAILED = "running", "done", "failed"
PRUNED = "pruned"
"""Status shown in the tables for a failed run whose trial was pruned (status.json says failed)."""
INVALID_RECORD = "invalid_record"
"""Formerly the runs.csv status of a run whose record.json cannot be used; such a run is now
shown as failed, with the reason naming the file, and `ablate` runs it again."""

REQUIRED_RECORD_KEYS = ("run_id", "params", "metrics", "seed", "git_commit", "wall_time_s")


class Tables(NamedTuple):
    """The two derived tables: per-fold rows (`table`) and per-run rows (`runs`)."""

    table: pd.DataFrame
    runs: pd.DataFrame


def utc_now() -> str:
    """ISO-8601 UTC timestamp, comparable across the machines a batch may run on."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunStore:
    """The results folder of one ablation: where each run lives and what state it is in."""

    def __init__(self, results_dir: str | Path) -> None:
        self.results_dir = Path(results_dir).resolve()
        self.runs_dir = self.results_dir / RUNS_DIRNAME

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The run's status.json, or None if it never started (or the file is unreadable)."""
        return read_json(self.run_dir(run_id) / STATUS_NAME)

    def is_done(self, run_id: str) -> bool:
        """Done means both the runner's verdict and a usable record are there (resume rule): a run
        whose record.json is missing, does not parse or breaks the record contract is run again."""
        status = self.status(run_id) or {}
        return status.get("state") == DONE and self.record_problem(run_id) is None

    def record_params(self, run_id: str) -> dict[str, Any]:
        """The parameters the run's record says it ran with ({} without a usable record)."""
        record = load_record(self.run_dir(run_id) / RECORD_NAME)[0] or {}
        params = record.get("params")
        return params if isinstance(params, dict) else {}

    def record_problem(self, run_id: str) -> str | None:
        """Why the run's record.json cannot be used (naming the file), or None when it can."""
        return load_record(self.run_dir(run_id) / RECORD_NAME)[1]

    def mark_running(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start a run: clear outputs of an earlier attempt so they cannot be mistaken for this one's.
        Training checkpoints stay: a resumed run continues from them, and they carry its history up
        to their step, so the history.csv of the killed attempt is not needed."""
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (RECORD_NAME, HISTORY_NAME, TRIAL_NAME, PRUNED_MARKER_NAME):
            (run_dir / stale).unlink(missing_ok=True)
        status = {
            "run_id": run_id,
            "state": RUNNING,
            "params": params,
            "error": None,
            "started_at": utc_now(),
            "ended_at": None,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }
        write_json_atomic(run_dir / STATUS_NAME, status)
        return status

    def mark_finished(self, status: dict[str, Any], error: str | None, traceback: str | None = None) -> dict[str, Any]:
        """Record the outcome of a run started with mark_running."""
        secrets = known_secrets()  # a driver's message may quote the storage URL
        error = None if error is None else redact(error, secrets)
        final = dict(status, state=FAILED if error else DONE, error=error, ended_at=utc_now())
        if traceback:
            final["traceback"] = redact(traceback, secrets)
        write_json_atomic(self.run_dir(status["run_id"]) / STATUS_NAME, final)
        return final

    def write_spec(self, spec_json: dict[str, Any]) -> None:
        write_json_atomic(self.results_dir / SPEC_NAME, redact_values(spec_json))  # a committed file: no secrets


def rebuild_table(results_dir: str | Path, interrupted: dict[str, str] | None = None) -> Tables:
    """Rebuild table.csv and runs.csv from every run folder, atomically; return both tables.

    Rows are sorted by run id, so rebuilding twice gives byte-identical files. ``interrupted``:
    runs this process was executing when a fault stopped the batch, with the reason; they are
    shown as failed even if their status.json could not be written (a full or read-only disk).
    """
    store = RunStore(results_dir)
    with exclusive_lock(store.results_dir / TABLE_LOCK_NAME):
        return _rebuild_locked(store, interrupted or {})


def _rebuild_locked(store: RunStore, interrupted: dict[str, str]) -> Tables:
    """rebuild_table's body; the caller holds the table lock."""
    run_dirs = sorted(p for p in store.runs_dir.glob("*") if p.is_dir()) if store.runs_dir.is_dir() else []
    fold_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        run_row, record = _run_row(run_dir)
        if run_dir.name in interrupted and run_row["status"] == RUNNING:
            run_row.update(status=FAILED, error=interrupted[run_dir.name])
        run_rows.append(run_row)
        if record is not None and run_row["status"] not in (FAILED, PRUNED, RUNNING, INVALID_RECORD):
            fold_rows.extend(_fold_rows(run_dir, run_row["status"], record))

    table = _ordered(pd.DataFrame(fold_rows), first=["run_id", "status"])
    runs = _ordered(pd.DataFrame(run_rows), first=["run_id", "status", "error"])
    write_text_atomic(store.results_dir / TABLE_NAME, table.to_csv(index=False))
    write_text_atomic(store.results_dir / RUNS_TABLE_NAME, runs.to_csv(index=False))
    return Tables(table=table, runs=runs)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def load_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a usable record.json, else (None, why not) naming the file: missing,
    unreadable, not parsing (a truncated write, a full disk), or breaking the record contract."""
    where = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"  # runs/<run_id>/record.json
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{where} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{where} cannot be read ({type(exc).__name__}: {exc})"
    try:
        record = json.loads(text)
    except ValueError as exc:
        return None, f"{where} does not parse ({exc}; {len(text)} bytes)"
    problem = _record_problem(record if isinstance(record, dict) else None)
    return (None, f"{where}: {problem}") if problem else (record, None)


def _record_problem(record: dict[str, Any] | None) -> str | None:
    """Why a record.json cannot be tabulated, or None if it follows the contract."""
    if record is None:
        return "not a JSON object"
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
    if missing:
        return f"lacks key(s) {', '.join(missing)}"
    if not isinstance(record["params"], dict) or not isinstance(record["metrics"], dict):
        return "`params` and `metrics` must be objects"
    return None


def _run_row(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One runs.csv row; params come from the record, or from status.json for failed runs."""
    status = read_json(run_dir / STATUS_NAME) or {}
    state = status.get("state") or "unknown"
    error = status.get("error")
    if state == RUNNING and status.get("hostname") == socket.gethostname() and isinstance(status.get("pid"), int) \
            and not process_alive(status["pid"]):
        # its process died without a verdict (SIGKILL, a power cut): failed, and `ablate` redoes it
        state, error = FAILED, f"interrupted: pid {status['pid']} on {status['hostname']} ended without recording a verdict"
    record = None
    if state == DONE or ((run_dir / RECORD_NAME).is_file() and state not in (FAILED, RUNNING)):
        record, problem = load_record(run_dir / RECORD_NAME)
        if problem:  # a failed run (re-run by `ablate`), named: never a run silently left out of table.csv
            state, error = FAILED, problem
    params = dict(record["params"]) if record else dict(status.get("params") or {})
    params.pop("output_dir", None)
    trial = _trial_columns(run_dir)
    if state == FAILED and trial.get("trial_state") == "PRUNED":
        state = PRUNED
    row: dict[str, Any] = {"run_id": run_dir.name, "status": state, "error": error, **trial, **params}
    if record:
        for name, value in record["metrics"].items():
            if _is_scalar(value):
                row[name if name not in row else f"metric.{name}"] = value
        row.update(
            seed=record.get("seed"),
            wall_time_s=record.get("wall_time_s"),
            git_commit=record.get("git_commit"),
        )
    return row, record


def _trial_columns(run_dir: Path) -> dict[str, Any]:
    """study, trial_number, trial_state, trial_value of a run that was an Optuna trial; {} otherwise."""
    trial = read_json(run_dir / TRIAL_NAME)
    if trial is None:
        return {}
    return {
        "study": trial.get("study"),
        "trial_number": trial.get("number"),
        "trial_state": trial.get("state"),
        "trial_value": trial.get("value"),
    }


def _fold_rows(run_dir: Path, state: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """table.csv rows of one run: one per (encoder, fold), or a single row if there are no folds."""
    run_id = run_dir.name
    params = {k: v for k, v in record["params"].items() if k != "output_dir"}
    common = {
        "run_id": run_id,
        "status": state,
        **_trial_columns(run_dir),
        **params,
        "seed": record.get("seed"),
        "wall_time_s": record.get("wall_time_s"),
        "git_commit": record.get("git_commit"),
    }
    folds = record.get("folds")
    if not isinstance(folds, list) or not folds:
        return [common]
    return [{**common, **fold} for fold in folds if isinstance(fold, dict)]


def _is_scalar(value: Any) -> bool:
    """Only scalars become table columns; arrays or nested objects in `metrics` are left out."""
    return value is None or isinstance(value, (int, float, str, bool))


def _ordered(frame: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    """Put identifying columns first and keep the rest in first-seen order (stable output)."""
    if frame.empty:
        return pd.DataFrame(columns=first)
    lead = [c for c in first if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]
