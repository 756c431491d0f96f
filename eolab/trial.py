"""The Optuna trial a notebook runs as, seen from inside the notebook's kernel.

The study driver (``eolab.runner.study``) starts each trial's notebook with environment variables
(never notebook parameters, so the storage URL with its password never enters a notebook):
``trial_callbacks()`` returns a Lightning callback that reports ``health/<intermediate>`` to the
trial and raises ``optuna.TrialPruned`` when the pruner says so; ``report_intermediate(value, step)``
does the same without Lightning. Both are no-ops outside a trial, so the notebook runs unchanged by
hand. This module is small on purpose: a training kernel imports it, never the study driver.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eolab.runner.spec import Component, build_component, redact, url_secrets
from eolab.runner.storage import (
    DEFAULT_INTERMEDIATE,
    HEALTH_PREFIX,
    INTERMEDIATE_ENV,
    PRUNER_ENV,
    RUN_DIR_ENV,
    STUDY_NAME_ENV,
    TRIAL_NUMBER_ENV,
    load_study,
    open_storage,
)
from eolab.runner.store import PRUNED_MARKER_NAME, utc_now, write_json_atomic
from eolab.secrets import STORAGE_ENV

if TYPE_CHECKING:
    import optuna

_TRIAL_CACHE: dict[tuple[str, ...], Any] = {}


def _trial_env() -> tuple[str, str, str, int] | None:
    """(storage, study name, pruner json, trial number) when running inside a trial, else None."""
    values = [os.environ.get(k) for k in (STORAGE_ENV, STUDY_NAME_ENV, PRUNER_ENV, TRIAL_NUMBER_ENV)]
    if not all(values):
        return None
    storage, name, pruner, number = values
    assert storage and name and pruner and number
    return storage, name, pruner, int(number)


def current_trial() -> optuna.Trial | None:
    """The optuna Trial this notebook runs as (None outside a study), connected to the storage.

    Storage errors are re-raised without the URL's password: the notebook's outputs are kept.
    """
    env = _trial_env()
    if env is None:
        return None
    key = (env[0], env[1], env[2], str(env[3]))
    if key not in _TRIAL_CACHE:
        import optuna

        storage_url_, name, pruner_json, number = env
        try:
            storage = open_storage(storage_url_)
            options = json.loads(pruner_json)
            pruner = build_component("pruner", Component(type=options.pop("type"), options=options))
            study = load_study(name, storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner)
            study_id = storage.get_study_id_from_name(name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}", url_secrets(storage_url_))
            raise RuntimeError(f"cannot reach trial {number} of study {name!r}: {message}") from None
        _TRIAL_CACHE[key] = optuna.trial.Trial(study, trial_id)
    return _TRIAL_CACHE[key]


def report_intermediate(value: float, step: int) -> None:
    """Report an intermediate objective value of this trial; raise optuna.TrialPruned when the
    study's pruner stops it (after leaving a marker in the run folder, so the runner records the
    trial as PRUNED whatever the notebook does with the exception). No-op outside a trial."""
    import optuna

    trial = current_trial()
    if trial is None:
        return
    value = float(value)
    trial.report(value, int(step))
    if not trial.should_prune():
        return
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        write_json_atomic(Path(run_dir) / PRUNED_MARKER_NAME,
                          {"number": trial.number, "step": int(step), "value": value, "at": utc_now()})
    metric = os.environ.get(INTERMEDIATE_ENV, DEFAULT_INTERMEDIATE)
    raise optuna.TrialPruned(f"trial {trial.number} pruned at step {step} ({metric} = {value:.4g})")


def trial_callbacks(metric: str | None = None) -> list[Any]:
    """Callbacks for `lightning.Trainer(callbacks=...)`: empty outside a study trial; inside one,
    a callback reporting `health/<metric>` (default: the spec's `study.intermediate`, else
    knn_accuracy) to the trial after each training batch that logged a new value, and stopping
    the run with optuna.TrialPruned when the pruner says so."""
    if current_trial() is None:
        return []
    name = metric or os.environ.get(INTERMEDIATE_ENV) or DEFAULT_INTERMEDIATE
    return [_reporter_class()(name)]


_REPORTER_CLASS: list[type] = []


def _reporter_class() -> type:
    """The Lightning callback class, defined on first use so that the runner never imports lightning."""
    if _REPORTER_CLASS:
        return _REPORTER_CLASS[0]
    import lightning
    import optuna

    class TrialReporter(lightning.Callback):
        """Reports `health/<metric>` to the trial; in multi-process training rank 0 reports and
        its pruning decision is broadcast, so every rank stops together."""

        def __init__(self, metric: str) -> None:
            self.metric = metric
            self.key = f"{HEALTH_PREFIX}{metric}"
            self.last: float | None = None

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            value = trainer.callback_metrics.get(self.key)
            if value is None:
                return
            value = float(value)
            if self.last is not None and value == self.last:
                return  # not logged anew since the last report (callback_metrics keeps the last value)
            self.last = value
            pruned: optuna.TrialPruned | None = None
            if trainer.is_global_zero:
                try:
                    report_intermediate(value, trainer.global_step)
                except optuna.TrialPruned as exc:
                    pruned = exc
            if trainer.strategy.broadcast(pruned is not None, src=0):
                raise pruned or optuna.TrialPruned(f"pruned at step {trainer.global_step} (decided on rank 0)")

    _REPORTER_CLASS.append(TrialReporter)
    return TrialReporter
