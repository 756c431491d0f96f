"""Co-registered Sentinel-2 + Sentinel-1 windows for multi-modal pre-training (SSL4EO-S12, BigEarthNet-MM).

A sample stacks both sensors on the Sentinel-2 10 m grid: ``image`` (C_s2 + 2, H, W) with the S2
bands in reflectance (offset removed, as in ``scenes.py``) followed by VV and VH in dB, ``unit``
"reflectance+dB" and ``modality`` naming the sensor of each channel, so that nobody normalises
backscatter as if it were reflectance.

Pairing. SSL4EO-S12 stores S1 and S2 acquisitions of a location independently; each S2 date is
paired with the S1 product closest in time (``s1_time`` records which). BigEarthNet-MM names the
S2 patch of each S1 patch (``corresponding_s2_patch`` in its metadata JSON); only pairs whose S2
folder exists are used.

Grids. Everything is put on the S2 10 m grid of the pair, in one of two ways:

- ``"georef"`` (BigEarthNet, and any source whose S1 and S2 grids are trustworthy): identical grids
  are used as stored, others are reprojected (bilinear, in dB) through their geotransforms.
- ``"pixel"`` (SSL4EO-S12, by default): S1 is aligned to S2 by pixel index and resampled by shape
  only if the shapes differ. In the shared sample both rasters are 264x264 in EPSG:4326, but their
  stored geotransforms disagree by about 4 px in x and 3 px in y (and <1% in pixel size) - the known
  upstream issue zhu-xlab/SSL4EO-S12#22 - while the image content agrees with index alignment: edges
  of S1 and S2 correlate best within ~1 px of index alignment and 3-4 px away after reprojection.

Where S1 has no data (NaN or inf, or outside its footprint after reprojection) VV and VH are set
to ``S1_FILL_DB``; windows with fewer than ``min_valid`` pixels valid in both sensors are dropped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject
from torch.utils.data import Dataset

from .bands import canonical_band_name
from .paths import data_root
from .raster import RasterError, read_raster
from .scenes import offset_from_baseline, screen_pixels, to_reflectance_dn
from .timeseries import REFLECTANCE_SCALE, Recent, read_ssl4eo_s2, window_fraction, window_grid, window_lonlat

log = logging.getLogger(__name__)

# The ten S2 bands at 10 and 20 m: the 60 m atmospheric bands (B01, B09) carry little surface signal.
PAIR_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S1_BANDS = ("VV", "VH")
# Backscatter written where S1 has no data: below every real value in the data (about -40 dB at
# the lowest) and the IW noise floor, so a filled pixel reads as "no return", not as a surface.
S1_FILL_DB = -50.0
UNIT = "reflectance+dB"
SOURCES = ("ssl4eo", "bigearthnet")


@dataclass(frozen=True)
class PairRef:
    """One S2 acquisition and the S1 acquisition paired with it (folders, ISO dates)."""

    source: str
    s2: Path
    s1: Path
    s2_date: str
    s1_date: str


@dataclass
class PairStack:
    """A decoded pair on the S2 10 m grid."""

    image: np.ndarray  # (C_s2 + 2, H, W) float32: reflectance then dB, no-data filled
    valid: np.ndarray  # (H, W) bool: S2 has data and both S1 polarisations are finite
    crs: str
    transform: Affine


def _iso(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}"


def nearest(target: str, candidates: list[str]) -> int:
    """Index of the ISO date in ``candidates`` closest to ``target`` (the earlier one on a tie)."""
    t = date.fromisoformat(target)
    gaps = [(abs((date.fromisoformat(c) - t).days), date.fromisoformat(c), k) for k, c in enumerate(candidates)]
    return min(gaps)[2]


def ssl4eo_pairs(root: Path) -> list[PairRef]:
    """Every SSL4EO-S12 L2A date (``s2a/<loc>/<date>``) with the nearest S1 product of its location."""
    refs = []
    for loc in sorted(d for d in (root / "ssl4eo-s12" / "s2a").glob("*") if d.is_dir()):
        s1_dirs = sorted(d for d in (root / "ssl4eo-s12" / "s1" / loc.name).glob("*") if d.is_dir())
        s1_dates = []
        for d in s1_dirs:
            m = re.search(r"_(\d{8})T\d{6}_", d.name)
            if not m:
                raise ValueError(f"{d}: cannot read the acquisition date from the S1 product name")
            s1_dates.append(_iso(m.group(1)))
        if not s1_dirs:
            log.info("%s: no Sentinel-1 products for this location; its S2 dates are not paired", loc)
            continue
        for s2 in sorted(d for d in loc.glob("*") if d.is_dir()):
            s2_date = _iso(s2.name[:8])
            k = nearest(s2_date, s1_dates)
            refs.append(PairRef("ssl4eo", s2, s1_dirs[k], s2_date, s1_dates[k]))
    return refs


def bigearthnet_metadata(folder: Path) -> dict:
    """BigEarthNet's ``<patch>_labels_metadata.json``, or an error naming where it should be."""
    path = folder / f"{folder.name}_labels_metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (BigEarthNet metadata of patch {folder.name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def bigearthnet_pairs(root: Path) -> list[PairRef]:
    """BigEarthNet-MM S1 patches whose ``corresponding_s2_patch`` folder exists under ``bigearthnet/s2``."""
    refs, absent = [], 0
    for s1 in sorted(d for d in (root / "bigearthnet" / "s1").glob("*") if d.is_dir()):
        md = bigearthnet_metadata(s1)
        if "corresponding_s2_patch" not in md:
            raise ValueError(f"{s1 / (s1.name + '_labels_metadata.json')}: no 'corresponding_s2_patch'")
        s2 = root / "bigearthnet" / "s2" / md["corresponding_s2_patch"]
        if not s2.is_dir():
            absent += 1
            continue
        s2_md = bigearthnet_metadata(s2)
        s2_date = s2_md.get("acquisition_date", "")[:10] or _iso(re.search(r"_(\d{8})T", s2.name).group(1))
        s1_date = md.get("acquisition_time", "")[:10] or _iso(re.search(r"_(\d{8})T", s1.name).group(1))
        refs.append(PairRef("bigearthnet", s2, s1, s2_date, s1_date))
    if absent:
        log.info("bigearthnet: %d S1 patches name an S2 patch that is not present; skipped", absent)
    return refs


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


