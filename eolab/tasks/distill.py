"""Self-distillation proxy tasks: DINO (Caron et al., 2021) with DINOv2's optional iBOT patch term
and KoLeo regulariser (Oquab et al., 2023), and a masked autoencoder with an EMA teacher (the
"MAE plus a teacher" of Clay v1.5 and Copernicus-FM, whose teacher here is the MAE's own moving
average: no pretrained weights are needed or downloaded).

Views come from the EO augmentations of ``eolab.tasks.augment`` (flips and right-angle turns,
resized crops, per-band gain and offset, noise, band dropout), never RGB colour jitter. DINO's
local crops are windows of the token grid of a spectrally augmented view, encoded with ``keep``:
the ground keeps its 10 m scale (a local crop is not blown up to the global size, as DINO does with
photographs, where object scale varies anyway) and a crop costs its share of tokens only.

Teachers are updated once per optimiser step through ``after_optimizer_step`` (see
``eolab.tasks.latent``); the teacher temperature follows the optimiser step, which DINO keeps in
buffers, so that a resumed run continues with the same temperature, centre and teacher.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import DINOProjectionHead
from torch import Tensor, nn

from ..models.vit import ViTEncoder
from .augment import Augment
from .common import encoder_context
from .latent import EMATeacher, latent_targets
from .mae import MaskedAutoencoder
from .masking import MASKS

TEACHER_TEMP_WARMUP = 0.04
"""DINO's teacher temperature at the first step; it rises linearly to ``teacher_temp``."""


def token_windows(batch_size: int, grid: int, side: int, groups: int, generator: torch.Generator | None,
                  device: torch.device | str) -> Tensor:
    """Token indices (B, groups * side**2) of one random ``side`` x ``side`` window of the grid per
    sample, in every group (all bands, modalities or dates of that piece of ground)."""
    if not 1 <= side <= grid:
        raise ValueError(f"a local crop of {side} x {side} tokens does not fit a {grid} x {grid} grid")
    top = (torch.rand(batch_size, generator=generator) * (grid - side + 1)).long()  # (B,)
    left = (torch.rand(batch_size, generator=generator) * (grid - side + 1)).long()
    offsets = torch.arange(side)
    rows = top[:, None, None] + offsets[None, :, None]  # (B, side, 1)
    cols = left[:, None, None] + offsets[None, None, :]  # (B, 1, side)
    cells = (rows * grid + cols).flatten(1)  # (B, side*side), row-major like the layout
    per_group = torch.arange(groups)[None, :, None] * grid * grid  # (1, G, 1)
    return (cells[:, None, :] + per_group).flatten(1).to(device)  # (B, G*side*side), group-major


def dino_head(dim: int, out_dim: int) -> nn.Module:
    """lightly's DINO head (MLP, bottleneck, weight-normalised prototypes with unit norm, as in
    DINO's ``norm_last_layer``), its weight norm moved to torch's parametrisation: the deprecated
    hook form cannot be deep-copied, which a teacher (and an FSDP run's sharded copy) needs."""
    with warnings.catch_warnings():  # lightly builds it with the deprecated form, replaced just below
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        head = DINOProjectionHead(dim, 4 * dim, max(64, dim), out_dim)
    last = head.last_layer
    nn.utils.remove_weight_norm(last)  # weight = 1 * v / |v|: unit-norm prototypes
    nn.utils.parametrizations.weight_norm(last)
    last.parametrizations.weight.original0.requires_grad_(False)  # the norm stays 1 (norm_last_layer)
    return head


