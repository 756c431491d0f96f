"""Augmentations that are valid for multispectral (and SAR) imagery, on normalised batches.

All act on a batch (B, ..., C, H, W) at once (vectorised, no per-sample Python loop, no host-device
sync) and take an optional ``torch.Generator`` so tests are reproducible. What is deliberately
absent: RGB colour jitter, hue and saturation shifts and grey-scale conversion. They mix channels as
if they were red, green and blue, while in multispectral data the ratios between bands carry the
physics (vegetation indices, water and snow indices). Per-band gain and offset, noise and band
dropout perturb the spectrum without pretending it is a colour image.

Sets of augmentations are named in ``AUGMENTATIONS`` for notebooks and sweeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Transform = Callable[[Tensor, "torch.Generator | None"], Tensor]


def _rand(shape: Sequence[int], x: Tensor, generator: torch.Generator | None) -> Tensor:
    # Draw on the CPU generator, then move: works for CUDA batches with a CPU generator.
    return torch.rand(tuple(shape), generator=generator).to(x.device)


def dihedral(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random flip and 90-degree rotation per sample (the 8 symmetries of the square): label- and
    spectrum-preserving for nadir imagery. Needs square images."""
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)  # broadcast over every non-batch dim
    flip = (_rand((b,), x, generator) < 0.5).view(shape)
    k = (_rand((b,), x, generator) * 4).long().view(shape)
    x = torch.where(flip, x.flip(-1), x)
    turned = x.transpose(-2, -1).flip(-2)  # one 90-degree counter-clockwise turn (rot90 k=1)
    out = torch.where(k == 1, turned, x)
    out = torch.where(k == 2, x.flip(-2, -1), out)
    return torch.where(k == 3, turned.flip(-2, -1), out)


def resized_crop(x: Tensor, generator: torch.Generator | None = None, scale: tuple[float, float] = (0.4, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Random resized crop per sample (SimCLR's main augmentation), bilinear, back to the input size.

    Implemented as one batched affine resampling; any number of bands (and dates, which share
    the crop).
    """
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    b = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * _rand((b,), x, generator)
    log_r = torch.log(torch.tensor(ratio))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * _rand((b,), x, generator).cpu()).to(x.device)
    sx = (area * aspect).sqrt().clamp(max=1.0)  # crop width / image width
    sy = (area / aspect).sqrt().clamp(max=1.0)
    cx = (1 - sx) * (2 * _rand((b,), x, generator) - 1)  # centre in [-1, 1] keeping the crop inside
    cy = (1 - sy) * (2 * _rand((b,), x, generator) - 1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    flat = x.reshape(b, -1, h, w)  # (B, [T*]C, H, W): dates share their sample's crop
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False).reshape(*lead, c, h, w)


def band_gain(x: Tensor, generator: torch.Generator | None = None, gain: float = 0.1, offset: float = 0.1) -> Tensor:
    """Per-sample, per-band multiplicative gain and additive offset (in normalised units): a
    stand-in for illumination, atmosphere and sensor calibration differences between bands."""
    b, c = x.shape[0], x.shape[-3]
    shape = (b,) + (1,) * (x.ndim - 4) + (c, 1, 1)
    g = 1 + gain * (2 * _rand((b, c), x, generator) - 1)
    o = offset * (2 * _rand((b, c), x, generator) - 1)
    return x * g.view(shape) + o.view(shape)


def gaussian_noise(x: Tensor, generator: torch.Generator | None = None, std: float = 0.05) -> Tensor:
    """Additive white noise (normalised units): sensor noise and speckle-like perturbation."""
    return x + std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def band_dropout(x: Tensor, generator: torch.Generator | None = None, p: float = 0.2) -> Tensor:
    """Each band of each sample set to 0 (its mean, after normalisation) with probability ``p``,
    never all bands: teaches the encoder not to lean on a single band."""
    b, c = x.shape[0], x.shape[-3]
    drop = _rand((b, c), x, generator) < p
    drop[drop.all(1)] = False  # keep at least one band
    shape = (b,) + (1,) * (x.ndim - 4) + (c, 1, 1)
    return x.masked_fill(drop.view(shape), 0.0)


AUGMENTATIONS: dict[str, tuple[Transform, ...]] = {
    "none": (),
    "dihedral": (dihedral,),
    "crop": (dihedral, resized_crop),
    "spectral": (dihedral, band_gain, gaussian_noise, band_dropout),
    "eo": (dihedral, resized_crop, band_gain, gaussian_noise, band_dropout),
}
"""Named augmentation sets: "eo" is the full multispectral set used for contrastive views."""


class Augment(nn.Module):
    """A named sequence of augmentations, applied to a whole batch."""

    def __init__(self, name: str = "eo"):
        super().__init__()
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation set {name!r}; choose one of {sorted(AUGMENTATIONS)}")
        self.name, self.transforms = name, AUGMENTATIONS[name]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def extra_repr(self) -> str:
        return f"{self.name}: {', '.join(t.__name__ for t in self.transforms)}"
