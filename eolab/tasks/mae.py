"""Masked autoencoder proxy task (He et al., 2022) for multispectral patches.

The task is an ``nn.Module`` that owns the encoder and a light decoder and returns a dict of
losses and diagnostics; it holds no optimiser and logs nothing (the training module does both).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..models.tokenizers import init_weights, sincos_2d
from ..models.vit import ViTEncoder
from .masking import MASKS


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        encoder: ViTEncoder,
        mask_ratio: float = 0.75,
        mask: str = "random",
        decoder_dim: int = 64,
        decoder_depth: int = 2,
        decoder_heads: int = 2,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown masking scheme {mask!r}; choose one of {sorted(MASKS)}")
        self.encoder, self.mask_ratio, self.mask_fn, self.norm_pix_loss = encoder, mask_ratio, MASKS[mask], norm_pix_loss
        tok = encoder.tokenizer
        self.decoder_embed = nn.Linear(encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos", sincos_2d(tok.grid, decoder_dim), persistent=False)
        self.decoder = nn.ModuleList(Block(decoder_dim, decoder_heads, 4.0, qkv_bias=True) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, tok.patch_size**2 * len(tok.bands))
        for m in (self.decoder_embed, self.decoder, self.decoder_norm, self.decoder_pred):
            m.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        image = batch["image"]  # (B, C, H, W), normalised
        b = image.shape[0]
        n = self.encoder.tokenizer.num_tokens
        keep, masked = self.mask_fn(b, n, self.mask_ratio, generator, image.device)  # (B, K), (B, M)

        latent = self.encoder(image, keep=keep)  # (B, 1+K, D): only visible tokens are encoded

        # Decoder input: visible latents and mask tokens scattered back to their grid positions.
        x = self.decoder_embed(latent)  # (B, 1+K, Dd)
        # Under autocast the projected latents are bf16/fp16 while the parameter is fp32: match them.
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()  # (B, N, Dd)
        full.scatter_(1, keep[..., None].expand(-1, -1, x.shape[-1]), x[:, 1:])
        full = full + self.decoder_pos
        y = torch.cat([x[:, :1], full], dim=1)  # (B, 1+N, Dd), [CLS] first
        for block in self.decoder:
            y = block(y)
        pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]  # (B, N, p*p*C)

        target = self.encoder.tokenizer.patchify(image)  # (B, N, p*p*C)
        if self.norm_pix_loss:
            # Normalise each patch's pixels (per token, over its p*p*C values) as in MAE: the target
            # becomes local structure rather than absolute brightness.
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_token = ((pred - target) ** 2).mean(-1)  # (B, N)
        is_masked = torch.zeros(b, n, device=image.device).scatter_(1, masked, 1.0)
        loss = (per_token * is_masked).sum() / is_masked.sum()
        with torch.no_grad():
            visible_loss = (per_token * (1 - is_masked)).sum() / (1 - is_masked).sum().clamp_min(1)
            emb = latent[:, 1:].mean(1)  # (B, D) mean of visible-token embeddings
        return {"loss": loss, "visible_loss": visible_loss, "embedding_std": emb.std(0).mean()}
