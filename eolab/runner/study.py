"""Optuna studies over a job notebook: each trial is one papermill run, recorded like a grid run.

A spec with a `study:` section (see `eolab.runner.spec`) is run by `run_study`:

1. The spec is validated (search space against the notebook's parameters, sampler, pruner, storage)
   and the study is created in, or loaded from, its storage; grid points become enqueued trials once.
2. Study workers start: one in this process (`--workers 1`, local), N child processes (local), or
   N SLURM jobs (a job array through submitit). Each worker (`run_trials`) loops: ask the shared
   storage for a trial, run the notebook with the sampled parameters (plus `base`) through
   `LocalExecutor` (claim, `execute_task`, status.json: exactly as a grid run), tell the result.
   Asking happens under a lock in the results folder after counting COMPLETE + PRUNED + RUNNING
   trials, so several workers, or several `ablate` processes and machines sharing the results
   folder and storage, run exactly `n_trials` counted trials between them; failed trials do not
   count and are replaced.
3. A trial is COMPLETE with record.json's `metrics[<study.metric>]`, PRUNED when the notebook
   stopped itself through the pruner (see below), FAIL otherwise. Its run folder gets trial.json,
   so runs.csv/table.csv show `study`, `trial_number`, `trial_state`, `trial_value`.
   Re-running the spec resumes: it continues until `n_trials` trials are COMPLETE or PRUNED.
4. At the end trials.json/trials.csv are exported from the storage (the study summary notebook
   reads those, never the storage), the tables are rebuilt and the summary notebook rendered.

Runs are keyed like grid runs, by a hash of their parameters: a trial whose parameters equal a run
that is already done reuses its record (COMPLETE with the same value) unless `--force`.

Inside the notebook, the trial is known through environment variables set by the worker (never
through notebook parameters, so the storage URL with its password never enters a notebook):
`trial_callbacks()` returns a Lightning callback that reports `health/<intermediate>` to the trial
and raises `optuna.TrialPruned` when the pruner says so; `report_intermediate(value, step)` does
the same without Lightning. Both are no-ops outside a trial, so the notebook runs unchanged by hand.

A trial whose worker died (SIGKILL, SLURM time limit) stays RUNNING in the storage; it is told
FAIL when its worker was on this host and its pid is gone, when the launching process sees its
worker end, or when its heartbeat (refreshed every HEARTBEAT_S) is older than STALE_AFTER_S.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eolab.io import environment, exclusive_lock
from eolab.progress import hms
from eolab.runner.claim import CLAIM_NAME, claim_holder, clear_stale_claim, process_alive
from eolab.runner.execute import DEFAULT_RESULTS_ROOT, check_executor, render_summary
from eolab.runner.faults import EXIT_FAULT, ResultsFolderError
from eolab.runner.notebook import LocalExecutor, check_kernel, eolab_importable
from eolab.runner.pool import exit_reason, start_worker, stop_process
from eolab.runner.preflight import preflight, study_points
from eolab.runner.spec import (
    DEFAULT_STORAGE_NAME,
    OUTPUT_DIR_PARAM,
    AblationSpec,
    SpecError,
    StudySpec,
    build_component,
    expand_storage,
    load_spec,
    make_run_id,
    redact,
    url_secrets,
)
from eolab.runner.storage import (
    DEFAULT_INTERMEDIATE,
    HEALTH_PREFIX,
    INTERMEDIATE_ENV,
    PRUNER_ENV,
    RUN_DIR_ENV,
    STUDY_NAME_ENV,
    TRIAL_NUMBER_ENV,
    StorageLostError,
    load_study,
    open_storage,
)
from eolab.runner.store import (
    DONE,
    PRUNED_MARKER_NAME,
    RECORD_NAME,
    RUNNING,
    TRIAL_NAME,
    RunStore,
    read_json,
    rebuild_table,
    utc_now,
    write_json_atomic,
    write_text_atomic,
)
from eolab.runner.types import SKIPPED, RunTask
from eolab.secrets import STORAGE_ENV, install_redacting_excepthook, known_secrets

if TYPE_CHECKING:
    import optuna

Log = Callable[[str], None]

TRIALS_JSON_NAME = "trials.json"
TRIALS_CSV_NAME = "trials.csv"
STUDY_LOCK_NAME = ".study.lock"
WORKER_LOGS_DIRNAME = "study_workers"

# Trial user attributes written by the runner.
ATTR_RUN_ID = "eolab_run_id"
ATTR_OWNER = "eolab_owner"
ATTR_HEARTBEAT = "eolab_heartbeat"
ATTR_ERROR = "eolab_error"
ATTR_REUSED = "eolab_reused"
GRID_ENQUEUED_ATTR = "eolab_grid_enqueued"

HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
POLL_SECONDS = 0.5
WAIT_POLL_SECONDS = 2.0
SLURM_POLL_SECONDS = 5.0
CLAIM_WAIT_SECONDS = 2.0
MIN_FAILURES_TO_GIVE_UP = 3
"""A launch stops asking after max(n_trials, this) failed trials: the notebook is broken, not unlucky."""

COMPLETE, PRUNED, FAIL, OPTUNA_RUNNING, WAITING = "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"
"""optuna.trial.TrialState names."""
RESEEDED_SAMPLERS = ("tpe", "random", "gp", "cmaes")
"""Seeded samplers get seed + (trials asked so far) before each ask, under the study lock: every
trial draws from its own seed, so concurrent workers and processes never propose the same point,
a resumed study does not replay its first session, and one sequential run stays reproducible.
(QMC is left alone: its seed only scrambles one low-discrepancy sequence shared by all trials.)"""


# --- storage ---------------------------------------------------------------------------------------


def storage_url(study: StudySpec, results_dir: Path) -> str:
    """The storage URL to connect to: the spec's (with ${VAR} expanded) or the default sqlite file."""
    if study.storage is None:
        return f"sqlite:///{Path(results_dir).resolve() / DEFAULT_STORAGE_NAME}"
    return expand_storage(study.storage)


