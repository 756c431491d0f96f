"""Pre-training throughput benchmark: eolab's MAE against lightly's and Hugging Face's, and the loader.

    python -m benchmarks.throughput [--configs micro-64,small-96,base-224] [--device auto|cpu|cuda]
                          [--precisions fp32,bf16] [--models eolab,lightly,hf] [--compile]
                          [--variants embed=conv,optimizer=foreach,...] [--batch-size auto|N]
                          [--warmup 3] [--steps 5] [--repeats 7] [--threads N]
                          [--loader-workers 0,2] [--loader-batches 32] [--loader-seconds 10]
                          [--profile] [--out bench.csv|bench.json] [--quick]

Why: an ablation budget is set in images/s, so we need to know whether eolab's own masked autoencoder
costs more per step than the libraries we could have used instead, at the sizes users train, and
whether the data loader or the model limits a run. All three models are built to one named
configuration (``CONFIGS``: ``micro-64``, today's 13 bands x 64 px ViT of 128 x 4; ``small-96``, a
ViT-S on 96 px with 12 bands; ``base-224``, a ViT-B/16 on 224 px with 12 bands and MAE's 512 x 8
decoder; mask ratio 0.75, per-patch normalised pixel loss, AdamW) and timed on the same synthetic
batch, machine, threads and precision, so the throughputs are comparable with each other (not
across machines). One table per configuration, its repeats interleaved.

What a number means:
  images/s   one training step (masking, forward, loss, backward, AdamW step) per batch, after
             warm-up; the median over repeats. Repeats are interleaved across models (round robin),
             so a load change on a shared machine hits every model alike; "best" is the fastest
             repeat and "spread" (max - min) / median says how much the machine's load moved them.
  vs peer    images/s divided by the fastest *other library's* model at the same precision and
             compilation (> 1: eolab is ahead); "vs eager": divided by the fastest other library's
             eager rate (the issue's "default" rate).
  paired     the "vs eager" ratio repeat by repeat: the fastest eager peer's seconds over this
             row's in the same repeat (timed next to each other, so a slow phase of the machine
             mostly cancels), the median over repeats and a bootstrap 90% interval of that median
             (``paired_ratio``). On a noisy machine it is the steadier figure of the two.
  MFU        FLOPs of one step (torch.utils.flop_counter: forward + backward matmuls, convolutions and
             attention; the work each model actually does) x steps/s, divided by this machine's
             measured matmul peak at that precision (best of repeated large torch.matmul, same
             device and threads), not a datasheet figure.
  compiled   with --compile, every model and precision is also timed through torch.compile
             (inductor) next to the eager run: eolab as ``eolab.train.fit(compile="task")`` trains
             (its whole task: masking, encoder, decoder, loss, and so the backward), the peers with
             ``Module.compile()`` on the whole model. "speed-up" is compiled / eager images/s,
             "compile s" the first step's seconds (tracing and code generation). Where inductor
             cannot run (no C++ compiler on a CPU machine, or it fails) the eager rows stay and a
             warning says why.
  variants   eolab with one step option changed (``--variants``), timed in the same interleaved
             run: ``embed=conv`` (the patch embedding as a strided convolution over every patch
             instead of patchify + matmul over the kept ones), ``optimizer=foreach|for-loop|fused``
             (AdamW's implementation instead of ``eolab.train.adamw_impl``'s choice),
             ``attention=sdpa`` (PyTorch's SDPA in every block, instead of
             ``eolab.models.attention``'s plain kernel for short sequences on a CPU),
             ``compile=blocks`` (only the transformer blocks compiled; with --compile).
  batch      ``auto``: on a GPU the largest batch (DEFAULT_BATCH doubled, at most twice) at which
             every model's fp32 step fits in memory; on a CPU DEFAULT_BATCH.
  profile    with --profile, each eager row's step as torch's profiler sees it after the timed
             repeats (every model still in the process, as timed): the share of self CPU time by
             kind of op (``PROFILE_KINDS``: matmuls, attention, copies, GELU, layer norm, ...;
             "other" is the rest, mostly per-op dispatch), so where a step's time goes is a
             figure of the kept command, not of a throw-away script. CPU only.
  loader     images/s of eolab's packed scene cache vs decoding the original GeoTIFFs per sample
             (real data, windows of the configuration's size), and their ratio to eolab's fastest
             training rate in the table (>= 1: the loader keeps up).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

MODELS = ("eolab", "lightly", "hf")
PRECISIONS = ("fp32", "bf16")
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class MAEShape:
    """The one configuration every model is built to (so images/s compare like with like)."""

    bands: int = 13
    img_size: int = 64
    patch_size: int = 8
    dim: int = 128
    depth: int = 4
    heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 2
    mask_ratio: float = 0.75
    mlp_ratio: float = 4.0

    @property
    def label(self) -> str:
        return (f"{self.bands} bands, {self.img_size} px, patch {self.patch_size}, encoder {self.dim} x {self.depth} "
                f"({self.heads} heads), decoder {self.decoder_dim} x {self.decoder_depth}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_visible(self) -> int:
        return self.num_patches - round(self.num_patches * self.mask_ratio)


CONFIGS: dict[str, MAEShape] = {
    # Today's CPU-ablation size (vit_micro), as the benchmark always ran it.
    "micro-64": MAEShape(),
    # ViT-S on 96 px Sentinel-2 patches (12 bands: L2A), MAE decoder 256 x 4.
    "small-96": MAEShape(bands=12, img_size=96, patch_size=8, dim=384, depth=12, heads=6,
                         decoder_dim=256, decoder_depth=4, decoder_heads=8),
    # ViT-B/16 at ImageNet's 224 px with MAE's own decoder (512 x 8): a GPU pre-training size.
    "base-224": MAEShape(bands=12, img_size=224, patch_size=16, dim=768, depth=12, heads=12,
                         decoder_dim=512, decoder_depth=8, decoder_heads=16),
}
"""Named configurations (``--configs``): every model is built to the same one."""

DEFAULT_BATCH: dict[str, dict[str, int]] = {
    "micro-64": {"cpu": 64, "cuda": 1024},
    "small-96": {"cpu": 16, "cuda": 512},
    "base-224": {"cpu": 4, "cuda": 256},
}
"""Batch per configuration and device type: the start of ``--batch-size auto``'s search on a GPU
(doubled while every model's step fits in memory), the batch itself on a CPU (bounded by time,
not memory: a step of seconds leaves room for repeats)."""

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall-clock seconds, or this process's CPU seconds (a CPU device at one thread: what a
step costs in CPU time, which other jobs on a shared machine do not inflate as they do wall time)."""

