"""Executing one run: claim it, run its notebook with papermill in a checked kernel, record the verdict.

Every executor (in-process, process pool, SLURM) ends up in ``execute_task``, so a run's
status.json says the same thing whichever executed it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

from eolab.io import environment
from eolab.progress import PROGRESS_ENV, RUN_LOG_NAME
from eolab.runner.claim import Claim, claim_holder, try_claim
from eolab.runner.faults import ResultsFolderError, is_storage_fault, kernel_storage_fault
from eolab.runner.spec import OUTPUT_DIR_PARAM, REPO_ROOT
from eolab.runner.store import DONE, FAILED, NOTEBOOK_NAME, RECORD_NAME, RunStore
from eolab.runner.types import SKIPPED, RunOutcome, RunTask

KERNEL_NAME = "python3"


class KernelError(RuntimeError):
    """The Jupyter kernel papermill would start is not this interpreter (wrong venv, no torch...)."""


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


def execute_task(task: RunTask) -> RunOutcome:
    """Execute one run with papermill and record the verdict in status.json; never raises for a
    failing notebook. KeyboardInterrupt (also an interrupted kernel) is recorded, then re-raised;
    a results folder that refuses writes (full, read-only) raises ResultsFolderError, after
    recording the run as failed where the folder still allows it."""
    store = RunStore(task.results_dir)
    (task.run_dir / RUN_LOG_NAME).unlink(missing_ok=True)  # the log of an earlier attempt
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
        if (disk := kernel_storage_fault(exc)) is not None:
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
            # the kernel's start-up log (a TCP-transport notice on every run) would land between the
            # progress lines in the user's terminal; its errors still do
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )


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
    previous = os.environ.get("PYTHONPATH")
    with environment(PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), previous) if p),
                     **{PROGRESS_ENV: os.environ.get(PROGRESS_ENV, "log")}):
        yield


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
