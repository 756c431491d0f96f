"""Faults of the machine a batch meets: a results folder that refuses writes (full, read-only,
quota), Ctrl-C and SIGTERM. Each stops the batch with one line; what finished stays in the tables
and a re-run does the rest."""

from __future__ import annotations

import errno
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from papermill.exceptions import PapermillExecutionError

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO})

"""errno values of a results folder the machine does not let us write (full, read-only, quota, I/O)."""


class ResultsFolderError(RuntimeError):
    """The results folder cannot be written (full disk, read-only, quota): the batch must stop,
    since every further run would fail the same way."""

    def __init__(self, results_dir: Path, exc: OSError | str, run_id: str | None = None):
        self.results_dir, self.run_id = results_dir, run_id
        detail = exc if isinstance(exc, str) else os_error_text(exc)
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


def os_error_text(exc: OSError) -> str:
    """'No space left on device (errno 28) at <file>': one line, without a traceback."""
    text = exc.strerror or str(exc) or type(exc).__name__
    code = f" (errno {exc.errno})" if exc.errno else ""
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{text}{code}{where}"


def is_storage_fault(exc: BaseException) -> bool:
    """Whether an exception says that the disk refuses writes (full, read-only, quota, I/O error)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def kernel_storage_fault(exc: PapermillExecutionError) -> str | None:
    """The notebook's error text when it failed because the disk refused a write, else None."""
    match = _ERRNO_IN_TEXT.search(exc.evalue or "")
    if match and int(match.group(1)) in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return f"{exc.ename}: {exc.evalue}"
    return None
