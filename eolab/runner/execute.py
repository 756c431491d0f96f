"""Execute an ablation: one papermill run per spec point, resumable, failure-tolerant.

Runs are described by self-contained `RunTask`s and handed to an `Executor`: the sequential
`LocalExecutor` here, `eolab.runner.pool.PoolExecutor` (N child processes) or
`eolab.runner.slurm.SlurmExecutor` (one SLURM job per run, a job array). An executor only has
to implement `submit(tasks) -> list[RunOutcome]` (calling `execute_task` wherever the run happens),
because all state lives in the run folder (status.json, record.json), not in the executor.

Every executor claims a run (`eolab.runner.claim`) right before executing it and re-checks that it
is not done, so two `ablate` processes on one results folder share the work instead of running a
run twice; a run claimed by the other process is reported as skipped (outcome state `skipped`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import papermill
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

from eolab.runner.claim import Claim, claim_holder, try_claim
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
from eolab.runner.store import (
    DONE,
    FAILED,
    NOTEBOOK_NAME,
    RECORD_NAME,
    RUNNING,
    RunStore,
    rebuild_table,
    utc_now,
)

KERNEL_NAME = "python3"
DEFAULT_RESULTS_ROOT = REPO_ROOT / "results"
SUMMARY_NOTEBOOK_NAME = "summary.ipynb"
SKIPPED = "skipped"
"""Outcome state (never written to status.json) of a run another process claimed or finished."""

Log = Callable[[str], None]


class KernelError(RuntimeError):
    """The Jupyter kernel papermill would start is not this interpreter (wrong venv, no torch...)."""


class ExecutorError(RuntimeError):
    """The requested executor cannot be used here (unknown kind, bad worker count, submitit missing)."""


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO})
"""errno values of a results folder the machine does not let us write (full, read-only, quota, I/O)."""


class ResultsFolderError(RuntimeError):
    """The results folder cannot be written (full disk, read-only, quota): the batch must stop,
    since every further run would fail the same way."""

    def __init__(self, results_dir: Path, exc: OSError | str, run_id: str | None = None):
        self.results_dir, self.run_id = results_dir, run_id
        detail = exc if isinstance(exc, str) else _os_error_text(exc)
        super().__init__(f"cannot write the results folder {results_dir}: {detail}")


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received by `ablate`: stop like Ctrl-C, with the signal's exit code."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"signal {signum}")
        self.signum = signum


@dataclass
class BatchStopped(Exception):
    """The batch stopped before its end (a fault of the machine, Ctrl-C, SIGTERM); what finished is
    in the tables, the interrupted runs are marked failed, and a re-run does the rest."""

    message: str  # one line
    exit_code: int  # 130 Ctrl-C, 143 SIGTERM, EXIT_FAULT for an unwritable results folder
    interrupted: dict[str, str] = field(default_factory=dict)  # run id -> why

    def __str__(self) -> str:
        return self.message


EXIT_FAULT = 3
"""Exit code of `ablate` when the machine stopped the batch (results folder not writable)."""


@dataclass(frozen=True)
class RunTask:
    """Everything needed to execute one run, anywhere: plain paths and JSON-able parameters."""

    run_id: str
    notebook: Path
    results_dir: Path
    parameters: dict[str, Any]  # includes output_dir
    force: bool = False  # execute even if another process finished the run after it was planned

    @property
    def run_dir(self) -> Path:
        return RunStore(self.results_dir).run_dir(self.run_id)

    def to_json(self) -> dict[str, Any]:
        """JSON form, to hand the task to a worker process."""
        return {
            "run_id": self.run_id,
            "notebook": str(self.notebook),
            "results_dir": str(self.results_dir),
            "parameters": self.parameters,
            "force": self.force,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunTask:
        return cls(
            run_id=obj["run_id"],
            notebook=Path(obj["notebook"]),
            results_dir=Path(obj["results_dir"]),
            parameters=dict(obj["parameters"]),
            force=bool(obj.get("force", False)),
        )


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended; the same facts are in the run's status.json."""

    run_id: str
    state: str  # DONE or FAILED; SKIPPED if another process claimed or finished it
    error: str | None  # for SKIPPED: why
    seconds: float


class Executor(Protocol):
    """Runs tasks and reports each outcome; implementations decide where and how concurrently."""

    def submit(self, tasks: Sequence[RunTask]) -> list[RunOutcome]: ...


