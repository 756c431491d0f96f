"""Execute an ablation: one papermill run per spec point, resumable, failure-tolerant.

Runs are described by self-contained `RunTask`s (`eolab.runner.types`) and handed to an
`Executor`: the sequential `LocalExecutor` (`eolab.runner.notebook`), `eolab.runner.pool.PoolExecutor` (N child processes) or
`eolab.runner.slurm.SlurmExecutor` (one SLURM job per run, a job array). An executor only has
to implement `submit(tasks) -> list[RunOutcome]` (calling `execute_task` wherever the run happens),
because all state lives in the run folder (status.json, record.json), not in the executor.

Every executor claims a run (`eolab.runner.claim`) right before executing it and re-checks that it
is not done, so two `ablate` processes on one results folder share the work instead of running a
run twice; a run claimed by the other process is reported as skipped (outcome state `skipped`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from papermill.exceptions import PapermillExecutionError

from eolab.progress import hms
from eolab.runner.faults import EXIT_FAULT, BatchStopped, Interrupted, ResultsFolderError, is_storage_fault, os_error_text
from eolab.runner.notebook import LocalExecutor, check_kernel, execute_notebook
from eolab.runner.pool import PoolExecutor
from eolab.runner.preflight import notebook_defaults, preflight
from eolab.runner.progress import AblationProgress, run_dirs_of
from eolab.runner.render import render_html
from eolab.runner.spec import (
    OUTPUT_DIR_PARAM,
    REPO_ROOT,
    SUMMARY_RESULTS_PARAM,
    AblationSpec,
    Run,
    SpecError,
    load_spec,
)
from eolab.runner.store import DONE, FAILED, RUNNING, RunStore, rebuild_table, utc_now
from eolab.runner.types import SKIPPED, Executor, Log, RunOutcome, RunTask
from eolab.secrets import redact, url_secrets

DEFAULT_RESULTS_ROOT = REPO_ROOT / "results"
SUMMARY_NOTEBOOK_NAME = "summary.ipynb"


class ExecutorError(RuntimeError):
    """The requested executor cannot be used here (unknown kind, bad worker count, submitit missing)."""


@dataclass
class Progress:
    """Prints one line per finished run: position, verdict, failures so far, elapsed and ETA."""

    total: int
    log: Log = print
    started: float = field(default_factory=time.monotonic)
    finished: int = 0
    failed: int = 0

    def __call__(self, outcome: RunOutcome) -> None:
        self.finished += 1
        self.failed += outcome.state == FAILED
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.finished * (self.total - self.finished)
        detail = f"{outcome.error}" if outcome.state == SKIPPED else f"{outcome.seconds:.1f}s"
        self.log(
            f"[{self.finished}/{self.total}] {outcome.state:<6} {outcome.run_id} ({detail})"
            f" | failed {self.failed} | elapsed {hms(elapsed)} | ETA {hms(eta)}"
        )


@dataclass
class AblationSummary:
    """What `run_ablation` did; `ok` is False if any run or the summary notebook failed."""

    name: str
    results_dir: Path
    executed: list[RunOutcome]
    skipped: list[str]
    table_rows: int
    summary_html: Path | None = None
    summary_error: str | None = None

    @property
    def failed(self) -> dict[str, str]:
        return {o.run_id: o.error or "" for o in self.executed if o.state == FAILED}

    @property
    def ok(self) -> bool:
        return not self.failed and self.summary_error is None


def run_ablation(
    spec_path: str | Path,
    force: bool = False,
    only: Sequence[str] | None = None,
    results_root: str | Path | None = None,
    executor: Executor | None = None,
    log: Log = print,
    workers: int = 1,
    executor_kind: str = "local",
    progress: str = "auto",
) -> AblationSummary:
    """Validate the spec, execute the runs that are not done yet, rebuild tables, render the summary.

    Failed runs do not stop the batch; they are listed in the returned summary (and in runs.csv).
    Unless an `executor` is given, `executor_kind` picks one: "local" runs `workers` notebooks at
    once on this machine (1: sequentially, in this process), "slurm" submits them to SLURM.
    ``progress`` (``eolab.runner.progress``): "bar" (a line redrawn while runs execute), "lines" (a
    line per event), "quiet" (a line per finished run) or "auto"; it applies when no ``executor`` is
    given (a given executor reports through its own ``on_finished``).
    """
    spec = load_spec(spec_path)
    if spec.study is not None:  # its trials are not known up front; `python -m eolab ablate` dispatches
        raise SpecError(f"{spec.path}: has a `study` section; run it with eolab.runner.study.run_study")
    runs = select_runs(spec, only)
    check_no_secrets(spec, runs)
    store = RunStore(Path(results_root or DEFAULT_RESULTS_ROOT) / spec.name)
    # a done run made under a notebook default that has changed since ran something else than the
    # spec now asks for (its id hashes only what the spec sets): it is redone, and said
    stale = {} if force else stale_runs(spec, store, runs)
    todo = [r for r in runs if force or not store.is_done(r.run_id) or r.run_id in stale]
    for run in todo:  # a run the runner called done, whose record cannot be used: say so, then redo it
        if (store.status(run.run_id) or {}).get("state") == DONE and (problem := store.record_problem(run.run_id)):
            log(f"redo   {run.run_id} ({problem})")
        elif run.run_id in stale:
            log(f"redo   {run.run_id} (made under an earlier notebook default: {', '.join(stale[run.run_id])})")
    tasks = [make_task(spec, store, run, force=force or run.run_id in stale) for run in todo]
    watch = contextlib.nullcontext()
    if executor is None:
        live = AblationProgress(spec.name, run_dirs_of(tasks), workers=workers if executor_kind == "local" else len(tasks),
                                log=log, mode=progress)
        watch = live
    executor = executor or make_executor(  # before anything is written: a bad executor is a usage error
        executor_kind, workers, spec, store, on_finished=live.on_finished
    )
    # every bad parameter value and missing input of the runs to do, at once, before anything is written
    preflight(spec, [(f"run {r.run_id}", r.params) for r in todo]).raise_if_failed(spec)
    if todo or spec.summary:
        check_kernel()

    tasks = [make_task(spec, store, run, force=force or run.run_id in stale) for run in todo]
    batch_started = utc_now()
    try:
        try:
            store.write_spec(spec.to_json())
        except OSError as exc:
            raise (ResultsFolderError(store.results_dir, exc) if is_storage_fault(exc) else exc) from exc
        todo_ids = {r.run_id for r in todo}
        skipped = [r.run_id for r in runs if r.run_id not in todo_ids]
        for run_id in skipped:
            log(f"skip   {run_id} (done; --force to re-run)")
        log(f"{spec.name}: {len(todo)} to run, {len(skipped)} already done -> {store.results_dir}")
        with watch:
            outcomes = executor.submit(tasks)
        try:
            tables = rebuild_table(store.results_dir)
        except OSError as exc:
            raise (ResultsFolderError(store.results_dir, exc) if is_storage_fault(exc) else exc) from exc
    except (ResultsFolderError, KeyboardInterrupt) as exc:
        raise _stopped(store, tasks, exc, batch_started) from exc
    summary = AblationSummary(
        name=spec.name,
        results_dir=store.results_dir,
        executed=[o for o in outcomes if o.state != SKIPPED],
        skipped=skipped + [o.run_id for o in outcomes if o.state == SKIPPED],
        table_rows=len(tables.table),
    )
    if spec.summary:
        summary.summary_html, summary.summary_error = render_summary(spec.summary, store.results_dir)
    return summary


def _stopped(store: RunStore, tasks: Sequence[RunTask], exc: BaseException, batch_started: str) -> BatchStopped:
    """After a fault or an interruption: mark the runs this process left running as failed (pool
    workers mark their own), write the tables of what finished, and say all of it in one line."""
    if isinstance(exc, ResultsFolderError):
        reason, code = f"stopped: {exc}", EXIT_FAULT
    else:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        reason, code = f"interrupted by {signal.Signals(signum).name}", 128 + signum
    interrupted: dict[str, str] = {}
    for task in tasks:
        status = store.status(task.run_id)
        if status and status.get("state") == RUNNING and status.get("hostname") == socket.gethostname() \
                and status.get("pid") == os.getpid():
            interrupted[task.run_id] = reason
            with contextlib.suppress(OSError):  # a read-only folder: the tables say it instead
                store.mark_finished(status, error=reason)
        elif status and status.get("state") == FAILED and (status.get("started_at") or "") >= batch_started \
                and ("nterrupt" in (status.get("error") or "") or (status.get("error") or "").startswith("stopped:")):
            interrupted[task.run_id] = status["error"]  # a pool worker's run, recorded by the worker
    if isinstance(exc, ResultsFolderError) and exc.run_id:
        interrupted.setdefault(exc.run_id, reason)
    try:
        tables = rebuild_table(store.results_dir, interrupted=interrupted)
        wrote = f"tables written ({len(tables.table)} rows in table.csv, {len(tables.runs)} runs in runs.csv)"
    except OSError as table_exc:
        wrote = f"tables not written ({os_error_text(table_exc)}; `python -m eolab table {store.results_dir}` rebuilds them)"
    done = sum(RunStore(store.results_dir).is_done(t.run_id) for t in tasks)
    marked = f"{len(interrupted)} interrupted run(s) marked failed" if interrupted else "no run interrupted"
    message = f"{store.results_dir.name}: {reason}; {done}/{len(tasks)} run(s) done, {marked}, {wrote}; re-run to finish"
    return BatchStopped(message, code, interrupted)


EXECUTOR_KINDS = ("local", "slurm")



def check_no_secrets(spec: AblationSpec, runs: Sequence[Run]) -> None:
    """Refuse a spec whose tracking URI carries a password: spec.json and every run's notebook would
    keep it (papermill writes parameters into the notebook)."""
    for run in runs:
        uri = run.params.get("tracking_uri")
        if isinstance(uri, str) and redact(uri, url_secrets(uri)) != uri:
            raise SpecError(
                f"{spec.path}: `tracking_uri` {redact(uri, url_secrets(uri))} carries credentials, which would be written "
                "into spec.json and each run's notebook; give the URI without them and set "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment"
            )


def check_executor(kind: str, workers: int) -> None:
    """Refuse an unknown executor kind, fewer than one worker, or SLURM without submitit."""
    if kind not in EXECUTOR_KINDS:
        raise ExecutorError(f"executor must be one of {', '.join(EXECUTOR_KINDS)}, got {kind!r}")
    if workers < 1:
        raise ExecutorError(f"workers must be at least 1, got {workers}")
    if kind == "slurm":
        try:
            import submitit  # noqa: F401
        except ModuleNotFoundError as exc:
            raise ExecutorError(
                f"the slurm executor needs submitit; install it with `{sys.executable} -m pip install submitit`"
            ) from exc

def make_executor(
    kind: str,
    workers: int,
    spec: AblationSpec,
    store: RunStore,
    on_finished: Callable[[RunOutcome], None] | None = None,
) -> Executor:
    """"slurm": a SlurmExecutor with the spec's `resources`; "local": the sequential in-process
    executor for 1 worker (as before pools existed), else a process pool."""
    check_executor(kind, workers)
    if kind == "slurm":
        try:
            from eolab.runner.slurm import (
                SlurmExecutor,  # imports submitit, an optional dependency
            )
        except ModuleNotFoundError as exc:
            install = f"{sys.executable} -m pip install submitit"
            raise ExecutorError(f"the slurm executor needs submitit; install it with `{install}`") from exc

        return SlurmExecutor(
            results_dir=store.results_dir, resources=spec.resources, on_finished=on_finished, job_name=spec.name
        )
    if workers == 1:
        return LocalExecutor(on_finished=on_finished)
    return PoolExecutor(workers=workers, on_finished=on_finished)


def select_runs(spec: AblationSpec, only: Sequence[str] | None) -> list[Run]:
    """All runs, or those named in `only` (full run id or its trailing hash)."""
    runs = spec.runs()
    if not only:
        return runs
    by_key = {r.run_id: r for r in runs} | {r.run_id.rsplit("-", 1)[-1]: r for r in runs}
    unknown = [key for key in only if key not in by_key]
    if unknown:
        raise SpecError(
            f"{spec.path}: --only {', '.join(unknown)} matches no run of this spec; "
            f"run ids: {', '.join(r.run_id for r in runs)}"
        )
    wanted = {by_key[key].run_id for key in only}
    return [r for r in runs if r.run_id in wanted]


def stale_runs(spec: AblationSpec, store: RunStore, runs: Sequence[Run]) -> dict[str, list[str]]:
    """Done runs made under notebook defaults that have changed since, each with its changes
    (``name 'old' -> 'new'``); `run_ablation` redoes them.

    The run id hashes only what the spec sets, so a run made before a default changed keeps its id;
    its record's ``params`` say which value it really ran with. A parameter the spec sets, one absent
    from the record (added to the notebook later) or one with a non-literal default is not judged.
    """
    defaults = notebook_defaults(spec)
    stale = {}
    for run in runs:
        if not store.is_done(run.run_id):
            continue
        made_with = store.record_params(run.run_id)
        changed = [f"{name} {made_with[name]!r} -> {default!r}" for name, default in defaults.items()
                   if name not in run.params and name in made_with and made_with[name] != default]
        if changed:
            stale[run.run_id] = changed
    return stale


def make_task(spec: AblationSpec, store: RunStore, run: Run, force: bool = False) -> RunTask:
    """Bind a run to its folder: `output_dir` is the absolute run folder."""
    parameters = dict(run.params, **{OUTPUT_DIR_PARAM: str(store.run_dir(run.run_id))})
    return RunTask(
        run_id=run.run_id, notebook=spec.notebook, results_dir=store.results_dir, parameters=parameters, force=force
    )


def render_summary(summary_notebook: Path, results_dir: Path) -> tuple[Path | None, str | None]:
    """Execute the summary notebook into results_dir and render it to HTML.

    A failing summary is still rendered (the HTML then shows the error) so it can be read.
    """
    executed = results_dir / SUMMARY_NOTEBOOK_NAME
    error = None
    try:
        execute_notebook(summary_notebook, executed, {SUMMARY_RESULTS_PARAM: str(results_dir)})
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # the runs are done; report a broken summary instead of losing them
        error = f"{type(exc).__name__}: {exc}"
    html = render_html(executed) if executed.is_file() else None
    return html, error


