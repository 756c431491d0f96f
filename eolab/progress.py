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
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

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
    if seconds is None or seconds != seconds or seconds == float("inf"):
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


class _Meter:
    """Step of total, last loss, images/s and time left, measured since training (re)started."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.step0 = 0
        self.images = 0
        self.last_step = -1

    def start(self, trainer) -> None:
        self.t0, self.step0, self.images = time.perf_counter(), trainer.global_step, 0
        self.last_step = trainer.global_step

    def batch(self, trainer, batch) -> bool:
        """Count a micro-batch's images; True when it completed an optimiser step."""
        image = batch.get("image") if isinstance(batch, dict) else None
        self.images += (len(image) if image is not None else 0) * max(1, trainer.world_size)
        if trainer.global_step == self.last_step:
            return False
        self.last_step = trainer.global_step
        return True

    def values(self, trainer) -> dict:
        elapsed = time.perf_counter() - self.t0
        step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
        done = step - self.step0
        loss = trainer.callback_metrics.get("train/loss")
        return {
            "step": step,
            "total": total,
            "epoch": trainer.current_epoch,
            "loss": float(loss) if loss is not None else float("nan"),
            "img_s": self.images / elapsed if elapsed > 0 else 0.0,
            "eta_s": elapsed / done * (total - step) if done > 0 else None,
        }


def format_step(v: dict) -> str:
    """``step 12/40 epoch 0 loss 0.8123 img/s 45.2 eta 0:00:31``: a run log's progress line."""
    return (f"step {v['step']}/{v['total']} epoch {v['epoch']} loss {v['loss']:.4f} "
            f"img/s {v['img_s']:.1f} eta {hms(v['eta_s'])}")


class RunLog(L.Callback):
    """Writes the run's progress to ``path`` (``run.log``): a line at the first optimiser step, then
    at most one every ``every_s`` seconds, and one at the last step. Rank 0 only."""

    def __init__(self, path: str | Path, every_s: float = 5.0):
        self.path, self.every_s = Path(path), every_s
        self.meter = _Meter()
        self._last_write = 0.0

    def on_train_start(self, trainer, pl_module):
        self.meter.start(trainer)
        if trainer.is_global_zero:
            log_line(self.path, f"training: {int(trainer.estimated_stepping_batches)} optimiser steps"
                                f"{f' (resumed at step {trainer.global_step})' if trainer.global_step else ''}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.meter.batch(trainer, batch) or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        last = trainer.global_step >= trainer.estimated_stepping_batches
        if last or now - self._last_write >= self.every_s or trainer.global_step == self.meter.step0 + 1:
            self._last_write = now
            log_line(self.path, format_step(self.meter.values(trainer)))

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            v = self.meter.values(trainer)
            log_line(self.path, f"training done: {v['step']} steps, {v['img_s']:.1f} img/s")


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar over the whole run's optimiser steps (not one epoch's batches), with the
    loss and images/s in its postfix; tqdm shows elapsed and remaining time. In a terminal it
    redraws every step (tqdm rate-limits); elsewhere (a file, a captured stream) rarely."""

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.meter = _Meter()
        interactive = "ipykernel" in sys.modules or sys.stdout.isatty()
        self._mininterval = 0.2 if interactive else 30.0

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.mininterval = self._mininterval
        return bar

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self.meter.start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=int(trainer.estimated_stepping_batches))
        bar.unit = "step"
        bar.initial = bar.n = trainer.global_step
        bar.set_description("pre-training")

    def on_train_epoch_start(self, trainer, *_):
        self.train_progress_bar.set_description(f"pre-training (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.meter.batch(trainer, batch) or self.train_progress_bar is None:
            return
        bar = self.train_progress_bar
        if self.is_enabled and (trainer.global_step % self.refresh_rate == 0 or trainer.global_step >= bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh() if trainer.global_step >= bar.total else bar.update(0)

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer, pl_module) -> dict:
        v = self.meter.values(trainer)
        return {"loss": f"{v['loss']:.4f}", "img/s": f"{v['img_s']:.1f}"}


def progress_callbacks(mode: str, log_path: str | Path | None) -> list[L.Callback]:
    """The callbacks of a resolved ``progress`` mode: the bar (``bar``) and the run log (``bar``, ``log``)."""
    callbacks: list[L.Callback] = []
    if mode == "bar":
        callbacks.append(StepProgressBar())
    if mode in ("bar", "log") and log_path is not None:
        callbacks.append(RunLog(log_path))
    return callbacks
