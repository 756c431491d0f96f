"""Masking functions. Each returns token indices, never boolean images (lightly style).

Signature shared by every scheme: ``(batch_size, num_tokens, ratio, generator, device) ->
(keep, masked)`` with ``keep`` (B, K) and ``masked`` (B, N-K) long tensors, K = N - round(N*ratio).
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_masked(num_tokens: int, ratio: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return int(round(num_tokens * ratio))


def random_mask(
    batch_size: int,
    num_tokens: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Uniform random patch masking (MAE): each sample hides its own random subset of tokens."""
    n_mask = num_masked(num_tokens, ratio)
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=device)
    order = noise.argsort(dim=1)  # (B, N): a random permutation per sample
    keep, masked = order[:, : num_tokens - n_mask], order[:, num_tokens - n_mask :]
    # Sorted indices keep the visible tokens in raster order, which makes debugging easier.
    return keep.sort(dim=1).values, masked.sort(dim=1).values


MASKS = {"random": random_mask}
