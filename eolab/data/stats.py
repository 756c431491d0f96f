"""Per-band normalisation statistics, keyed by band name, with their provenance.

A checkpoint carries the ``Normalization`` it was trained with (input unit, band names in order,
mean and std per band). Applying it to other data goes through ``prepare``: bands are selected and
re-ordered by name (logged), a band the encoder needs but the data lacks is an error, and a unit
mismatch is an error. Nothing is matched by channel position, which is how silent EO mistakes
(wrong band order, DN versus reflectance) usually happen.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


class NormalizationMismatch(ValueError):
    """Data whose bands or unit differ from what an encoder was trained on."""


@dataclass(frozen=True)
class Normalization:
    bands: tuple[str, ...]
    unit: str
    mean: dict[str, float]
    std: dict[str, float]
    corpus: str = ""  # what the statistics were computed on (for the record)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bands"] = list(self.bands)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(tuple(d["bands"]), d["unit"], dict(d["mean"]), dict(d["std"]), d.get("corpus", ""))

    def band_indices(self, data_bands: tuple[str, ...] | list[str], data_unit: str, where: str = "data") -> list[int]:
        """Channel indices that take ``data_bands`` to this normalisation's band order.

        Raises NormalizationMismatch naming the missing bands or the unit difference.
        """
        data_bands = tuple(data_bands)
        if data_unit != self.unit:
            raise NormalizationMismatch(
                f"{where} is in unit {data_unit!r} but the encoder was trained on {self.unit!r}; "
                "convert it explicitly before use"
            )
        missing = [b for b in self.bands if b not in data_bands]
        if missing:
            raise NormalizationMismatch(
                f"{where} lacks bands {missing} that the encoder needs (encoder bands: {list(self.bands)}, "
                f"data bands: {list(data_bands)})"
            )
        idx = [data_bands.index(b) for b in self.bands]
        if idx != list(range(len(data_bands))):
            dropped = [b for b in data_bands if b not in self.bands]
            log.warning(
                "%s: selecting/re-ordering bands by name to the encoder's order %s%s",
                where, list(self.bands), f"; dropping {dropped}" if dropped else "",
            )
        return idx

    def __call__(self, image: Tensor | np.ndarray, bands, unit: str, where: str = "data") -> Tensor | np.ndarray:
        """Normalise a (..., C, H, W) torch tensor or numpy array given with its band names and unit;
        returns the same kind (a numpy array in, a numpy array out). Integer data (e.g. digital
        numbers read from a GeoTIFF) are converted to float32 first."""
        if isinstance(image, np.ndarray):
            return self(torch.from_numpy(np.ascontiguousarray(image)), bands, unit, where).numpy()
        if not isinstance(image, Tensor):
            raise TypeError(f"{where}: image must be a torch.Tensor or a numpy.ndarray of shape (..., C, H, W), "
                            f"got {type(image).__name__}")
        if image.ndim < 3 or image.shape[-3] != len(tuple(bands)):
            raise ValueError(f"{where}: image must have shape (..., C, H, W) with C = {len(tuple(bands))} bands "
                             f"{list(bands)}, got {tuple(image.shape)}")
        if not image.is_floating_point():
            image = image.float()
        idx = self.band_indices(bands, unit, where)
        if idx != list(range(image.shape[-3])):
            image = image[..., idx, :, :]
        mean = torch.tensor([self.mean[b] for b in self.bands], dtype=image.dtype, device=image.device)
        std = torch.tensor([self.std[b] for b in self.bands], dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]


def compute_normalization(dataset, max_samples: int = 2000, seed: int = 0, corpus: str = "") -> Normalization:
    """Mean and std per band over (a seeded subset of) a dataset's samples."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    idx = rng.choice(n, size=min(n, max_samples), replace=False)
    first = dataset[int(idx[0])]
    bands, unit = tuple(first["bands"]), first["unit"]
    total = torch.zeros(len(bands), dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for i in idx:
        image = dataset[int(i)]["image"].double()  # (C, H, W) or a time series (T, C, H, W)
        x = image.transpose(0, 1).flatten(1) if image.ndim == 4 else image.flatten(1)  # (C, [T*]H*W)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return Normalization(bands, unit, dict(zip(bands, mean.tolist(), strict=True)), dict(zip(bands, std.tolist(), strict=True)), corpus)
