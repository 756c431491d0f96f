"""What executors exchange: a run to execute (``RunTask``) and how it ended (``RunOutcome``).

A leaf of the runner: every executor and the ablation driver import these, and these import
nothing of the runner but the run store's folder layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eolab.runner.store import RunStore

SKIPPED = "skipped"
"""Outcome state (never written to status.json) of a run another process claimed or finished."""

Log = Callable[[str], None]


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