class DINO(nn.Module):
    """Student (the encoder and a DINO head) against an EMA teacher of both, over two global views
    and ``local_crops`` local ones; cross-entropy of the teacher's centred, sharpened distribution
    (lightly's ``DINOLoss``) on the [CLS] token. ``ibot_weight`` > 0 adds iBOT's patch term: the
    student's global views hide ``ibot_mask_ratio`` of their tokens behind a mask token and must
    match the teacher's distribution of those patches (lightly's ``IBOTPatchLoss``, the head shared
    as in iBOT); ``koleo_weight`` > 0 adds the KoLeo spreading term on the student's [CLS] features.
    """

    def __init__(self, encoder: ViTEncoder, out_dim: int = 1024, local_crops: int = 4, local_frac: float = 0.5,
                 teacher_temp: float = 0.07, student_temp: float = 0.1, temp_warmup_frac: float = 0.3,
                 center_momentum: float = 0.9, momentum: float = 0.996, koleo_weight: float = 0.0,
                 ibot_weight: float = 0.0, ibot_mask_ratio: float = 0.3, mask: str = "block",
                 global_augment: str = "eo", local_augment: str = "spectral"):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown masking scheme {mask!r}; choose one of {sorted(MASKS)}")
        if local_crops < 0 or out_dim < 2 or teacher_temp <= 0 or koleo_weight < 0 or ibot_weight < 0:
            raise ValueError(f"DINO needs local_crops >= 0, out_dim >= 2, teacher_temp > 0 and non-negative weights "
                             f"(got {local_crops}, {out_dim}, {teacher_temp}, koleo {koleo_weight}, ibot {ibot_weight})")
        self.encoder = encoder
        self.global_augment, self.local_augment = Augment(global_augment), Augment(local_augment)
        grid = encoder.tokenizer.grid
        self.local_crops, self.local_side = local_crops, max(1, round(grid * local_frac))
        self.teacher_temp, self.temp_warmup_frac = teacher_temp, temp_warmup_frac
        self.koleo_weight, self.ibot_weight, self.ibot_mask_ratio, self.mask_fn = koleo_weight, ibot_weight, ibot_mask_ratio, MASKS[mask]
        d = encoder.dim
        self.head = dino_head(d, out_dim)
        self.teacher = EMATeacher({"encoder": encoder, "head": self.head}, momentum)
        self.dino_loss = DINOLoss(out_dim, warmup_teacher_temp=TEACHER_TEMP_WARMUP, teacher_temp=teacher_temp,
                                  student_temp=student_temp, center_momentum=center_momentum)
        self.ibot_loss = IBOTPatchLoss(out_dim, teacher_temp=teacher_temp, student_temp=student_temp,
                                       center_momentum=center_momentum)
        self.koleo = KoLeoLoss()
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.mask_token, std=0.02)
        # Where training is, for the temperature schedule: buffers, so a checkpoint carries them.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("max_steps", torch.zeros((), dtype=torch.long))

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self.teacher.update({"encoder": self.encoder, "head": self.head}, step, max_steps)
        self.steps_done.fill_(step)
        self.max_steps.fill_(max_steps)

    def teacher_temperature(self) -> float:
        """Linear warm-up from ``TEACHER_TEMP_WARMUP`` to ``teacher_temp`` over the first
        ``temp_warmup_frac`` of the optimiser steps (DINO's warm-up over its first 30 epochs)."""
        steps, total = int(self.steps_done), int(self.max_steps)  # total is 0 before the first step
        warmup = total * self.temp_warmup_frac
        progress = 0.0 if total == 0 else 1.0 if warmup <= 0 else min(1.0, steps / warmup)
        return TEACHER_TEMP_WARMUP + (self.teacher_temp - TEACHER_TEMP_WARMUP) * progress

    def _hidden(self, b: int, generator: torch.Generator | None, device) -> tuple[Tensor, Tensor]:
        """iBOT's masked tokens of one global view: indices (B, M) and the boolean mask (B, N)."""
        tok = self.encoder.tokenizer
        _, masked = self.mask_fn(b, tok.num_tokens, self.ibot_mask_ratio, generator, device, groups=tok.groups)
        mask = torch.zeros(b, tok.num_tokens, dtype=torch.bool, device=device).scatter_(1, masked, True)
        return masked, mask

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        image, context = batch["image"], encoder_context(batch)  # (B, [T,] C, H, W), normalised
        b, tok = image.shape[0], self.encoder.tokenizer
        temp = self.teacher_temperature()
        globals_ = [self.global_augment(image, generator) for _ in range(2)]
        teacher_encoder, teacher_head = self.teacher["encoder"], self.teacher["head"]
        with torch.no_grad():
            teacher_tokens = [teacher_encoder(v, **context) for v in globals_]  # each (B, 1+N, D)
            teacher_cls = [teacher_head(t[:, 0]) for t in teacher_tokens]  # each (B, K)

        use_ibot = self.ibot_weight > 0 and self.ibot_mask_ratio > 0
        student_cls, ibot_terms, features = [], [], []
        for v, t in zip(globals_, teacher_tokens, strict=True):
            if use_ibot:
                masked, mask = self._hidden(b, generator, image.device)
                tokens = self.encoder(v, hide=(mask, self.mask_token), **context)  # (B, 1+N, D)
                pick = masked[..., None].expand(-1, -1, tokens.shape[-1])
                student_patch = self.head(torch.gather(tokens[:, 1:], 1, pick).flatten(0, 1))  # (B*M, K)
                with torch.no_grad():
                    teacher_patch = teacher_head(torch.gather(t[:, 1:], 1, pick).flatten(0, 1))  # (B*M, K)
                ibot_terms.append(self.ibot_loss(teacher_patch, student_patch, mask[:, None, :], teacher_temp=temp))
            else:
                tokens = self.encoder(v, **context)
            features.append(tokens[:, 0])
            student_cls.append(self.head(tokens[:, 0]))
        for _ in range(self.local_crops):
            view = self.local_augment(image, generator)
            keep = token_windows(b, tok.grid, self.local_side, tok.groups, generator, image.device)
            student_cls.append(self.head(self.encoder(view, keep=keep, **context)[:, 0]))

        dino = self.dino_loss(teacher_cls, student_cls, teacher_temp=temp)
        out = {"dino": dino.detach(), "teacher_temp": torch.tensor(temp)}
        loss = dino
        if use_ibot:
            ibot = torch.stack(ibot_terms).mean()
            loss = loss + self.ibot_weight * ibot
            out["ibot"] = ibot.detach()
        if self.koleo_weight > 0:
            koleo = torch.stack([self.koleo(f) for f in features]).mean()
            loss = loss + self.koleo_weight * koleo
            out["koleo"] = koleo.detach()
        with torch.no_grad():
            # Collapse watch: entropy of the teacher's distribution (log K when uniform, 0 when one-hot).
            p = F.softmax((torch.stack(teacher_cls) - self.dino_loss.center) / temp, dim=-1)
            out["teacher_entropy"] = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        return {"loss": loss, **out}


