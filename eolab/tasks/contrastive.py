"""Contrastive proxy tasks: instance discrimination (SimCLR), its momentum-encoder variant (MoCo v3
style) and cross-view contrast between modalities or dates of the same place.

Each is an ``nn.Module`` returning a dict with ``loss`` and diagnostics, and nothing else: no
optimiser, no logging. The InfoNCE loss and the projection heads are lightly's; the views are
made with EO-valid augmentations (``eolab.tasks.augment``), never RGB colour jitter.

Negatives are the other samples of the batch, so a batch filled from one scene would contrast
near-duplicates (torchgeo #3548): the training entry point samples batches across scenes with
non-overlapping windows (``eolab.data.samplers.SceneDiverseBatchSampler``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from ..models.vit import ViTEncoder, pool_tokens
from .augment import Augment
from .common import encoder_context


def _alignment(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean cosine similarity of positive pairs: near 1 when views agree (or everything collapsed)."""
    return F.cosine_similarity(z1, z2, dim=-1).mean()


class SimCLR(nn.Module):
    """Two augmented views of each sample; pull their projections together, push other samples'
    away (NT-Xent, Chen et al., 2020)."""

    def __init__(self, encoder: ViTEncoder, augment: Augment, proj_dim: int = 128, temperature: float = 0.2,
                 pool: str = "mean"):
        super().__init__()
        self.encoder, self.augment, self.pool = encoder, augment, pool
        in_dim = encoder.dim * (2 if pool == "mean_std" else 1)
        self.head = SimCLRProjectionHead(in_dim, 2 * encoder.dim, proj_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)  # negatives from every rank

    def project(self, image: Tensor, context: dict) -> Tensor:
        return self.head(pool_tokens(self.encoder(image, **context), self.pool))  # (B, proj_dim)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        image, context = batch["image"], encoder_context(batch)  # (B, [T,] C, H, W), normalised
        z1 = self.project(self.augment(image, generator), context)
        z2 = self.project(self.augment(image, generator), context)
        loss = self.criterion(z1, z2)
        return {"loss": loss, "alignment": _alignment(z1.detach(), z2.detach())}


class MoCo(nn.Module):
    """Momentum-encoder contrast (MoCo v3, Chen et al., 2021, without the queue): queries from the
    online encoder, keys from an exponential moving average of it; symmetric InfoNCE over in-batch keys.

    The moving-average update happens at the start of each training forward. It is not an optimiser
    step: it is part of how the keys are defined, as in lightly's and MoCo's reference code.
    """

    def __init__(self, encoder: ViTEncoder, augment: Augment, proj_dim: int = 128, temperature: float = 0.2,
                 momentum: float = 0.99, pool: str = "mean"):
        super().__init__()
        self.encoder, self.augment, self.pool, self.momentum = encoder, augment, pool, momentum
        in_dim = encoder.dim * (2 if pool == "mean_std" else 1)
        self.head = MoCoProjectionHead(in_dim, 2 * encoder.dim, proj_dim)
        self.encoder_momentum = copy.deepcopy(encoder)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.encoder_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)  # negatives from every rank

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        if self.training:
            update_momentum(self.encoder, self.encoder_momentum, self.momentum)
            update_momentum(self.head, self.head_momentum, self.momentum)
        image, context = batch["image"], encoder_context(batch)
        v1, v2 = self.augment(image, generator), self.augment(image, generator)
        q1 = self.head(pool_tokens(self.encoder(v1, **context), self.pool))  # (B, proj_dim)
        q2 = self.head(pool_tokens(self.encoder(v2, **context), self.pool))
        with torch.no_grad():
            k1 = self.head_momentum(pool_tokens(self.encoder_momentum(v1, **context), self.pool))
            k2 = self.head_momentum(pool_tokens(self.encoder_momentum(v2, **context), self.pool))
        loss = 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
        return {"loss": loss, "alignment": _alignment(q1.detach(), k2)}


class CrossViewContrastive(nn.Module):
    """Contrast two disjoint sets of token groups of the same sample (CLIP/CROMA style): Sentinel-2
    groups against Sentinel-1 groups of one place, or one date against another.

    ``views`` are two lists of group indices of the encoder's group or temporal tokeniser; each view
    is encoded from its own tokens only (``keep``), so the encoder must describe the place from
    either modality (or date) alone. With ``pair_dates`` the two views are two different dates drawn
    per sample from all dates (a temporal tokeniser), instead of fixed group sets.
    """

    def __init__(self, encoder: ViTEncoder, views: tuple[list[int], list[int]] | None = None, augment: Augment | None = None,
                 proj_dim: int = 128, temperature: float = 0.2, pool: str = "mean"):
        super().__init__()
        groups = encoder.tokenizer.groups
        if groups < 2:
            raise ValueError("cross-view contrast needs a tokenizer with at least two groups (modalities or dates)")
        if views is not None and (not views[0] or not views[1] or set(views[0]) & set(views[1])
                                  or not set(views[0]) | set(views[1]) <= set(range(groups))):
            raise ValueError(f"views must be two non-empty, disjoint lists of group indices < {groups}, got {views}")
        self.encoder, self.views, self.augment, self.pool = encoder, views, augment, pool
        in_dim = encoder.dim * (2 if pool == "mean_std" else 1)
        self.head = SimCLRProjectionHead(in_dim, 2 * encoder.dim, proj_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)  # negatives from every rank

    def _tokens_of(self, groups: Tensor) -> Tensor:
        """Token indices (B, |groups| * cells) of the given groups (B, k), group-major like the layout."""
        cells = self.encoder.tokenizer.grid ** 2
        return (groups[..., None] * cells + torch.arange(cells, device=groups.device)).flatten(1)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        image, context = batch["image"], encoder_context(batch)
        b, device = image.shape[0], image.device
        if self.augment is not None:
            image = self.augment(image, generator)  # one geometric draw for both views: they stay aligned
        if self.views is None:  # two different dates per sample
            order = torch.rand(b, self.encoder.tokenizer.groups, generator=generator).argsort(1).to(device)
            g1, g2 = order[:, :1], order[:, 1:2]  # (B, 1) each
        else:
            g1 = torch.tensor(self.views[0], device=device).expand(b, -1)
            g2 = torch.tensor(self.views[1], device=device).expand(b, -1)
        z1 = self.head(pool_tokens(self.encoder(image, keep=self._tokens_of(g1), **context), self.pool))
        z2 = self.head(pool_tokens(self.encoder(image, keep=self._tokens_of(g2), **context), self.pool))
        loss = self.criterion(z1, z2)
        return {"loss": loss, "alignment": _alignment(z1.detach(), z2.detach())}
