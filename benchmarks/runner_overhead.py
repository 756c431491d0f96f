"""Benchmark of the ablation runner itself: fault tolerance, per-run overhead, pool speed-up, executors.

    python -m benchmarks.runner_overhead [SECTION ...] [--workers 2] [--quick] [--toy]
                                     [--out results/runner_benchmark] [--results-root DIR] [--keep]

Sections (default: all four, in this order; each runs on its own):

faults      A grid batch (12 runs; --quick: 4) through the local pool (`--workers`, default 2) in which
            one run's notebook raises and the worker executing another run is SIGKILLed mid-run.
            Checks: every other run done, the two failures recorded with their error and their partial
            notebook, every claim released, the orphaned kernel gone, table.csv one row per (run,
            encoder, fold) of every done record and runs.csv one row per run (counted against the
            records and status files). Then the same spec is re-run without --force, fault removed:
            exactly the two failed runs execute and the tables hold every run. Last, two `python -m
            eolab ablate` processes work on one fresh results folder (6 runs; --quick: 4): every run is
            executed exactly once (an observer polls every status.json) and the tables are complete.
overhead    A few runs (3; --quick: 1) executed sequentially in this process; each run's wall time as
            the runner sees it is split into runner bookkeeping (claim, status.json), papermill outside
            the kernel (notebook read, parameter injection, writes), kernel start, in-kernel cells
            (imports, training = record.json's train_time_s, the rest), gaps between cells (papermill
            saves the notebook after each cell) and kernel shutdown, from papermill's per-cell
            timestamps in the executed notebook; plus micro-benchmarks of the same calls (notebook
            preparation, notebook write, status writes, claim, table rebuild, spec load, kernel check,
            pool-worker start).
speedup     The same batch (4 runs; --quick: 2) with --workers 1 and --workers N: wall times and
            speed-up, the torch threads a kernel gets, and (--threads both|split) N workers with
            OMP_NUM_THREADS = cores / N each.
executors   A 2x2 grid through the local executor and through SLURM (`--executor slurm`), comparing
            the records (parameters exactly, metrics other than timings within 1e-4), and a two-trial
            Optuna study both ways; prints "SLURM not available" where `sinfo` does not work.

By default the runs execute the real pre-training notebook (notebooks/pretrain.ipynb) with tiny
parameters (REAL_BASE); `--toy` uses a small stand-in notebook with the same record contract (for CI
and smoke tests). The failing run's fault is real and removable: its run folder's `encoder.pt` path is
taken by a directory, so the notebook's atomic save of the encoder raises (IsADirectoryError), as it
would on a full or misconfigured disk; the resume deletes that directory.

Runs go to a temporary results root (`--results-root`, default a new folder under the system's temp
dir, deleted at the end unless a check failed or --keep), never to results/ of real ablations. Each
section prints its report and writes <out>/<section>.json and <out>/<section>.md; <out>/report.md and
<out>/report.json gather every section report present in <out>. Every figure is measured in the run
that prints it. Exit code: 0 all checks passed, 1 a check failed (or a section crashed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from eolab.io import environment
from eolab.provenance import git_commit
from eolab.runner.claim import CLAIM_NAME, process_alive, try_claim
from eolab.runner.execute import (
    LocalExecutor,
    Progress,
    RunOutcome,
    RunTask,
    check_kernel,
    run_ablation,
)
from eolab.runner.pool import PoolExecutor
from eolab.runner.spec import REPO_ROOT, load_spec
from eolab.runner.store import (
    DONE,
    FAILED,
    NOTEBOOK_NAME,
    RECORD_NAME,
    RUNNING,
    RUNS_DIRNAME,
    RUNS_TABLE_NAME,
    STATUS_NAME,
    TABLE_NAME,
    RunStore,
    read_json,
    rebuild_table,
    utc_now,
)

SECTIONS = ("faults", "overhead", "speedup", "executors")
DEFAULT_OUT = REPO_ROOT / "results" / "runner_benchmark"
REAL_NOTEBOOK = REPO_ROOT / "notebooks" / "pretrain.ipynb"

REAL_BASE: dict[str, Any] = {
    "model_size": "vit_nano",
    "n_pretrain": 128,
    "epochs": 1,
    "batch_size": 32,
    "decoder_depth": 1,
    "decoder_dim": 32,
    "probe_folds": 2,
    "probe_repeats": 1,
    "knn_every": 0,
    "checkpoint_every": 0,
}
"""Tiny but real pre-training runs: 4 steps of a nano ViT, a 2-fold probe."""
REAL_BASE_QUICK = {**REAL_BASE, "n_pretrain": 64}
TOY_BASE: dict[str, Any] = {"work_s": 2.0}
TOY_BASE_QUICK: dict[str, Any] = {"work_s": 1.0}

MASK_RATIOS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85)
"""Grid values; every spec here is mask_ratio x seed, valid for the real and the toy notebook."""

KILL_AFTER_CODE_CELLS = 3
"""The victim's worker is killed once this many code cells ran (parameters, injected parameters,
the first body cell): the kernel is up and the notebook is executing its body."""

ENCODER_FILE = "encoder.pt"
"""Where both notebooks save the encoder (atomically); a directory there makes that save raise."""
EXECUTIONS_LOG = "executions.log"
"""The toy notebook appends its run id here (results/<name>/) on every execution."""
METRIC_TOLERANCE = 1e-4
TIMING_METRIC = re.compile(r"time|per_s|hours")  # wall and CPU time, speeds, cost
PROGRESS_LINE = re.compile(r"^\s*\[\d+/\d+\]\s+(\w+)\s+(\S+)")

# --- the toy notebook: same record contract as notebooks/pretrain.ipynb, seconds instead of minutes --

TOY_PARAMETERS = """\
mask_ratio: float = 0.75  # stands in for a proxy-task knob
seed: int = 0  # random seed
work_s: float = 1.0  # seconds of stand-in training (a sleep)
probe_folds: int = 2  # folds per encoder in the record
output_dir: str = "."  # run folder: record.json, history.csv, encoder.pt
"""
TOY_CELLS = (
    """\
import json, random, time
from pathlib import Path
started = time.perf_counter()
out = Path(output_dir)
if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"parameter 'mask_ratio' must be in [0, 1), got {mask_ratio}")
""",
    """\
# Every execution appends its run id to the ablation's log (one short O_APPEND write per line).
with open(out.parent.parent / "executions.log", "a") as log:
    log.write(out.name + "\\n")
