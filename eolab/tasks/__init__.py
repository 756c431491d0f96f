"""Proxy tasks (nn.Modules returning dicts of losses), masking functions and EO augmentations.

``TASKS`` maps the objective names used by notebooks and sweeps to factories
``factory(encoder, params) -> nn.Module``; ``build_task`` also parses combinations such as
"mae+simclr" (weights from ``params.weights``). Registries live only here, at the edge: the task
classes themselves take their parts through their constructors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..models.vit import ViTEncoder
from .augment import AUGMENTATIONS, Augment
from .combined import Combined
from .contrastive import CrossViewContrastive, MoCo, SimCLR
from .denoise import Denoising
from .distill import DINO, MAEWithTeacher
from .latent import LATENT_LOSSES, LatentMaskedModelling
from .mae import MaskedAutoencoder
from .masking import MASKS, random_mask


@dataclass(frozen=True)
class TaskParams:
    """What the registered objectives may need, with the defaults of ``PretrainConfig``."""

    mask_ratio: float = 0.75
    mask: str = "random"
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 4
    view_augment: str = "eo"
    temperature: float = 0.2
    momentum: float = 0.99
    proj_dim: int = 128
    denoise_target: str = "eps"
    views: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # cross-view groups; None = two random dates
    weights: tuple[float, ...] = ()  # one per part of a combination; empty = all 1
    latent_loss: str = "smooth_l1"
    target_encoder: str = "ema"
    ema_momentum: float = 0.996
    dino_out_dim: int = 1024
    local_crops: int = 4
    teacher_temp: float = 0.07
    koleo_weight: float = 0.0
    ibot_weight: float = 0.0
    distill_weight: float = 1.0

    @property
    def decoder_heads(self) -> int:
        return max(1, self.decoder_dim // 32)


def _mae(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return MaskedAutoencoder(encoder, p.mask_ratio, p.mask, p.decoder_dim, p.decoder_depth, p.decoder_heads, p.norm_pix_loss)


def _simclr(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return SimCLR(encoder, Augment(p.view_augment), p.proj_dim, p.temperature)


def _moco(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return MoCo(encoder, Augment(p.view_augment), p.proj_dim, p.temperature, p.momentum)


def _denoise(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return Denoising(encoder, p.denoise_target, p.decoder_dim, p.decoder_depth, p.decoder_heads)


def _cross_view(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    views = None if p.views is None else (list(p.views[0]), list(p.views[1]))
    # Geometric augmentation only: both views must keep showing the same ground.
    return CrossViewContrastive(encoder, views, Augment("dihedral"), p.proj_dim, p.temperature)


def _jepa(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    # The predictor takes the decoder's size parameters: it plays the decoder's part, in latent space.
    return LatentMaskedModelling(encoder, p.mask_ratio, p.mask, p.decoder_dim, p.decoder_depth, p.decoder_heads,
                                 p.latent_loss, p.target_encoder, p.ema_momentum)


def _dino(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return DINO(encoder, p.dino_out_dim, p.local_crops, teacher_temp=p.teacher_temp, momentum=p.ema_momentum,
                koleo_weight=p.koleo_weight, ibot_weight=p.ibot_weight, mask=p.mask, global_augment=p.view_augment)


def _mae_teacher(encoder: ViTEncoder, p: TaskParams) -> nn.Module:
    return MAEWithTeacher(_mae(encoder, p), p.distill_weight, p.ema_momentum)


TASKS: dict[str, Callable[[ViTEncoder, TaskParams], nn.Module]] = {
    "mae": _mae,
    "simclr": _simclr,
    "moco": _moco,
    "denoise": _denoise,
    "cross_view": _cross_view,
    "jepa": _jepa,
    "dino": _dino,
    "mae_teacher": _mae_teacher,
}


def parse_objective(objective: str) -> tuple[str, ...]:
    """'mae+simclr' -> ('mae', 'simclr'); unknown names raise a ValueError naming them."""
    names = tuple(n.strip() for n in objective.split("+") if n.strip())
    unknown = [n for n in names if n not in TASKS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"objective {objective!r}: use one or more distinct names from {sorted(TASKS)} joined by '+'"
                         + (f" (unknown: {unknown})" if unknown else ""))
    return names


def build_task(objective: str, encoder: ViTEncoder, params: TaskParams = TaskParams()) -> nn.Module:
    """The proxy task named ``objective`` (or a weighted combination 'a+b') around ``encoder``."""
    names = parse_objective(objective)
    if len(names) == 1:
        return TASKS[names[0]](encoder, params)
    weights = params.weights or (1.0,) * len(names)
    if len(weights) != len(names):
        raise ValueError(f"objective {objective!r} has {len(names)} parts but {len(weights)} weights {weights}")
    return Combined({n: TASKS[n](encoder, params) for n in names}, dict(zip(names, weights, strict=True)))


__all__ = ["AUGMENTATIONS", "DINO", "LATENT_LOSSES", "MASKS", "TASKS", "Augment", "Combined", "CrossViewContrastive",
           "Denoising", "LatentMaskedModelling", "MAEWithTeacher", "MaskedAutoencoder", "MoCo", "SimCLR", "TaskParams", "build_task", "parse_objective", "random_mask"]