def storage_display(study: StudySpec, results_dir: Path) -> str:
    """What to print or store about the storage: the default sqlite path, or the spec's URL redacted."""
    return storage_url(study, results_dir) if study.storage is None else study.storage_display


# --- the worker loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyJob:
    """What one study worker needs; picklable, and without the storage URL (which reaches workers
    through STORAGE_ENV, so it is never in a pickle under results/ or a SLURM script)."""

    spec: AblationSpec
    results_dir: Path
    launch: str  # id of the run_study call that started the worker
    worker: int  # index of the worker within its launch
    force: bool = False
    time_budget_s: float | None = None  # a SLURM job's time limit: start no trial that cannot finish

    @property
    def study(self) -> StudySpec:
        assert self.spec.study is not None
        return self.spec.study


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as told to the storage."""

    number: int
    run_id: str
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    error: str | None
    seconds: float
    reused: bool = False


def run_trials(job: StudyJob, on_trial: Callable[[TrialOutcome], None] | None = None) -> list[TrialOutcome]:
    """A study worker: ask, run, tell until the study has its trials (or this launch has failed
    max(n_trials, MIN_FAILURES_TO_GIVE_UP) times: failed trials are replaced, but not forever)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = os.environ.get(STORAGE_ENV)
    if not url:
        raise RuntimeError(f"{STORAGE_ENV} is not set: study workers are started by run_study")
    storage = open_storage(url)
    name = job.spec.name
    sampler = build_component("sampler", job.study.sampler)
    study = load_study(name, storage, sampler=sampler, pruner=build_component("pruner", job.study.pruner))
    store = RunStore(job.results_dir)
    started, longest = time.monotonic(), 0.0
    outcomes: list[TrialOutcome] = []
    while True:
        if job.time_budget_s is not None and time.monotonic() - started + longest > job.time_budget_s:
            break
        trial = _ask(study, job, store)
        if trial is None:
            break
        outcome = _run_trial(study, trial, job, store)
        longest = max(longest, outcome.seconds)
        outcomes.append(outcome)
        if on_trial:
            on_trial(outcome)
    return outcomes


def _ask(study: optuna.Study, job: StudyJob, store: RunStore) -> optuna.Trial | None:
    """A new trial, or None once COMPLETE + PRUNED + RUNNING trials reach n_trials. Counting and
    asking happen under a lock, so concurrent workers never overshoot n_trials between them."""
    with exclusive_lock(job.results_dir / STUDY_LOCK_NAME):
        trials = study.get_trials(deepcopy=False)
        if fail_stale_trials(study, store, trials):
            trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        if counts[COMPLETE] + counts[PRUNED] + counts[OPTUNA_RUNNING] >= job.study.n_trials:
            return None
        if _launch_failures(trials, job.launch) >= max(job.study.n_trials, MIN_FAILURES_TO_GIVE_UP):
            return None
        if job.study.sampler.type in RESEEDED_SAMPLERS and job.study.sampler.options.get("seed") is not None:
            asked = sum(t.state.name != WAITING for t in trials)
            study.sampler = build_component("sampler", job.study.sampler, seed_offset=asked)
        trial = study.ask()
        trial.set_user_attr(ATTR_OWNER, _owner(job))
        trial.set_user_attr(ATTR_HEARTBEAT, time.time())
        return trial


def _owner(job: StudyJob) -> dict[str, Any]:
    """Who runs a trial: enough to tell, later and elsewhere, whether that worker is still alive."""
    slurm = os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(), "launch": job.launch, "worker": job.worker,
            **({"slurm_job_id": slurm} if slurm else {})}


