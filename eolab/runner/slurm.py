"""`SlurmExecutor`: one SLURM job per run, submitted as a job array through submitit.

Each job calls `execute_task` on a compute node, so the run folder (status.json, record.json, the
executed notebook) looks exactly as after a local run; the results folder must therefore be on a
file system the nodes share. The submitting process claims every run before submitting it and
waits for the array; a job that SLURM ends itself (TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL...)
never records a verdict, so the submitter records the run as failed with that reason.
submitit's files (sbatch scripts, pickles, job logs) go to results/<name>/slurm/.

Resources per run come from the spec's optional `resources` section (see `eolab.runner.spec`).

Several tasks per run (`tasks_per_node` x `nodes` > 1: multi-GPU or multi-node DDP) run each run
as one srun step of that many tasks. A Jupyter kernel cannot be one of several srun-launched ranks
by itself, so the job splits the run: task 0 executes the notebook exactly as a one-task job does
(status.json, executed notebook, record.json, all from rank 0), and its kernel's `fit` joins the
job's process group as rank 0 (Lightning's SLURM environment, which the kernel inherits); every
other task trains the same configuration (the run's parameters over the notebook's defaults) as
rank 1..N-1 through `eolab.launch.worker_main`, in a scratch folder it removes afterwards. The
notebook must therefore be one whose training is `eolab.pipeline.pretrain` of a PretrainConfig
built from its parameters (notebooks/pretrain.ipynb). srun runs with --kill-on-bad-exit, so a
rank that crashes ends the others instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from eolab.runner.claim import Claim
from eolab.runner.notebook import claim_task, execute_task
from eolab.runner.spec import OUTPUT_DIR_PARAM
from eolab.runner.store import DONE, FAILED, RunStore, utc_now
from eolab.runner.types import RunOutcome, RunTask

SLURM_DIRNAME = "slurm"
POLL_SECONDS = 2.0
SCHEDULER_END_STATES = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE", "BOOT_FAIL")
"""sacct states of a job that SLURM (or a user's scancel) ended, rather than the job itself."""
UNFINISHED_STATES = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED", "UNKNOWN")

# spec `resources` key -> submitit AutoExecutor parameter
SUBMITIT_NAMES = {
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "mem_gb": "mem_gb",
    "timeout_min": "timeout_min",
    "partition": "slurm_partition",
    "tasks_per_node": "tasks_per_node",
    "nodes": "nodes",
}


def array_executor(results_dir: Path, name: str, resources: dict[str, Any], parallelism: int,
                   **extra: Any) -> submitit.AutoExecutor:
    """A submitit executor for one job array under ``<results_dir>/slurm/<job id>``, with the spec's
    ``resources`` (its names mapped to submitit's) and at most ``parallelism`` jobs at once. The one
    way the runner submits to SLURM: runs here, study workers too."""
    executor = submitit.AutoExecutor(folder=results_dir / SLURM_DIRNAME / "%j", cluster="slurm")
    parameters = {SUBMITIT_NAMES[k]: v for k, v in resources.items()}
    executor.update_parameters(name=name, slurm_array_parallelism=parallelism, **parameters, **extra)
    return executor


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
        function, extra = execute_task, {}
        if self.tasks > 1:  # one rank per task: the notebook on rank 0, training workers on the others
            function, extra = execute_distributed_task, {"slurm_srun_args": ["--kill-on-bad-exit=1"]}
        executor = array_executor(self.results_dir, self.job_name, self.resources, len(claimed), **extra)
        submitted_at = utc_now()
        with executor.batch():
            jobs = [executor.submit(function, task) for task, _ in claimed]
        return [
            _Job(task=task, claim=claim, job=job, submitted_at=submitted_at)
            for (task, claim), job in zip(claimed, jobs, strict=True)
        ]

    @property
    def tasks(self) -> int:
        """Processes per run: tasks_per_node x nodes."""
        return int(self.resources.get("tasks_per_node", 1)) * int(self.resources.get("nodes", 1))

    def _finish(self, outcomes: dict[str, RunOutcome], outcome: RunOutcome) -> None:
        outcomes[outcome.run_id] = outcome
        if self.on_finished:
            self.on_finished(outcome)


def execute_distributed_task(task: RunTask) -> RunOutcome | None:
    """One task of a multi-task run (see the module docstring): rank 0 executes the notebook and
    returns its outcome (a failed run, recorded in status.json, also fails the task, so that srun
    ends the other ranks); any other rank trains as a worker and returns None."""
    rank = submitit.JobEnvironment().global_rank
    if rank == 0:
        outcome = execute_task(task)
        if outcome.state == FAILED:  # exit non-zero: srun --kill-on-bad-exit ends the ranks waiting for this one
            raise RuntimeError(f"run {task.run_id} failed on rank 0: {outcome.error}")
        return outcome
    # The training stack runs in a child process: the runner itself never imports it.
    parameters = {k: v for k, v in task.parameters.items() if k != OUTPUT_DIR_PARAM} | {
        "output_dir": task.parameters[OUTPUT_DIR_PARAM]}
    proc = subprocess.run([sys.executable, "-m", "eolab.launch", "-", "--worker-of", str(task.notebook)],
                          input=json.dumps(parameters), text=True, stderr=subprocess.PIPE)
    sys.stderr.write(proc.stderr)  # the worker's log stays in the task's SLURM log
    if proc.returncode:  # raise the worker's own error, so the run's error names it (see _worker_error)
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"training worker exited with code {proc.returncode}")
    return None


def _collect(job: _Job) -> RunOutcome:
    """The job's RunOutcome, or a failure naming the SLURM state (recorded in status.json).

    A failed run whose job SLURM ended (scancel, time limit: SIGTERM reaches the kernel too, so
    the notebook fails with "Kernel died") gets that SLURM state as its reason. In a multi-task
    run a training worker (rank > 0) that raised is named too: srun then ended rank 0, whose
    notebook only saw its kernel die.
    """
    try:
        outcome = _outcome(job)
        if outcome.state == FAILED and job.job.num_tasks > 1 and (worker := _worker_error(job)):
            outcome = _record_failure(job, f"{outcome.error}; {worker}", keep_verdict=False)
        return outcome
    finally:
        job.claim.release()


def _outcome(job: _Job) -> RunOutcome:
    try:
        # Rank 0's result: the one that executed the notebook (a one-task job has only it).
        outcome: RunOutcome = job.job.results()[0]
    except (UncompletedJobError, FailedJobError) as exc:
        return _record_failure(job, f"SLURM job {job.job.job_id} ended {_final_state(job)}: {_first_line(exc)}")
    if outcome.state == FAILED:
        state = _final_state(job)
        if state.startswith(SCHEDULER_END_STATES):
            error = f"SLURM job {job.job.job_id} ended {state} ({outcome.error})"
            return _record_failure(job, error, keep_verdict=False)
    return outcome


def _worker_error(job: _Job) -> str | None:
    """The exception of the first training worker (rank > 0) that raised one, as "rank N: Error: ..."."""
    for rank in range(1, job.job.num_tasks):
        exc = job.job.task(rank).exception()
        if isinstance(exc, FailedJobError):
            lines = [line.strip() for line in str(exc).splitlines()]
            errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line)]
            return f"rank {rank}: {errors[-1] if errors else _first_line(exc)}"
    return None


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