@dataclass
class LocalExecutor:
    """Runs tasks one after another in this process (one kernel at a time)."""

    on_finished: Callable[[RunOutcome], None] | None = None

    def submit(self, tasks: Sequence[RunTask]) -> list[RunOutcome]:
        outcomes = []
        for task in tasks:
            claimed = claim_task(task)
            if isinstance(claimed, RunOutcome):
                outcome = claimed
            else:
                try:
                    outcome = execute_task(task)
                finally:
                    claimed.release()
            outcomes.append(outcome)
            if self.on_finished:
                self.on_finished(outcome)
        return outcomes


def claim_task(task: RunTask) -> Claim | RunOutcome:
    """Claim the run for this process, or return the SKIPPED outcome saying who has it.

    Checks `is_done` again after claiming: another process may have finished the run between
    planning the batch and now.
    """
    try:
        claim = try_claim(task.run_dir)
    except OSError as exc:  # the claim file cannot be created: a full or read-only results folder
        if is_storage_fault(exc):
            raise ResultsFolderError(task.results_dir, exc, task.run_id) from exc
        raise
    if claim is None:
        return RunOutcome(task.run_id, SKIPPED, f"claimed by {claim_holder(task.run_dir)}", 0.0)
    if not task.force and RunStore(task.results_dir).is_done(task.run_id):
        claim.release()
        return RunOutcome(task.run_id, SKIPPED, "done by another process meanwhile", 0.0)
    return claim


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
            f" | failed {self.failed} | elapsed {_hms(elapsed)} | ETA {_hms(eta)}"
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
) -> AblationSummary:
    """Validate the spec, execute the runs that are not done yet, rebuild tables, render the summary.

    Failed runs do not stop the batch; they are listed in the returned summary (and in runs.csv).
    Unless an `executor` is given, `executor_kind` picks one: "local" runs `workers` notebooks at
    once on this machine (1: sequentially, in this process), "slurm" submits them to SLURM.
    """
    spec = load_spec(spec_path)
    if spec.study is not None:  # its trials are not known up front; `python -m eolab ablate` dispatches
        raise SpecError(f"{spec.path}: has a `study` section; run it with eolab.runner.study.run_study")
    runs = select_runs(spec, only)
    store = RunStore(Path(results_root or DEFAULT_RESULTS_ROOT) / spec.name)
    todo = [r for r in runs if force or not store.is_done(r.run_id)]
    for run in todo:  # a run the runner called done, whose record cannot be used: say so, then redo it
        if (store.status(run.run_id) or {}).get("state") == DONE and (problem := store.record_problem(run.run_id)):
            log(f"redo   {run.run_id} ({problem})")
    executor = executor or make_executor(  # before anything is written: a bad executor is a usage error
        executor_kind, workers, spec, store, on_finished=Progress(total=len(todo), log=log)
    )
    if todo or spec.summary:
        check_kernel()

    tasks = [make_task(spec, store, run, force=force) for run in todo]
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
        wrote = f"tables not written ({_os_error_text(table_exc)}; `python -m eolab table {store.results_dir}` rebuilds them)"
    done = sum(RunStore(store.results_dir).is_done(t.run_id) for t in tasks)
    marked = f"{len(interrupted)} interrupted run(s) marked failed" if interrupted else "no run interrupted"
    message = f"{store.results_dir.name}: {reason}; {done}/{len(tasks)} run(s) done, {marked}, {wrote}; re-run to finish"
    return BatchStopped(message, code, interrupted)


def _os_error_text(exc: OSError) -> str:
    """'No space left on device (errno 28) at <file>': one line, without a traceback."""
    text = exc.strerror or str(exc) or type(exc).__name__
    code = f" (errno {exc.errno})" if exc.errno else ""
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{text}{code}{where}"


def is_storage_fault(exc: BaseException) -> bool:
    """Whether an exception says that the disk refuses writes (full, read-only, quota, I/O error)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _kernel_storage_fault(exc: PapermillExecutionError) -> str | None:
    """The notebook's error text when it failed because the disk refused a write, else None."""
    match = _ERRNO_IN_TEXT.search(exc.evalue or "")
    if match and int(match.group(1)) in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return f"{exc.ename}: {exc.evalue}"
    return None


EXECUTOR_KINDS = ("local", "slurm")



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
            from eolab.runner.slurm import SlurmExecutor  # imports submitit, and this module
        except ModuleNotFoundError as exc:
            install = f"{sys.executable} -m pip install submitit"
            raise ExecutorError(f"the slurm executor needs submitit; install it with `{install}`") from exc

        return SlurmExecutor(
            results_dir=store.results_dir, resources=spec.resources, on_finished=on_finished, job_name=spec.name
        )
    if workers == 1:
        return LocalExecutor(on_finished=on_finished)
    from eolab.runner.pool import PoolExecutor  # imports this module

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