def _run_trial(study: optuna.Study, trial: optuna.Trial, job: StudyJob, store: RunStore) -> TrialOutcome:
    """Sample the parameters, run (or reuse) the notebook, tell the verdict, write trial.json."""
    import optuna

    started = time.monotonic()
    run_id = ""
    try:
        params = dict(job.spec.base)
        params.update({key: dim.suggest(trial) for key, dim in job.study.space.items()})
        run_id = make_run_id(params, job.spec.varied_keys)
        trial.set_user_attr(ATTR_RUN_ID, run_id)
        with _heartbeat(trial):
            state, value, error, reused = _execute(study, trial, job, store, run_id, params)
    except BaseException as exc:  # Ctrl-C, SIGTERM, or a storage error: the trial must not stay RUNNING
        error = redact(f"{type(exc).__name__}: {exc or 'interrupted'}", url_secrets(os.environ.get(STORAGE_ENV, "")))
        with contextlib.suppress(Exception):
            trial.set_user_attr(ATTR_ERROR, error[:1000])
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        # a lost database or a results folder that refuses writes fails every further trial too: stop
        if isinstance(exc, Exception) and not isinstance(exc, (SpecError, StorageLostError, ResultsFolderError)):
            return TrialOutcome(trial.number, run_id, FAIL, None, error, time.monotonic() - started)
        raise
    with contextlib.suppress(Exception):  # fails only if another process already failed it as stale
        if error:
            trial.set_user_attr(ATTR_ERROR, error[:1000])
        if reused:
            trial.set_user_attr(ATTR_REUSED, True)
    frozen = study.tell(
        trial,
        value if state == COMPLETE else None,
        state=getattr(optuna.trial.TrialState, state),
        skip_if_finished=True,
    )
    if not reused:
        write_trial_file(store.run_dir(run_id), job.spec.name, frozen, error)
    return TrialOutcome(trial.number, run_id, frozen.state.name, frozen.value, error, time.monotonic() - started, reused)


def _execute(
    study: optuna.Study, trial: optuna.Trial, job: StudyJob, store: RunStore, run_id: str, params: dict[str, Any]
) -> tuple[str, float | None, str | None, bool]:
    """(state, value, error, reused) of a trial's run. A run claimed by another trial with the same
    parameters is waited for, then reused (or, if that one failed, run here)."""
    run_dir = store.run_dir(run_id)
    task = RunTask(
        run_id=run_id,
        notebook=job.spec.notebook,
        results_dir=store.results_dir,
        parameters=dict(params, **{OUTPUT_DIR_PARAM: str(run_dir)}),
        force=job.force,
    )
    while True:
        if not job.force and store.is_done(run_id):
            return (*_reuse(trial, run_dir, job.study.metric), True)
        with _trial_environment(trial.number, run_dir):
            outcome = LocalExecutor().submit([task])[0]
        if outcome.state != SKIPPED:
            return (*_verdict(outcome.state, outcome.error, run_dir, trial.number, job.study.metric), False)
        if not (run_dir / CLAIM_NAME).exists() or store.is_done(run_id):
            continue  # finished meanwhile: reuse it (or, with --force, run it again)
        if not _other_live_trial(study, run_id, trial.number):
            return FAIL, None, f"run {run_id} is claimed by {claim_holder(run_dir)}, which is no trial of this study", False
        while (run_dir / CLAIM_NAME).exists() and not store.is_done(run_id):
            time.sleep(CLAIM_WAIT_SECONDS)


def _other_live_trial(study: optuna.Study, run_id: str, number: int) -> bool:
    """Whether another RUNNING trial of the study runs `run_id` (then it is worth waiting for)."""
    return any(
        t.state.name == OPTUNA_RUNNING and t.number != number and t.user_attrs.get(ATTR_RUN_ID) == run_id
        for t in study.get_trials(deepcopy=False)
    )


def _verdict(
    state: str, error: str | None, run_dir: Path, number: int, metric: str
) -> tuple[str, float | None, str | None]:
    """COMPLETE with the record's metric, PRUNED when the notebook stopped through the pruner
    (its marker file, or a TrialPruned error), else FAIL with the error."""
    if state == DONE:
        return _metric_value(run_dir, metric)
    marker = read_json(run_dir / PRUNED_MARKER_NAME)
    if (marker and marker.get("number") == number) or (error or "").startswith("TrialPruned"):
        return PRUNED, None, None
    return FAIL, None, error