t0 = time.perf_counter()
time.sleep(work_s)  # stands in for training
train_time_s = time.perf_counter() - t0
rng = random.Random(f"{mask_ratio}-{seed}")
(out / "history.csv").write_text("step,loss\\n" + "".join(f"{s},{1 / (s + 1)}\\n" for s in range(4)))
""",
    """\
# Saved like eolab.checkpoint.save_encoder: a temporary file, then an atomic replace.
tmp = out / "encoder.pt.tmp"
tmp.write_bytes(b"toy encoder")
tmp.replace(out / "encoder.pt")
""",
    """\
encoders = ("pretrained", "random_init")
folds = [{"encoder": e, "fold": f, "accuracy": round(rng.uniform(0.4, 0.9), 6)} for e in encoders for f in range(probe_folds)]
metrics = {f"{e}_acc_mean": sum(r["accuracy"] for r in folds if r["encoder"] == e) / probe_folds for e in encoders}
metrics["train_time_s"] = train_time_s
record = {"run_id": out.name, "seed": seed, "git_commit": "toy", "wall_time_s": time.perf_counter() - started,
          "params": {"mask_ratio": mask_ratio, "seed": seed, "work_s": work_s, "probe_folds": probe_folds},
          "metrics": metrics, "folds": folds}
(out / "record.json.tmp").write_text(json.dumps(record))
(out / "record.json.tmp").replace(out / "record.json")
metrics
""",
)


def write_toy_notebook(path: Path) -> Path:
    """The stand-in job notebook: a `parameters` cell and four body cells (imports, training, encoder
    save, record), so that it fails, and is killed, the way the real one would."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [new_code_cell(TOY_PARAMETERS, metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in TOY_CELLS]
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# --- report ------------------------------------------------------------------------------------------


@dataclass
class Section:
    """One section's report: what was run, the figures measured, the checks, Markdown tables."""

    name: str
    title: str
    config: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=utc_now)
    seconds: float = 0.0
    error: str | None = None

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": str(detail)})
        return bool(ok)

    @property
    def ok(self) -> bool:
        return self.error is None and all(c["ok"] for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.name,
            "title": self.title,
            "ok": self.ok,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "machine": self.machine,
            "config": self.config,
            "figures": self.figures,
            "checks": self.checks,
            "notes": self.notes,
            "error": self.error,
        }

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"## {self.name}: {self.title}",
            "",
            f"{self.started_at}, {self.seconds:.0f} s; commit {m.get('git_commit')}; host {m.get('hostname')}, "
            f"{m.get('cpus_available')} of {m.get('cpus')} cores, load average at start "
            f"{' / '.join(f'{x:.2f}' for x in m.get('loadavg', ()))}; "
            f"notebook {self.config.get('notebook')}, base {self.config.get('base')}.",
            "",
        ]
        for table in self.tables:
            lines += [table, ""]
        if self.checks:
            lines += [md_table(["check", "result", "detail"],
                               [[c["check"], "PASS" if c["ok"] else "FAIL", c["detail"]] for c in self.checks]), ""]
        lines += [f"- {note}" for note in self.notes]
        if self.error:
            lines += ["", "Section crashed:", "", "```", self.error.rstrip(), "```"]
        return "\n".join(lines).rstrip() + "\n"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are str()-ed, pipes escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def machine() -> dict[str, Any]:
    """Where and on what this section ran."""
    commit = git_commit(short=True)
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
        "python": platform.python_version(),
        "git_commit": commit,
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }


# --- the benchmark's context -----------------------------------------------------------------------------


@dataclass
class Bench:
    """Options shared by the sections, and the specs they write."""

    root: Path
    toy: bool = False
    quick: bool = False
    workers: int = 2
    threads: str = "both"
    timeout_s: float = 3600.0
    log: Callable[[str], None] = print
    notebook: Path = field(init=False)
    base: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.toy:
            self.notebook = write_toy_notebook(self.root / "toy_notebook" / "job.ipynb")
            self.base = dict(TOY_BASE_QUICK if self.quick else TOY_BASE)
        else:
            self.notebook = REAL_NOTEBOOK
            self.base = dict(REAL_BASE_QUICK if self.quick else REAL_BASE)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"notebook": str(self.notebook.relative_to(REPO_ROOT) if self.notebook.is_relative_to(REPO_ROOT)
                                else self.notebook.name),
                "toy": self.toy, "quick": self.quick, "base": self.base, "results_root": str(self.root), **extra}

    def spec(self, name: str, grid: dict[str, list[Any]] | None = None, seeds: list[int] | None = None,
             **extra: Any) -> Path:
        """Write a spec over this benchmark's notebook and base parameters; return its path."""
        spec: dict[str, Any] = {"name": name, "notebook": str(self.notebook), "base": dict(self.base)}
        if grid:
            spec["grid"] = grid
        if seeds is not None:
            spec["seeds"] = seeds
        spec.update(extra)
        path = self.root / "specs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    def progress(self, line: str) -> None:
        self.log(f"    {line}")


