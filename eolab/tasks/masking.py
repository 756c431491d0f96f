"""Masking functions. Each returns token indices, never boolean images (lightly style).

Signature shared by every scheme: ``(batch_size, num_tokens, ratio, generator, device) ->
(keep, masked)`` with ``keep`` (B, K) and ``masked`` (B, N-K) long tensors, K = N - round(N*ratio).
"""

from __future__ import annotations

import math

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


def block_mask(
    batch_size: int,
    num_tokens: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    block: int = 2,
) -> tuple[Tensor, Tensor]:
    """Masking of ``block`` x ``block`` groups of neighbouring tokens (SimMIM-style), exact ratio.

    Neighbouring 10 m patches are strongly correlated, so uniform random masking can be solved by
    interpolation; hiding whole blocks forces longer-range inference. Blocks are taken in random
    order and the last one is taken partly, so exactly round(N * ratio) tokens are masked.
    Assumes a square token grid whose side is a multiple of ``block``.
    """
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens or grid % block:
        raise ValueError(f"block masking needs a square grid divisible by {block}, got {num_tokens} tokens")
    n_mask = num_masked(num_tokens, ratio)
    rows = torch.arange(num_tokens, device=device) // grid
    cols = torch.arange(num_tokens, device=device) % grid
    cell = (rows // block) * (grid // block) + cols // block  # (N,) block index of each token
    n_cells = (grid // block) ** 2
    cell_rank = torch.rand(batch_size, n_cells, generator=generator, device=device).argsort(1).argsort(1)  # (B, cells)
    within = torch.rand(batch_size, num_tokens, generator=generator, device=device)  # order inside a block
    priority = cell_rank[:, cell] + within  # (B, N): whole blocks first, in random block order
    order = priority.argsort(dim=1)
    masked, keep = order[:, :n_mask], order[:, n_mask:]
    return keep.sort(dim=1).values, masked.sort(dim=1).values


MASKS = {"random": random_mask, "block": block_mask}