def _metric_value(run_dir: Path, metric: str) -> tuple[str, float | None, str | None]:
    record = read_json(run_dir / RECORD_NAME) or {}
    value = (record.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return FAIL, None, f"{RECORD_NAME} has no finite metric `{metric}` (got {value!r}); see study.metric"
    return COMPLETE, float(value), None


def _reuse(trial: optuna.Trial, run_dir: Path, metric: str) -> tuple[str, float | None, str | None]:
    """A done run with these parameters: its value, and its trial's intermediate values (so the
    pruner compares against it as against any completed trial)."""
    earlier = read_json(run_dir / TRIAL_NAME) or {}
    for step, value in sorted((earlier.get("intermediate") or {}).items(), key=lambda kv: int(kv[0])):
        trial.report(float(value), int(step))
    return _metric_value(run_dir, metric)


@contextlib.contextmanager
def _trial_environment(number: int, run_dir: Path) -> Iterator[None]:
    """Tell the kernel (which inherits os.environ) which trial it is and where its run folder is."""
    with environment(**{TRIAL_NUMBER_ENV: str(number), RUN_DIR_ENV: str(run_dir)}):
        yield


@contextlib.contextmanager
def _heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """Refresh the trial's heartbeat attribute while it runs, from a daemon thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is harmless; STALE_AFTER_S is long
                trial.set_user_attr(ATTR_HEARTBEAT, time.time())

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def write_trial_file(run_dir: Path, study_name: str, trial: optuna.trial.FrozenTrial, error: str | None) -> None:
    """trial.json: what the run was as a trial (the tables read it; a reusing trial reads
    its intermediate values)."""
    write_json_atomic(
        run_dir / TRIAL_NAME,
        {
            "study": study_name,
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "params": trial.params,
            "intermediate": {str(step): v for step, v in sorted(trial.intermediate_values.items())},
            "error": None if error is None else redact(error, known_secrets()),
            "ended_at": utc_now(),
        },
    )


# --- stale trials ----------------------------------------------------------------------------------


def fail_stale_trials(study: optuna.Study, store: RunStore, trials: list[Any] | None = None) -> int:
    """Tell FAIL to RUNNING trials whose worker is gone; return how many."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    failed = 0
    for trial in trials:
        if trial.state.name == OPTUNA_RUNNING:
            reason = _stale_reason(trial)
            if reason:
                failed += _fail_trial(study, store, trial, f"worker gone: {reason}")
    return failed


def _stale_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    owner = trial.user_attrs.get(ATTR_OWNER) or {}
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not process_alive(owner["pid"]):
        return f"pid {owner['pid']} on {owner['host']} no longer exists"
    start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
    beat = trial.user_attrs.get(ATTR_HEARTBEAT, start)
    if time.time() - float(beat) > STALE_AFTER_S:
        return f"no heartbeat for {time.time() - float(beat):.0f} s"
    return None


def _fail_trial(study: optuna.Study, store: RunStore, trial: optuna.trial.FrozenTrial, reason: str) -> int:
    """Tell one RUNNING trial FAIL and record its run as failed, if its worker had started it."""
    import optuna

    try:
        # optuna has no public call to set an attribute on a trial another process asked for
        study._storage.set_trial_user_attr(trial._trial_id, ATTR_ERROR, reason)
        frozen = study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    except Exception:  # another process failed or finished it first
        return 0
    run_id = trial.user_attrs.get(ATTR_RUN_ID)
    owner = trial.user_attrs.get(ATTR_OWNER) or {}
    if run_id:
        status = store.status(run_id)
        if status and status.get("state") == RUNNING and status.get("pid") == owner.get("pid"):
            store.mark_finished(status, error=reason)
            write_trial_file(store.run_dir(run_id), study.study_name, frozen, reason)
        clear_stale_claim(store.run_dir(run_id))  # the dead worker's claim file goes with its trial
    return 1


def fail_worker_trials(study: optuna.Study, store: RunStore, launch: str, worker: int, reason: str) -> int:
    """Tell FAIL to the RUNNING trials of one worker that ended (killed, or its SLURM job ended)."""
    failed = 0
    for trial in study.get_trials(deepcopy=False):
        owner = trial.user_attrs.get(ATTR_OWNER) or {}
        if trial.state.name == OPTUNA_RUNNING and owner.get("launch") == launch and owner.get("worker") == worker:
            failed += _fail_trial(study, store, trial, reason)
    return failed


# --- run_study: the launching side ------------------------------------------------------------------


@dataclass
class StudySummary:
    """What `run_study` left in the storage; `ok` once n_trials are COMPLETE or PRUNED."""

    name: str
    results_dir: Path
    storage: str  # redacted
    n_trials: int
    counts: dict[str, int]
    best: dict[str, Any] | None
    failed_trials: dict[int, str]
    table_rows: int
    summary_html: Path | None = None
    summary_error: str | None = None

    @property
    def finished(self) -> int:
        return self.counts.get(COMPLETE, 0) + self.counts.get(PRUNED, 0)

    @property
    def ok(self) -> bool:
        return self.finished >= self.n_trials and self.summary_error is None


def run_study(
    spec: AblationSpec | str | Path,
    executor_kind: str = "local",
    workers: int = 1,
    results_root: str | Path | None = None,
    force: bool = False,
    log: Log = print,
) -> StudySummary:
    """Run (or resume) the spec's study until n_trials trials are COMPLETE or PRUNED.

    `workers` study workers ask the storage for trials concurrently: in this process (local, 1),
    as child processes (local, N), or as SLURM jobs (slurm, N). `force` re-executes notebooks
    whose parameters match a run that is already done, instead of reusing its record.
    """
    import optuna

    spec = spec if isinstance(spec, AblationSpec) else load_spec(spec)
    if spec.study is None:
        raise SpecError(f"{spec.path}: no `study` section; grid specs run with run_ablation")
    check_executor(executor_kind, workers)
    preflight(spec, study_points(spec)).raise_if_failed(spec)  # bad bounds or choices: before anything is written
    store = RunStore(Path(results_root or DEFAULT_RESULTS_ROOT) / spec.name)
    store.results_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(spec.study, store.results_dir)
    storage = open_storage(url, where=f"{spec.path}: ")
    check_kernel()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _create_or_load(spec, storage)
    store.write_spec(_spec_json(spec, store.results_dir))
    _enqueue_grid(spec, study, store.results_dir)

    launch = uuid.uuid4().hex[:12]
    fail_stale_trials(study, store)
    progress = StudyProgress(study, spec.study.n_trials, log)
    log(f"{spec.name}: study of {spec.study.n_trials} trials, {progress.header()} -> {store.results_dir}")
    log(f"  storage {storage_display(spec.study, store.results_dir)}")
    job = StudyJob(spec=_without_storage(spec), results_dir=store.results_dir, launch=launch, worker=0, force=force)
    try:
        with _study_environment(url, spec):
            _drive(job, executor_kind, workers, study, store, progress, log)
    finally:
        export_trials(study, spec, store.results_dir)
    progress.poll()
    return _summarize(spec, study, store, storage_display(spec.study, store.results_dir))


def _drive(
    job: StudyJob, executor_kind: str, workers: int, study: Any, store: RunStore, progress: StudyProgress, log: Log
) -> None:
    """Run rounds of workers until n_trials trials are COMPLETE or PRUNED. When every trial still
    missing is RUNNING elsewhere (another `ablate`, another machine), wait for those: if one fails,
    this process runs its replacement, so `ablate` returns with the study complete."""
    n_trials = job.study.n_trials
    next_index = 0
    while True:
        fail_stale_trials(study, store)
        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        finished, running = counts[COMPLETE] + counts[PRUNED], counts[OPTUNA_RUNNING]
        if finished >= n_trials:
            return
        if _launch_failures(trials, job.launch) >= max(n_trials, MIN_FAILURES_TO_GIVE_UP):
            log(f"{_launch_failures(trials, job.launch)} trials failed in this run: giving up (see runs.csv)")
            return
        free = n_trials - finished - running
        if free <= 0:
            _wait_for_running(study, store, progress)
            continue
        round_job = dataclasses.replace(job, worker=next_index)
        count = 1 if executor_kind == "local" and workers == 1 else min(workers, free)
        if executor_kind == "slurm":
            next_index = _run_slurm_workers(round_job, count, study, store, progress, log)
        elif workers == 1:
            run_trials(round_job, on_trial=lambda _outcome: progress.poll())
            next_index += 1
        else:
            next_index = _run_local_workers(round_job, count, study, store, progress, log)
        after = study.get_trials(deepcopy=False)
        if len(after) == len(trials) and not any(t.state.name == OPTUNA_RUNNING for t in after):
            log("the study workers asked for no trial (time budget?); run the spec again to continue")
            return


def _launch_failures(trials: list[Any], launch: str) -> int:
    """FAIL trials asked by one run_study call (its workers give up after too many)."""
    return sum(t.state.name == FAIL and (t.user_attrs.get(ATTR_OWNER) or {}).get("launch") == launch for t in trials)


def _wait_for_running(study: Any, store: RunStore, progress: StudyProgress) -> None:
    """Poll until the set of RUNNING trials changes (one finished, failed, or went stale)."""
    def running() -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False) if t.state.name == OPTUNA_RUNNING}

    before = running()
    while before and running() == before:
        time.sleep(WAIT_POLL_SECONDS)
        fail_stale_trials(study, store)
        progress.poll()


