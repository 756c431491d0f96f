"""Helpers for co-registered sensor pairs: a second sensor's bands put on the first's grid, nearest-date
matching, and BigEarthNet-MM's metadata. The pair datasets themselves are source files with a ``pair``
field (``sources/s1s2.yaml``), read by ``eolab.data.series.PairDataset``.

A pair sample stacks both sensors on the first's grid: for ``s1s2``, ``image`` (C_s2 + 2, H, W) with
the S2 bands in reflectance (offset removed, as the scene sources do) followed by VV and VH in dB,
``unit`` "reflectance+dB" and ``modality`` naming the sensor of each channel, so that nobody normalises
backscatter as if it were reflectance.

Grids (``align``, see `read_on_grid`): "georef" uses identical grids as stored and reprojects others
(bilinear) through their geotransforms; "pixel" aligns by pixel index and resamples by shape only if
the shapes differ. SSL4EO-S12 needs "pixel": in the shared sample S1 and S2 are both 264x264 in
EPSG:4326, but their stored geotransforms disagree by about 4 px in x and 3 px in y (and <1% in pixel
size) - the known upstream issue zhu-xlab/SSL4EO-S12#22 - while the image content agrees with index
alignment: edges of S1 and S2 correlate best within ~1 px of index alignment and 3-4 px away after
reprojection.

Where the second sensor has no data (NaN or inf, or outside its footprint after reprojection) its
bands are set to the pair's ``fill`` (``S1_FILL_DB`` for S1); windows with fewer than ``min_valid``
pixels valid in both sensors are dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject

from .bands import canonical_band_name
from .raster import RasterError, read_raster
from .scenes import offset_from_baseline, screen_pixels, to_reflectance_dn

S1_BANDS = ("VV", "VH")
# Backscatter written where S1 has no data: below every real value in the data (about -40 dB at
# the lowest) and the IW noise floor, so a filled pixel reads as "no return", not as a surface.
S1_FILL_DB = -50.0


@dataclass
class PairStack:
    """A decoded pair on the first sensor's grid."""

    image: np.ndarray  # (C_first + C_second, H, W) float32: the first's unit, then the second's, no-data filled
    valid: np.ndarray  # (H, W) bool: the first has data and every band of the second is finite
    crs: str
    transform: Affine


def nearest(target: str, candidates: list[str]) -> int:
    """Index of the ISO date in ``candidates`` closest to ``target`` (the earlier one on a tie)."""
    t = date.fromisoformat(target)
    gaps = [(abs((date.fromisoformat(c) - t).days), date.fromisoformat(c), k) for k, c in enumerate(candidates)]
    return min(gaps)[2]


def bigearthnet_metadata(folder: Path) -> dict:
    """BigEarthNet's ``<patch>_labels_metadata.json``, or an error naming where it should be."""
    path = folder / f"{folder.name}_labels_metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (BigEarthNet metadata of patch {folder.name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _band_files(folder: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``names`` in a one-file-per-band folder: ``VV.tif``/``B2.tif`` or ``<patch>_B02.tif``."""
    found: dict[str, Path] = {}
    sensor = "sentinel1" if set(names) <= set(S1_BANDS) else "sentinel2"  # band names resolve within one sensor
    for f in folder.glob("*.tif"):
        try:
            found[canonical_band_name(f.stem.rsplit("_", 1)[-1], sensor)] = f
        except KeyError:
            continue
    for n in names:
        if n not in found:
            raise FileNotFoundError(
                f"{folder / (n + '.tif')} (or {folder.name}_{n}.tif): missing band {n}; the folder has {sorted(found)}"
            )
    return {n: found[n] for n in names}


def read_bigearthnet_s2(folder: Path, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(C, H, W) digital numbers with the offset removed, (H, W) has-data mask and the meta of B02's grid.

    20 m and 60 m bands are resampled bilinearly to the 10 m grid, as ``scenes.py`` does; the
    processing baseline comes from the L1C product named in ``tile_source``.
    """
    files = _band_files(folder, tuple(dict.fromkeys(("B02", *bands))))
    ref, meta = read_raster(files["B02"], expected_count=1)
    shape = ref.shape[1:]
    raw = np.stack([read_raster(files[b], expected_count=1, out_shape=shape)[0][0] for b in bands])  # (C, H, W)
    raw, check = screen_pixels(raw, bands, str(folder))  # NaN, out-of-range, empty bands: no data
    baseline = re.search(r"_N(\d{4})_", bigearthnet_metadata(folder).get("tile_source", ""))
    offset = offset_from_baseline(baseline.group(1) if baseline else None)
    return to_reflectance_dn(raw, offset), ~(raw == 0).all(0) & check.usable, meta


def reproject_band(path: Path | str, crs, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """One band reprojected (bilinear, in the file's unit) onto a grid: (H, W) float32, NaN outside its footprint."""
    src, meta = read_raster(Path(path), expected_count=1)
    src = src[0].astype(np.float32)
    if meta["crs"] == crs and meta["transform"] == transform and src.shape == shape:
        return src
    dst = np.full(shape, np.nan, dtype=np.float32)
    try:
        reproject(src, dst, src_transform=meta["transform"], src_crs=meta["crs"], src_nodata=np.nan,
                  dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: cannot reproject onto the grid of the pair's first sensor ({exc})") from exc
    return dst


ALIGNS = ("georef", "pixel")


def read_on_grid(files: list[str], crs, transform: Affine, shape: tuple[int, int], align: str = "georef") -> np.ndarray:
    """One-band files (the second sensor of a pair, e.g. S1 VV and VH in dB) on another grid:
    (len(files), H, W) float32, NaN where there is no data.

    ``align`` is "georef" (through the geotransforms: identical grids as stored, others reprojected)
    or "pixel" (by index; resampled bilinearly by shape only if the shapes differ).
    """
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")
    layers = []
    for path in files:
        if align == "pixel":
            layers.append(read_raster(Path(path), expected_count=1, out_shape=shape)[0][0].astype(np.float32))
        else:
            layers.append(reproject_band(path, crs, transform, shape))
    out = np.stack(layers)  # n x (H, W) -> (n, H, W)
    out[~np.isfinite(out)] = np.nan
    return out
