"""Optuna study storages: open one (errors without the password) and load a study from it. Shared by
the study driver and the in-notebook trial client (``eolab.trial``), which must not import the driver;
and the environment variables through which the driver tells a trial's kernel which trial it is."""

from __future__ import annotations

import time
from collections.abc import Callable
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
        return _retrying_storage_class()(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy, driver and file errors: all mean "this storage is unusable"
        message = redact(f"{type(exc).__name__}: {exc}", url_secrets(url))
        raise SpecError(f"{where}cannot open study storage {redact(url)}: {message}") from None


STORAGE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits between tries of a storage call whose database connection was lost (about 30 s in all:
a database restart, a network blip); after the last one the study stops with StorageLostError."""


class StorageLostError(RuntimeError):
    """The study's database stayed unreachable through every retry; names the storage (redacted)."""


def _connection_lost(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a lost or refused database connection.
    optuna reports one during a commit as StorageInternalError ('invalid data in the commit'),
    which is misleading: the cause chain tells."""
    import sqlalchemy.exc

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_RETRYING_CLASS: list[type] = []


def _retrying_storage_class() -> type:
    """optuna's RDBStorage whose storage calls survive a lost database connection: retried after
    STORAGE_RETRY_DELAYS_S, then StorageLostError naming the storage, password redacted. A
    subclass, so optuna still wraps it in its trial cache as it does an RDBStorage."""
    if _RETRYING_CLASS:
        return _RETRYING_CLASS[0]
    import inspect
    import threading

    import optuna

    local = threading.local()  # a retried call that calls another storage method retries once, not twice

    def retrying(name: str, method: Callable) -> Callable:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(local, "inside", False):
                return method(self, *args, **kwargs)
            local.inside = True
            try:
                started, delays = time.monotonic(), list(STORAGE_RETRY_DELAYS_S)
                while True:
                    try:
                        return method(self, *args, **kwargs)
                    except Exception as exc:
                        if not _connection_lost(exc):
                            raise
                        if not delays:
                            url = self.url
                            detail = redact(f"{type(exc).__name__}: {exc}".splitlines()[0], url_secrets(url))
                            cause = exc.__cause__ or exc.__context__
                            if cause is not None:
                                detail += redact(f" (from {type(cause).__name__}: {cause})".splitlines()[0], url_secrets(url))
                            raise StorageLostError(
                                f"lost the connection to the study storage {redact(url)}: {name} failed "
                                f"{len(STORAGE_RETRY_DELAYS_S) + 1} times over {time.monotonic() - started:.0f} s; "
                                f"last error: {detail[:500]}") from None
                        time.sleep(delays.pop(0))
            finally:
                local.inside = False

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        return call

    base = optuna.storages.RDBStorage
    # every storage call optuna (and its trial cache, which uses private ones) makes: the plain
    # functions of RDBStorage and of the storage interface
    names = [n for cls in (optuna.storages.BaseStorage, base) for n, v in vars(cls).items()
             if inspect.isfunction(v) and not n.startswith("__") and n != "_fill_storage_url_template"]
    methods = {n: retrying(n, getattr(base, n)) for n in dict.fromkeys(names)}
    cls = type("RetryingRDBStorage", (base,), {**methods, "__module__": __name__})
    _RETRYING_CLASS.append(cls)
    return cls


def __getattr__(name: str) -> Any:
    """The retrying storage class is built on first use (it imports optuna); a pickled storage
    finds it here by name."""
    if name == "RetryingRDBStorage":
        return _retrying_storage_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_study(name: str, storage: Any, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
