"""Tokenisers: images to token sequences (B, N, D) with positional encodings.

The tokeniser is a part passed to the encoder (timm style), so the same transformer runs over
different token layouts. Every tokeniser lays its tokens out as ``groups`` x ``grid*grid``
(group-major: token ``g * grid**2 + i`` is spatial cell ``i`` of group ``g``), where a group is

    PatchTokenizer     1 group: square patches over all bands (ViT/MAE)
    GroupTokenizer     one group per band group: spectral groups (SatMAE) or modalities (S2 / S1)
    TemporalTokenizer  one group per acquisition date (input (B, T, C, H, W) plus day of year)

so masking functions (``eolab.tasks.masking``) can hide tokens by space, by group or both without
knowing which tokeniser made them. Band identity is explicit: each tokeniser records the band names
it was built for, and group tokens carry an encoding of their wavelengths (not of a channel index).

Reconstruction targets come from ``patchify``: (B, G*N, P) with P = p*p*(channels of the largest
group), zero-padded for smaller groups; ``target_mask`` (G, P) marks the real entries.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.bands import BANDS

# Sentinel-1 is a C-band radar (5.405 GHz): its "wavelength" for the spectral encoding of a group.
SAR_WAVELENGTH_NM = 299_792_458 / 5.405e9 * 1e9
SAR_BANDS = ("VV", "VH", "HH", "HV")


def sincos_1d(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sine-cosine encoding of real-valued positions (...,) -> (..., dim) (transformer style)."""
    assert dim % 2 == 0, "encoding dim must be even"
    omega = 1.0 / max_period ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim // 2))
    angles = positions.double()[..., None] * omega  # (..., D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE), shape (grid*grid, dim)."""
    assert dim % 4 == 0, "embedding dim must be divisible by 4 for 2-D sin-cos positions"
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    return torch.cat([sincos_1d(ys.flatten(), dim // 2), sincos_1d(xs.flatten(), dim // 2)], dim=1)


def wavelength_code(bands: tuple[str, ...], dim: int) -> Tensor:
    """Encoding (dim,) of a band group's spectral position: sin-cos of its mean log-wavelength.

    Log scale, because the spectrum spans visible (~0.5 um) to SWIR (~2.2 um) and radar (cm); the
    scale factor spreads that range over the encoding's frequencies.
    """
    nm = [SAR_WAVELENGTH_NM if b in SAR_BANDS else BANDS[b].wavelength_nm if b in BANDS else None for b in bands]
    if any(w is None for w in nm):
        raise ValueError(f"no wavelength known for bands {[b for b, w in zip(bands, nm) if w is None]}")
    position = torch.tensor(sum(math.log(w) for w in nm) / len(nm) * 100.0)
    return sincos_1d(position, dim)


def patchify(image: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C*p*p): the pixel values of each patch, patches row-major, each
    patch band by band (the layout of a convolution's weight (D, C, p, p)). Band-major because the
    copy then moves rows of p pixels; a channel-last patch (p, p, C) gathers every pixel from C
    planes, which measured 2x slower on CPU with 13 bands."""
    b, c, h, w = image.shape
    p, dtype = patch_size, image.dtype
    # The copy's cost is per row of p pixels more than per byte (1.7 M rows at micro-64): read as
    # 16-byte elements (4 fp32 pixels, 8 bf16) it moves p/4 elements a row, the same bytes (2.6 ms
    # against 3.4 ms, one CPU thread). Eagerly and without autograd only: inductor and autograd do
    # not take a view to a wider dtype.
    unit = 16 // image.element_size()  # pixels per complex128 element
    wide = (
        not image.is_complex() and p % unit == 0 and image.is_contiguous() and image.storage_offset() % unit == 0
        and not image.requires_grad and not torch.compiler.is_compiling()
    )
    if wide:
        image = image.view(torch.complex128)  # (B, C, H, W/unit): the same memory
    x = image.reshape(b, c, h // p, p, w // p, -1)  # (B, C, gh, p, gw, p or p/unit)
    x = x.permute(0, 2, 4, 1, 3, 5).contiguous()  # (B, gh, gw, C, p, p or p/unit)
    if wide:
        x = x.view(dtype)  # (B, gh, gw, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def flat_rows(index: Tensor, n: int) -> Tensor:
    """Token indices ``index`` (B, K) into sequences of ``n`` tokens as rows (B*K,) of the
    flattened (B*N, D) tokens."""
    return (index + torch.arange(index.shape[0], device=index.device)[:, None] * n).flatten()


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """The tokens ``index`` (B, K) of ``x`` (B, N, D): (B, K, D). The same values as ``torch.gather``
    with the index expanded over D; run eagerly as whole-row copies (``index_select`` on (B*N, D)),
    which do not read an index per element (0.85 ms against 3.5 ms for the MAE's target, micro-64,
    one CPU thread), but as ``torch.gather`` under ``torch.compile``, which inductor fuses into its
    neighbours (the compiled MAE step: 1.11x faster than with ``index_select``)."""
    b, n, d = x.shape
    if torch.compiler.is_compiling():
        return torch.gather(x, 1, index[..., None].expand(-1, -1, d))
    return x.reshape(b * n, d).index_select(0, flat_rows(index, n)).view(b, index.shape[1], d)


class _GridTokenizer(nn.Module):
    """What every tokeniser shares: the spatial grid, band names, group layout and target layout."""

    def __init__(self, bands: tuple[str, ...], img_size: int, patch_size: int, dim: int, group_channels: list[list[int]]):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.bands, self.img_size, self.patch_size, self.dim = tuple(bands), img_size, patch_size, dim
        self.grid = img_size // patch_size
        self.group_channels = group_channels  # channel indices of each group's bands
        width = patch_size**2 * max(len(g) for g in group_channels)
        mask = torch.zeros(len(group_channels), width, dtype=torch.bool)
        for g, ch in enumerate(group_channels):
            mask[g, : patch_size**2 * len(ch)] = True
        self.register_buffer("target_mask", mask, persistent=False)  # (G, P)
        self.padded_targets = not bool(mask.all())  # a plain bool: tasks branch on it without a device sync
        self.register_buffer("pos", sincos_2d(self.grid, dim), persistent=False)  # (N, D)

    @property
    def groups(self) -> int:
        return len(self.group_channels)

    @property
    def num_tokens(self) -> int:
        return self.groups * self.grid * self.grid


class PatchTokenizer(_GridTokenizer):
    """Square patches over all bands, linearly embedded, plus fixed positions.

    The embedding is a per-patch matrix multiply. Its weight is kept as a strided convolution's
    (``proj``, (D, C, p, p): the checkpoint layout of timm and of earlier eolab runs), but it runs
    as patchify + matmul, which measured cheaper than the convolution on CPU (one GEMM, no im2col;
    ``python -m benchmarks.throughput --embed conv,matmul``), and which can embed only the tokens
    an encoder keeps (``keep``): a masked autoencoder embeds a quarter of the patches.
    """

    selects_tokens = True
    """``forward`` takes ``keep`` and embeds only those tokens (the encoder need not gather)."""

    def __init__(self, bands: tuple[str, ...], img_size: int, patch_size: int, dim: int):
        super().__init__(bands, img_size, patch_size, dim, [list(range(len(bands)))])
        self.proj = nn.Conv2d(len(bands), dim, kernel_size=patch_size, stride=patch_size)
        # Initialise like a linear layer (MAE): the conv is a per-patch matrix multiply.
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        self.embed_as = "matmul"  # or "conv": the strided convolution over every patch (benchmarks)

    def forward(self, image: Tensor, keep: Tensor | None = None, patches: Tensor | None = None, **context) -> Tensor:
        """(B, C, H, W) -> (B, N, D) tokens with positions; with ``keep`` (B, K) only those, (B, K, D).
        ``patches``: ``self.patchify(image)`` when the caller has it already (the MAE's target)."""
        if self.embed_as == "conv":
            x = self.proj(image).flatten(2).transpose(1, 2)  # (B, D, H/p, W/p) -> (B, N, D), row-major
            x = x + self.pos
            return x if keep is None else torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        if patches is None:
            patches = self.patchify(image)  # (B, N, C*p*p), band-major within a patch
        pos = self.pos.expand(patches.shape[0], -1, -1)  # (B, N, D)
        if keep is not None:
            patches = gather_tokens(patches, keep)  # (B, K, P)
            pos = self.pos[keep]  # (B, K, D)
        # The conv weight (D, C, p, p) is already in patchify's (C, p, p) order: (D, P).
        weight = self.proj.weight.reshape(self.dim, -1)
        return torch.addmm(self.proj.bias, patches.flatten(0, 1), weight.t()).view(*patches.shape[:2], -1) + pos

    def patchify(self, image: Tensor) -> Tensor:
        return patchify(image, self.patch_size)  # (B, N, C*p*p)


class GroupTokenizer(_GridTokenizer):
    """One token per (band group, patch) (SatMAE's spectral grouping, or one group per modality).

    Each group has its own patch embedding, so bands with different physics (visible, red edge,
    SWIR, radar backscatter) are not forced through one linear map; a token's encoding is its
    spatial position plus its group's wavelength code plus a learned group embedding.
    """

    def __init__(self, bands: tuple[str, ...], groups: tuple[tuple[str, ...], ...], img_size: int, patch_size: int, dim: int):
        bands = tuple(bands)
        flat = [b for g in groups for b in g]
        unknown, unused = [b for b in flat if b not in bands], [b for b in bands if b not in flat]
        if unknown or unused or len(set(flat)) != len(flat):
            raise ValueError(f"band groups {groups} must partition the bands {bands} "
                             f"(not in bands: {unknown}, in no group: {unused})")
        super().__init__(bands, img_size, patch_size, dim, [[bands.index(b) for b in g] for g in groups])
        self.group_bands = tuple(tuple(g) for g in groups)
        self.proj = nn.ModuleList(nn.Conv2d(len(g), dim, kernel_size=patch_size, stride=patch_size) for g in groups)
        for conv in self.proj:
            nn.init.xavier_uniform_(conv.weight.view(dim, -1))
        self.register_buffer("spectral", torch.stack([wavelength_code(g, dim) for g in groups]), persistent=False)  # (G, D)
        self.group_embed = nn.Parameter(torch.zeros(len(groups), dim))
        nn.init.normal_(self.group_embed, std=0.02)

    def forward(self, image: Tensor, **context) -> Tensor:
        tokens = []
        for g, (conv, ch) in enumerate(zip(self.proj, self.group_channels, strict=True)):
            x = conv(image[:, ch]).flatten(2).transpose(1, 2)  # (B, N, D) for group g
            tokens.append(x + self.pos + self.spectral[g] + self.group_embed[g])
        return torch.cat(tokens, dim=1)  # (B, G*N, D), group-major

    def patchify(self, image: Tensor) -> Tensor:
        width = self.target_mask.shape[1]
        parts = [nn.functional.pad(patchify(image[:, ch], self.patch_size), (0, width - self.patch_size**2 * len(ch)))
                 for ch in self.group_channels]  # each (B, N, P) zero-padded
        return torch.cat(parts, dim=1)  # (B, G*N, P)


class TemporalTokenizer(_GridTokenizer):
    """One token per (date, patch) of a time series (B, T, C, H, W), with a day-of-year encoding.

    The patch embedding is shared across dates (the same bands mean the same thing on every date);
    a token's encoding is its spatial position plus a sin-cos code of its day of year (from the
    batch's ``doy``, so irregular acquisition dates are encoded as they are, not as indices).
    """

    def __init__(self, bands: tuple[str, ...], num_dates: int, img_size: int, patch_size: int, dim: int):
        super().__init__(bands, img_size, patch_size, dim, [list(range(len(bands)))] * num_dates)
        self.num_dates = num_dates
        self.proj = nn.Conv2d(len(bands), dim, kernel_size=patch_size, stride=patch_size)
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))

    def forward(self, image: Tensor, doy: Tensor | None = None, **context) -> Tensor:
        b, t, c, h, w = image.shape
        if t != self.num_dates:
            raise ValueError(f"temporal tokenizer built for {self.num_dates} dates got {t}")
        if doy is None:
            raise ValueError("a time series needs the batch's 'doy' (day of year per date)")
        x = self.proj(image.reshape(b * t, c, h, w))  # (B*T, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, -1, self.dim)  # (B, T, N, D)
        # The fastest component is the annual cycle (period 365.25 days); slower ones give a
        # smooth position within the year, so phenology at the same season encodes alike.
        date = sincos_1d(doy.to(x.device).float() * (2 * math.pi / 365.25), self.dim, max_period=365.25)  # (B, T, D)
        x = x + self.pos + date[:, :, None]
        return x.reshape(b, t * x.shape[2], self.dim)  # (B, T*N, D), date-major

    def patchify(self, image: Tensor) -> Tensor:
        b, t = image.shape[:2]
        x = patchify(image.flatten(0, 1), self.patch_size)  # (B*T, N, C*p*p)
        return x.reshape(b, t * x.shape[1], x.shape[2])  # (B, T*N, C*p*p)


def init_weights(module: nn.Module) -> None:
    """MAE/timm initialisation for linear and norm layers."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
