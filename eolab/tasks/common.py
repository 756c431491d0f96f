"""Small parts that several proxy tasks share."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..models.tokenizers import gather_tokens, init_weights, sincos_2d

CONTEXT_KEYS = ("doy",)
"""Batch fields, besides the image, that an encoder's tokeniser may need (day of year of dates)."""


def encoder_context(batch: dict) -> dict:
    """The batch's tokeniser inputs besides the image (e.g. ``doy`` for a time series)."""
    return {k: batch[k] for k in CONTEXT_KEYS if k in batch}


class TokenDecoder(nn.Module):
    """A light transformer over a full token layout (G x grid*grid) predicting each token's pixels.

    Shared by the masked autoencoder (mask tokens fill the hidden positions), the denoiser (every
    position is visible) and, with ``out_dim`` the encoder's width, the latent predictor of
    ``eolab.tasks.latent`` (which predicts latents rather than pixels). Positions: 2-D sin-cos per
    cell plus a learned embedding per group, so the decoder knows which spectral group, modality or
    date a token belongs to.
    """

    def __init__(self, tokenizer: nn.Module, in_dim: int, dim: int, depth: int, heads: int, out_dim: int | None = None):
        super().__init__()
        self.groups, self.cells = tokenizer.groups, tokenizer.grid**2
        self.embed = nn.Linear(in_dim, dim)
        self.register_buffer("pos", sincos_2d(tokenizer.grid, dim), persistent=False)  # (N, Dd)
        self.group_embed = nn.Parameter(torch.zeros(self.groups, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, 4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, out_dim or tokenizer.target_mask.shape[1])  # pixels of a token by default
        for m in (self.embed, self.blocks, self.norm, self.pred):
            m.apply(init_weights)
        nn.init.normal_(self.group_embed, std=0.02)

    def position(self) -> Tensor:
        """(G*N, Dd) encoding of every token position in the layout, group-major."""
        return (self.group_embed[:, None] + self.pos[None]).flatten(0, 1)

    def forward(self, x: Tensor, select: Tensor | None = None) -> Tensor:
        """(B, 1+G*N, Dd) tokens, [CLS] first, positions added -> (B, G*N, P) pixel predictions,
        or only those of the token indices ``select`` (B, M): the masked autoencoder needs the
        masked tokens' pixels only, and predicting the others is a quarter of its step on a CPU."""
        for block in self.blocks:
            x = block(x)
        x = x[:, 1:]  # (B, G*N, Dd)
        if select is not None:
            x = gather_tokens(x, select)  # (B, M, Dd)
        return self.pred(self.norm(x))

    def predict_masked(self, latent: Tensor, keep: Tensor, masked: Tensor, mask_token: Tensor) -> Tensor:
        """Predictions (B, M, out) for the ``masked`` tokens (B, M) from the encoder's output on the
        ``keep`` tokens (B, 1+K, D), [CLS] first: visible latents and ``mask_token`` (1, 1, Dd) are
        scattered back to their layout positions, positions added, and the decoder run over all."""
        x = self.embed(latent)  # (B, 1+K, Dd)
        b, n = x.shape[0], self.groups * self.cells
        # Under autocast the projected latents are bf16/fp16 while the parameter is fp32: match them.
        full = mask_token.to(x.dtype).expand(b, n, -1).clone()  # (B, N, Dd)
        full.scatter_(1, keep[..., None].expand(-1, -1, x.shape[-1]), x[:, 1:])
        full = full + self.position()
        return self(torch.cat([x[:, :1], full], dim=1), select=masked)  # (B, M, out): masked tokens only


def patch_mse(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error per token over its real target entries: (B, N, P) x2 -> (B, N).

    ``valid`` ([B,] N, P) marks real entries where groups of fewer bands are zero-padded; None when
    every entry is real (the common case, which then costs no masking).
    """
    if valid is None:
        if torch.compiler.is_compiling():  # inductor fuses the plain form with its neighbours (1.1x compiled)
            return ((pred - target) ** 2).mean(-1)
        return F.mse_loss(pred, target, reduction="none").mean(-1)  # one kernel each way, eagerly
    valid = valid.to(pred.dtype)
    return ((pred - target) ** 2 * valid).sum(-1) / valid.sum(-1)


def normalize_patches(target: Tensor, valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Standardise each token's target over its real entries (MAE's norm-pix loss): the target
    becomes local structure rather than absolute brightness. Padding stays zero."""
    if valid is None:
        # (x - mean) / sqrt(var_unbiased + eps) as one layer norm (biased variance, one fused pass;
        # torch.var measured 5x slower on CPU): var_unbiased = var * P / (P - 1), rescaled exactly.
        p = target.shape[-1]
        return F.layer_norm(target, (p,), eps=eps * (p - 1) / p) * math.sqrt((p - 1) / p)
    v = valid.to(target.dtype)
    count = v.sum(-1, keepdim=True)
    mean = (target * v).sum(-1, keepdim=True) / count
    var = (((target - mean) * v) ** 2).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    return (target - mean) / (var + eps).sqrt() * v
