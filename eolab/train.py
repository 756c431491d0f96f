"""The one Lightning module that trains any proxy task, and the ``fit`` entry point.

A proxy task is an ``nn.Module`` whose forward takes a batch dict and returns a dict of tensors with
at least ``loss``. This module owns everything around it: input normalisation (checked against the
batch's band names and unit), EO-safe augmentation, the optimiser and schedule, and logging.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .data.samplers import SeededBatchSampler
from .data.schema import collate
from .data.stats import Normalization
from .data.stream import PackedDataset
from .models.vit import ViTEncoder
from .tasks.augment import Augment, dihedral
from .tasks.common import encoder_context
from .train_progress import StepProgressBar, progress_callbacks, quiet_library_noise


def dihedral_augment(image: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random flips and 90-degree rotations per sample (kept for callers of the first version;
    the training module now takes any named set from ``eolab.tasks.augment``)."""
    return dihedral(image, generator)


def _health(embedding: Tensor) -> dict[str, Tensor]:
    """Label-free health of a batch of pooled embeddings (B, D): spread and effective rank."""
    x = embedding.float()
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    return {"embedding_std": x.std(0).mean(), "effective_rank": torch.exp(-(p * p.log()).sum())}


class PretrainModule(L.LightningModule):
    def __init__(
        self,
        task: nn.Module,
        normalization: Normalization,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 100,
        max_steps: int = 1000,
        augment: str = "dihedral",
        health_every: int = 50,
    ):
        super().__init__()
        self.task, self.normalization = task, normalization
        self.lr, self.weight_decay, self.warmup_steps, self.max_steps = lr, weight_decay, warmup_steps, max_steps
        self.augment, self.health_every = Augment(augment), health_every
        self.fresh_health: dict[str, float] = {}  # health values of the current step, for History
        # The caller's module while a sharded copy trains: held outside the module tree (a list),
        # so that it is neither trained, moved nor saved in checkpoints.
        self._plain_task: list[nn.Module] = []

    def configure_model(self) -> None:
        """Under FSDP (``fit(strategy="fsdp")``) train a sharded copy of the task (FSDP2
        ``fully_shard``: every transformer block, every encoder, then the whole task); the caller's
        module stays plain and receives the trained weights when training ends (``on_fit_end``).
        Parameter names, and so checkpoint keys, are the same as without sharding."""
        if not isinstance(self.trainer.strategy, ModelParallelStrategy) or self._plain_task:
            return
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = self.trainer.strategy.device_mesh["data_parallel"]
        self._plain_task = [self.task]
        self.task = copy.deepcopy(self.task)
        for module in _blocks(self.task):
            fully_shard(module, mesh=mesh)
        for module in self.task.modules():
            if isinstance(module, ViTEncoder):  # its embed()/tokens() run outside forward (health, k-NN)
                fully_shard(module, mesh=mesh)
                for method in ("embed", "tokens"):
                    register_fsdp_forward_method(module, method)
        fully_shard(self.task, mesh=mesh)

    def on_fit_end(self) -> None:
        if self._plain_task:
            # Every rank takes part in gathering the full weights, and every rank keeps them.
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            full = get_model_state_dict(self.task, options=StateDictOptions(full_state_dict=True))
            self._plain_task[0].load_state_dict({k: v.detach().cpu() for k, v in full.items()})

    def log_health(self, values: dict[str, float]) -> None:
        """Log health values (``health/<name>``, visible to callbacks such as Optuna's reporter).
        Loggers get them from ``HealthToLoggers`` at the step they were computed only (Lightning
        would repeat a value logged once at every later step)."""
        self.fresh_health.update(values)
        self.log_dict({f"health/{k}": v for k, v in values.items()}, on_step=True, batch_size=1, logger=False)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        image = self.normalization(batch["image"], batch["bands"], batch["unit"], where="training batch")
        image = self.augment(image)
        batch = {**batch, "image": image}
        out = self.task(batch)
        b = image.shape[0]
        # Under DDP each process sees its share of the batch: log the mean over processes.
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, batch_size=b,
                      sync_dist=self.trainer.world_size > 1)
        if self.health_every and self.global_step % self.health_every == 0:
            # Collapse shows in the embeddings, not in the loss: watch them every few steps.
            with torch.no_grad():
                emb = self.task.encoder.embed(image, pool="mean", **encoder_context(batch))
            health = {k: float(v) for k, v in _health(emb).items()}
            self.log_health(health)
        return out["loss"]

    def configure_optimizers(self):
        # No weight decay on biases, norms, tokens and position parameters (MAE/timm convention).
        decay, no_decay = [], []
        for name, p in self.task.named_parameters():
            if not p.requires_grad:  # e.g. a momentum encoder, updated by moving average
                continue
            (no_decay if p.ndim < 2 or "token" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = adamw(groups, lr=self.lr, betas=(0.9, 0.95), device=(decay or no_decay)[0].device)

        def schedule(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


ADAMW_IMPLS = ("auto", "fused", "foreach", "for-loop")
"""AdamW's implementations in torch: one fused kernel over all parameters, one kernel per operation
over lists of tensors (foreach), or a Python loop over parameters. Same update, same state dict."""


def adamw_impl(device: torch.device | str) -> str:
    """The implementation ``adamw(impl="auto")`` uses on ``device``: "fused" on CUDA (one kernel
    launch for all parameters) and on CPU (one vectorised pass instead of some ten operations per
    parameter: a fixed 3.8 ms less per micro-64 step, one thread; the step 1.008x and 1.026x in
    paired runs against foreach on the 2026-12-04 machine, results/throughput), "foreach" elsewhere."""
    return "fused" if torch.device(device).type in ("cuda", "cpu") else "foreach"


def adamw(params, lr: float, betas: tuple[float, float], device: torch.device | str, impl: str = "auto",
          weight_decay: float = 0.01) -> torch.optim.AdamW:
    """torch's AdamW over ``params`` (tensors or parameter groups) in the implementation ``impl``
    (``ADAMW_IMPLS``; "auto": the fastest measured for ``device``, ``adamw_impl``)."""
    if impl not in ADAMW_IMPLS:
        raise ValueError(f"AdamW implementation must be one of {ADAMW_IMPLS}, got {impl!r}")
    impl = adamw_impl(device) if impl == "auto" else impl
    kind = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[impl]
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **kind)


class KnnProbe(L.Callback):
    """A cheap in-loop probe: k-nearest-neighbour accuracy of frozen embeddings on a fixed labelled
    split (EuroSAT), every ``every`` steps, logged as ``health/knn_accuracy``.

    It tracks whether the representation is improving while training runs, and is the intermediate
    value that Optuna pruners use. Weighted cosine k-NN (as in DINO's evaluation) needs no fitting.
    """

    def __init__(self, train: dict, test: dict, normalization: Normalization, every: int = 100, k: int = 20,
                 pool: str = "mean", batch_size: int = 256):
        """``train``/``test``: dicts with image, bands, unit and label (a fixed labelled split)."""
        # Normalised once (bands selected by name, checked), not at every probe.
        self.train = {"x": normalization(train["image"], train["bands"], train["unit"], where="k-NN probe data"),
                      "label": train["label"]}
        self.test = {"x": normalization(test["image"], test["bands"], test["unit"], where="k-NN probe data"),
                     "label": test["label"]}
        self.every, self.k, self.pool, self.batch_size = every, k, pool, batch_size
        self.classes = int(max(train["label"].max(), test["label"].max())) + 1
        self._last_step = -1

    @torch.no_grad()
    def _embed(self, encoder: nn.Module, data: dict, device) -> Tensor:
        x = data["x"]
        out = [encoder.embed(x[i : i + self.batch_size].to(device), pool=self.pool)
               for i in range(0, len(x), self.batch_size)]
        return nn.functional.normalize(torch.cat(out).float(), dim=1)

    @torch.no_grad()
    def accuracy(self, encoder: nn.Module) -> float:
        device = next(encoder.parameters()).device
        was_training = encoder.training
        encoder.eval()
        train, test = self._embed(encoder, self.train, device), self._embed(encoder, self.test, device)
        encoder.train(was_training)
        sim = test @ train.T  # (N_test, N_train) cosine similarities
        k = min(self.k, train.shape[0])
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(test.shape[0], self.classes, device=device)
        votes.scatter_add_(1, self.train["label"].to(device)[idx], (top / 0.07).exp())
        return float((votes.argmax(1).cpu() == self.test["label"]).float().mean())

    def on_train_start(self, trainer, pl_module):
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # already counts this batch's optimiser step
        if step == self._last_step:  # a micro-batch of gradient accumulation: no update yet
            return
        self._last_step = step
        if step == 1 or step % self.every == 0 or step == trainer.estimated_stepping_batches:
            pl_module.log_health({"knn_accuracy": self.accuracy(pl_module.task.encoder)})


class HealthToLoggers(L.Callback):
    """Sends the health values computed at an optimiser step (``PretrainModule.fresh_health``) to
    the trainer's loggers, at the step index of that step's ``train/*`` values. Runs before
    ``History``, which clears them."""

    def __init__(self):
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._last_step or not trainer.loggers:
            return
        self._last_step = trainer.global_step
        if pl_module.fresh_health:
            values = {f"health/{k}": float(v) for k, v in pl_module.fresh_health.items()}
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step - 1)