def _create_or_load(spec: AblationSpec, storage: Any) -> optuna.Study:
    """Create the study named after the spec, or load it to resume; a changed direction is an error
    (the trials so far were ranked the other way)."""
    import optuna

    assert spec.study is not None
    study = optuna.create_study(
        study_name=spec.name, storage=storage, direction=spec.study.direction, load_if_exists=True
    )
    existing = study.direction.name.lower()
    if existing != spec.study.direction:
        raise SpecError(
            f"{spec.path}: study {spec.name!r} in its storage was created to {existing}, but `study.direction` "
            f"says {spec.study.direction}; use another `name` (or storage) for a new study"
        )
    return study


def _spec_json(spec: AblationSpec, results_dir: Path) -> dict[str, Any]:
    """spec.json with the storage as it may be shown (the default file's path, or redacted)."""
    assert spec.study is not None
    resolved = spec.to_json()
    resolved["study"]["storage"] = storage_display(spec.study, results_dir)
    resolved["study"]["study_name"] = spec.name
    resolved["enqueued"] = spec.grid_points() if spec.grid else []
    return resolved


def _enqueue_grid(spec: AblationSpec, study: optuna.Study, results_dir: Path) -> None:
    """Grid points become the study's first trials, once per study (a resumed study keeps them)."""
    if not spec.grid:
        return
    with exclusive_lock(results_dir / STUDY_LOCK_NAME):
        if study.user_attrs.get(GRID_ENQUEUED_ATTR):
            return
        for point in spec.grid_points():
            study.enqueue_trial(point, skip_if_exists=True)
        study.set_user_attr(GRID_ENQUEUED_ATTR, True)


