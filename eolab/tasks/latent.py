"""Latent masked modelling (I-JEPA, Assran et al., 2023; the latent MIM of OlmoEarth and Galileo):
predict the *representations* of hidden tokens rather than their pixels.

A target encoder (an exponential moving average of the online encoder, or a frozen copy of it)
encodes the whole input; the online encoder sees the visible tokens only; a light predictor maps
the visible latents plus the positions of the hidden tokens to the target's latents of those
tokens. Any token layout (patches, spectral groups, S1+S2 groups, dates) and any masking scheme of
``eolab.tasks.masking`` works, because both address tokens by their index in the group-major layout.

Teachers are updated once per optimiser step, never inside ``forward``: the training module calls
``after_optimizer_step(step, max_steps)`` of the task right after each optimiser step (the
``TeacherUpdate`` callback of ``eolab.train``), before any checkpoint of that step is written. The
moving average's momentum is a function of the step alone (a cosine from ``momentum`` to 1), and
the teacher's weights are part of the task's state dict, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from ..models.vit import ViTEncoder
from .common import TokenDecoder, encoder_context
from .masking import MASKS

LATENT_LOSSES = ("smooth_l1", "mse", "cosine", "patch_disc")
"""Losses between predicted and target latents: smooth L1 (V-JEPA), squared error (I-JEPA),
1 - cosine similarity, or OlmoEarth's patch discrimination (each predicted token must pick its own
target among the hidden tokens of its sample: an InfoNCE over tokens)."""

TARGETS = ("ema", "frozen")


class EMATeacher(nn.Module):
    """Copies of student modules, updated as their exponential moving average once per optimiser
    step (``frozen``: never updated, the copy keeps the student's initial weights).

    The copies are ordinary sub-modules (saved and restored with the task, moved with it) whose
    parameters need no gradient, so the optimiser never sees them. The students are not held here:
    ``update`` is given them, so that they stay the task's own modules.
    """

    def __init__(self, students: dict[str, nn.Module], momentum: float = 0.996, momentum_end: float = 1.0,
                 frozen: bool = False):
        super().__init__()
        if not 0.0 <= momentum <= momentum_end <= 1.0:
            raise ValueError(f"teacher momentum must satisfy 0 <= momentum <= momentum_end <= 1, got {momentum}, {momentum_end}")
        self.momentum, self.momentum_end, self.frozen = momentum, momentum_end, frozen
        self.copies = nn.ModuleDict({name: copy.deepcopy(m) for name, m in students.items()})
        deactivate_requires_grad(self.copies)

    def __getitem__(self, name: str) -> nn.Module:
        return self.copies[name]

    def momentum_at(self, step: int, max_steps: int) -> float:
        """The moving average's momentum after ``step`` optimiser steps of ``max_steps``: a cosine
        from ``momentum`` to ``momentum_end`` (I-JEPA, DINO), a function of the step alone."""
        return float(cosine_schedule(min(step, max_steps), max_steps, self.momentum, self.momentum_end))

    @torch.no_grad()
    def update(self, students: dict[str, nn.Module], step: int, max_steps: int) -> None:
        if self.frozen:
            return
        m = self.momentum_at(step, max_steps)
        for name, student in students.items():
            update_momentum(student, self.copies[name], m)


def latent_targets(encoder: ViTEncoder, image: Tensor, context: dict, normalize: bool = True) -> Tensor:
    """The target encoder's patch tokens (B, N, D) of the whole input, without gradient; layer-normed
    without affine parameters (I-JEPA), which keeps their scale fixed as the teacher drifts."""
    with torch.no_grad():
        tokens = encoder(image, **context)[:, 1:]  # (B, N, D): every token visible
        return F.layer_norm(tokens, tokens.shape[-1:]) if normalize else tokens


def latent_loss(pred: Tensor, target: Tensor, kind: str, temperature: float = 0.1) -> Tensor:
    """Per-token loss between predictions and targets (B, M, D) x2 -> scalar (see ``LATENT_LOSSES``)."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "cosine":
        return 1 - F.cosine_similarity(pred, target, dim=-1).mean()
    if kind == "patch_disc":
        p, t = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
        logits = p @ t.transpose(1, 2) / temperature  # (B, M, M): each prediction against every hidden token
        own = torch.arange(p.shape[1], device=p.device).repeat(p.shape[0])  # (B*M,) the diagonal
        return F.cross_entropy(logits.flatten(0, 1).float(), own)
    raise ValueError(f"latent loss must be one of {LATENT_LOSSES}, got {kind!r}")


class LatentMaskedModelling(nn.Module):
    """Predict the target encoder's latents of the masked tokens from the visible ones.

    Reports ``loss`` and, as collapse diagnostics, ``target_std`` (spread of the target latents over
    tokens and samples; near 0 when the teacher has collapsed to a constant) and ``pred_cos`` (mean
    cosine similarity of prediction and target).
    """

    def __init__(self, encoder: ViTEncoder, mask_ratio: float = 0.75, mask: str = "block", predictor_dim: int = 128,
                 predictor_depth: int = 4, predictor_heads: int = 4, loss: str = "smooth_l1", target: str = "ema",
                 momentum: float = 0.996, disc_temperature: float = 0.1):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown masking scheme {mask!r}; choose one of {sorted(MASKS)}")
        if loss not in LATENT_LOSSES:
            raise ValueError(f"latent loss must be one of {LATENT_LOSSES}, got {loss!r}")
        if target not in TARGETS:
            raise ValueError(f"target encoder must be one of {TARGETS}, got {target!r}")
        self.encoder, self.mask_ratio, self.mask_fn = encoder, mask_ratio, MASKS[mask]
        self.loss_kind, self.disc_temperature = loss, disc_temperature
        self.teacher = EMATeacher({"encoder": encoder}, momentum, frozen=target == "frozen")
        # The predictor is the MAE decoder's architecture with the encoder's width as its output.
        self.predictor = TokenDecoder(encoder.tokenizer, encoder.dim, predictor_dim, predictor_depth, predictor_heads,
                                      out_dim=encoder.dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        self.teacher.update({"encoder": self.encoder}, step, max_steps)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        image, context = batch["image"], encoder_context(batch)  # (B, [T,] C, H, W), normalised
        tok = self.encoder.tokenizer
        b, n = image.shape[0], tok.num_tokens
        keep, masked = self.mask_fn(b, n, self.mask_ratio, generator, image.device, groups=tok.groups)  # (B, K), (B, M)

        latent = self.encoder(image, keep=keep, **context)  # (B, 1+K, D): visible tokens only
        pred = self.predictor.predict_masked(latent, keep, masked, self.mask_token)  # (B, M, D)
        target = latent_targets(self.teacher["encoder"], image, context)  # (B, N, D)
        target = torch.gather(target, 1, masked[..., None].expand(-1, -1, target.shape[-1]))  # (B, M, D)
        loss = latent_loss(pred.float(), target.float(), self.loss_kind, self.disc_temperature)
        with torch.no_grad():
            out = {"loss": loss, "target_std": target.float().std(dim=(0, 1)).mean(),
                   "pred_cos": F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()}
        return out
