"""The one Lightning module that trains any proxy task, and the ``fit`` entry point.

A proxy task is an ``nn.Module`` whose forward takes a batch dict and returns a dict of tensors with
at least ``loss``. This module owns everything around it: input normalisation (checked against the
batch's band names and unit), EO-safe augmentation, the optimiser and schedule, and logging.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .data.schema import collate
from .data.stats import Normalization


def dihedral_augment(image: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random flips and 90-degree rotations per sample: label- and spectrum-preserving for nadir
    imagery (no colour jitter: band ratios carry the physics)."""
    b = image.shape[0]
    k = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.randint(0, 2, (b,), generator=generator).bool()
    out = torch.empty_like(image)
    for r in range(4):
        for f in (False, True):
            sel = ((k == r) & (flip == f)).nonzero().flatten().to(image.device)
            if len(sel):
                x = image[sel]
                x = x.flip(-1) if f else x
                out[sel] = torch.rot90(x, r, dims=(-2, -1))
    return out


class PretrainModule(L.LightningModule):
    def __init__(
        self,
        task: nn.Module,
        normalization: Normalization,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 100,
        max_steps: int = 1000,
        augment: bool = True,
    ):
        super().__init__()
        self.task, self.normalization = task, normalization
        self.lr, self.weight_decay, self.warmup_steps, self.max_steps, self.augment = (
            lr, weight_decay, warmup_steps, max_steps, augment)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        image = self.normalization(batch["image"], batch["bands"], batch["unit"], where="training batch")
        if self.augment:
            image = dihedral_augment(image)
        out = self.task({**batch, "image": image})
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, prog_bar=False, on_step=True,
                      batch_size=image.shape[0])
        return out["loss"]

    def configure_optimizers(self):
        # No weight decay on biases, norms, tokens and position parameters (MAE/timm convention).
        decay, no_decay = [], []
        for name, p in self.task.named_parameters():
            (no_decay if p.ndim < 2 or "token" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, betas=(0.9, 0.95),
        )

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class History(L.Callback):
    """Keeps every step's logged values (loss curve) in memory and as CSV; cheap and logger-free."""

    def __init__(self, path: Path | None = None):
        self.rows: list[dict] = []
        self.path = path
        self._t0 = 0.0

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch, "time_s": time.perf_counter() - self._t0}
        row.update({k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)

    def on_train_end(self, trainer, pl_module):
        if self.path is not None:
            self.frame().to_csv(self.path, index=False)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def fit(
    task: nn.Module,
    dataset,
    normalization: Normalization,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.05,
    warmup_frac: float = 0.05,
    seed: int = 0,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str = "32-true",
    history_path: Path | None = None,
) -> pd.DataFrame:
    """Train ``task`` on ``dataset``; returns the per-step history (loss, lr, time).

    Device-agnostic: ``accelerator``/``devices``/``strategy``/``precision`` go straight to Lightning
    (e.g. "gpu", 4, "ddp", "bf16-mixed"); the defaults run on whatever the machine has.
    """
    L.seed_everything(seed, workers=True)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    if len(loader) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the pre-training set ({len(dataset)} patches)")
    max_steps = epochs * len(loader)
    module = PretrainModule(task, normalization, lr=lr, weight_decay=weight_decay,
                            warmup_steps=max(1, int(warmup_frac * max_steps)), max_steps=max_steps)
    history = History(history_path)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=devices, strategy=strategy, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[history], log_every_n_steps=1, deterministic=False,
    )
    trainer.fit(module, loader)
    return history.frame()