def _without_storage(spec: AblationSpec) -> AblationSpec:
    """The spec as shipped to workers: no storage URL (it may hold a literal password)."""
    assert spec.study is not None
    return dataclasses.replace(spec, study=dataclasses.replace(spec.study, storage=None))


@contextlib.contextmanager
def _study_environment(url: str, spec: AblationSpec) -> Iterator[None]:
    """What workers (child processes and SLURM jobs inherit the environment) and kernels need."""
    assert spec.study is not None
    values = {
        STORAGE_ENV: url,
        STUDY_NAME_ENV: spec.name,
        PRUNER_ENV: json.dumps(spec.study.pruner.to_json()),
        INTERMEDIATE_ENV: spec.study.intermediate or DEFAULT_INTERMEDIATE,
    }
    with environment(**values):
        yield


@dataclass
class StudyProgress:
    """Prints one line per trial that finished since it started: verdict, counts, best, ETA."""

    study: Any
    n_trials: int
    log: Log = print
    started: float = field(default_factory=time.monotonic)
    seen: set[int] = field(default_factory=set)
    finished_here: int = 0

    def __post_init__(self) -> None:
        self.seen = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}

    def header(self) -> str:
        counts = Counter(t.state.name for t in self.study.get_trials(deepcopy=False))
        return f"{counts[COMPLETE]} complete, {counts[PRUNED]} pruned, {counts[FAIL]} failed so far"

    def poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        done = counts[COMPLETE] + counts[PRUNED]
        for trial in sorted(trials, key=lambda t: t.number):
            if not trial.state.is_finished() or trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            self.finished_here += 1
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.finished_here * max(self.n_trials - done, 0)
            self.log(
                f"[{done}/{self.n_trials}] {trial.state.name:<8} trial {trial.number} "
                f"{trial.user_attrs.get(ATTR_RUN_ID, '')} ({_trial_detail(trial)})"
                f" | complete {counts[COMPLETE]}, pruned {counts[PRUNED]}, failed {counts[FAIL]}"
                f" | best {_best_text(self.study)} | elapsed {hms(elapsed)} | ETA {hms(eta)}"
            )


def _trial_detail(trial: Any) -> str:
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start
        else 0.0
    )
    if trial.state.name == COMPLETE:
        what = f"value {trial.value:.4g}" + (", reused" if trial.user_attrs.get(ATTR_REUSED) else "")
    elif trial.state.name == PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        what = f"at step {step}: {trial.intermediate_values[step]:.4g}"
    else:
        what = str(trial.user_attrs.get(ATTR_ERROR, ""))[:120]
    return f"{seconds:.1f}s; {what}" if what else f"{seconds:.1f}s"


def _best_text(study: Any) -> str:
    best = _best(study)
    return "-" if best is None else f"{best['value']:.4g} (trial {best['number']})"


def _best(study: Any) -> dict[str, Any] | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == COMPLETE and t.value is not None]
    if not complete:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    best = pick(complete, key=lambda t: t.value)
    return {"number": best.number, "value": best.value, "params": best.params,
            "run_id": best.user_attrs.get(ATTR_RUN_ID)}


def _summarize(spec: AblationSpec, study: Any, store: RunStore, storage: str) -> StudySummary:
    assert spec.study is not None
    trials = study.get_trials(deepcopy=False)
    tables = rebuild_table(store.results_dir)
    summary = StudySummary(
        name=spec.name,
        results_dir=store.results_dir,
        storage=storage,
        n_trials=spec.study.n_trials,
        counts=dict(Counter(t.state.name for t in trials)),
        best=_best(study),
        failed_trials={t.number: str(t.user_attrs.get(ATTR_ERROR, "")) for t in trials if t.state.name == FAIL},
        table_rows=len(tables.runs),
    )
    if spec.summary:
        summary.summary_html, summary.summary_error = render_summary(spec.summary, store.results_dir)
    return summary


# --- workers: local processes ----------------------------------------------------------------------


@dataclass
class _WorkerProcess:
    job: StudyJob
    process: subprocess.Popen[bytes]
    log_path: Path


def _start_worker(job: StudyJob, workers: int) -> _WorkerProcess:
    """A child process running `run_trials(job)`, in its own session (a terminal's Ctrl-C reaches
    only the parent, which then stops the workers in order); output to study_workers/."""
    log_path = job.results_dir / WORKER_LOGS_DIRNAME / f"{job.launch}-{job.worker}.log"
    code = "import sys; from eolab.runner.study import worker_main; sys.exit(worker_main())"
    with eolab_importable():
        process = start_worker(["-c", code], pickle.dumps(job), log_path, workers)
    return _WorkerProcess(job=job, process=process, log_path=log_path)