EOLAB_OPTIONS = {"embed": ("matmul", "conv"), "optimizer": ("auto", "fused", "foreach", "for-loop"),
                 "attention": ("auto", "sdpa")}
"""eolab's step options that ``--variants`` times against its defaults (the first of each)."""

# A loss function of a batch of images: the model's whole training forward pass, masking included.
LossFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------- models


def build_eolab(shape: MAEShape, embed: str = "matmul", attention: str = "auto") -> tuple[nn.Module, LossFn]:
    """eolab's masked autoencoder, through its public constructors only (``embed``: how the patch
    tokeniser embeds, see ``PatchTokenizer``; ``attention``: its layers' ``kernel``)."""
    from eolab.data.bands import S2_L1C
    from eolab.models.attention import Attention
    from eolab.models.tokenizers import PatchTokenizer
    from eolab.models.vit import ViTEncoder
    from eolab.tasks.mae import MaskedAutoencoder

    bands = S2_L1C[: shape.bands]
    tok = PatchTokenizer(bands, shape.img_size, shape.patch_size, shape.dim)
    tok.embed_as = embed
    encoder = ViTEncoder(tok, dim=shape.dim, depth=shape.depth, heads=shape.heads)
    model = MaskedAutoencoder(
        encoder, mask_ratio=shape.mask_ratio, mask="random", decoder_dim=shape.decoder_dim,
        decoder_depth=shape.decoder_depth, decoder_heads=shape.decoder_heads, norm_pix_loss=True,
    )
    for layer in model.modules():
        if isinstance(layer, Attention):
            layer.kernel = attention
    return model, lambda x: model({"image": x})["loss"]


