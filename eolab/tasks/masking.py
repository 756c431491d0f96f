"""Masking functions. Each returns token indices, never boolean images (lightly style).

Signature shared by every scheme::

    (batch_size, num_tokens, ratio, generator=None, device="cpu", groups=1) -> (keep, masked)

with ``keep`` (B, K) and ``masked`` (B, N-K) long tensors, sorted, K = N - round(N * ratio), and
tokens laid out group-major as ``groups`` x (N / groups) spatial cells (see
``eolab.models.tokenizers``; a group is a spectral band group, a modality or a date):

    random            uniform over all tokens (MAE)
    block             2x2 blocks of neighbouring cells, drawn independently in each group (SimMIM)
    group_independent each group hides its own random cells, the same number per group
                      (SatMAE "independent"; per-modality masking for S1+S2 groups)
    group_consistent  the same cells hidden in every group: whole tubes through the groups
                      (SatMAE "consistent"; VideoMAE "tube" masking for dates)
    group_drop        whole groups hidden first, in random order (temporal masking of whole dates,
                      or a whole modality or spectral group missing)

Every scheme masks exactly round(N * ratio) tokens: when whole units (blocks, tubes, groups) do not
add up to that, the last unit is taken in part. All are built on one rule, ``_by_priority``: each
token gets a random priority that encodes the scheme's structure, and the lowest are masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def num_masked(num_tokens: int, ratio: float) -> int:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return int(round(num_tokens * ratio))


def _cells(num_tokens: int, groups: int) -> int:
    if groups < 1 or num_tokens % groups:
        raise ValueError(f"{num_tokens} tokens cannot be laid out as {groups} equal groups")
    return num_tokens // groups


def _by_priority(priority: Tensor, ratio: float) -> tuple[Tensor, Tensor]:
    """Mask the round(N * ratio) tokens of lowest priority (B, N); return sorted (keep, masked)."""
    n = priority.shape[1]
    n_mask = num_masked(n, ratio)
    order = priority.argsort(dim=1)  # (B, N)
    masked, keep = order[:, :n_mask], order[:, n_mask:]
    # Sorted indices keep the visible tokens in layout order, which makes debugging easier.
    return keep.sort(dim=1).values, masked.sort(dim=1).values


def _rank(x: Tensor) -> Tensor:
    """Rank of each entry along the last dim (0 = smallest): a random permutation from noise."""
    return x.argsort(-1).argsort(-1).to(torch.float32)


def random_mask(batch_size: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", groups: int = 1) -> tuple[Tensor, Tensor]:
    """Uniform random token masking (MAE): each sample hides its own random subset of tokens."""
    _cells(num_tokens, groups)
    return _by_priority(torch.rand(batch_size, num_tokens, generator=generator, device=device), ratio)


def block_mask(batch_size: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", groups: int = 1, block: int = 2) -> tuple[Tensor, Tensor]:
    """Masking of ``block`` x ``block`` groups of neighbouring cells (SimMIM-style), per group.

    Neighbouring 10 m patches are strongly correlated, so uniform random masking can be solved by
    interpolation; hiding whole blocks forces longer-range inference. Needs a square grid whose
    side is a multiple of ``block``.
    """
    n = _cells(num_tokens, groups)
    grid = math.isqrt(n)
    if grid * grid != n or grid % block:
        raise ValueError(f"block masking needs a square grid divisible by {block}, got {n} cells per group")
    rows, cols = torch.arange(n, device=device) // grid, torch.arange(n, device=device) % grid
    cell = (rows // block) * (grid // block) + cols // block  # (N,) block index of each cell
    n_blocks = (grid // block) ** 2
    block_rank = _rank(torch.rand(batch_size, groups, n_blocks, generator=generator, device=device))  # (B, G, blocks)
    group_order = _rank(torch.rand(batch_size, groups, 1, generator=generator, device=device))  # (B, G, 1)
    within = torch.rand(batch_size, groups, n, generator=generator, device=device)  # order inside a block
    # Whole blocks first, in each group's random block order; at equal block rank the groups take
    # turns in a random order, so every group loses the same number of blocks (give or take one).
    # Block r of the o-th group occupies priorities [r + o/G, r + (o+1)/G): disjoint intervals.
    priority = block_rank[:, :, cell] + (group_order + within) / groups  # (B, G, N)
    return _by_priority(priority.flatten(1), ratio)


def group_independent_mask(batch_size: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu", groups: int = 1) -> tuple[Tensor, Tensor]:
    """Each group hides its own random cells; the count per group differs by at most one."""
    n = _cells(num_tokens, groups)
    rank = _rank(torch.rand(batch_size, groups, n, generator=generator, device=device))  # (B, G, N)
    tie = torch.rand(batch_size, groups, 1, generator=generator, device=device)  # which groups lose one more
    return _by_priority((rank + tie).flatten(1), ratio)


def group_consistent_mask(batch_size: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", groups: int = 1) -> tuple[Tensor, Tensor]:
    """The same cells hidden in every group (tubes); a partial last tube when N * ratio requires it."""
    n = _cells(num_tokens, groups)
    cell_rank = _rank(torch.rand(batch_size, 1, n, generator=generator, device=device))  # (B, 1, N) shared by groups
    within = torch.rand(batch_size, groups, n, generator=generator, device=device) / 2  # order inside a tube
    return _by_priority((cell_rank + within).flatten(1), ratio)


def group_drop_mask(batch_size: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu", groups: int = 1) -> tuple[Tensor, Tensor]:
    """Whole groups hidden first (random group order), the last group in part (random cells)."""
    n = _cells(num_tokens, groups)
    group_rank = _rank(torch.rand(batch_size, groups, generator=generator, device=device))  # (B, G)
    within = torch.rand(batch_size, groups, n, generator=generator, device=device)  # in [0, 1)
    return _by_priority((group_rank[..., None] + within).flatten(1), ratio)


MASKS = {
    "random": random_mask,
    "block": block_mask,
    "group_independent": group_independent_mask,
    "group_consistent": group_consistent_mask,
    "group_drop": group_drop_mask,
}
