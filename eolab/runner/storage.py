"""Optuna study storages: open one (errors without the password) and load a study from it. Shared by
the study driver and the in-notebook trial client (``eolab.trial``), which must not import the driver;
and the environment variables through which the driver tells a trial's kernel which trial it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eolab.runner.spec import (
    JOURNAL_SCHEME,
    SpecError,
    journal_path,
    redact,
    storage_kind,
    url_secrets,
)

if TYPE_CHECKING:
    import optuna

# Environment of a study worker and of the notebook kernels it starts.
# STORAGE_ENV (the storage URL, a secret) is defined beside the redaction that knows to hide it.
STUDY_NAME_ENV = "EOLAB_STUDY_NAME"
PRUNER_ENV = "EOLAB_STUDY_PRUNER"
INTERMEDIATE_ENV = "EOLAB_STUDY_INTERMEDIATE"
TRIAL_NUMBER_ENV = "EOLAB_TRIAL_NUMBER"
RUN_DIR_ENV = "EOLAB_RUN_DIR"

DEFAULT_INTERMEDIATE = "knn_accuracy"
HEALTH_PREFIX = "health/"
"""The training code logs label-free health metrics as `health/<name>` (e.g. health/knn_accuracy)."""

SQLITE_BUSY_TIMEOUT_S = 120
"""Workers, kernels and heartbeats write to one sqlite file; wait this long for its lock."""


def open_storage(url: str, where: str = "") -> optuna.storages.BaseStorage:
    """Connect to (and create the tables of) a storage; errors become SpecError without the password.

    sqlite gets a long busy timeout: several workers and their kernels write to it at once.
    """
    import optuna

    try:
        if url.startswith(JOURNAL_SCHEME):
            backend = optuna.storages.journal.JournalFileBackend(str(journal_path(url)))
            return optuna.storages.JournalStorage(backend)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if storage_kind(url) == "sqlite":
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy, driver and file errors: all mean "this storage is unusable"
        message = redact(f"{type(exc).__name__}: {exc}", url_secrets(url))
        raise SpecError(f"{where}cannot open study storage {redact(url)}: {message}") from None


def load_study(name: str, storage: Any, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