# --- helpers: processes, notebooks, tables -------------------------------------------------------------


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` (Linux /proc), or None if it is gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            children.append(int(entry.name))
    return children


def wait_gone(pids: Sequence[int], timeout_s: float) -> tuple[bool, float]:
    """Wait until none of `pids` is alive; (all gone, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not any(process_alive(p) for p in pids):
            return True, time.monotonic() - started
        time.sleep(0.2)
    return not any(process_alive(p) for p in pids), time.monotonic() - started


def code_cell_states(nb: dict[str, Any] | None) -> list[str | None]:
    """papermill's status (pending/running/completed/failed) of each code cell of an executed notebook."""
    if not nb:
        return []
    return [(c.get("metadata", {}).get("papermill") or {}).get("status")
            for c in nb.get("cells", []) if c.get("cell_type") == "code"]


def notebook_error(nb: dict[str, Any] | None) -> str | None:
    """'Ename: evalue' of the first error output of an executed notebook, or None."""
    for c in (nb or {}).get("cells", []):
        for output in c.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue')}"
    return None


def statuses(results_dir: Path) -> dict[str, dict[str, Any]]:
    """status.json of every run folder."""
    runs_dir = results_dir / RUNS_DIRNAME
    if not runs_dir.is_dir():
        return {}
    return {d.name: read_json(d / STATUS_NAME) or {} for d in sorted(runs_dir.iterdir()) if d.is_dir()}


def read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["run_id", "status"])


def check_tables(section: Section, results_dir: Path, label: str, n_runs: int) -> dict[str, Any]:
    """Count table.csv and runs.csv rows against the run folders: one table row per (encoder, fold)
    of every done run's record (one row if it has no folds), one runs row per run with its status."""
    state = {run_id: s.get("state") for run_id, s in statuses(results_dir).items()}
    expected: Counter[str] = Counter()
    for run_id, run_state in state.items():
        record = read_json(results_dir / RUNS_DIRNAME / run_id / RECORD_NAME) if run_state == DONE else None
        if record is not None:
            folds = record.get("folds")
            expected[run_id] = len([f for f in folds if isinstance(f, dict)]) if isinstance(folds, list) and folds else 1
    table = read_table(results_dir / TABLE_NAME)
    runs = read_table(results_dir / RUNS_TABLE_NAME)
    got = Counter(table["run_id"]) if len(table) else Counter()
    counts = Counter(state.values())
    figures = {
        "runs": len(state),
        "done": counts.get(DONE, 0),
        "failed": counts.get(FAILED, 0),
        "table_rows": len(table),
        "expected_table_rows": sum(expected.values()),
        "runs_rows": len(runs),
    }
    section.check(f"{label}: table.csv rows = (encoder, fold) rows of the done records",
                  got == expected and not table.duplicated().any(),
                  f"{len(table)} rows for {len(got)} runs; the {len(expected)} done records have "
                  f"{sum(expected.values())}; duplicated rows: {int(table.duplicated().sum())}")
    run_status = dict(zip(runs["run_id"], runs["status"], strict=True)) if len(runs) else {}
    section.check(f"{label}: runs.csv has one row per run with its status.json state",
                  len(runs) == len(state) == n_runs and run_status == state,
                  f"{len(runs)} rows, {len(state)} run folders, {n_runs} runs in the spec; "
                  + ", ".join(f"{k} {v}" for k, v in sorted(Counter(run_status.values()).items())))
    return figures


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median wall seconds of `reps` calls."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- faults ---------------------------------------------------------------------------------------------


class Killer(threading.Thread):
    """SIGKILLs the pool worker executing `run_id` once its status.json says running (with the worker's
    pid, a child of this process) and its notebook has run `after_cells` code cells."""

    def __init__(self, store: RunStore, run_id: str, after_cells: int, timeout_s: float) -> None:
        super().__init__(name=f"killer-{run_id}", daemon=True)
        self.store, self.run_id, self.after_cells, self.timeout_s = store, run_id, after_cells, timeout_s
        self.result: dict[str, Any] | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        notebook = self.store.run_dir(self.run_id) / NOTEBOOK_NAME
        seen_running: float | None = None
        while not self.halt.is_set() and time.monotonic() < deadline:
            status = self.store.status(self.run_id) or {}
            pid = status.get("pid")
            if status.get("state") == RUNNING and isinstance(pid, int) and pid != os.getpid():
                seen_running = seen_running or time.monotonic()
                states = code_cell_states(read_json(notebook))  # None while papermill rewrites it
                if states.count("completed") >= self.after_cells and parent_pid(pid) == os.getpid():
                    kernels = children_of(pid)
                    os.kill(pid, signal.SIGKILL)
                    self.result = {"pid": pid, "kernel_pids": kernels, "code_cells_done": states.count("completed"),
                                   "code_cells": len(states),
                                   "seconds_after_running": round(time.monotonic() - seen_running, 2)}
                    return
            time.sleep(0.05)


def section_faults(b: Bench) -> Section:
    s = Section("faults", "a raising notebook and a SIGKILLed worker in one pool batch; resume; two processes on one store")
    n_points = 2 if b.quick else 6
    spec_path = b.spec("bench_faults", grid={"mask_ratio": list(MASK_RATIOS[:n_points])}, seeds=[0, 1])
    spec = load_spec(spec_path)
    runs = spec.runs()
    n = len(runs)
    store = RunStore(b.root / spec.name)
    fault, victim = runs[max(1, n // 4)], runs[n // 2]
    s.config = b.config(workers=b.workers, runs=n, fault_run=fault.run_id, killed_run=victim.run_id,
                        fault=f"runs/{fault.run_id}/{ENCODER_FILE} is a directory: the notebook's atomic encoder save raises",
                        kill=f"SIGKILL to the worker of {victim.run_id} after {KILL_AFTER_CODE_CELLS} code cells ran")

    blocker = store.run_dir(fault.run_id) / ENCODER_FILE
    blocker.mkdir(parents=True)
    (blocker / "occupied").write_text("fault injected by benchmarks.runner_overhead\n")
    killer = Killer(store, victim.run_id, KILL_AFTER_CODE_CELLS, timeout_s=b.timeout_s)
    killer.start()
    b.log(f"  batch: {n} runs, {b.workers} workers; {fault.run_id} will raise, {victim.run_id}'s worker will be killed")
    t0 = time.monotonic()
    summary = run_ablation(spec_path, results_root=b.root, log=b.progress,
                           executor=PoolExecutor(workers=b.workers, on_finished=Progress(total=n, log=b.progress)))
    batch_s = time.monotonic() - t0
    killer.halt.set()
    killer.join(timeout=5)

    state = statuses(store.results_dir)
    failed = {r for r, st in state.items() if st.get("state") == FAILED}
    s.check("batch: every run executed", len(summary.executed) == n, f"{len(summary.executed)} of {n}")
    s.check("batch: the two faulty runs failed, every other run is done",
            failed == {fault.run_id, victim.run_id} and all(store.is_done(r.run_id) for r in runs
                                                           if r.run_id not in failed),
            f"failed: {sorted(failed)}")
    kill = killer.result
    s.check("kill: the victim's worker was SIGKILLed mid-run", kill is not None,
            f"worker pid {kill['pid']} after {kill['code_cells_done']}/{kill['code_cells']} code cells, "
            f"{kill['seconds_after_running']} s after its status said running" if kill else "never killed")
    fault_status, victim_status = state.get(fault.run_id, {}), state.get(victim.run_id, {})
    fault_nb = read_json(store.run_dir(fault.run_id) / NOTEBOOK_NAME)
    victim_nb = read_json(store.run_dir(victim.run_id) / NOTEBOOK_NAME)
    s.check("raising run: error and traceback in status.json, failing cell in its kept notebook",
            bool(fault_status.get("error")) and bool(fault_status.get("traceback")) and notebook_error(fault_nb)
            is not None and "failed" in code_cell_states(fault_nb),
            f"status.json error: {fault_status.get('error')}; the notebook shows the same error: "
            f"{notebook_error(fault_nb) == fault_status.get('error')}; code cells "
            f"{dict(Counter(code_cell_states(fault_nb)))}")
    victim_states = code_cell_states(victim_nb)
    s.check("killed run: error in status.json, partial notebook kept",
            victim_status.get("error") == "worker killed by signal 9 (SIGKILL)"
            and 0 < victim_states.count("completed") < len(victim_states),
            f"status.json error: {victim_status.get('error')}; notebook: {victim_states.count('completed')} of "
            f"{len(victim_states)} code cells completed, {victim_states.count('running')} running when killed")
    claims = sorted(p.relative_to(store.results_dir).as_posix() for p in store.runs_dir.glob(f"*/{CLAIM_NAME}*"))
    s.check("batch: every claim released", not claims, claims or "no claim files left")
    if kill and kill["kernel_pids"]:
        gone, waited = wait_gone(kill["kernel_pids"], timeout_s=30)
        s.check("killed run: its orphaned kernel exited by itself", gone,
                f"kernel pid(s) {kill['kernel_pids']} {'gone' if gone else 'still alive'} {waited:.1f} s after the batch")
    batch_tables = check_tables(s, store.results_dir, "batch", n)

    shutil.rmtree(blocker)  # the fault removed; the killed run simply runs again
    b.log("  resume: same spec, no --force, fault removed")
    t0 = time.monotonic()
    resumed = run_ablation(spec_path, results_root=b.root, log=b.progress,
                           executor=PoolExecutor(workers=b.workers, on_finished=Progress(total=2, log=b.progress)))
    resume_s = time.monotonic() - t0
    executed = sorted(o.run_id for o in resumed.executed)
    s.check("resume: exactly the two failed runs executed, and succeeded",
            executed == sorted([fault.run_id, victim.run_id]) and resumed.ok and len(resumed.skipped) == n - 2,
            f"executed {executed}, {len(resumed.skipped)} skipped as done, failed {sorted(resumed.failed)}")
    resume_tables = check_tables(s, store.results_dir, "resume", n)
    s.check("resume: every run done", resume_tables["done"] == n, f"{resume_tables['done']} of {n} done")
    executions = None
    if b.toy:  # the toy notebook logs each execution itself
        executions = Counter((store.results_dir / EXECUTIONS_LOG).read_text().split())
        expected = Counter({r.run_id: 2 if r.run_id in (fault.run_id, victim.run_id) else 1 for r in runs})
        s.check("executions logged by the notebook: once per run, twice for the two that failed",
                executions == expected, dict(Counter(executions.values())))

    concurrent = concurrent_ablates(b, s)
    s.figures = {
        "runs": n,
        "workers": b.workers,
        "batch": {**batch_tables, "seconds": round(batch_s, 2), "errors": {r: state[r].get("error") for r in sorted(failed)}},
        "kill": kill,
        "resume": {**resume_tables, "executed": len(resumed.executed), "skipped": len(resumed.skipped),
                   "seconds": round(resume_s, 2)},
        "concurrent": concurrent,
    }
    rows = [
        ["batch (1 raising, 1 SIGKILLed)", n, batch_tables["done"], batch_tables["failed"], batch_tables["table_rows"],
         batch_tables["expected_table_rows"], batch_tables["runs_rows"], fmt(batch_s, 1)],
        ["resume (fault removed)", n, resume_tables["done"], resume_tables["failed"], resume_tables["table_rows"],
         resume_tables["expected_table_rows"], resume_tables["runs_rows"], fmt(resume_s, 1)],
        ["two `ablate` processes, one store", concurrent["runs"], concurrent["tables"]["done"],
         concurrent["tables"]["failed"], concurrent["tables"]["table_rows"], concurrent["tables"]["expected_table_rows"],
         concurrent["tables"]["runs_rows"], fmt(concurrent["seconds"], 1)],
    ]
    s.tables.append(md_table(["batch", "runs", "done", "failed", "table.csv rows", "expected rows", "runs.csv rows",
                              "wall s"], rows))
    s.notes.append(f"raising run {fault.run_id}: {fault_status.get('error')}")
    s.notes.append(f"killed run {victim.run_id}: {victim_status.get('error')}")
    s.notes.append("concurrent: executions per run (status.json observer): "
                   f"{dict(Counter(concurrent['executions_observed'].values()))}; per process executed/skipped: "
                   + "; ".join(f"{p['executed']}/{p['skipped']} (exit {p['returncode']})" for p in concurrent["processes"]))
    return s


class StatusObserver(threading.Thread):
    """Polls every run's status.json and records each distinct execution (host, pid, started_at)."""

    def __init__(self, results_dir: Path, run_ids: Sequence[str]) -> None:
        super().__init__(name="status-observer", daemon=True)
        self.results_dir, self.run_ids = results_dir, list(run_ids)
        self.executions: dict[str, set[tuple[Any, ...]]] = {r: set() for r in self.run_ids}
        self.halt = threading.Event()

    def poll(self) -> None:
        for run_id in self.run_ids:
            status = read_json(self.results_dir / RUNS_DIRNAME / run_id / STATUS_NAME)
            if status and status.get("started_at"):
                self.executions[run_id].add((status.get("hostname"), status.get("pid"), status.get("started_at")))

    def run(self) -> None:
        while not self.halt.is_set():
            self.poll()
            time.sleep(0.1)
        self.poll()


def concurrent_ablates(b: Bench, s: Section) -> dict[str, Any]:
    """Two `python -m eolab ablate` processes on one fresh results folder: each run once, tables whole."""
    n_points = 2 if b.quick else 3
    spec_path = b.spec("bench_concurrent", grid={"mask_ratio": list(MASK_RATIOS[:n_points])}, seeds=[0, 1])
    runs = load_spec(spec_path).runs()
    results_dir = b.root / "bench_concurrent"
    observer = StatusObserver(results_dir, [r.run_id for r in runs])
    observer.start()
    b.log(f"  concurrent: two `python -m eolab ablate` processes, {len(runs)} runs, one results folder")
    command = [sys.executable, "-m", "eolab", "ablate", str(spec_path), "--results-root", str(b.root), "--workers", "1"]
    logs = [b.root / f"concurrent-{i}.log" for i in range(2)]
    t0 = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for log_path in logs:
            with open(log_path, "wb") as handle:
                procs.append(subprocess.Popen(command, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT))
        for proc in procs:
            proc.wait(timeout=max(1.0, b.timeout_s - (time.monotonic() - t0)))
    finally:
        for proc in procs:  # only on a timeout or an interrupt: stop our own children
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
        observer.halt.set()
        observer.join(timeout=5)
    seconds = time.monotonic() - t0

    processes, by_run = [], Counter()
    for proc, log_path in zip(procs, logs, strict=True):
        verdicts = [(m.group(1), m.group(2)) for line in log_path.read_text(errors="replace").splitlines()
                    if (m := PROGRESS_LINE.match(line))]
        executed = [run_id for verdict, run_id in verdicts if verdict in (DONE, FAILED)]
        by_run.update(executed)
        processes.append({"pid": proc.pid, "returncode": proc.returncode, "executed": len(executed),
                          "skipped": sum(v == "skipped" for v, _ in verdicts), "log": str(log_path)})
    observed = {run_id: len(keys) for run_id, keys in observer.executions.items()}
    s.check("concurrent: both processes exit 0", all(p["returncode"] == 0 for p in processes),
            [p["returncode"] for p in processes])
    s.check("concurrent: every run executed exactly once (status.json observer)",
            all(v == 1 for v in observed.values()), dict(Counter(observed.values())))
    s.check("concurrent: the processes' own reports add up to one execution per run",
            by_run == Counter({r.run_id: 1 for r in runs}),
            f"{sum(by_run.values())} executions reported for {len(by_run)} of {len(runs)} runs")
    if b.toy:
        logged = Counter((results_dir / EXECUTIONS_LOG).read_text().split())
        s.check("concurrent: every run executed exactly once (the notebook's own log)",
                logged == Counter({r.run_id: 1 for r in runs}), dict(Counter(logged.values())))
    tables = check_tables(s, results_dir, "concurrent", len(runs))
    s.check("concurrent: every run done", tables["done"] == len(runs), f"{tables['done']} of {len(runs)}")
    return {"runs": len(runs), "seconds": round(seconds, 2), "processes": processes,
            "executions_observed": observed, "tables": tables}


# --- overhead -----------------------------------------------------------------------------------------------


@dataclass
class TimedLocalExecutor(LocalExecutor):
    """The sequential in-process executor (`--workers 1`), noting when the batch and each run ended."""

    submitted: float = 0.0
    finished: list[float] = field(default_factory=list)

    def submit(self, tasks: Sequence[RunTask]) -> list[RunOutcome]:
        self.submitted = time.monotonic()
        inner = self.on_finished

        def note(outcome: RunOutcome) -> None:
            self.finished.append(time.monotonic())
            if inner:
                inner(outcome)

        self.on_finished = note
        try:
            return super().submit(tasks)
        finally:
            self.on_finished = inner


def _ts(value: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else None


def notebook_timings(nb: dict[str, Any]) -> dict[str, Any]:
    """Kernel start, cells, gaps and shutdown from papermill's timestamps in an executed notebook."""
    meta = nb.get("metadata", {}).get("papermill", {})
    cells = [(c.get("cell_type"), c.get("metadata", {}).get("tags", []), c.get("metadata", {}).get("papermill", {}))
             for c in nb.get("cells", [])]
    timed = [(kind, tags, pm) for kind, tags, pm in cells if pm.get("start_time") and pm.get("end_time")]
    if not timed or not meta.get("start_time") or not meta.get("end_time"):
        raise ValueError("the executed notebook has no papermill timings")
    start, end = _ts(meta.get("start_time")), _ts(meta.get("end_time"))
    first, last = _ts(timed[0][2]["start_time"]), _ts(timed[-1][2]["end_time"])
    durations = [pm.get("duration") or 0.0 for _, _, pm in timed]
    body = [pm for kind, tags, pm in timed
            if kind == "code" and "parameters" not in tags and "injected-parameters" not in tags]
    cells_s = sum(durations)
    return {
        "papermill_s": meta.get("duration"),
        "kernel_start_s": first - start,
        "cells_s": cells_s,
        "parameter_cells_s": sum(pm.get("duration") or 0.0 for kind, tags, pm in timed
                                 if "parameters" in tags or "injected-parameters" in tags),
        "first_body_cell_s": body[0].get("duration") if body else None,
        "between_cells_s": (last - first) - cells_s,
        "kernel_stop_s": end - last,
        "cells": len(cells),
    }


def _time_papermill_prepare(notebook: Path, parameters: dict[str, Any], scratch: Path) -> Callable[[], None]:
    """What papermill does before it starts the kernel: read, infer and inject parameters, metadata."""
    from papermill import execute as pm_execute
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    def prepare() -> None:
        nb = load_notebook_node(str(notebook))
        with contextlib.suppress(AttributeError):
            pm_execute._infer_parameters(nb, name="python3")
        nb = parameterize_notebook(nb, parameters, kernel_name="python3")
        nb = pm_execute.prepare_notebook_metadata(nb, str(notebook), str(scratch / "prepared.ipynb"))
        pm_execute.remove_error_markers(nb)

    return prepare


def section_overhead(b: Bench) -> Section:
    s = Section("overhead", "per-run overhead of the runner: the run's wall time as the runner sees it, minus its compute")
    n = 1 if b.quick else 3
    reps = 3 if b.quick else 7
    spec_path = b.spec("bench_overhead", grid={"mask_ratio": list(MASK_RATIOS[:n])}, seeds=[0])
    s.config = b.config(runs=n, executor="local, sequential in this process (--workers 1)", micro_reps=reps)
    b.log(f"  {n} run(s), one after another in this process")
    executor = TimedLocalExecutor(on_finished=Progress(total=n, log=b.progress))
    t0 = time.monotonic()
    summary = run_ablation(spec_path, results_root=b.root, executor=executor, log=b.progress)
    batch_s = time.monotonic() - t0
    store = RunStore(summary.results_dir)
    s.check("every run done", summary.ok and len(summary.executed) == n,
            f"{len(summary.executed)} executed, failed {sorted(summary.failed)}")

    # Micro-benchmarks of the calls the runner makes around each run (same code, same files).
    scratch = b.root / "overhead_scratch"
    scratch.mkdir(exist_ok=True)
    first_run = summary.executed[0].run_id if summary.executed else None
    executed_nb = store.run_dir(first_run) / NOTEBOOK_NAME if first_run else None
    params = dict(load_spec(spec_path).runs()[0].params, output_dir=str(scratch))
    micro: dict[str, float | None] = {}
    micro["papermill_prepare_s"] = median_time(_time_papermill_prepare(b.notebook, params, scratch), reps)
    if executed_nb and executed_nb.is_file():
        from papermill.iorw import load_notebook_node, write_ipynb

        executed = load_notebook_node(str(executed_nb))
        micro["notebook_write_s"] = median_time(lambda: write_ipynb(executed, str(scratch / "written.ipynb")), reps)
        micro["notebook_bytes"] = executed_nb.stat().st_size
    scratch_store = RunStore(scratch / "store")
    micro["status_writes_s"] = median_time(
        lambda: scratch_store.mark_finished(scratch_store.mark_running("r", params), error=None), reps)

    def claim_cycle() -> None:
        claim = try_claim(scratch_store.run_dir("r"))
        scratch_store.is_done("r")
        if claim:
            claim.release()

    micro["claim_s"] = median_time(claim_cycle, reps)
    micro["rebuild_table_s"] = median_time(lambda: rebuild_table(store.results_dir), reps)
    micro["load_spec_s"] = median_time(lambda: load_spec(spec_path), reps)
    micro["check_kernel_s"] = median_time(check_kernel, reps)
    worker_reps = 1 if b.quick else 3
    micro["pool_worker_start_s"] = median_time(
        lambda: subprocess.run([sys.executable, "-c", "import eolab.runner.worker"], cwd=REPO_ROOT, check=True),
        worker_reps)

    per_run, rows = [], []
    previous = executor.submitted
    for outcome, finished in zip(summary.executed, executor.finished, strict=False):
        run_wall = finished - previous
        previous = finished
        nb = read_json(store.run_dir(outcome.run_id) / NOTEBOOK_NAME) or {}
        record = read_json(store.run_dir(outcome.run_id) / RECORD_NAME) or {}
        t = notebook_timings(nb)
        train = (record.get("metrics") or {}).get("train_time_s")
        notebook_wall = record.get("wall_time_s")
        first_body = t["first_body_cell_s"] or 0.0
        entry = {
            "run_id": outcome.run_id,
            "runner_wall_s": run_wall,
            "runner_bookkeeping_s": run_wall - outcome.seconds,  # claim, status.json, progress line
            "papermill_outside_kernel_s": outcome.seconds - (t["papermill_s"] or 0.0),
            **t,
            "train_time_s": train,
            "record_wall_time_s": notebook_wall,
            "other_cells_s": t["cells_s"] - first_body - (train or 0.0),
            "overhead_vs_train_s": run_wall - train if train is not None else None,
            "overhead_vs_cells_s": run_wall - t["cells_s"],
        }
        per_run.append(entry)
        rows.append([outcome.run_id, fmt(run_wall), fmt(train), fmt(entry["overhead_vs_train_s"]),
                     fmt(entry["overhead_vs_cells_s"]), fmt(entry["runner_bookkeeping_s"], 3),
                     fmt(entry["papermill_outside_kernel_s"], 3), fmt(t["kernel_start_s"]), fmt(first_body),
                     fmt(entry["other_cells_s"]), fmt(t["between_cells_s"], 3), fmt(t["kernel_stop_s"], 3)])
    if per_run:
        def mean(key: str) -> float | None:
            values = [e[key] for e in per_run if e[key] is not None]
            return statistics.fmean(values) if values else None

        rows.append(["**mean**", *(fmt(mean(k), d) for k, d in (
            ("runner_wall_s", 2), ("train_time_s", 2), ("overhead_vs_train_s", 2), ("overhead_vs_cells_s", 2),
            ("runner_bookkeeping_s", 3), ("papermill_outside_kernel_s", 3), ("kernel_start_s", 2),
            ("first_body_cell_s", 2), ("other_cells_s", 2), ("between_cells_s", 3), ("kernel_stop_s", 3)))])
        share = mean("overhead_vs_train_s") / mean("runner_wall_s") if mean("runner_wall_s") else None
        s.figures["mean_overhead_share_of_wall"] = share
    s.tables.append(
        "Per run (seconds). Runner wall = from the previous run's end (or the batch start) to this run's end, "
        "as the runner sees it; it splits into bookkeeping + papermill outside the kernel + kernel start + "
        "cells + gaps between cells + kernel stop.\n\n"
        + md_table(["run", "runner wall", "train (record)", "wall - train", "wall - all cells", "bookkeeping",
                    "papermill outside kernel", "kernel start", "imports cell", "other cells (data, probe, record)",
                    "gaps between cells", "kernel stop"], rows))
    submitted_to_last = (executor.finished[-1] if executor.finished else executor.submitted) - executor.submitted
    batch_level = batch_s - submitted_to_last
    s.tables.append(md_table(
        ["micro-benchmark (median of repeats)", "seconds"],
        [["papermill before the kernel: read notebook, infer + inject parameters, metadata",
          fmt(micro["papermill_prepare_s"], 4)],
         ["one write of the executed notebook (papermill saves at each cell start and end)"
          + (f", {micro['notebook_bytes'] / 1e3:.0f} kB" if micro.get("notebook_bytes") else ""),
          fmt(micro.get("notebook_write_s"), 4)],
         ["status.json running + finished", fmt(micro["status_writes_s"], 4)],
         ["claim + is_done + release", fmt(micro["claim_s"], 4)],
         [f"rebuild table.csv + runs.csv ({n} runs)", fmt(micro["rebuild_table_s"], 4)],
         ["load + validate the spec", fmt(micro["load_spec_s"], 4)],
         ["kernelspec check", fmt(micro["check_kernel_s"], 4)],
         ["pool worker start (interpreter + runner imports; --workers N only)", fmt(micro["pool_worker_start_s"], 3)],
         [f"batch level, measured: run_ablation wall {batch_s:.2f} s - runs {submitted_to_last:.2f} s "
          "(spec, kernel check, spec.json, table rebuild)", fmt(batch_level, 3)]]))
    s.figures.update({"runs": per_run, "micro": micro, "batch_s": batch_s, "batch_level_s": batch_level})
    return s


# --- speedup ------------------------------------------------------------------------------------------------


_THREADS_SEEN: dict[tuple[str | None, ...], int | None] = {}


def kernel_torch_threads() -> int | None:
    """torch.get_num_threads() in a fresh interpreter with this environment (what a kernel gets)."""
    key = tuple(os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if key not in _THREADS_SEEN:
        _THREADS_SEEN[key] = _probe_torch_threads()
    return _THREADS_SEEN[key]


def _probe_torch_threads() -> int | None:
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                          capture_output=True, text=True, check=False, timeout=300)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None


def section_speedup(b: Bench) -> Section:
    s = Section("speedup", f"the same batch with --workers 1 and --workers {b.workers}")
    n = 2 if b.quick else 4
    spec_path = b.spec("bench_speedup", grid={"mask_ratio": list(MASK_RATIOS[:n])}, seeds=[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    split = max(1, cores // b.workers)
    variants: list[tuple[str, int, int | None]] = [("workers=1, default threads", 1, None)]
    if b.threads in ("default", "both"):
        variants.append((f"workers={b.workers}, default threads", b.workers, None))
    if b.threads in ("split", "both") and b.workers > 1:
        variants.append((f"workers={b.workers}, {split} thread(s) each (OMP_NUM_THREADS)", b.workers, split))
    s.config = b.config(runs=n, cores=cores, variants=[v[0] for v in variants])
    results, rows = [], []
    for index, (label, workers, threads) in enumerate(variants):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        with environment(**env):
            kernel_threads = kernel_torch_threads()
            b.log(f"  {label}: {n} runs (a kernel gets {kernel_threads} torch threads)")
            t0 = time.monotonic()
            summary = run_ablation(spec_path, results_root=b.root / f"speedup-{index}", workers=workers,
                                   log=b.progress)
            wall = time.monotonic() - t0
        store = RunStore(summary.results_dir)
        records = [read_json(store.run_dir(o.run_id) / RECORD_NAME) or {} for o in summary.executed]
        train = [(r.get("metrics") or {}).get("train_time_s") for r in records]
        train = [t for t in train if t is not None]
        s.check(f"{label}: every run done", summary.ok and len(summary.executed) == n,
                f"{len(summary.executed)} executed, failed {sorted(summary.failed)}")
        results.append({"variant": label, "workers": workers, "omp_threads": threads, "kernel_torch_threads": kernel_threads,
                        "wall_s": wall, "train_time_s_sum": sum(train), "train_time_s_mean": statistics.fmean(train) if train else None,
                        "run_seconds": [o.seconds for o in summary.executed]})
    base_wall = results[0]["wall_s"]
    for r in results:
        r["speedup_vs_1_worker"] = base_wall / r["wall_s"] if r["wall_s"] else None
        rows.append([r["variant"], r["kernel_torch_threads"], fmt(r["wall_s"], 1), fmt(r["speedup_vs_1_worker"]),
                     fmt(statistics.fmean(r["run_seconds"]) if r["run_seconds"] else None, 1), fmt(r["train_time_s_mean"], 2)])
    s.tables.append(md_table(["variant", "torch threads per kernel", "batch wall s", "speed-up vs 1 worker",
                              "mean run s (runner)", "mean train_time_s (record)"], rows))
    s.notes.append(f"{cores} cores available to this process; other work on the machine (see the load average "
                   "above) slows every variant.")
    s.figures = {"runs": n, "cores": cores, "variants": results}
    return s


# --- executors --------------------------------------------------------------------------------------------


def slurm_available() -> tuple[bool, str]:
    """(True, sinfo's output) where a SLURM cluster answers and submitit is installed, else (False, why)."""
    if shutil.which("sinfo") is None:
        return False, "sinfo is not on PATH"
    try:
        proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"sinfo failed: {exc}"
    if proc.returncode != 0:
        return False, f"sinfo exited with code {proc.returncode}: {proc.stderr.strip()[:200]}"
    try:
        import submitit  # noqa: F401
    except ModuleNotFoundError:
        return False, "submitit is not installed"
    return True, proc.stdout.strip()


def compare_records(local_dir: Path, slurm_dir: Path) -> dict[str, Any]:
    """Per run id in both folders: parameters equal, largest metric / fold-accuracy difference (timings aside)."""
    out: dict[str, Any] = {}
    local_runs, slurm_runs = statuses(local_dir), statuses(slurm_dir)
    for run_id in sorted(set(local_runs) | set(slurm_runs)):
        a = read_json(local_dir / RUNS_DIRNAME / run_id / RECORD_NAME)
        c = read_json(slurm_dir / RUNS_DIRNAME / run_id / RECORD_NAME)
        if a is None or c is None:
            out[run_id] = {"both": False}
            continue
        keys = [k for k in a["metrics"] if not TIMING_METRIC.search(k) and isinstance(a["metrics"][k], (int, float))]
        diffs = [abs(a["metrics"][k] - c["metrics"].get(k, float("nan"))) for k in keys]
        fold_a = [f.get("accuracy") for f in a.get("folds") or []]
        fold_c = [f.get("accuracy") for f in c.get("folds") or []]
        fold_diffs = [abs(x - y) for x, y in zip(fold_a, fold_c, strict=False)] if len(fold_a) == len(fold_c) else [float("inf")]
        out[run_id] = {"both": True, "params_equal": a["params"] == c["params"], "metrics_compared": len(keys),
                       "metrics_exactly_equal": sum(d == 0 for d in diffs),
                       "max_metric_diff": max(diffs, default=0.0), "max_fold_diff": max(fold_diffs, default=0.0)}
    return out


def section_executors(b: Bench) -> Section:
    s = Section("executors", "the same grid (and a small Optuna study) through the local executor and SLURM")
    ok, detail = slurm_available()
    s.config = b.config(slurm=ok)
    if not ok:
        b.log(f"  SLURM not available ({detail})")
        s.notes.append(f"SLURM not available: {detail}; nothing compared.")
        s.figures = {"slurm": False, "reason": detail}
        return s
    s.notes.append(f"sinfo: {detail.splitlines()[0] if detail else ''}")
    spec_path = b.spec("bench_executors", grid={"mask_ratio": [0.5, 0.75]}, seeds=[0] if b.quick else [0, 1])
    walls = {}
    for kind in ("local", "slurm"):
        b.log(f"  grid through the {kind} executor")
        t0 = time.monotonic()
        summary = run_ablation(spec_path, results_root=b.root / f"executors-{kind}", executor_kind=kind, log=b.progress)
        walls[kind] = time.monotonic() - t0
        s.check(f"grid, {kind}: every run done", summary.ok, f"{len(summary.executed)} executed, failed {sorted(summary.failed)}")
    comparison = compare_records(b.root / "executors-local" / "bench_executors", b.root / "executors-slurm" / "bench_executors")
    s.check("grid: the same runs, parameters equal, metrics within tolerance",
            bool(comparison) and all(c.get("both") and c["params_equal"] and c["max_metric_diff"] <= METRIC_TOLERANCE
                                     and c["max_fold_diff"] <= METRIC_TOLERANCE for c in comparison.values()),
            f"{len(comparison)} runs; tolerance {METRIC_TOLERANCE}")
    s.tables.append(md_table(
        ["run", "params equal", "metrics exactly equal", "max |metric diff|", "max |fold accuracy diff|"],
        [[r, c.get("params_equal"), f"{c.get('metrics_exactly_equal')}/{c.get('metrics_compared')}",
          f"{c.get('max_metric_diff', float('nan')):.2e}", f"{c.get('max_fold_diff', float('nan')):.2e}"]
         for r, c in comparison.items()]))

    from eolab.runner.study import run_study

    # The study: at least 8 trials, pruned on the in-loop k-NN accuracy (reported every step
    # here, so the tiny runs have intermediate values). Tiny runs are deterministic, so the pruner
    # must take the same decisions on both executors.
    study = {"direction": "maximize", "metric": "pretrained_acc_mean", "n_trials": 2 if b.quick else 8,
             "sampler": {"type": "random", "seed": 0},
             "space": {"mask_ratio": {"type": "float", "low": 0.5, "high": 0.9}}}
    if not b.toy:
        study["space"]["lr"] = {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}
        study.update(intermediate="knn_accuracy", pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    study_path = b.spec("bench_study", study=study)
    if not b.toy:  # k-NN probe every step, two epochs: something to prune on
        spec = yaml.safe_load(study_path.read_text())
        spec["base"].update(knn_every=1, epochs=2)
        study_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    trials = {}
    for kind in ("local", "slurm"):
        b.log(f"  study through the {kind} executor")
        t0 = time.monotonic()
        summary = run_study(study_path, executor_kind=kind, workers=1, results_root=b.root / f"executors-{kind}",
                            log=b.progress)
        walls[f"study_{kind}"] = time.monotonic() - t0
        s.check(f"study, {kind}: n_trials complete", summary.ok, summary.counts)
        exported = read_json(b.root / f"executors-{kind}" / "bench_study" / "trials.json") or {}
        trials[kind] = sorted((t["number"], t["state"], json.dumps(t["params"], sort_keys=True), t["value"])
                              for t in exported.get("trials", []))
    same_params = [t[:3] for t in trials["local"]] == [t[:3] for t in trials["slurm"]]
    value_diff = max((abs(x[3] - y[3]) for x, y in zip(trials["local"], trials["slurm"], strict=False)
                      if x[3] is not None and y[3] is not None), default=0.0)
    s.check("study: the same trials (number, state, params), values within tolerance",
            same_params and value_diff <= METRIC_TOLERANCE, f"max |value diff| {value_diff:.2e}")
    s.tables.append(md_table(["executor", "trial", "state", "params", "value"],
                             [[kind, *t] for kind in ("local", "slurm") for t in trials[kind]]))
    s.tables.append(md_table(["batch", "wall s"], [[k, fmt(v, 1)] for k, v in walls.items()]))
    s.figures = {"slurm": True, "grid": comparison, "study": trials, "walls_s": walls}
    return s


# --- main ----------------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Bench], Section]] = {
    "faults": section_faults,
    "overhead": section_overhead,
    "speedup": section_speedup,
    "executors": section_executors,
}


def write_reports(out: Path, sections: Sequence[Section]) -> None:
    """<out>/<section>.json and .md for this run's sections; report.md/.json gather all present."""
    out.mkdir(parents=True, exist_ok=True)
    for section in sections:
        (out / f"{section.name}.json").write_text(json.dumps(section.to_json(), indent=2, default=str) + "\n")
        (out / f"{section.name}.md").write_text(section.markdown())
    present = [name for name in SECTIONS if (out / f"{name}.json").is_file()]
    (out / "report.json").write_text(json.dumps(
        {name: json.loads((out / f"{name}.json").read_text()) for name in present}, indent=2, default=str) + "\n")
    (out / "report.md").write_text(
        "# Runner benchmark\n\n`python -m benchmarks.runner_overhead`; one section per file, each from its own run.\n\n"
        + "\n".join((out / f"{name}.md").read_text() for name in present))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="pool workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller runs: a smoke test")
    parser.add_argument("--toy", action="store_true", help="a small stand-in notebook instead of notebooks/pretrain.ipynb")
    parser.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR", help="where the reports go (default %(default)s)")
    parser.add_argument("--results-root", metavar="DIR", help="where runs go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary results root")
    parser.add_argument("--threads", choices=("default", "split", "both"), default="both",
                        help="speedup: torch threads of the N-worker batch: default, cores/N (OMP_NUM_THREADS), both")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                        help="faults: longest wait for the kill and for the concurrent processes (default 3600)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if not args.toy:
        from eolab.data.paths import data_root

        try:
            data_root()
        except FileNotFoundError as exc:
            print(f"error: the real notebook needs the data ({exc}); or use --toy", file=sys.stderr)
            return 2
    chosen = [name for name in SECTIONS if name in args.sections] if args.sections else list(SECTIONS)
    temporary = args.results_root is None
    root = Path(args.results_root) if args.results_root else Path(tempfile.mkdtemp(prefix="eolab-runner-benchmark-"))
    bench = Bench(root=root, toy=args.toy, quick=args.quick, workers=args.workers, threads=args.threads,
                  timeout_s=args.timeout)
    print(f"runner benchmark: {', '.join(chosen)}; notebook {bench.notebook}; runs under {bench.root}", flush=True)
    done: list[Section] = []
    for name in chosen:
        print(f"\n[{name}]", flush=True)
        info = machine()
        started = time.monotonic()
        try:
            section = RUNNERS[name](bench)
        except Exception:  # report the crash, go on with the other sections
            section = Section(name, "crashed", error=traceback.format_exc())
            section.config = bench.config()
        section.machine, section.seconds = info, time.monotonic() - started
        done.append(section)
        print(section.markdown(), flush=True)
        write_reports(Path(args.out), done)
    ok = all(section.ok for section in done)
    print(f"reports: {Path(args.out).resolve()}/{{{','.join(s.name for s in done)}}}.{{json,md}}, report.md")
    if temporary and ok and not args.keep:
        shutil.rmtree(bench.root, ignore_errors=True)
    else:
        print(f"runs kept under {bench.root}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