class LightlyMAE(nn.Module):
    """lightly's MAE as its examples build it (benchmarks/imagenet/vitb16/mae.py, lightly 1.6): a timm
    ViT wrapped in MaskedVisionTransformerTIMM, MaskedVisionTransformerDecoderTIMM (the replacement of
    the deprecated MAEDecoderTIMM) with a linear embedding and prediction head around it, and
    lightly.models.utils for masking and patchify. The example's plain MSE target is normalised per
    patch (utils.normalize_mean_var) so the loss matches the other two models' norm_pix_loss."""

    def __init__(self, shape: MAEShape):
        super().__init__()
        from lightly.models.modules import (
            MaskedVisionTransformerDecoderTIMM,
            MaskedVisionTransformerTIMM,
        )
        from timm.models.vision_transformer import VisionTransformer

        vit = VisionTransformer(
            img_size=shape.img_size, patch_size=shape.patch_size, in_chans=shape.bands, num_classes=0,
            embed_dim=shape.dim, depth=shape.depth, num_heads=shape.heads, mlp_ratio=shape.mlp_ratio,
            qkv_bias=True,
        )
        self.mask_ratio, self.patch_size = shape.mask_ratio, shape.patch_size
        self.sequence_length = vit.patch_embed.num_patches + vit.num_prefix_tokens
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder_embed = nn.Linear(vit.embed_dim, shape.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=shape.decoder_dim, depth=shape.decoder_depth,
            num_heads=shape.decoder_heads, num_prefix_tokens=vit.num_prefix_tokens, mlp_ratio=shape.mlp_ratio,
        )
        self.prediction_head = nn.Linear(shape.decoder_dim, shape.patch_size**2 * shape.bands)

    def forward(self, images: Tensor) -> Tensor:
        from lightly.models import utils

        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(b, self.sequence_length), mask_ratio=self.mask_ratio, device=images.device
        )
        features = self.backbone.encode(images=images, idx_keep=idx_keep)
        x = self.decoder_embed(features)
        x_masked = x.new_zeros(b, self.sequence_length, x.shape[-1])
        x_masked = utils.set_at_index(x_masked, idx_keep, x.type_as(x_masked))
        decoded = self.decoder(x_masked, idx_mask=idx_mask)
        pred = self.prediction_head(utils.get_at_index(decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)  # no [CLS]
        target = utils.normalize_mean_var(target, dim=-1)
        return nn.functional.mse_loss(pred, target)


def build_lightly(shape: MAEShape) -> tuple[nn.Module, LossFn]:
    model = LightlyMAE(shape)
    return model, model


def build_hf(shape: MAEShape) -> tuple[nn.Module, LossFn]:
    """transformers' ViTMAEForPreTraining, with PyTorch SDPA attention (its fastest on CPU and GPU)."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(
        image_size=shape.img_size, patch_size=shape.patch_size, num_channels=shape.bands,
        hidden_size=shape.dim, num_hidden_layers=shape.depth, num_attention_heads=shape.heads,
        intermediate_size=int(shape.dim * shape.mlp_ratio), decoder_hidden_size=shape.decoder_dim,
        decoder_num_hidden_layers=shape.decoder_depth, decoder_num_attention_heads=shape.decoder_heads,
        decoder_intermediate_size=int(shape.decoder_dim * shape.mlp_ratio), mask_ratio=shape.mask_ratio,
        norm_pix_loss=True,
    )
    model = ViTMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    return model, lambda x: model(pixel_values=x).loss


BUILDERS: dict[str, Callable[[MAEShape], tuple[nn.Module, LossFn]]] = {
    "eolab": build_eolab, "lightly": build_lightly, "hf": build_hf,
}


def attention_impl(name: str, model: nn.Module) -> str:
    """Which attention kernel a model runs (reported, since it dominates at long sequences)."""
    if name == "hf":
        return str(model.config._attn_implementation)
    blocks = [m for m in model.modules() if hasattr(m, "fused_attn")]  # timm Attention
    kernels = {getattr(m, "kernel", None) for m in blocks} - {None}  # eolab.models.attention.Attention
    if kernels == {"auto"}:
        from eolab.models.attention import SHORT_KEYS

        return f"eolab auto (CPU fp32 eager, keys <= {SHORT_KEYS}: plain kernel; else SDPA)"
    return "sdpa (timm fused_attn)" if blocks and all(m.fused_attn for m in blocks) else "timm eager"


# ------------------------------------------------------------------------------------------- timing


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The processor's model name: peaks and MFU only mean something next to it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    return f"cpu: {platform.processor() or platform.machine()}"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock interval covers the work it claims to time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Trainer:
    """One model, its optimiser and its precision: the unit that is warmed up, counted and timed."""

    name: str
    precision: str
    model: nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    device: torch.device
    compiled: bool = False
    clock: Callable[[], float] = time.perf_counter

    def step(self, x: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            loss = self.loss_fn(x)
        loss.backward()
        self.optimizer.step()

    def timed_block(self, x: Tensor, steps: int) -> float:
        """Seconds for ``steps`` consecutive steps (one synchronisation at the end, not per step)."""
        synchronize(self.device)
        start = self.clock()
        for _ in range(steps):
            self.step(x)
        synchronize(self.device)
        return self.clock() - start


def step_flops(trainer: Trainer, x: Tensor) -> int:
    """FLOPs of one training step (forward + backward) as torch's FlopCounterMode counts them.

    The optimiser step is elementwise and counts as zero, as in the usual MFU convention."""
    from torch.utils.flop_counter import FlopCounterMode

    from eolab.compute import CPU_ATTENTION_FLOPS

    trainer.optimizer.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        with autocast(trainer.device, trainer.precision):
            loss = trainer.loss_fn(x)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def analytic_flops(shape: MAEShape, batch: int) -> float:
    """Textbook estimate of one step's FLOPs: 2 x (multiply-adds) forward, x3 for forward + backward
    (x2 for the patch embedding, whose input needs no gradient). A cross-check of the FlopCounter
    count, not a substitute: it assumes pixel predictions for every token (eolab, hf)."""
    n, k, p2c = shape.num_patches, shape.num_visible, shape.patch_size**2 * shape.bands
    d, dd, r = shape.dim, shape.decoder_dim, shape.mlp_ratio
    te, td = 1 + k, 1 + n  # encoder and decoder sequence lengths, [CLS] included

    def block_macs(width: int, tokens: int) -> float:  # qkv + proj + MLP, plus QK^T and AV
        return tokens * (4 + 2 * r) * width**2 + 2 * tokens**2 * width

    embed = n * p2c * d  # the patch embedding runs on all patches before the visible ones are kept
    forward = shape.depth * block_macs(d, te) + te * d * dd + shape.decoder_depth * block_macs(dd, td) + n * dd * p2c
    return 2 * batch * (3 * forward + 2 * embed)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Best FLOP/s of a square torch.matmul of ``size`` on this device and thread count.

    The best, not the median, of ``repeats`` timings: a peak is an upper bound, and on a shared
    machine the slow samples measure the neighbours, not the hardware."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    inner = max(1, int(2e11 // (2 * size**3))) if device.type == "cuda" else 1  # amortise launches
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = clock()
        for _ in range(inner):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (clock() - start) / inner)
    return 2 * size**3 / best


def transformer_blocks(name: str, model: nn.Module) -> list[nn.Module]:
    """The blocks ``compile=blocks`` compiles: timm ``Block``s (eolab, lightly) or HF's ViTMAELayer."""
    from timm.models.vision_transformer import Block

    return [m for m in model.modules() if isinstance(m, Block) or type(m).__name__ == "ViTMAELayer"]


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot be timed on ``device``, or None."""
    from eolab.train import compile_unavailable

    return compile_unavailable() if device.type == "cpu" else None


@dataclass(frozen=True)
class Arm:
    """One model as timed: a library's MAE, or eolab's with step options other than its defaults."""

    model: str  # eolab, lightly, hf
    options: tuple[tuple[str, str], ...] = ()  # eolab only: (option, value) pairs, EOLAB_OPTIONS

    @property
    def label(self) -> str:
        return self.model + "".join(f" {k}={v}" for k, v in self.options)

    def option(self, name: str, default: str) -> str:
        return dict(self.options).get(name, default)


def parse_variant(text: str) -> Arm:
    """``embed=conv+optimizer=foreach`` -> an eolab arm with those options (checked by name)."""
    options = []
    for item in text.split("+"):
        key, _, value = item.partition("=")
        allowed = {**EOLAB_OPTIONS, "compile": ("task", "blocks")}
        if key not in allowed or value not in allowed[key]:
            raise argparse.ArgumentTypeError(
                f"--variants: {item!r} is not one of " + "; ".join(f"{k}={'|'.join(v)}" for k, v in allowed.items()))
        options.append((key, value))
    return Arm("eolab", tuple(options))


def build_trainer(arm: Arm, precision: str, shape: MAEShape, device: torch.device, compiled: bool) -> Trainer:
    """The model, optimiser and (when ``compiled``) compilation of one arm, seeded alike. eolab
    trains with its own optimiser choice (``eolab.train.adamw``) and compiles as
    ``fit(compile="task")`` does; the peers with torch's default AdamW and ``Module.compile()``."""
    from eolab.train import adamw, compile_task

    torch.manual_seed(0)
    if arm.model == "eolab":
        model, loss_fn = build_eolab(shape, embed=arm.option("embed", "matmul"), attention=arm.option("attention", "auto"))
        model.to(device).train()
        optimizer = adamw(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, device=device,
                          impl=arm.option("optimizer", "auto"))
    else:
        model, loss_fn = BUILDERS[arm.model](shape)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    if compiled:
        scope = arm.option("compile", "task")
        if scope == "blocks":
            for block in transformer_blocks(arm.model, model):
                block.compile()
        elif arm.model == "eolab":
            compile_task(model)
        else:
            model.compile()
    return Trainer(arm.label, precision, model, loss_fn, optimizer, device, compiled)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def largest_batch(arms: Sequence[Arm], shape: MAEShape, device: torch.device, start: int, log: Callable[[str], None],
                  most: int = 8) -> int:
    """The largest batch, ``start`` doubled up to ``most`` times, at which one fp32 eager step of every
    arm fits in the device's memory (fp32: autocast keeps weights, gradients and optimiser state in
    fp32 and only some activations in bf16, so fp32 bounds the bf16 run too)."""
    fits, batch = start, start
    for _ in range(most + 1):
        try:
            for arm in dict.fromkeys(Arm(a.model) for a in arms):  # options do not change memory much
                trainer = build_trainer(arm, "fp32", shape, device, compiled=False)
                trainer.step(torch.randn(batch, shape.bands, shape.img_size, shape.img_size, device=device))
                synchronize(device)
                del trainer
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            log(f"  batch {batch} does not fit ({type(exc).__name__})")
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        fits, batch = batch, batch * 2
        log(f"  batch {fits} fits")
    if fits == start and batch == start:
        raise SystemExit(f"error: not even batch {start} fits on {device}; give a smaller --batch-size")
    return fits


def bench_models(
    arms: Sequence[Arm],
    precisions: Sequence[str],
    shape: MAEShape,
    batch: int,
    warmup: int,
    steps: int,
    repeats: int,
    device: torch.device,
    peaks: dict[str, float],
    log: Callable[[str], None],
    compile: bool = False,
    clock: str = "wall",
    profile: bool = False,
) -> list[dict[str, Any]]:
    """Train every (arm, precision) on the same synthetic batch; one row each (two with
    ``compile``: eager and compiled), all repeats interleaved round robin."""
    x = torch.randn(batch, shape.bands, shape.img_size, shape.img_size,
                    generator=torch.Generator().manual_seed(0)).to(device)
    if compile and (problem := compile_problem(device)):
        log(f"  warning: --compile skipped, timing eager only: {problem}")
        compile = False
    plan = [(arm, precision, compiled) for arm in arms for precision in precisions
            for compiled in ((False, True) if compile else (False,))
            if not (arm.option("compile", "") and not compiled)]  # a compile option means nothing eager

    rows, trainers = [], []
    for arm, precision, compiled in plan:
        start = time.perf_counter()
        try:
            t = build_trainer(arm, precision, shape, device, compiled)
            row = {
                "model": arm.model, "variant": " ".join(f"{k}={v}" for k, v in arm.options), "label": arm.label,
                "precision": precision, "compiled": compiled,
                "params": sum(p.numel() for p in t.model.parameters() if p.requires_grad),
                "attention": attention_impl(arm.model, t.model),
            }
            for i in range(max(1, warmup) if compiled else warmup):
                t.step(x)
                if i == 0 and compiled:
                    synchronize(device)
                    row["compile_s"] = time.perf_counter() - start
        except Exception as exc:  # inductor/compiler failure: keep the eager numbers, say why
            if not compiled:
                raise
            log(f"  warning: {arm.label}/{precision} compiled: torch.compile failed, eager only "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
            continue
        # Counted on an eager twin: compiling changes kernels, not the arithmetic, and a compiled
        # module's kernels are invisible to the FLOP counter.
        twin = t if not compiled else build_trainer(arm, precision, shape, device, compiled=False)
        row["gflop_per_step"] = step_flops(twin, x) / 1e9
        del twin
        rows.append(row)
        trainers.append(t)
        done = f", compiled in {row['compile_s']:.1f}s" if compiled else ""
        log(f"  {arm.label}/{precision}: {row['gflop_per_step']:.2f} GFLOP/step, warmed up{done}")

    seconds: list[list[float]] = [[] for _ in trainers]
    for t in trainers:
        t.clock = CLOCKS[clock]
    for r in range(repeats):  # round robin, so slow phases of a shared machine are shared out
        for i, t in enumerate(trainers):
            seconds[i].append(t.timed_block(x, steps))
        log(f"  repeat {r + 1}/{repeats} done")

    if profile:  # after the timed repeats, so that they are not disturbed; eager rows only
        for row, t in zip(rows, trainers, strict=True):
            if not row["compiled"]:
                row["profile"] = profile_step(t, x, steps)  # CPU only (run checks): nothing to synchronise

    for row, secs in zip(rows, seconds, strict=True):
        row["repeat_s"] = secs  # seconds of each repeat (``steps`` steps), in repeat order
        per_step = statistics.median(secs) / steps
        row["batch_size"] = batch
        row["images_per_s"] = batch / per_step
        row["ms_per_step"] = 1e3 * per_step
        row["spread"] = (max(secs) - min(secs)) / statistics.median(secs)  # how noisy the repeats were
        row["best_images_per_s"] = batch * steps / min(secs)  # the least disturbed repeat (shared machines)
        row["achieved_tflops"] = row["gflop_per_step"] / per_step / 1e3
        row["peak_tflops"] = peaks[row["precision"]] / 1e12
        row["mfu"] = row["achieved_tflops"] / row["peak_tflops"]
    for row in rows:
        # Against the other libraries' models (not eolab's own variants), same precision and compilation.
        others = [o for o in rows if o["precision"] == row["precision"] and o["model"] != row["model"]
                  and not o["variant"]]
        peers = [o["images_per_s"] for o in others if o["compiled"] == row["compiled"]]
        row["ratio_to_fastest_peer"] = row["images_per_s"] / max(peers) if peers else None
        eager_peers = [o["images_per_s"] for o in others if not o["compiled"]]
        row["ratio_to_fastest_peer_eager"] = row["images_per_s"] / max(eager_peers) if eager_peers else None
        eager_rows = [o for o in others if not o["compiled"]]
        fastest = max(eager_rows, key=lambda o: o["images_per_s"]) if eager_rows else None
        row["paired_ratio_to_fastest_peer_eager"] = (
            paired_ratio(fastest["repeat_s"], row["repeat_s"]) if fastest else None)  # [median, low, high]
        eager = [o["images_per_s"] for o in rows if not o["compiled"] and o["label"] == row["label"]
                 and o["precision"] == row["precision"]]
        row["compile_speedup"] = row["images_per_s"] / eager[0] if row["compiled"] and eager else None
    return rows


PROFILE_KINDS: dict[str, tuple[str, ...]] = {
    "matmul": ("aten::mm", "aten::addmm", "aten::baddbmm", "aten::convolution_backward", "aten::mkldnn_convolution"),
    "attention": ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data",
                  "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "copy": ("aten::copy_", "aten::cat", "aten::fill_", "aten::zero_"),
    "gelu": ("aten::gelu", "aten::gelu_backward"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "gather/scatter": ("aten::index_select", "aten::gather", "aten::scatter", "aten::scatter_add_", "aten::index_add_"),
}
"""``--profile``'s kinds of op by name (self CPU time). Every op inside the optimiser's step counts as
"optimizer" whatever its name (fused, foreach and for-loop AdamW run different ops); a name in no
kind counts as "other"."""


def profile_step(trainer: Trainer, x: Tensor, steps: int) -> dict[str, Any]:
    """``steps`` steps of ``trainer`` under torch's profiler: milliseconds per step (as profiled, so
    a little above the timed rate) and each kind's share of the self CPU time (summing to 1)."""
    from torch.profiler import ProfilerActivity, profile

    kind_of = {name: kind for kind, names in PROFILE_KINDS.items() for name in names}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step(x)
    shares = dict.fromkeys([*PROFILE_KINDS, "optimizer", "other"], 0.0)
    for event in prof.events():
        parent, in_optimizer = event, False
        while parent is not None and not in_optimizer:  # the optimiser's step encloses its ops
            in_optimizer = parent.name.startswith("Optimizer.step")
            parent = parent.cpu_parent
        shares["optimizer" if in_optimizer else kind_of.get(event.name, "other")] += event.self_cpu_time_total
    total = sum(shares.values())
    return {"ms_per_step": total / steps / 1e3, "shares": {k: v / total for k, v in shares.items()}}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], resamples: int = 2000,
                 seed: int = 0) -> list[float]:
    """[median, 5th, 95th percentile]: the median over repeats of ``numerator[r] / denominator[r]``
    (two arms' seconds in the same repeat) and a bootstrap 90% interval of that median (``resamples``
    resamplings of the repeats, seeded: the same timings give the same interval)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"paired_ratio: {len(numerator)} and {len(denominator)} repeats; need the same, at least one")
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    return [float(statistics.median(ratios)), float(np.quantile(boot, 0.05)), float(np.quantile(boot, 0.95))]


# ------------------------------------------------------------------------------------------- loader


_OFFSET_NOTE = re.compile(r"radiometric offset (\d+) removed")


class GeoTiffPatchDataset(torch.utils.data.Dataset):
    """The scene cache's patches, decoded from the original GeoTIFFs on every access.

    The baseline the cache replaces: per sample, each band's file is opened and the 64 x 64 window
    (on the 10 m grid) is read, 20 m and 60 m bands resampled bilinearly from their native window,
    the radiometric offset removed and DN scaled to reflectance, as the scene readers do for a whole
    scene. Window-wise resampling differs from the cache's scene-wise resampling by a fraction of a
    pixel at window edges, which does not matter for timing. Samples follow eolab's schema.
    """

    def __init__(self, root: Path, cache: Any, tiles: Any, patch: int = 64, bands: tuple[str, ...] | None = None):
        from eolab.data.bands import canonical_band_name
        from eolab.data.scenes import HYDRO_FILE_ORDER

        self.patch, self.bands, self.scale = patch, tuple(bands or cache.bands), cache.manifest["scale"]
        self.scenes: list[dict[str, Any]] = []
        for sc in cache.scenes:  # file lists are indexed once, as any real loader would
            path = root / sc["id"]
            offsets = [int(m.group(1)) for note in sc["notes"] if (m := _OFFSET_NOTE.search(note))]
            entry: dict[str, Any] = {"offset": offsets[0] if offsets else 0, "width": sc["shape"][2]}
            if path.is_file():  # one stacked file (Hydro)
                entry["stack"] = (path, [HYDRO_FILE_ORDER.index(b) + 1 for b in self.bands])
            else:  # one file per band (Major-TOM, SSL4EO-S12)
                files = {}
                for f in path.glob("B*.tif"):
                    with contextlib.suppress(KeyError):
                        files[canonical_band_name(f.stem)] = f
                entry["files"] = [files[b] for b in self.bands]
            self.scenes.append(entry)
        self.scene, self.row, self.col = (tiles[c].to_numpy() for c in ("scene", "row", "col"))
        self.lonlat = tiles[["lon", "lat"]].to_numpy(np.float32)
        self.ids, self.sources, self.times = tiles["id"].tolist(), tiles["source"].tolist(), tiles["time"].tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        sc, p = self.scenes[int(self.scene[i])], self.patch
        r, c = int(self.row[i]), int(self.col[i])
        if "stack" in sc:
            path, indexes = sc["stack"]
            with rasterio.open(path) as ds:
                dn = ds.read(indexes, window=Window(c, r, p, p))
        else:
            layers = []
            for path in sc["files"]:
                with rasterio.open(path) as ds:
                    f = ds.width / sc["width"]  # 1 for 10 m bands, 1/2 for 20 m, 1/6 for 60 m
                    layers.append(ds.read(1, window=Window(c * f, r * f, p * f, p * f), out_shape=(p, p),
                                          resampling=Resampling.bilinear))
            dn = np.stack(layers)
        dn = np.clip(dn.astype(np.int32) - sc["offset"], 0, 65535)
        sample = {
            "image": torch.from_numpy(dn.astype(np.float32) * self.scale), "bands": self.bands,
            "unit": "reflectance", "source": self.sources[i], "lonlat": torch.tensor(self.lonlat[i]),
            "id": self.ids[i],
        }
        if self.times[i]:
            sample["time"] = self.times[i]
        return sample


def loader_throughput(dataset: torch.utils.data.Dataset, batch: int, workers: int, batches: int,
                      seconds: float) -> tuple[float, int]:
    """Images/s of a shuffled DataLoader over ``dataset`` with eolab's collate, and the images timed.

    Stops after ``batches`` batches or ``seconds`` (at least one batch), so that a slow loader costs
    bounded time rather than ruling the benchmark's length. The first batch is not timed: it pays
    for worker start-up, which a long run amortises."""
    from torch.utils.data import DataLoader

    from eolab.data.schema import collate

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0),
                        num_workers=workers, collate_fn=collate, drop_last=True)
    it: Iterator[dict] = iter(loader)
    next(it)
    images, start = 0, time.perf_counter()
    for _, b in zip(range(batches), it):
        images += b["image"].shape[0]
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    del it  # shut the workers down before the next measurement starts its own
    if not images:
        raise ValueError(f"only one batch of {batch} fits in {len(dataset)} patches; lower --batch-size")
    return images / elapsed, images


def bench_loaders(batch: int, workers: Sequence[int], batches: int, seconds: float, data_root: str | None,
                  log: Callable[[str], None], patch: int = 64) -> list[dict[str, Any]]:
    """Packed cache vs per-sample GeoTIFF decoding of ``patch`` px windows, same patches, same
    order, same collate."""
    from eolab.data.cache import PatchDataset, build_scene_cache
    from eolab.data.paths import data_root as resolve_root

    root = resolve_root(data_root)
    cache = build_scene_cache(root, ("major_tom", "hydro", "ssl4eo"))
    tiles = cache.tiles(patch, patch // 2)
    if len(tiles) <= batch:
        raise ValueError(f"the scene cache under {root} has {len(tiles)} windows of {patch} px, "
                         f"not more than one batch of {batch}")
    datasets = {
        "scene_cache": PatchDataset(cache, tiles, bands=cache.bands),
        "geotiff": GeoTiffPatchDataset(root, cache, tiles, patch=patch, bands=cache.bands),
    }
    rows = []
    for name, ds in datasets.items():
        for w in workers:
            ips, n = loader_throughput(ds, batch, w, batches, seconds)
            rows.append({"loader": name, "workers": w, "images_per_s": ips, "images": n,
                         "bands": len(ds.bands), "patches": len(ds), "patch_px": patch})
            log(f"  loader {name} workers={w}: {ips:.0f} images/s over {n} images")
    return rows


# --------------------------------------------------------------------------------------------- report


def format_table(table: dict[str, Any]) -> str:
    """One configuration's table."""
    lines = [
        f"== {table['config']}: {table['shape_label']}, batch {table['batch_size']}",
        (f"{'model':<30} {'precision':<9} {'images/s':>9} {'best':>7} {'ms/step':>8} {'spread':>7} {'vs peer':>8} "
         f"{'vs eager':>8} {'paired [90%]':>19} {'GFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>7}  attention"),
    ]
    for r in table["train"]:
        ratio = f"{r['ratio_to_fastest_peer']:.2f}x" if r["ratio_to_fastest_peer"] else "-"
        eager = f"{r['ratio_to_fastest_peer_eager']:.2f}x" if r["ratio_to_fastest_peer_eager"] else "-"
        pair = r.get("paired_ratio_to_fastest_peer_eager")
        paired = f"{pair[0]:.2f}x [{pair[1]:.2f}, {pair[2]:.2f}]" if pair else "-"
        model = f"{r['label']}+compile" if r.get("compiled") else r["label"]
        lines.append(
            f"{model:<30} {r['precision']:<9} {r['images_per_s']:>9.1f} {r['best_images_per_s']:>7.1f} "
            f"{r['ms_per_step']:>8.1f} "
            f"{r['spread']:>6.0%} {ratio:>8} {eager:>8} {paired:>19} {r['gflop_per_step']:>10.2f} {r['achieved_tflops']:>8.3f} "
            f"{r['mfu']:>6.1%}  {r['attention']}"
        )
    lines.append("vs peer: / the fastest other library at the same precision and compilation; "
                 "vs eager: / the fastest other library's eager rate at the same precision; "
                 "paired: that ratio repeat by repeat, median [bootstrap 90% interval]")
    compiled = [r for r in table["train"] if r.get("compile_speedup")]
    if compiled:
        lines += ["torch.compile (eolab: its whole task, as fit(compile='task'); peers: Module.compile()):"]
        lines += [f"  {r['label']}/{r['precision']}: {r['compile_speedup']:.2f}x eager images/s, "
                  f"first step (compiling) {r['compile_s']:.1f} s" for r in compiled]
    profiled = [r for r in table["train"] if r.get("profile")]
    if profiled:
        lines += ["profile (eager; share of self CPU time by kind of op, ms/step as profiled):"]
        lines += [f"  {r['label']}/{r['precision']}: {r['profile']['ms_per_step']:.1f} ms; " + ", ".join(
            f"{k} {v:.1%}" for k, v in sorted(r["profile"]["shares"].items(), key=lambda kv: -kv[1])) for r in profiled]
    lines.append(f"analytic estimate for this configuration: {table['analytic_gflop_per_step']:.2f} GFLOP/step")
    if table["loader"]:
        ref = table["loader_reference"]
        lines += [(f"{'loader':<12} {'workers':>7} {'images/s':>9}  vs training ({ref['label']}/"
                   f"{ref['precision']}{'+compile' if ref['compiled'] else ''}, {ref['images_per_s']:.0f} images/s)")]
        for r in table["loader"]:
            lines.append(f"{r['loader']:<12} {r['workers']:>7} {r['images_per_s']:>9.0f}  "
                         f"{r['ratio_to_training']:.2f}x")
    return "\n".join(lines)


def format_report(result: dict[str, Any]) -> str:
    """The human-readable tables, one per configuration."""
    lines = [
        (f"device {result['device']}, {result['threads']} threads, torch {result['versions']['torch']}, "
         f"commit {result['commit']}, "
         f"{'CPU seconds (--clock cpu)' if result['clock'] == 'cpu' else 'wall-clock seconds'}"),
        "matmul peak (measured): " + ", ".join(
            f"{p} {v / 1e12:.3f} TFLOP/s" for p, v in result["peaks"].items()
        ) + f"  (n={result['peak_size']})",
    ]
    for table in result["tables"]:
        lines += ["", format_table(table)]
    return "\n".join(lines)


def flat_profile(row: dict[str, Any]) -> dict[str, Any]:
    """A train row with ``--profile``'s nested figures as columns (``profile_ms_per_step``,
    ``profile_matmul``, ...), for a CSV row."""
    row = dict(row)
    prof = row.pop("profile", None)
    if prof:
        row["profile_ms_per_step"] = prof["ms_per_step"]
        row.update({f"profile_{k.replace(' ', '_').replace('/', '_')}": v for k, v in prof["shares"].items()})
    return row


def write_output(result: dict[str, Any], out: Path) -> None:
    """JSON (everything) for a .json path; otherwise CSV with one row per measurement:
    section "train" (config, model, variant, precision, compiled), "loader" (config, loader,
    workers) or "peak" (precision), each with the commit and the device."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(result, indent=1))
        return
    # every row says which code and machine it came from, so a CSV row read alone is still a record
    where = {"commit": result["commit"], "device": result["device"]}
    rows = [{"section": "train", "config": t["config"], **flat_profile(r), **where}
            for t in result["tables"] for r in t["train"]]
    rows += [{"section": "loader", "config": t["config"], **r, **where} for t in result["tables"] for r in t["loader"]]
    rows += [{"section": "peak", "precision": p, "peak_tflops": v / 1e12, **where} for p, v in result["peaks"].items()]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------- main


def _choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {text!r}")
        return items
    return parse


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _batch(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from exc


def _variants(text: str) -> tuple[Arm, ...]:
    return tuple(parse_variant(v.strip()) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--configs", type=_choices(tuple(CONFIGS)), default=("micro-64",),
                   help=f"comma list of {','.join(CONFIGS)}: one interleaved table each")
    p.add_argument("--models", type=_choices(MODELS), default=MODELS, help="comma list of eolab,lightly,hf")
    p.add_argument("--variants", type=_variants, default=(),
                   help="extra eolab arms with other step options, comma list of option=value joined by +: "
                        "embed=conv, optimizer=foreach|for-loop|fused, compile=blocks (e.g. embed=conv+optimizer=for-loop)")
    p.add_argument("--precisions", type=_choices(PRECISIONS), default=PRECISIONS, help="comma list of fp32,bf16")
    p.add_argument("--batch-size", type=_batch, default="auto",
                   help="images per step, or auto: on a GPU the largest that fits (DEFAULT_BATCH doubled), "
                        "on a CPU DEFAULT_BATCH")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model and precision")
    p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--peak-size", type=int, default=None, help="matmul side for the peak (default 2048 CPU, 8192 GPU)")
    p.add_argument("--loader-workers", type=_int_list, default=(0, 2), help="comma list; empty to skip the loader")
    p.add_argument("--loader-batches", type=int, default=32, help="most timed batches per loader measurement")
    p.add_argument("--loader-seconds", type=float, default=10.0, help="most seconds per loader measurement")
    p.add_argument("--data-root", default=None, help="default: eolab.data.paths.data_root()")
    p.add_argument("--compile", action="store_true",
                   help="also time each model compiled (torch.compile, inductor): eolab as fit(compile='task'), "
                        "the peers with Module.compile()")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall seconds, or cpu: this process's CPU seconds (CPU device, --threads 1; for shared machines)")
    p.add_argument("--profile", action="store_true",
                   help="after the timed repeats, profile each eager row's step: share of CPU time by kind of op")
    p.add_argument("--out", type=Path, default=None, help="write the results: .json, or CSV otherwise")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (tests): batch 8, 1 warm-up, 2 steps, 1 repeat, small peak, 2 loader batches")
    return p


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Every configuration's table (and the peaks they share), as one result."""
    import lightly
    import timm
    import transformers

    if args.quick:
        args.batch_size, args.warmup, args.steps, args.repeats, args.loader_batches = 8, 1, 2, 1, 2
        args.peak_size = args.peak_size or 1024
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if args.batch_size != "auto" and args.batch_size < 1:
        raise SystemExit("error: --batch-size must be at least 1 (or auto)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("error: --clock cpu times a CPU device at one thread (--device cpu --threads 1): "
                         "with more threads it would count their spin-waiting, on a GPU it misses the kernels")
    if args.profile and device.type != "cpu":
        raise SystemExit("error: --profile reads CPU time (--device cpu); on a GPU use torch.profiler with CUDA activity")
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    arms = [Arm(m) for m in args.models] + [a for a in args.variants if a not in [Arm(m) for m in args.models]]

    log(f"matmul peak ({peak_size}^2) on {device} ...")
    peaks = {p: matmul_peak(device, PEAK_DTYPES[p], peak_size, 10, CLOCKS[args.clock]) for p in args.precisions}
    tables = []
    for config in args.configs:
        shape = CONFIGS[config]
        batch = args.batch_size
        if batch == "auto":
            batch = DEFAULT_BATCH[config]["cuda" if device.type == "cuda" else "cpu"]
            if device.type == "cuda":
                log(f"{config}: finding the largest batch that fits ...")
                batch = largest_batch(arms, shape, device, batch, log, most=2)
        log(f"{config}: training step, batch {batch} ...")
        train = bench_models(arms, args.precisions, shape, batch, args.warmup, args.steps, args.repeats, device,
                             peaks, log, compile=args.compile, clock=args.clock,
                             profile=args.profile)
        loader: list[dict[str, Any]] = []
        eolab_rows = [r for r in train if r["model"] == "eolab" and not r["variant"]]
        reference = max(eolab_rows or train, key=lambda r: r["images_per_s"])
        if args.loader_workers:
            log(f"{config}: data loader ...")
            loader = bench_loaders(batch, args.loader_workers, args.loader_batches, args.loader_seconds,
                                   args.data_root, log, patch=shape.img_size)
            for r in loader:
                r["ratio_to_training"] = r["images_per_s"] / reference["images_per_s"]
        tables.append({
            "config": config, "shape": asdict(shape), "shape_label": shape.label, "batch_size": batch,
            "train": train, "loader": loader,
            "loader_reference": {k: reference[k] for k in ("label", "precision", "compiled", "images_per_s")},
            "analytic_gflop_per_step": analytic_flops(shape, batch) / 1e9,
        })
        log(format_table(tables[-1]))
    from eolab.provenance import git_commit

    return {
        "commit": git_commit(),  # the code these figures were measured with ("-dirty": with local changes)
        "device": device_name(device), "device_type": device.type,
        "threads": torch.get_num_threads(), "clock": args.clock, "warmup": args.warmup,
        "steps": args.steps, "repeats": args.repeats, "peak_size": peak_size,
        "peaks": peaks, "tables": tables,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "lightly": lightly.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run(args, log)
    print(format_report(result))
    if args.out:
        write_output(result, args.out)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