class MAEWithTeacher(nn.Module):
    """A masked autoencoder whose encoder also matches an EMA teacher's latents (Clay v1.5 and
    Copernicus-FM distil a DINOv2 teacher into the MAE encoder): the student encodes the visible
    tokens only, the teacher the whole input; a linear projector maps each visible student token to
    the teacher's (layer-normed) token at the same position, scored by 1 - cosine similarity.

    ``loss`` = reconstruction + ``distill_weight`` x distillation; both parts are reported.
    """

    def __init__(self, mae: MaskedAutoencoder, distill_weight: float = 1.0, momentum: float = 0.996):
        super().__init__()
        if distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        self.mae, self.encoder, self.distill_weight = mae, mae.encoder, distill_weight
        self.teacher = EMATeacher({"encoder": mae.encoder}, momentum)
        self.projector = nn.Linear(mae.encoder.dim, mae.encoder.dim)

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self.teacher.update({"encoder": self.encoder}, step, max_steps)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        out, latent, keep = self.mae.reconstruct(batch, generator)  # latent (B, 1+K, D) of the visible tokens
        target = latent_targets(self.teacher["encoder"], batch["image"], encoder_context(batch))  # (B, N, D)
        target = torch.gather(target, 1, keep[..., None].expand(-1, -1, target.shape[-1]))  # (B, K, D)
        pred = self.projector(latent[:, 1:])  # (B, K, D)
        distill = 1 - F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()
        recon = out.pop("loss")
        return {"loss": recon + self.distill_weight * distill, "recon": recon.detach(), "distill": distill.detach(), **out}
