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
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import papermill
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

from eolab.progress import PROGRESS_ENV, RUN_LOG_NAME
from eolab.runner.claim import Claim, claim_holder, try_claim
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
from eolab.runner.store import DONE, FAILED, NOTEBOOK_NAME, RECORD_NAME, RunStore, rebuild_table

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
    claim = try_claim(task.run_dir)
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
    todo = [r for r in runs if force or not store.is_done(r.run_id)]
    tasks = [make_task(spec, store, run, force=force) for run in todo]
    watch = contextlib.nullcontext()
    if executor is None:
        live = AblationProgress(spec.name, run_dirs_of(tasks), workers=workers if executor_kind == "local" else len(tasks),
                                log=log, mode=progress)
        watch = live
    executor = executor or make_executor(  # before anything is written: a bad executor is a usage error
        executor_kind, workers, spec, store, on_finished=live.on_finished
    )
    if todo or spec.summary:
        check_kernel()

    store.write_spec(spec.to_json())
    todo_ids = {r.run_id for r in todo}
    skipped = [r.run_id for r in runs if r.run_id not in todo_ids]
    for run_id in skipped:
        log(f"skip   {run_id} (done; --force to re-run)")
    log(f"{spec.name}: {len(todo)} to run, {len(skipped)} already done -> {store.results_dir}")

    with watch:
        outcomes = executor.submit(tasks)
    tables = rebuild_table(store.results_dir)
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


EXECUTOR_KINDS = ("local", "slurm")



def check_no_secrets(spec: AblationSpec, runs: Sequence[Run]) -> None:
    """Refuse a spec whose tracking URI carries a password: spec.json and every run's notebook would
    keep it (papermill writes parameters into the notebook)."""
    from eolab.tracking import has_secret, redact_uri

    for run in runs:
        uri = run.params.get("tracking_uri")
        if isinstance(uri, str) and has_secret(uri):
            raise SpecError(
                f"{spec.path}: `tracking_uri` {redact_uri(uri)} carries credentials, which would be written "
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
    failing notebook (KeyboardInterrupt is recorded, then re-raised)."""
    store = RunStore(task.results_dir)
    (task.run_dir / RUN_LOG_NAME).unlink(missing_ok=True)  # the log of an earlier attempt
    status = store.mark_running(task.run_id, {k: v for k, v in task.parameters.items() if k != OUTPUT_DIR_PARAM})
    started = time.monotonic()
    error: str | None = None
    traceback: str | None = None
    try:
        execute_notebook(task.notebook, task.run_dir / NOTEBOOK_NAME, task.parameters)
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        traceback = _strip_ansi("\n".join(exc.traceback or []))
    except KeyboardInterrupt:
        store.mark_finished(status, error="KeyboardInterrupt: interrupted by user")
        raise
    except Exception as exc:  # kernel died, notebook unreadable...: record and go on with the batch
        error = f"{type(exc).__name__}: {exc}"
    else:
        if not (task.run_dir / RECORD_NAME).is_file():
            error = f"notebook finished without writing {RECORD_NAME} to output_dir"
    store.mark_finished(status, error=error, traceback=traceback)
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
    os.environ at launch, so prepend the repository root to PYTHONPATH for the duration. Kernels
    also get EOLAB_PROGRESS=log (unless set): a run's `progress="auto"` then writes its run.log and
    no progress bar into the executed notebook."""
    previous = {name: os.environ.get(name) for name in ("PYTHONPATH", PROGRESS_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), previous["PYTHONPATH"]) if p)
    os.environ.setdefault(PROGRESS_ENV, "log")
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _hms(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
