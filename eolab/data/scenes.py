"""Unlabelled scenes for pre-training: the ``Scene`` every data source yields, and the decoding steps
the readers share.

The sources themselves (Major-TOM, Hydro, SSL4EO-S12 and any a user describes) are declared in YAML
and read by ``sources.py``. Each yields ``Scene`` objects on a common grid: one-file-per-band products
are resampled (20 m and 60 m bands bilinearly up to the grid of B02), digital numbers are converted
through the sensor card (Sentinel-2: reflectance x 10000 with the product's radiometric offset
removed), and bands are selected by name into eolab's band order. A band that a product lacks is an
error naming the product, never a silent shift.

Radiometric offset: Sentinel-2 processing baseline 04.00 (January 2022) added +1000 to all digital
numbers (BOA_ADD_OFFSET / RADIO_ADD_OFFSET = -1000). Products are identified by the baseline in their
name or metadata; 'N9999' (reprocessed archive products in Major-TOM) carries no offset, which the
data confirm (their darkest B02 pixels are below 100). The Hydro patches carry no metadata and mix
baselines, so the offset is inferred per file: where the offset was applied, even the darkest
pixels (open water, near 0 reflectance in the infrared) sit near 1000 in every band; slightly below
1000 is possible, since the offset exists to keep small negative reflectances. A heuristic, stated
as such in each scene's notes; products with metadata never use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rasterio.enums import Resampling

from .bands import canonical_band_name
from .cards import load_card
from .raster import PixelCheck, RasterError, check_pixels, read_raster

log = logging.getLogger(__name__)


@dataclass
class Scene:
    id: str  # path relative to the data root
    source: str
    bands: tuple[str, ...]
    dn: np.ndarray  # (C, H, W): uint16 reflectance x 10000, offset removed (float32 for other units, e.g. dB)
    valid: np.ndarray  # (H, W) bool: has data and is not flagged as cloud
    crs: str
    transform: tuple[float, ...]  # affine (a, b, c, d, e, f) of the 10 m grid
    time: str | None = None
    level: str = "L2A"
    notes: list[str] = field(default_factory=list)
    pixels: dict = field(default_factory=dict)  # PixelCheck.to_json(): pixels masked by the validity checks
    unit: str = "reflectance"  # what ``dn * scale`` is (the sensor card's unit after conversion)
    scale: float = 1e-4  # dn * scale is the value in ``unit``
    sensor: str = "sentinel2"  # the card's sensor: bands are (sensor, name)


def offset_from_baseline(baseline: str | None) -> int:
    """Digital-number offset of a processing baseline such as '04.00', 'N0400' or 'N9999'."""
    return int(-load_card("sentinel2_l2a").baseline_offset(baseline))


def to_reflectance_dn(stack: np.ndarray, offset: int) -> np.ndarray:
    """Remove the radiometric offset; values that fall below zero are clipped (no-data stays 0)."""
    out = stack.astype(np.int32) - offset
    return np.clip(out, 0, 65535).astype(np.uint16)


def screen_pixels(raw: np.ndarray, bands: tuple[str, ...], rel: str) -> tuple[np.ndarray, PixelCheck]:
    """Digital numbers with every pixel that fails `raster.check_pixels` set to 0 (no data), in the
    integer form the readers convert; NaN must never reach an integer cast (it became 65535 there).

    The check (what was masked and why) travels with the scene into the cache manifest, and is
    logged, naming the product and band.
    """
    check = check_pixels(raw, bands)
    if check.clean:
        return raw, check
    for problem in check.problems():
        log.warning("%s: %s -> %s", rel, problem,
                    "no data in this band: runs that read it leave the scene out" if problem.split(":")[0][5:]
                    in check.bad_bands else "pixels masked as no data")
    clean = np.where(check.usable[None], np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), 0)
    return np.clip(clean, 0, 65535).astype(np.uint16), check


def _screen_notes(check: PixelCheck) -> list[str]:
    if check.clean:
        return []
    bad = f"; bands without data (runs reading them leave the scene out): {check.bad_bands}" if check.bad_bands else ""
    return [f"{check.masked} pixels masked as no data ({'; '.join(check.problems())}){bad}"]


def read_band_files(product: Path, bands: tuple[str, ...], rel: str) -> tuple[np.ndarray, dict, list[str]]:
    """Read one-file-per-band products, resampled to the grid of B02; names like B2.tif or B02.tif."""
    files = {}
    for f in product.glob("B*.tif"):
        try:
            files[canonical_band_name(f.stem)] = f
        except KeyError:
            continue
    notes = [f"dropped band {b} (not in the pre-training band set)" for b in sorted(set(files) - set(bands))]
    missing = [b for b in bands if b not in files]
    if missing:
        raise RasterError(f"{rel}: product lacks bands {missing} (has {sorted(files)})")
    ref, meta = read_raster(files["B02"], expected_count=1)
    shape = ref.shape[1:]
    layers = []
    for b in bands:
        arr, _ = read_raster(files[b], expected_count=1, out_shape=shape, resampling=Resampling.bilinear)
        layers.append(arr[0])
    return np.stack(layers), meta, notes


def make_scene(rel, source, bands, dn, nodata_mask, cloud, meta, time, level, notes, check=None) -> Scene:
    valid = ~nodata_mask
    if cloud is not None:
        valid &= cloud == 0
    if check is not None:
        valid &= check.usable
    return Scene(
        id=rel, source=source, bands=bands, dn=dn, valid=valid,
        crs=meta["crs"].to_string(), transform=tuple(meta["transform"])[:6],
        time=time, level=level, notes=notes + (_screen_notes(check) if check is not None else []),
        pixels=check.to_json() if check is not None else {},
    )


# Band order of the stacked Hydro GeoTIFFs (STAC asset order coastal..swir22: B8A before B09), as the
# built-in source file ``sources/hydro.yaml`` declares it.
HYDRO_FILE_ORDER = tuple(yaml.safe_load((Path(__file__).resolve().parent / "sources" / "hydro.yaml").read_text())
                         ["bands"]["order"])