class TeacherUpdate(L.Callback):
    """Calls the task's ``after_optimizer_step(step, max_steps)`` once after every optimiser step
    (not per micro-batch), where a task has one: EMA teachers and step-dependent schedules
    (``eolab.tasks.latent``, ``eolab.tasks.distill``). A callback, so that it runs before the
    checkpoint of that step is written (Lightning calls ModelCheckpoint last): a checkpoint
    always holds the teacher as updated by its own step, and a resumed run continues exactly."""

    def __init__(self):
        self._last_step = -1

    def on_train_start(self, trainer, pl_module):
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._last_step:  # a micro-batch of gradient accumulation: no update yet
            return
        self._last_step = trainer.global_step
        hook = getattr(pl_module.task, "after_optimizer_step", None)
        if hook is not None:
            hook(trainer.global_step, pl_module.max_steps)


class ResumeState(L.Callback):
    """What Lightning's checkpoint lacks for an exact resume after a kill mid-epoch: the random
    number generators (masks, noise and augmentations draw from torch's global RNG) and where in the
    epoch's batch order the run was. Plain tensors and ints: loadable with ``weights_only=True``.
    """

    def __init__(self, batch_sampler):
        self.batch_sampler = batch_sampler
        self.batches_done = 0  # micro-batches trained on, over all epochs

    def state_dict(self) -> dict:
        state = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches_done += 1  # before ModelCheckpoint, which Lightning always calls last

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Batches trained on so far (checkpoints are written after an optimiser step). Counted, not
        # global_step x accumulate: an epoch whose length is not a multiple of `accumulate` ends
        # with a shorter accumulation.
        checkpoint["eolab_batches_done"] = self.batches_done

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # Every epoch has the sampler's full length, so epoch and position follow from the count.
        self.batches_done = checkpoint.get("eolab_batches_done", 0)
        epoch, done = divmod(self.batches_done, len(self.batch_sampler))
        self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.skip(done)

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class History(L.Callback):
    """Keeps every step's logged values (loss curve, health) in memory and as CSV; logger-free.

    One row per optimiser step: with gradient accumulation the ``train/*`` values are the mean over
    the step's micro-batches (for a mean loss such as the MAE's, the loss of the whole step).
    Health values (``health/*``) are logged every few steps only: a row carries them on the step
    they were computed and is empty (NaN) for them otherwise.

    Every training checkpoint carries the rows up to its own step (``eolab_history``), and a resumed
    run continues from those: the history of a resumed run is that of the checkpoint it resumed
    from, never the CSV on disk, which a kill may have left a few steps ahead of (or behind) the
    checkpoint. ``time_s`` counts training seconds over all attempts up to that step.
    """

    def __init__(self, path: Path | None = None):
        self.rows: list[dict] = []
        self.path = path
        self._t0 = 0.0
        self._offset = 0.0  # training seconds before a resume
        self._pending: list[dict[str, float]] = []  # train/* values of this step's micro-batches
        self._last_step = 0
        self.resumed_step: int | None = None  # the checkpoint's step when this run resumed

    @property
    def time_before_resume_s(self) -> float:
        """Training seconds of earlier attempts, up to the checkpoint this attempt resumed from."""
        return self._offset

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter() - self._offset
        self._last_step, self._pending = trainer.global_step, []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Checkpoint callbacks run after all others, so this step's row is already here.
        checkpoint["eolab_history"] = [dict(row) for row in self.rows]
        if trainer.is_global_zero:
            self._write()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        step = int(checkpoint.get("global_step", 0))
        rows = checkpoint.get("eolab_history")
        if rows is None and self.path is not None and Path(self.path).exists():
            # a checkpoint from before histories were stored in it: the CSV, cut at its step
            rows = [r for r in pd.read_csv(self.path).to_dict("records") if r["step"] <= step]
        self.rows = [dict(row) for row in rows or []]
        self._offset = float(self.rows[-1]["time_s"]) if self.rows else 0.0
        self.resumed_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        values = {}
        for key, value in trainer.callback_metrics.items():
            prefix, _, name = key.partition("/")
            if prefix == "train":
                values[name] = float(value)
        self._pending.append(values)
        if trainer.global_step == self._last_step:  # a micro-batch of gradient accumulation: no update yet
            return
        self._last_step = trainer.global_step
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch, "time_s": time.perf_counter() - self._t0}
        names = dict.fromkeys(k for v in self._pending for k in v)
        row.update({k: float(np.mean([v[k] for v in self._pending if k in v])) for k in names})
        self._pending = []
        row.update(pl_module.fresh_health)  # health values computed at this step only
        pl_module.fresh_health.clear()
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        if self.path is not None and self.rows:
            tmp = Path(self.path).with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self.frame().to_csv(tmp, index=False)
            tmp.replace(self.path)  # atomic: a kill never leaves half a history

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _blocks(task: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a task (encoder, decoder, momentum copies): timm ``Block``s."""
    from timm.models.vision_transformer import Block

    return [m for m in task.modules() if isinstance(m, Block)]


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` (inductor) cannot run here, or None: on CPU it needs a C++ compiler."""
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx[0] if inductor_config.cpp.cxx and inductor_config.cpp.cxx[0] else None
    candidates = [cxx] if cxx else ["g++", "clang++", "c++"]
    if not any(shutil.which(c) for c in candidates):
        return f"no C++ compiler ({' / '.join(candidates)}) on PATH, which inductor needs to compile for the CPU"
    return None


def compile_blocks(task: nn.Module, blocks: list[nn.Module] | None = None) -> int:
    """Compile the task's transformer blocks in place with ``torch.compile`` (``Module.compile``);
    returns how many. In place, so parameter names and checkpoints are those of an uncompiled run,
    and only blocks: they hold the compute and draw no random numbers, while masking (in the task's
    forward) keeps drawing from torch's global generator, so masks, resume and seeds behave as
    without compiling (inductor would generate its own random numbers inside a compiled graph)."""
    blocks = _blocks(task) if blocks is None else blocks
    if not blocks:
        raise ValueError(f"compile: {type(task).__name__} has no transformer blocks to compile")
    for block in blocks:
        block.compile()
    return len(blocks)


COMPILE_SCOPES = ("blocks", "task")
"""What ``fit(compile=...)`` compiles: the transformer blocks, or the task's whole forward (masking,
encoder, decoder and loss, and through AOTAutograd their backward)."""


def compile_task(task: nn.Module) -> None:
    """Compile the task's whole forward in place (``Module.compile``): parameter names and
    checkpoints stay those of an eager run. Inductor's ``fallback_random`` keeps random draws
    (masks, noise) on torch's global generator, drawn as eagerly, so a seed and a restored RNG
    state (exact resume) give the same masks as without compiling."""
    task.compile(options={"fallback_random": True})


def slurm_layout() -> tuple[int, int] | None:
    """(nodes, tasks per node) when this process is one of several tasks of an srun step (one
    rank of a job launched as ``srun python ...``), else None (a batch script or a one-task step:
    Lightning launches any further processes itself)."""
    import os

    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1 or "SLURM_PROCID" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    nodes = int(os.environ.get("SLURM_STEP_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
    return nodes, tasks // nodes


class SrunDDPStrategy(DDPStrategy):
    """DDP over processes that srun started (each task runs the same program as one rank): nothing
    to launch. Lightning's "ddp" keeps a script launcher even then, and refuses it inside a Jupyter
    kernel, which is how a notebook run can be rank 0 of a multi-task SLURM job
    (``eolab.runner.slurm``)."""

    def _configure_launcher(self) -> None:
        if self.cluster_environment is not None and self.cluster_environment.creates_processes_externally:
            self._launcher = None
        else:
            super()._configure_launcher()


class FSDPStrategy(ModelParallelStrategy):
    """Fully sharded data parallel over every process (FSDP2 ``fully_shard``), on GPUs or on CPUs
    (gloo): parameters, gradients and optimiser state are split across processes, each process
    trains on its share of every global batch. Lightning's own ``"fsdp"`` (FSDP1) refuses CPUs;
    this is its ``ModelParallelStrategy`` with the whole world as one data-parallel mesh dimension
    (no tensor parallelism); the sharding itself is ``PretrainModule.configure_model``. Checkpoints
    are assembled on rank 0 into one file with the same keys as a DDP run's."""

    def __init__(self, **kwargs):
        super().__init__(save_distributed_checkpoint=False, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size, self._tensor_parallel_size = self.num_nodes * self.num_processes, 1
        super().setup_environment()


def fit(
    task: nn.Module,
    dataset,
    normalization: Normalization,
    *,
    batch_size: int,
    lr: float,
    epochs: int = 1,
    max_steps: int = 0,
    weight_decay: float = 0.05,
    warmup_frac: float = 0.05,
    seed: int = 0,
    augment: str = "dihedral",
    batch_sampler=None,
    num_workers: int = 0,
    accumulate: int = 1,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 100,
    callbacks: list[L.Callback] | tuple = (),
    health_every: int = 50,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    num_nodes: int | None = None,
    precision: str = "32-true",
    compile: bool | str = False,
    history_path: Path | None = None,
    progress: str = "none",
    log_path: Path | None = None,
    loggers: list | tuple = (),
) -> pd.DataFrame:
    """Train ``task`` on ``dataset``; returns the per-step history (losses, health, lr, time).

    Length: ``max_steps`` optimiser steps when given (e.g. from a FLOP budget, so that objectives of
    different cost get the same compute), else ``epochs`` passes. ``batch_sampler`` (e.g. one that
    mixes scenes, for contrastive tasks) replaces the default seeded shuffle; under DDP every process
    takes its share of each global batch. With ``checkpoint_dir`` a checkpoint is written every
    ``checkpoint_every`` steps and a run that finds ``last.ckpt`` there continues from it with the
    same batches and random draws as an uninterrupted run. Device-agnostic:
    ``accelerator``/``devices``/``strategy``/``precision`` go straight to Lightning (e.g. "gpu", 4,
    "ddp", "bf16-mixed"); the defaults run on whatever the machine has. ``strategy="fsdp"`` shards
    the task over the processes (FSDP2, also on CPU: ``FSDPStrategy``). Launched by ``srun`` with
    several tasks (see ``eolab.launch``), ``num_nodes`` (default) comes from SLURM_NNODES,
    ``devices="auto"`` becomes the tasks per node and ``strategy="auto"`` becomes "ddp".

    ``accumulate``: gradients of ``accumulate`` consecutive batches of ``batch_size`` are summed
    (each loss divided by ``accumulate``) before one optimiser step; ``max_steps``,
    ``checkpoint_every``, the learning-rate schedule and the history's rows count optimiser steps.
    ``compile``: True or "blocks": the transformer blocks run through ``torch.compile``
    (``compile_blocks``); "task": the task's whole forward and loss (``compile_task``); a machine
    without the C++ compiler inductor needs trains uncompiled, with a warning.

    ``progress``: ``bar`` (Lightning's progress bar over steps, with loss and images/s, plus the run
    log), ``log`` (the run log at ``log_path`` only) or ``none`` (``eolab.progress``). ``loggers``:
    Lightning loggers (``eolab.tracking``) that receive every step's ``train/*`` and ``health/*``.
    """
    layout = slurm_layout()
    if layout is not None:
        num_nodes = num_nodes or layout[0]
        devices = layout[1] if devices == "auto" else devices
        strategy = "ddp" if strategy == "auto" else strategy
    if compile:
        scope = "blocks" if compile is True else compile
        if scope not in COMPILE_SCOPES:
            raise ValueError(f"compile must be False, True or one of {COMPILE_SCOPES}, got {compile!r}")
        reason = compile_unavailable() if accelerator == "cpu" or not torch.cuda.is_available() else None
        if reason:
            warnings.warn(f"fit(compile={compile!r}): training uncompiled: {reason}", stacklevel=2)
        else:
            compile_task(task) if scope == "task" else compile_blocks(task)
    quiet_library_noise()  # before Lightning's first messages
    L.seed_everything(seed, workers=True)
    if batch_sampler is None and isinstance(dataset, PackedDataset):  # shard-local order, one slot per worker
        batch_sampler = dataset.batch_sampler(batch_size, seed, workers=num_workers)
    if batch_sampler is None:
        batch_sampler = SeededBatchSampler(len(dataset), batch_size, seed)
    # Its own generator: creating an epoch's iterator must not draw from the global RNG, which the
    # masks and augmentations use (and which a resumed run restores).
    loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=num_workers,
                        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    if len(loader) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the pre-training set ({len(dataset)} patches)")
    # Optimiser steps: an epoch ends with a step even when its last accumulation is short.
    total = max_steps or epochs * math.ceil(len(loader) / accumulate)
    module = PretrainModule(task, normalization, lr=lr, weight_decay=weight_decay, augment=augment,
                            warmup_steps=max(1, int(warmup_frac * total)), max_steps=total, health_every=health_every)
    history = History(history_path)
    shown = progress_callbacks(progress, log_path)
    extra: list[L.Callback] = [TeacherUpdate(), ResumeState(batch_sampler), *shown, *([HealthToLoggers()] if loggers else [])]
    resume_from, set_aside = None, []
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        extra.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="step{step}", every_n_train_steps=checkpoint_every,
                                     save_top_k=1, monitor="step", mode="max", save_last=True))
        resume_from, set_aside = loadable_checkpoint(checkpoint_dir)
    trainer = L.Trainer(
        max_epochs=-1 if max_steps else epochs, max_steps=max_steps or -1,
        accelerator=accelerator, devices=devices, num_nodes=num_nodes or 1, precision=precision,
        strategy=FSDPStrategy() if strategy == "fsdp" else SrunDDPStrategy() if layout and strategy == "ddp" else strategy,
        accumulate_grad_batches=accumulate, use_distributed_sampler=False,  # the batch sampler shards
        logger=list(loggers) or False, enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=any(isinstance(c, StepProgressBar) for c in shown),
        enable_model_summary=False, callbacks=[*callbacks, *extra, history], log_every_n_steps=1, deterministic=False,
    )
    # weights_only: a checkpoint is tensors and plain containers; nothing in it can run code on load.
    trainer.fit(module, loader, ckpt_path=resume_from, weights_only=True)
    frame = history.frame()
    if resume_from is not None or set_aside:
        # how this run came about, for the run's record: where it resumed, what was set aside
        frame.attrs["resume"] = {
            "resumed_from": resume_from.name if resume_from is not None else None,
            "resumed_at_step": history.resumed_step,
            "train_time_before_resume_s": history.time_before_resume_s,
            "set_aside": set_aside,
        }
    return frame


CORRUPT_SUFFIX = ".corrupt-"
"""A checkpoint that does not load is renamed ``<name>.corrupt-<UTC time>`` beside itself."""


def loadable_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, list[dict[str, str]]]:
    """The newest training checkpoint in ``checkpoint_dir`` that loads (``last.ckpt`` first, then
    the others newest first), or None; and the checkpoints that did not load, each renamed
    ``<name>.corrupt-<time>`` (so that no later attempt trips over it again) and listed as
    {"file", "set_aside_as", "error"}. A truncated file (a kill or a full disk while it was
    written) is the usual case: the run then continues from the previous good checkpoint, or
    starts again from scratch when there is none."""
    checkpoint_dir = Path(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    others = sorted((p for p in checkpoint_dir.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    set_aside = []
    for path in [last, *others] if last.exists() else others:
        try:
            # not mmap: a truncated file then fails with what is wrong (no zip directory), not EINVAL
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
                raise ValueError("not a Lightning training checkpoint (no state_dict/global_step)")
        except Exception as exc:  # noqa: BLE001  (truncated zip, garbage, a refused pickle: none resumes)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
            path.rename(aside)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            warnings.warn(f"checkpoint {path} does not load ({reason}); set aside as {aside.name}", stacklevel=3)
            set_aside.append({"file": path.name, "set_aside_as": aside.name, "error": reason})
            continue
        return path, set_aside
    return None, set_aside
