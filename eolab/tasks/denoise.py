"""Diffusion-style denoising proxy task.

Each sample is corrupted at a random diffusion timestep t of a cosine noise schedule (Nichol &
Dhariwal, 2021): x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps. The encoder sees x_t only; a light decoder,
told t, predicts either the noise eps (DDPM's parameterisation) or the clean signal x_0 per patch.
Denoising at many noise levels is the representation-learning view of diffusion models (e.g.
"Deconstructing denoising diffusion models for self-supervised learning", Chen et al., 2024).

The encoder is deliberately not conditioned on t: at evaluation time it embeds clean images with
no timestep, so it must not learn to depend on one; it has to infer the noise level itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..models.tokenizers import sincos_1d
from ..models.vit import ViTEncoder
from .common import TokenDecoder, encoder_context, patch_mse

TARGETS = ("eps", "x0")


def cosine_alpha_bar(t: Tensor, s: float = 0.008) -> Tensor:
    """Signal fraction a_t of the cosine schedule for t in [0, 1] (1 = clean, ~0 = pure noise)."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / math.cos(s / (1 + s) * math.pi / 2) ** 2).clamp(1e-5, 1.0)


class Denoising(nn.Module):
    def __init__(self, encoder: ViTEncoder, target: str = "eps", decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_heads: int = 2, max_t: float = 0.999):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"denoising target must be one of {TARGETS}, got {target!r}")
        self.encoder, self.target, self.max_t = encoder, target, max_t
        self.decoder = TokenDecoder(encoder.tokenizer, encoder.dim, decoder_dim, decoder_depth, decoder_heads)
        self.time_mlp = nn.Sequential(nn.Linear(decoder_dim, decoder_dim), nn.SiLU(), nn.Linear(decoder_dim, decoder_dim))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x0 = batch["image"]  # (B, [T,] C, H, W), normalised: unit variance per band, as diffusion assumes
        b = x0.shape[0]
        t = (torch.rand(b, generator=generator) * self.max_t).to(x0.device)  # (B,) continuous timesteps
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        a = cosine_alpha_bar(t).view((b,) + (1,) * (x0.ndim - 1))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps

        latent = self.encoder(xt, **encoder_context(batch))  # (B, 1+N, D): all tokens visible
        x = self.decoder.embed(latent)  # (B, 1+N, Dd)
        time = self.time_mlp(sincos_1d(t * 1000, x.shape[-1]).to(x.dtype))  # (B, Dd)
        pos = torch.cat([torch.zeros_like(self.decoder.position()[:1]), self.decoder.position()])  # (1+N, Dd)
        pred = self.decoder(x + pos + time[:, None])  # (B, N, P)

        tok = self.encoder.tokenizer
        target = tok.patchify(eps if self.target == "eps" else x0)  # (B, N, P)
        valid = tok.target_mask.repeat_interleave(tok.grid**2, dim=0) if tok.padded_targets else None  # (N, P)
        per_token = patch_mse(pred, target, valid)  # (B, N)
        loss = per_token.mean()
        with torch.no_grad():
            # Error at low vs high noise: a healthy denoiser is much better on lightly noised inputs.
            # Masked means, not boolean indexing: no host-device sync in the step (NaN when empty).
            low = (t < 0.5).to(per_token.dtype)
            per_sample = per_token.mean(1)
            out = {"loss": loss, "loss_low_noise": (per_sample * low).sum() / low.sum(),
                   "loss_high_noise": (per_sample * (1 - low)).sum() / (1 - low).sum()}
        return out
