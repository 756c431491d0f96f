"""EuroSAT-MS: labelled 64x64 Sentinel-2 L1C patches, the downstream probe of the foundation.

Two ways to get the files, one reader:
- ``variant="local"``: the GeoTIFFs under ``<data_root>/eurosat-ms/{train,test,extra}/<Class>/``.
- ``variant="torchgeo"``: torchgeo's ``EuroSAT`` dataset (27,000 images, downloaded and
  checksummed by torchgeo into ``<data_root>/eurosat-torchgeo``). Its file list and split are used,
  and the files are read here so that every sample also gets its longitude/latitude, which torchgeo
  does not provide.
Files store 13 bands in the order B01..B12, B8A (B8A last). They are re-ordered by name to eolab's
spectral order, so B8A sits next to B08 and a model never sees a channel shift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bands import EUROSAT_FILE_ORDER, S2_L1C
from .paths import data_root
from .raster import centre_lonlat, read_raster, require_valid_pixels

log = logging.getLogger(__name__)

# torchgeo's class order (alphabetical folder names), so labels agree with torchgeo's EuroSAT.
CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
_REORDER = [EUROSAT_FILE_ORDER.index(b) for b in S2_L1C]


@dataclass(frozen=True)
class EuroSATFile:
    path: Path
    label: int
    split: str


DEFAULT_SPLITS = {"local": ("train", "test", "extra"), "torchgeo": ("train", "val", "test")}


def list_files(root: Path | None = None, splits=None, variant: str = "local") -> list[EuroSATFile]:
    """List labelled EuroSAT files with their split; raise naming the folder if none are found.

    ``splits`` defaults to every split of the variant (local: train, test, extra; torchgeo: train,
    val, test)."""
    root = data_root(root)
    if variant not in DEFAULT_SPLITS:
        raise ValueError(f"eurosat variant must be 'local' or 'torchgeo', got {variant!r}")
    splits = tuple(splits or DEFAULT_SPLITS[variant])
    if variant == "torchgeo":
        return _torchgeo_files(root / "eurosat-torchgeo", splits)
    base = root / "eurosat-ms"
    files = []
    for split in splits:
        for label, cls in enumerate(CLASSES):
            files += [EuroSATFile(p, label, split) for p in sorted((base / split / cls).glob("*.tif"))]
    if not files:
        raise FileNotFoundError(f"no EuroSAT GeoTIFFs under {base}/{{{','.join(splits)}}}/<Class>/*.tif")
    return files


def _torchgeo_files(root: Path, splits) -> list[EuroSATFile]:
    """File list of the full EuroSAT through torchgeo (downloads on first use; needs internet)."""
    from torchgeo.datasets import EuroSAT

    files = []
    for split in splits:
        if split not in EuroSAT.splits:  # "extra" exists only in the local subset
            continue
        ds = EuroSAT(root=str(root), split=split, download=True, checksum=True)
        files += [EuroSATFile(Path(p), int(y), split) for p, y in ds.samples]
    return files


def read_sample(f: EuroSATFile) -> dict:
    """Read one EuroSAT GeoTIFF into the eolab sample schema (reflectance, spectral band order)."""
    dn, meta = read_raster(f.path, expected_count=len(EUROSAT_FILE_ORDER))
    # NaN, zeros, values out of range or an empty band: refused here, naming the file and band,
    # not after training in the probe (EuroSAT patches have no no-data to mask)
    require_valid_pixels(dn, EUROSAT_FILE_ORDER, f.path)
    _, h, w = dn.shape
    # EuroSAT L1C digital numbers are top-of-atmosphere reflectance x 10000 (no offset: 2015-2017 data).
    image = torch.from_numpy(dn[_REORDER].astype(np.float32) / 10_000.0)
    return {
        "image": image,
        "bands": S2_L1C,
        "unit": "reflectance",
        "source": "eurosat",
        "label": f.label,
        "lonlat": torch.tensor(centre_lonlat(meta, h, w), dtype=torch.float32),
        "id": f"{f.split}/{f.path.parent.name}/{f.path.name}",
        "split": f.split,
    }


def load(root: Path | None = None, splits=None, variant: str = "local") -> dict:
    """Load all labelled patches into memory as one stacked dict (small: 273 patches locally).

    Every file is read before any work starts, so a corrupt file fails fast with its name.
    """
    samples = [read_sample(f) for f in list_files(root, splits, variant)]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "bands": S2_L1C,
        "unit": "reflectance",
        "label": torch.tensor([s["label"] for s in samples]),
        "lonlat": torch.stack([s["lonlat"] for s in samples]),
        "id": [s["id"] for s in samples],
        "split": [s["split"] for s in samples],
        "classes": CLASSES,
    }
