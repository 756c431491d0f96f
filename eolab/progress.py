"""What a training run shows while it runs: step of total, loss, images/s and time left.

Two views of the same numbers, chosen by the run's ``progress`` parameter:

- ``bar``: Lightning's progress bar (``StepProgressBar``, a ``TQDMProgressBar`` over optimiser
  steps, loss and images/s in its postfix). In a terminal it is a tqdm line, in JupyterLab a widget.
- ``log``: no bar; the run's log file only (``run.log`` in the run folder, ``RunLog``): one line every
  few seconds such as ``2026-12-01T22:01:02+00:00 step 12/40 epoch 0 loss 0.8123 img/s 45.2 eta 0:00:31``,
  plus a line per phase (data, training, probe, record). ``python -m eolab ablate`` prints its path when
  a run starts and shows its last line in the ablation's progress line; ``tail -f`` follows it.
- ``none``: neither.
- ``auto`` (default): ``$EOLAB_PROGRESS`` when set (the ablation runner sets ``log``, so executed
  notebooks carry no bar output), ``log`` under CI (``$CI``), ``bar`` in a Jupyter kernel or a
  terminal, else ``log``. ``bar`` writes ``run.log`` too.

This module is light (no torch, no Lightning: the ablation runner imports it); the Lightning
callbacks are in ``eolab.train_progress``.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

PROGRESS_MODES = ("auto", "bar", "log", "none")
PROGRESS_ENV = "EOLAB_PROGRESS"
RUN_LOG_NAME = "run.log"


def resolve_progress(mode: str) -> str:
    """``bar``, ``log`` or ``none`` for a run's ``progress`` parameter (see the module docstring)."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"parameter 'progress' must be one of {PROGRESS_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in ("bar", "log", "none"):
        return env
    if os.environ.get("CI"):
        return "log"
    if "ipykernel" in sys.modules or sys.stdout.isatty():
        return "bar"
    return "log"


def hms(seconds: float | None) -> str:
    """``H:MM:SS``, or ``?`` for an unknown duration."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def log_line(path: str | Path | None, text: str) -> None:
    """Append one timestamped line to a run log (a phase: data, training, probe...)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{_now()} {text}\n")


def format_step(v: dict) -> str:
    """``step 12/40 epoch 0 loss 0.8123 img/s 45.2 eta 0:00:31``: a run log's progress line."""
    return (f"step {v['step']}/{v['total']} epoch {v['epoch']} loss {v['loss']:.4f} "
            f"img/s {v['img_s']:.1f} eta {hms(v['eta_s'])}")
