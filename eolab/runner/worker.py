"""Child process of `PoolExecutor`: `python -m eolab.runner.worker < task.json` executes one run.

The verdict goes to the run's status.json (via `execute_task`), not to stdout, so the parent reads
the same file it would read after a crash. Exit code 0 means status.json holds this worker's
verdict; SIGTERM is turned into KeyboardInterrupt so an interrupted run is recorded as failed.
A worker whose parent dies stops too: the parent held the run's claim, which is now stale, so
another `ablate` may take the run over.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from types import FrameType

from eolab.runner.faults import EXIT_FAULT, ResultsFolderError
from eolab.runner.notebook import execute_task
from eolab.runner.types import RunTask


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def become_worker() -> None:
    """What every worker process does first (run workers here, study workers too): SIGTERM becomes
    KeyboardInterrupt, so an interrupted run or trial is recorded as such, and the worker stops once
    its parent is gone."""
    signal.signal(signal.SIGTERM, _interrupt)
    _stop_when_orphaned(os.getppid())


def _stop_when_orphaned(parent_pid: int, poll_s: float = 1.0) -> None:
    """SIGTERM ourselves (recorded as an interrupted run) once the parent is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> int:
    """Read the task from stdin, execute it, and exit 0 once its verdict is recorded."""
    become_worker()
    task = RunTask.from_json(json.load(sys.stdin))
    try:
        execute_task(task)
    except KeyboardInterrupt:
        return 130  # execute_task recorded the interruption
    except ResultsFolderError as exc:  # the parent stops the batch on this exit code
        print(exc, file=sys.stderr)
        return EXIT_FAULT
    return 0


if __name__ == "__main__":
    sys.exit(main())