def worker_main() -> int:
    """Entry point of a local study worker: the pickled StudyJob on stdin; exit 0 when the study
    needs no more trials from it, 130 when interrupted (SIGTERM; its trial is told FAIL)."""
    from eolab.runner.worker import become_worker

    become_worker()
    install_redacting_excepthook()  # its log lies in the results folder
    job: StudyJob = pickle.loads(sys.stdin.buffer.read())
    try:
        for outcome in run_trials(job):
            print(f"trial {outcome.number} {outcome.state} {outcome.run_id} {outcome.error or ''}", flush=True)
    except KeyboardInterrupt:
        return 130
    except (StorageLostError, ResultsFolderError) as exc:  # one line for worker.log and the driver, no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAULT
    return 0


def _run_local_workers(
    job: StudyJob, workers: int, study: Any, store: RunStore, progress: StudyProgress, log: Log
) -> int:
    """Keep `workers` child workers (indices from job.worker on) busy until they stop; one that dies
    (SIGKILL, OOM) has its trial told FAIL and is replaced while the study still needs trials (at
    most n_trials replacements). Returns the next unused worker index."""
    assert job.spec.study is not None
    running = [_start_worker(dataclasses.replace(job, worker=job.worker + i), workers) for i in range(workers)]
    next_index, replacements = job.worker + workers, 0
    try:
        while running:
            for worker in [w for w in running if w.process.poll() is not None]:
                running.remove(worker)
                if worker.process.returncode != 0:
                    reason = exit_reason(worker.process.returncode, worker.log_path, who="study worker")
                    failed = fail_worker_trials(study, store, job.launch, worker.job.worker, reason)
                    log(f"study worker {worker.job.worker}: {reason}; {failed} trial(s) told FAIL")
                    if _needs_trials(study, job.spec.study.n_trials) and replacements < job.spec.study.n_trials:
                        running.append(_start_worker(dataclasses.replace(job, worker=next_index), workers))
                        next_index, replacements = next_index + 1, replacements + 1
            progress.poll()
            time.sleep(POLL_SECONDS if running else 0)
    except BaseException:  # Ctrl-C: stop workers (each tells its trial FAIL), then mop up
        for worker in running:
            stop_process(worker.process)
            fail_worker_trials(study, store, job.launch, worker.job.worker, "interrupted: the study was stopped")
        raise
    return next_index


def _needs_trials(study: Any, n_trials: int) -> bool:
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return counts[COMPLETE] + counts[PRUNED] < n_trials


# --- workers: SLURM jobs ---------------------------------------------------------------------------


def _run_slurm_workers(
    job: StudyJob, workers: int, study: Any, store: RunStore, progress: StudyProgress, log: Log
) -> int:
    """`workers` SLURM jobs (one array) each run `run_trials`; the spec's `resources` apply per job,
    and a job starts no trial it cannot finish within its `timeout_min`. A job that SLURM ends has
    its RUNNING trial told FAIL here; the storage URL reaches the jobs through the environment,
    which sbatch exports by default."""
    from eolab.runner.slurm import (
        array_executor,  # imports submitit, an optional dependency
    )

    resources = job.spec.resources
    budget = resources.get("timeout_min")
    job = dataclasses.replace(job, time_budget_s=budget * 60.0 if budget else None)
    executor = array_executor(store.results_dir, f"{job.spec.name}-study", resources, workers)
    with executor.batch():
        indices = range(job.worker, job.worker + workers)
        jobs = {i: executor.submit(run_trials, dataclasses.replace(job, worker=i)) for i in indices}
    log(f"submitted {workers} SLURM study worker(s): {', '.join(j.job_id for j in jobs.values())}")
    try:
        while jobs:
            for index, slurm_job in [(i, j) for i, j in jobs.items() if j.done()]:
                del jobs[index]
                try:
                    slurm_job.result()
                except Exception as exc:
                    reason = f"SLURM job {slurm_job.job_id} ended {slurm_job.state}: {str(exc).strip()[:300]}"
                    failed = fail_worker_trials(study, store, job.launch, index, redact(reason))
                    log(f"study worker {index}: {redact(reason)}; {failed} trial(s) told FAIL")
            progress.poll()
            if jobs:
                time.sleep(SLURM_POLL_SECONDS)
    except BaseException:
        for index, slurm_job in jobs.items():
            slurm_job.cancel(check=False)
            fail_worker_trials(study, store, job.launch, index, "SLURM job cancelled: the study was stopped")
        raise
    return job.worker + workers


# --- results files -----------------------------------------------------------------------------------


def export_trials(study: Any, spec: AblationSpec, results_dir: Path) -> list[dict[str, Any]]:
    """trials.json (every trial with its distributions, so the summary can rebuild the study in
    memory without the storage or its password) and trials.csv (one flat row per trial)."""
    import optuna
    import pandas as pd

    assert spec.study is not None
    rows = []
    for trial in study.get_trials(deepcopy=False):
        duration = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "params": trial.params,
            "distributions": {
                k: json.loads(optuna.distributions.distribution_to_json(d)) for k, d in trial.distributions.items()
            },
            "intermediate": {str(s): v for s, v in sorted(trial.intermediate_values.items())},
            "run_id": trial.user_attrs.get(ATTR_RUN_ID),
            "reused": bool(trial.user_attrs.get(ATTR_REUSED, False)),
            "error": redact(trial.user_attrs[ATTR_ERROR], known_secrets()) if trial.user_attrs.get(ATTR_ERROR) else None,
            "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
            "duration_s": duration,
        })
    write_json_atomic(
        results_dir / TRIALS_JSON_NAME,
        {"study": spec.name, "direction": spec.study.direction, "metric": spec.study.metric,
         "intermediate": spec.study.intermediate, "n_trials": spec.study.n_trials, "trials": rows},
    )
    flat = pd.DataFrame(
        [{k: v for k, v in r.items() if k not in ("params", "distributions", "intermediate")} | r["params"]
         for r in rows]
    )
    write_text_atomic(results_dir / TRIALS_CSV_NAME, flat.to_csv(index=False))
    return rows


