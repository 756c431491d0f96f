"""`SlurmExecutor`: one SLURM job per run, submitted as a job array through submitit.

Each job calls `execute_task` on a compute node, so the run folder (status.json, record.json, the
executed notebook) looks exactly as after a local run; the results folder must therefore be on a
file system the nodes share. The submitting process claims every run before submitting it and
waits for the array; a job that SLURM ends itself (TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL...)
never records a verdict, so the submitter records the run as failed with that reason.
submitit's files (sbatch scripts, pickles, job logs) go to results/<name>/slurm/.

Resources per run come from the spec's optional `resources` section (see `eolab.runner.spec`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from eolab.runner.claim import Claim
from eolab.runner.execute import RunOutcome, RunTask, claim_task, execute_task
from eolab.runner.spec import OUTPUT_DIR_PARAM
from eolab.runner.store import DONE, FAILED, RunStore, utc_now

SLURM_DIRNAME = "slurm"
POLL_SECONDS = 2.0
SCHEDULER_END_STATES = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE", "BOOT_FAIL")
"""sacct states of a job that SLURM (or a user's scancel) ended, rather than the job itself."""
UNFINISHED_STATES = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED", "UNKNOWN")

# spec `resources` key -> submitit AutoExecutor parameter
_SUBMITIT_NAMES = {
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "mem_gb": "mem_gb",
    "timeout_min": "timeout_min",
    "partition": "slurm_partition",
}


@dataclass
class _Job:
    task: RunTask
    claim: Claim
    job: Any  # submitit.Job
    submitted_at: str
    started: float = field(default_factory=time.monotonic)


@dataclass
class SlurmExecutor:
    """Submits all tasks as one job array, waits for it, returns outcomes in task order."""

    results_dir: Path
    resources: dict[str, Any] = field(default_factory=dict)
    on_finished: Callable[[RunOutcome], None] | None = None
    job_name: str = "eolab"

    def submit(self, tasks: Sequence[RunTask]) -> list[RunOutcome]:
        outcomes: dict[str, RunOutcome] = {}
        claimed: list[tuple[RunTask, Claim]] = []
        for task in tasks:
            result = claim_task(task)
            if isinstance(result, RunOutcome):
                self._finish(outcomes, result)
            else:
                claimed.append((task, result))
        running: list[_Job] = []
        try:
            running = self._submit_array(claimed)
            while running:
                for job in [j for j in running if j.job.done()]:
                    running.remove(job)
                    self._finish(outcomes, _collect(job))
                if running:
                    time.sleep(POLL_SECONDS)
        except BaseException:  # Ctrl-C or a submission error: cancel what is queued, free the claims
            for job in running:
                job.job.cancel(check=False)
                _record_failure(job, "SLURM job cancelled: the submitting process was interrupted")
                job.claim.release()
            if not running:
                for _, claim in claimed:
                    claim.release()
            raise
        return [outcomes[t.run_id] for t in tasks]

    def _submit_array(self, claimed: list[tuple[RunTask, Claim]]) -> list[_Job]:
        """One `sbatch --array` for all claimed runs (one scheduler call, one line in squeue)."""
        if not claimed:
            return []
        executor = submitit.AutoExecutor(folder=self.results_dir / SLURM_DIRNAME / "%j", cluster="slurm")
        parameters = {_SUBMITIT_NAMES[k]: v for k, v in self.resources.items()}
        executor.update_parameters(name=self.job_name, slurm_array_parallelism=len(claimed), **parameters)
        submitted_at = utc_now()
        with executor.batch():
            jobs = [executor.submit(execute_task, task) for task, _ in claimed]
        return [
            _Job(task=task, claim=claim, job=job, submitted_at=submitted_at)
            for (task, claim), job in zip(claimed, jobs, strict=True)
        ]

    def _finish(self, outcomes: dict[str, RunOutcome], outcome: RunOutcome) -> None:
        outcomes[outcome.run_id] = outcome
        if self.on_finished:
            self.on_finished(outcome)


def _collect(job: _Job) -> RunOutcome:
    """The job's RunOutcome, or a failure naming the SLURM state (recorded in status.json).

    A failed run whose job SLURM ended (scancel, time limit: SIGTERM reaches the kernel too, so
    the notebook fails with "Kernel died") gets that SLURM state as its reason.
    """
    try:
        try:
            outcome: RunOutcome = job.job.result()
        except (UncompletedJobError, FailedJobError) as exc:
            return _record_failure(job, f"SLURM job {job.job.job_id} ended {_final_state(job)}: {_first_line(exc)}")
        if outcome.state == FAILED:
            state = _final_state(job)
            if state.startswith(SCHEDULER_END_STATES):
                error = f"SLURM job {job.job.job_id} ended {state} ({outcome.error})"
                return _record_failure(job, error, keep_verdict=False)
        return outcome
    finally:
        job.claim.release()


def _final_state(job: _Job, wait_s: float = 20.0) -> str:
    """The job's SLURM state once it is final (sacct lags a few seconds behind the result file)."""
    deadline = time.monotonic() + wait_s
    state = job.job.watcher.get_state(job.job.job_id, mode="force")
    while state.startswith(UNFINISHED_STATES) and time.monotonic() < deadline:
        time.sleep(1.0)
        state = job.job.watcher.get_state(job.job.job_id, mode="force")
    return state


def _record_failure(job: _Job, error: str, keep_verdict: bool = True) -> RunOutcome:
    """Mark the run failed, unless `keep_verdict` and the job itself recorded one in this attempt."""
    task = job.task
    store = RunStore(task.results_dir)
    status = store.status(task.run_id)
    this_attempt = status is not None and str(status.get("started_at")) >= job.submitted_at
    if keep_verdict and this_attempt and status["state"] in (DONE, FAILED):
        return RunOutcome(task.run_id, status["state"], status.get("error"), time.monotonic() - job.started)
    if not this_attempt:
        status = store.mark_running(task.run_id, {k: v for k, v in task.parameters.items() if k != OUTPUT_DIR_PARAM})
    store.mark_finished(status, error=error)
    return RunOutcome(task.run_id, FAILED, error, time.monotonic() - job.started)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
