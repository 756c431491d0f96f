"""The Lightning callbacks behind a run's ``progress`` parameter (see ``eolab.progress``): the run
log (``RunLog``) and Lightning's progress bar over the run's optimiser steps (``StepProgressBar``)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from .progress import format_step, log_line


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
        columns, rows = shutil.get_terminal_size((120, 24))  # a pty without a size would hide the bar
        bar.nrows = rows
        if not bar.dynamic_ncols or not bar.ncols:
            bar.ncols = columns
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


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tip:" not in message and not message.startswith("Seed set to")  # the seed is in the run's record


_LIBRARY_NOISE = [
    # Lightning's own code calls a deprecated torch pytree check; nothing a user can act on
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # printed wherever srun is installed; eolab's SLURM executor starts its ranks with srun itself
    r".*The `srun` command is available on your system but is not used.*",
]


def quiet_library_noise() -> None:
    """Keep what a user watches (the terminal, a notebook cell) to eolab's progress and real warnings:
    drop Lightning's advertising tip and warnings that library code raises about other library code."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for message in _LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message)


def progress_callbacks(mode: str, log_path: str | Path | None) -> list[L.Callback]:
    """The callbacks of a resolved ``progress`` mode: the bar (``bar``) and the run log (``bar``, ``log``)."""
    callbacks: list[L.Callback] = []
    if mode == "bar":
        callbacks.append(StepProgressBar())
    if mode in ("bar", "log") and log_path is not None:
        callbacks.append(RunLog(log_path))
    return callbacks