# --- inside the notebook -------------------------------------------------------------------------------

# --- small helpers ----------------------------------------------------------------------------------------




# --- command line (`python -m eolab ablate SPEC` with a `study:` section) ---------------------------------


def describe_study(spec: AblationSpec, results_dir: Path) -> list[str]:
    """--dry-run lines: objective, sampler, pruner, storage (redacted), base, space, progress."""
    study = spec.study
    assert study is not None
    lines = [
        f"{spec.name}: study of {study.n_trials} trials of {spec.notebook} -> {results_dir}",
        f"  objective {study.direction} `{study.metric}` (record.json metrics); n_trials counts COMPLETE + PRUNED",
        f"  sampler   {study.sampler.describe()}",
        f"  pruner    {study.pruner.describe()}"
        + (f" on `{HEALTH_PREFIX}{study.intermediate}`" if study.intermediate else ""),
        f"  storage   {storage_display(study, results_dir)}" + (" (default)" if study.storage is None else ""),
    ]
    if spec.base:
        lines.append("  base      " + " ".join(f"{k}={v!r}" for k, v in spec.base.items()))
    width = max(len(k) for k in study.space)
    for i, (key, dim) in enumerate(study.space.items()):
        lines.append(f"  {'space' if i == 0 else '':<9} {key:<{width}}  {dim.describe()}")
    for i, point in enumerate(spec.grid_points() if spec.grid else []):
        lines.append(f"  {'enqueued' if i == 0 else '':<9} {point}")
    lines.append(f"  progress  {_stored_progress(spec, results_dir)}")
    return lines


def _stored_progress(spec: AblationSpec, results_dir: Path) -> str:
    """Trial counts if the study exists; opening a default sqlite file that is not there would
    create it, so a dry run only looks where something already is."""
    assert spec.study is not None
    if spec.study.storage is None and not (results_dir / DEFAULT_STORAGE_NAME).is_file():
        return "not started"
    try:
        study = load_study(spec.name, open_storage(storage_url(spec.study, results_dir)))
    except KeyError:
        return "not started"
    except SpecError as exc:  # already redacted
        return f"unknown: {exc}"
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{counts[s]} {s.lower()}" for s in (COMPLETE, PRUNED, FAIL, OPTUNA_RUNNING))


def cli_ablate(spec: AblationSpec, results_root: Path, workers: int, executor: str, force: bool,
               dry_run: bool, only: list[str] | None) -> int:
    """`ablate` for a study spec; returns the exit code (0 done, 1 study incomplete or summary failed)."""
    results_dir = Path(results_root) / spec.name
    if only:
        raise SpecError(f"{spec.path}: --only selects runs of a grid; a study has no fixed runs")
    if dry_run:
        print("\n".join(describe_study(spec, results_dir)))
        checks = preflight(spec, study_points(spec))
        print("\n".join(checks.lines()))
        return 0 if checks.ok else 2
    try:
        summary = run_study(spec, executor_kind=executor, workers=workers, results_root=results_root, force=force)
    except StorageLostError as exc:  # the database went away and stayed away: said in one line
        print(f"error: {exc}; the study resumes from the storage when it is back (run the spec again)", file=sys.stderr)
        return EXIT_FAULT
    counts = summary.counts
    print(
        f"{summary.name}: {summary.finished}/{summary.n_trials} trials finished ({counts.get(COMPLETE, 0)} complete, "
        f"{counts.get(PRUNED, 0)} pruned), {counts.get(FAIL, 0)} failed; runs.csv has {summary.table_rows} runs "
        f"in {summary.results_dir}"
    )
    if summary.best:
        print(f"best: trial {summary.best['number']} {spec.study.metric if spec.study else ''} = "
              f"{summary.best['value']:.4g} with {summary.best['params']} ({summary.best['run_id']})")
    if summary.summary_html:
        print(f"summary: {summary.summary_html}")
    for number, error in summary.failed_trials.items():
        print(f"  trial {number} failed: {error}", file=sys.stderr)
    if summary.finished < summary.n_trials:
        print(f"study incomplete: {summary.finished}/{summary.n_trials}; run the spec again to continue",
              file=sys.stderr)
    if summary.summary_error:
        print(f"summary notebook failed: {summary.summary_error}", file=sys.stderr)
    return 0 if summary.ok else 1
