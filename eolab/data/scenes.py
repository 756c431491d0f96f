"""Unlabelled Sentinel-2 scenes for pre-training: Major-TOM, Hydro and SSL4EO-S12.

Each reader yields ``Scene`` objects on a common 10 m grid: one-file-per-band products are resampled
(20 m and 60 m bands bilinearly up to the grid of B02), digital numbers are converted to reflectance
x 10000 with the product's radiometric offset removed, and bands are selected by name into eolab's
band order. A band that a product lacks is an error naming the product, never a silent shift.

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

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling

from .bands import S2_L2A, canonical_band_name
from .raster import PixelCheck, RasterError, check_pixels, read_raster

log = logging.getLogger(__name__)


@dataclass
class Scene:
    id: str  # path relative to the data root
    source: str
    bands: tuple[str, ...]
    dn: np.ndarray  # (C, H, W) uint16, reflectance x 10000, offset removed
    valid: np.ndarray  # (H, W) bool: has data and is not flagged as cloud
    crs: str
    transform: tuple[float, ...]  # affine (a, b, c, d, e, f) of the 10 m grid
    time: str | None = None
    level: str = "L2A"
    notes: list[str] = field(default_factory=list)
    pixels: dict = field(default_factory=dict)  # PixelCheck.to_json(): pixels masked by the validity checks


def offset_from_baseline(baseline: str | None) -> int:
    """Digital-number offset of a processing baseline such as '04.00', 'N0400' or 'N9999'."""
    if not baseline:
        return 0
    digits = re.sub(r"\D", "", baseline)
    return 1000 if digits and 400 <= int(digits) < 9999 else 0


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


def major_tom(root: Path, bands: tuple[str, ...] = S2_L2A) -> Iterator[Scene]:
    """Major-TOM Core S2L2A cells: ``major-tom/S2L2A/<row>/<cell>/<product>/B*.tif`` + cloud_mask.tif."""
    for product in sorted((root / "major-tom" / "S2L2A").glob("*/*/*")):
        if not product.is_dir():
            continue
        rel = str(product.relative_to(root))
        raw, meta, notes = read_band_files(product, bands, rel)
        raw, check = screen_pixels(raw, bands, rel)
        baseline = re.search(r"_N(\d{4})_", product.name)
        offset = offset_from_baseline(baseline.group(1) if baseline else None)
        cloud = None
        if (product / "cloud_mask.tif").exists():
            cloud = read_raster(product / "cloud_mask.tif", expected_count=1, out_shape=raw.shape[1:],
                                resampling=Resampling.nearest)[0][0]
        time = re.search(r"_(\d{8})T", product.name)
        yield make_scene(rel, "major_tom", bands, to_reflectance_dn(raw, offset), (raw == 0).all(0), cloud, meta,
                     time and f"{time.group(1)[:4]}-{time.group(1)[4:6]}-{time.group(1)[6:]}", "L2A",
                     notes + [f"radiometric offset {offset} removed"], check)


# Band order of the stacked Hydro GeoTIFFs (STAC asset order coastal..swir22: B8A before B09).
HYDRO_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def hydro(root: Path, bands: tuple[str, ...] = S2_L2A) -> Iterator[Scene]:
    """Hydro patches: 12 L2A bands stacked in one GeoTIFF, 256x256 at 10 m."""
    missing = [b for b in bands if b not in HYDRO_FILE_ORDER]
    if missing:
        raise RasterError(f"hydro: requested bands {missing} are not in the stacked files {HYDRO_FILE_ORDER}")
    idx = [HYDRO_FILE_ORDER.index(b) for b in bands]
    for path in sorted((root / "hydro").glob("*.tif")):
        rel = str(path.relative_to(root))
        raw, meta = read_raster(path, expected_count=len(HYDRO_FILE_ORDER))
        raw, check = screen_pixels(raw[idx], bands, rel)
        offset = _infer_offset(raw)
        yield make_scene(rel, "hydro", bands, to_reflectance_dn(raw, offset), (raw == 0).all(0), None, meta, None,
                     "L2A", [f"radiometric offset {offset} removed (heuristic: inferred from the darkest pixels)"],
                     check)


def _infer_offset(raw: np.ndarray) -> int:
    """1000 if the darkest 5% of pixels with data (minimum over bands) are still >= 800, else 0."""
    lowest = raw.min(axis=0)
    has_data = raw.max(axis=0) > 0
    darkest = np.percentile(lowest[has_data], 5) if has_data.any() else 0
    return 1000 if darkest >= 800 else 0


def ssl4eo_s12(root: Path, bands: tuple[str, ...] = S2_L2A, products=("s2a", "s2c")) -> Iterator[Scene]:
    """SSL4EO-S12 Sentinel-2 dates: ``ssl4eo-s12/{s2a,s2c}/<location>/<date>/B*.tif`` + metadata.json.

    s2a is L2A (12 bands), s2c is L1C (13 bands, B10 dropped for the L2A band set and said so).
    """
    for prod in products:
        for date_dir in sorted((root / "ssl4eo-s12" / prod).glob("*/*")):
            if not date_dir.is_dir():
                continue
            rel = str(date_dir.relative_to(root))
            raw, meta, notes = read_band_files(date_dir, bands, rel)
            raw, check = screen_pixels(raw, bands, rel)
            md = json.loads((date_dir / "metadata.json").read_text()) if (date_dir / "metadata.json").exists() else {}
            offset = offset_from_baseline(md.get("PROCESSING_BASELINE"))
            d = date_dir.name[:8]
            yield make_scene(rel, f"ssl4eo_{prod}", bands, to_reflectance_dn(raw, offset), (raw == 0).all(0), None,
                         meta, f"{d[:4]}-{d[4:6]}-{d[6:]}", "L2A" if prod == "s2a" else "L1C",
                         notes + [f"radiometric offset {offset} removed"], check)


READERS = {"major_tom": major_tom, "hydro": hydro, "ssl4eo": ssl4eo_s12}