def make_task(spec: AblationSpec, store: RunStore, run: Run, force: bool = False) -> RunTask:
    """Bind a run to its folder: `output_dir` is the absolute run folder."""
    parameters = dict(run.params, **{OUTPUT_DIR_PARAM: str(store.run_dir(run.run_id))})
    return RunTask(
        run_id=run.run_id, notebook=spec.notebook, results_dir=store.results_dir, parameters=parameters, force=force
    )


def execute_task(task: RunTask) -> RunOutcome:
    """Execute one run with papermill and record the verdict in status.json; never raises for a
    failing notebook. KeyboardInterrupt (also an interrupted kernel) is recorded, then re-raised;
    a results folder that refuses writes (full, read-only) raises ResultsFolderError, after
    recording the run as failed where the folder still allows it."""
    store = RunStore(task.results_dir)
    try:
        status = store.mark_running(task.run_id, {k: v for k, v in task.parameters.items() if k != OUTPUT_DIR_PARAM})
    except OSError as exc:
        if is_storage_fault(exc):
            raise ResultsFolderError(store.results_dir, exc, task.run_id) from exc
        raise
    started = time.monotonic()
    error: str | None = None
    traceback: str | None = None
    fault: ResultsFolderError | None = None
    try:
        execute_notebook(task.notebook, task.run_dir / NOTEBOOK_NAME, task.parameters)
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        traceback = _strip_ansi("\n".join(exc.traceback or []))
        if exc.ename == "KeyboardInterrupt":  # the kernel was interrupted: the batch is, too
            store.mark_finished(status, error="KeyboardInterrupt: the notebook's kernel was interrupted")
            raise KeyboardInterrupt(error) from exc
        if (disk := _kernel_storage_fault(exc)) is not None:
            fault = ResultsFolderError(store.results_dir, f"the notebook failed with {disk}", task.run_id)
    except KeyboardInterrupt:
        store.mark_finished(status, error="KeyboardInterrupt: interrupted by user")
        raise
    except Exception as exc:  # kernel died, notebook unreadable...: record and go on with the batch
        error = f"{type(exc).__name__}: {exc}"
        if is_storage_fault(exc):
            fault = ResultsFolderError(store.results_dir, exc, task.run_id)
    else:
        if not (task.run_dir / RECORD_NAME).is_file():
            error = f"notebook finished without writing {RECORD_NAME} to output_dir"
    try:
        store.mark_finished(status, error=error if fault is None else f"stopped: {fault}", traceback=traceback)
    except OSError as exc:
        if not is_storage_fault(exc):
            raise
        raise (fault or ResultsFolderError(store.results_dir, exc, task.run_id)) from exc
    if fault is not None:
        raise fault
    return RunOutcome(
        run_id=task.run_id, state=FAILED if error else DONE, error=error, seconds=time.monotonic() - started
    )


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
    """papermill with the runner's conventions: kernel python3, cwd = the notebook's folder, quiet."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with eolab_importable():
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            cwd=str(notebook.parent),
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            log_output=False,
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


def check_kernel(kernel_name: str = KERNEL_NAME) -> str:
    """Fail early unless the kernelspec starts this interpreter: a kernelspec registered by another
    Python (e.g. in ~/.local/share/jupyter) would run the notebooks without this venv's packages."""
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel as exc:
        raise KernelError(f"no Jupyter kernel named {kernel_name!r}; install ipykernel into {sys.prefix}") from exc
    argv0 = spec.argv[0] if spec.argv else ""
    # jupyter_client itself swaps a bare "python"/"python3"/"python3.X" for sys.executable
    bare_names = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    executable = sys.executable if argv0 in bare_names else argv0
    if os.path.normpath(os.path.abspath(executable)) != os.path.normpath(os.path.abspath(sys.executable)):
        raise KernelError(
            f"the {kernel_name!r} kernelspec in {spec.resource_dir} starts {executable}, not this "
            f"interpreter {sys.executable}; remove that kernelspec or run "
            f"`{sys.executable} -m ipykernel install --sys-prefix`"
        )
    return executable


@contextlib.contextmanager
def eolab_importable() -> Iterator[None]:
    """Let kernels `import eolab` although their cwd is the notebook's folder: the kernel inherits
    os.environ at launch, so prepend the repository root to PYTHONPATH for the duration."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), previous) if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _hms(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