def _reproject(path: Path, crs, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """One S1 band reprojected (bilinear, in dB) onto a grid: (H, W), NaN outside its footprint."""
    src, meta = read_raster(path, expected_count=1)
    src = src[0].astype(np.float32)
    if meta["crs"] == crs and meta["transform"] == transform and src.shape == shape:
        return src
    dst = np.full(shape, np.nan, dtype=np.float32)
    try:
        reproject(src, dst, src_transform=meta["transform"], src_crs=meta["crs"], src_nodata=np.nan,
                  dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: cannot reproject onto the S2 grid ({exc})") from exc
    return dst


def read_s1_on_grid(folder: Path, crs, transform: Affine, shape: tuple[int, int], align: str = "georef") -> np.ndarray:
    """VV and VH (dB) of an S1 product on the S2 grid: (2, H, W) float32, NaN where there is no data.

    ``align`` is "georef" (through the geotransforms) or "pixel" (by index; resampled by shape).
    """
    if align not in ("georef", "pixel"):
        raise ValueError(f"align must be 'georef' or 'pixel', got {align!r}")
    layers = []
    for path in _band_files(folder, S1_BANDS).values():
        if align == "pixel":
            layers.append(read_raster(path, expected_count=1, out_shape=shape)[0][0].astype(np.float32))
        else:
            layers.append(_reproject(path, crs, transform, shape))
    out = np.stack(layers)  # 2 x (H, W) -> (2, H, W)
    out[~np.isfinite(out)] = np.nan
    return out


def load_pair(ref: PairRef, root: Path, bands: tuple[str, ...], align: str = "georef") -> PairStack:
    """Decode both sensors of a pair onto the S2 10 m grid (``align``: see ``read_s1_on_grid``)."""
    if ref.source == "ssl4eo":
        scene = read_ssl4eo_s2(ref.s2, root, bands)
        dn, has_data, transform, crs = scene.dn, scene.valid, Affine(*scene.transform), scene.crs
    else:
        dn, has_data, meta = read_bigearthnet_s2(ref.s2, bands)
        transform, crs = meta["transform"], meta["crs"].to_string()
    s1 = read_s1_on_grid(ref.s1, crs, transform, dn.shape[1:], align)
    valid = has_data & np.isfinite(s1).all(0)
    image = np.concatenate([dn.astype(np.float32) * REFLECTANCE_SCALE, np.nan_to_num(s1, nan=S1_FILL_DB)])
    return PairStack(image.astype(np.float32), valid, crs, transform)


class PairedS1S2(Dataset):
    """Windows of co-registered Sentinel-2 (reflectance) + Sentinel-1 (dB) on the S2 10 m grid.

    Items are the ``patch`` x ``patch`` windows on a ``stride`` grid of every pair with at least
    ``min_valid`` pixels valid in both sensors (BigEarthNet's 120 px patches give 2 x 2 windows of
    64 at stride 32). ``ssl4eo_align`` chooses how SSL4EO-S12's S1 is put on the S2 grid ("pixel"
    by default, see the module docstring); BigEarthNet always uses "georef". Decoded pairs are
    memoised (``cache_size`` of them).
    """

    def __init__(self, root: str | Path | None = None, patch: int = 64, stride: int = 32,
                 s2_bands: tuple[str, ...] = PAIR_S2_BANDS, sources: tuple[str, ...] = SOURCES,
                 min_valid: float = 0.95, ssl4eo_align: str = "pixel", cache_size: int = 16):
        self.root = data_root(root)
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown paired source(s) {unknown}; known: {list(SOURCES)}")
        self.patch, self.s2_bands = patch, tuple(s2_bands)
        self.bands = self.s2_bands + S1_BANDS
        self.modality = ("s2",) * len(self.s2_bands) + ("s1",) * len(S1_BANDS)
        finders = {"ssl4eo": ssl4eo_pairs, "bigearthnet": bigearthnet_pairs}
        self.pairs = [ref for s in sources for ref in finders[s](self.root)]
        self.align = {"ssl4eo": ssl4eo_align, "bigearthnet": "georef"}
        self._stacks = Recent(self._load, cache_size)
        index, lonlat = [], []
        for k in range(len(self.pairs)):
            stack = self._stacks(k)
            rows, cols = window_grid(*stack.valid.shape, patch, stride)
            keep = window_fraction(stack.valid, rows, cols, patch) >= min_valid
            rows, cols = rows[keep], cols[keep]
            index += [(k, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
            lonlat.append(window_lonlat(stack.crs, stack.transform, rows, cols, patch))
        self.index = index
        self.lonlat = np.concatenate(lonlat) if lonlat else np.zeros((0, 2), dtype=np.float32)

    def _load(self, k: int) -> PairStack:
        ref = self.pairs[k]
        return load_pair(ref, self.root, self.s2_bands, self.align[ref.source])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, r, c = self.index[i]
        ref, p = self.pairs[k], self.patch
        window = self._stacks(k).image[:, r : r + p, c : c + p]  # (C_s2 + 2, p, p)
        s2_rel, s1_rel = ref.s2.relative_to(self.root), ref.s1.relative_to(self.root)
        return {
            "image": torch.from_numpy(window.copy()),
            "bands": self.bands,
            "unit": UNIT,
            "source": ref.source,
            "modality": self.modality,
            "id": f"{s2_rel}|{s1_rel}@{r},{c}+{p}",
            "lonlat": torch.from_numpy(self.lonlat[i]),
            "time": ref.s2_date,
            "s1_time": ref.s1_date,
        }
