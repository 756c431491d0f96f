"""The ablation's progress while its runs execute: done / running / failed / left, time left, and
each running run's own progress (the last line of its ``run.log``: step of total, loss, images/s).

Three modes (``AblationProgress(mode=...)``):

- ``bar``: a tqdm line at the bottom of the terminal, redrawn every second by a thread; event lines
  (a run starts, with the path of its log; a run ends) are printed above it.
- ``lines``: the event lines only, one per event (for a log file, a pipe, a non-terminal stdout).
- ``quiet``: only the line per finished run (CI; ``--quiet`` or ``$CI``).

``auto`` picks ``quiet`` under ``$CI``, ``bar`` when stdout is a terminal and lines go to ``print``,
else ``lines``. Everything is read from the run folders (status.json, run.log), so the same view
works for every executor (in-process, process pool, SLURM jobs on a shared file system).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from eolab.progress import RUN_LOG_NAME, hms
from eolab.runner.store import FAILED, RUNNING, STATUS_NAME, read_json

MODES = ("auto", "bar", "lines", "quiet")
Log = Callable[[str], None]


def resolve_mode(mode: str, log: Log) -> str:
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("CI"):
        return "quiet"
    if log is print and sys.stdout.isatty():
        return "bar"
    return "lines"


def last_line(path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of a (growing) text file, without its timestamp; '' if none."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    stamp, _, text = lines[-1].partition(" ")
    return text if stamp[:4].isdigit() and "T" in stamp else lines[-1]


class AblationProgress:
    """Counts runs as they finish (``on_finished``, the executor's callback) and, while started
    (``with progress:``), watches the run folders for runs that start and for their logs."""

    def __init__(self, name: str, run_dirs: dict[str, Path], workers: int = 1, log: Log = print,
                 mode: str = "auto", interval: float = 1.0):
        self.name, self.run_dirs, self.workers, self.log = name, dict(run_dirs), max(1, workers), log
        self.mode, self.interval = resolve_mode(mode, log), interval
        self.total = len(run_dirs)
        self.started = time.monotonic()
        self._wall_start = time.time()
        self.finished: dict[str, tuple[str, float]] = {}  # run id -> (state, seconds)
        self.running: dict[str, float] = {}  # run id -> monotonic time it was seen starting
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None

    # --- counts -------------------------------------------------------------------------------
    @property
    def failed(self) -> int:
        return sum(state == FAILED for state, _ in self.finished.values())

    @property
    def left(self) -> int:
        return self.total - len(self.finished) - len(self.running)

    def eta_s(self) -> float | None:
        """Time left: the mean duration of the runs finished here, for every run not finished,
        less what the running ones have already spent, spread over the workers. None before a
        run has finished."""
        durations = [s for state, s in self.finished.values() if state != "skipped"]
        if not durations:
            return None
        per_run = sum(durations) / len(durations)
        now = time.monotonic()
        running = sum(max(0.0, per_run - (now - t)) for t in self.running.values())
        return (running + self.left * per_run) / self.workers

    def status_text(self) -> str:
        text = (f"{len(self.finished)}/{self.total} done | {len(self.running)} running | {self.failed} failed | "
                f"{self.left} left | elapsed {hms(time.monotonic() - self.started)} | ETA {hms(self.eta_s())}")
        for run_id in list(self.running):
            line = last_line(self.run_dirs[run_id] / RUN_LOG_NAME)
            text += f" | {run_id.rsplit('-', 1)[-1]}: {line or 'starting'}"  # the hash, as --only takes it
        return text

    # --- events -------------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            self.log(line)

    def on_finished(self, outcome) -> None:
        with self._lock:
            self.running.pop(outcome.run_id, None)
            self.finished[outcome.run_id] = (outcome.state, outcome.seconds)
            detail = f"{outcome.error}" if outcome.state == "skipped" else f"{outcome.seconds:.1f}s"
            n = len(self.finished)
            line = (f"[{n}/{self.total}] {outcome.state:<6} {outcome.run_id} ({detail})"
                    f" | failed {self.failed} | elapsed {hms(time.monotonic() - self.started)} | ETA {hms(self.eta_s())}")
            self._emit(line)
            if self._bar is not None:
                self._bar.n = len(self.finished)  # drawn with the new counts, never the old ones
                self._refresh()

    def poll(self) -> None:
        """Look for runs that started since the last poll (status.json written by this batch)."""
        for run_id, run_dir in self.run_dirs.items():
            if run_id in self.running or run_id in self.finished:
                continue
            status = read_json(run_dir / STATUS_NAME) or {}
            if status.get("state") != RUNNING or not _after(status.get("started_at"), self._wall_start - 1):
                continue
            with self._lock:
                if run_id in self.finished:
                    continue
                self.running[run_id] = time.monotonic()
                if self.mode != "quiet":
                    self._emit(f"start  {run_id}  progress: {run_dir / RUN_LOG_NAME}")

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
            if self._bar is not None:
                with self._lock:
                    self._refresh()

    @staticmethod
    def _columns() -> int:
        return shutil.get_terminal_size((120, 24)).columns

    def _refresh(self) -> None:
        """Redraw the line, its text cut to the terminal's width (a longer line would wrap and
        leave a copy of itself on every redraw)."""
        self._bar.ncols = self._columns()
        room = self._bar.ncols - len(self.name) - len(f": 100%| {len(self.finished)}/{self.total} runs, ") - 14
        text = self.status_text().split(" | ", 1)[1]  # "n/total done" is the bar's own count
        self._bar.set_postfix_str(text if len(text) <= room else text[: max(0, room - 1)] + "…", refresh=True)

    def __enter__(self) -> AblationProgress:
        if self.mode == "bar":
            from tqdm.auto import tqdm

            # a terminal that reports no size (a pty without one) gets 120 x 24, not a hidden bar
            self._bar = tqdm(total=self.total, desc=self.name, unit="run", ncols=self._columns(), file=sys.stdout,
                             nrows=shutil.get_terminal_size((120, 24)).lines,
                             bar_format="{desc}: {percentage:3.0f}%|{bar:12}| {n_fmt}/{total_fmt} runs{postfix}")
            self._refresh()
        if self.total:
            self._thread = threading.Thread(target=self._watch, name="ablation-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _after(iso: str | None, t: float) -> bool:
    try:
        return datetime.fromisoformat(iso).timestamp() >= t if iso else False
    except ValueError:
        return False


def run_dirs_of(tasks: Sequence) -> dict[str, Path]:
    """run id -> run folder of the executor's tasks."""
    return {task.run_id: task.run_dir for task in tasks}
