"""The one sample schema shared by every source.

A sample is a plain dict (torchgeo style) so that sources, transforms and tasks stay decoupled:

    image   float32 tensor (C, H, W), in the unit named by ``unit``
    bands   tuple of canonical band names, one per channel of ``image``
    unit    "reflectance" (Sentinel-2, 0..~1), "dB" (Sentinel-1 backscatter)
    source  short name of the source ("eurosat", "major_tom", ...)
    label   optional int class index
    lonlat  optional float tensor (2,): centre of the patch, WGS84 degrees
    time    optional ISO-8601 acquisition date string
    id      stable sample identifier (file path relative to the data root plus window)
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torch import Tensor


class Sample(TypedDict, total=False):
    image: Tensor
    bands: tuple[str, ...]
    unit: str
    source: str
    label: int
    lonlat: Tensor
    time: str
    id: str


REQUIRED = ("image", "bands", "unit", "source")


def validate(sample: dict[str, Any], where: str = "sample") -> None:
    """Raise ValueError naming ``where`` and the field when a sample breaks the schema."""
    for key in REQUIRED:
        if key not in sample:
            raise ValueError(f"{where}: missing field {key!r} (required: {', '.join(REQUIRED)})")
    image = sample["image"]
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"{where}: field 'image' must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if len(sample["bands"]) != image.shape[0]:
        raise ValueError(
            f"{where}: field 'bands' names {len(sample['bands'])} bands but 'image' has {image.shape[0]} channels"
        )


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples into a batch dict.

    Band names, unit and source metadata must agree across the batch: mixing band orders in one
    tensor is exactly the silent error eolab exists to prevent, so it is refused here.
    """
    first = samples[0]
    for s in samples[1:]:
        if tuple(s["bands"]) != tuple(first["bands"]) or s["unit"] != first["unit"]:
            raise ValueError(
                f"cannot batch samples with different bands/units: {first['bands']} ({first['unit']}) "
                f"vs {s['bands']} ({s['unit']}) from {s.get('id', '?')}"
            )
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "bands": tuple(first["bands"]),
        "unit": first["unit"],
        "source": [s["source"] for s in samples],
    }
    if all("label" in s for s in samples):
        batch["label"] = torch.as_tensor([s["label"] for s in samples])
    if all("lonlat" in s for s in samples):
        batch["lonlat"] = torch.stack([torch.as_tensor(s["lonlat"], dtype=torch.float32) for s in samples])
    for key in ("time", "id"):
        if all(key in s for s in samples):
            batch[key] = [s[key] for s in samples]
    return batch
