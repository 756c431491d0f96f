"""Satellite image time series for temporal pre-training: Slovenia NDVI (eo-learn) and SSL4EO-S12 seasons.

Samples follow eolab's schema for series (``eolab.data.schema``): ``image`` is (T, C, H, W), with
``doy`` (T,) and ``dates`` (T ISO dates, sorted) so that a temporal tokenizer encodes the real
acquisition dates rather than the position of an image in the stack.

The eo-learn EOPatch has 68 irregular dates, many cloudy: each window draws its own ``num_dates``
dates among those that are clear *in that window* (a scene-level cloud percentage would keep
windows under a cloud and discard clear windows of a partly cloudy scene). SSL4EO-S12 stores a
fixed number of seasons per location, read through the same per-date reader as ``scenes.py`` so
the radiometric offset is removed identically.

The window helpers here (grid, valid fraction, centre coordinates, a bounded memo of decoded
stacks) are shared with ``eolab.data.pairs``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform
from torch.utils.data import Dataset

from .bands import S2_L2A
from .paths import data_root
from .scenes import Scene, make_scene, offset_from_baseline, read_band_files, screen_pixels, to_reflectance_dn

log = logging.getLogger(__name__)

SLOVENIA_DIR = "eo-learn-slovenia/TestEOPatch"
NDVI_FILL = 0.0  # written where NDVI is not finite (no data); such pixels also count as not clear
REFLECTANCE_SCALE = 1e-4  # digital numbers (offset removed) to reflectance


# ----------------------------------------------------------------------------------------------
# Windows on a raster grid (shared with pairs.py)


def window_grid(height: int, width: int, patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (rows, cols), flattened, of every patch x patch window on a stride grid inside the raster."""
    if patch > height or patch > width:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rr, cc = np.meshgrid(np.arange(0, height - patch + 1, stride), np.arange(0, width - patch + 1, stride),
                         indexing="ij")
    return rr.ravel(), cc.ravel()


def window_fraction(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int) -> np.ndarray:
    """Fraction of True pixels of ``mask`` (..., H, W) in each window: (..., N), via a summed-area table."""
    sat = np.pad(mask.astype(np.float64).cumsum(-2).cumsum(-1), [(0, 0)] * (mask.ndim - 2) + [(1, 0), (1, 0)])
    total = (sat[..., rows + patch, cols + patch] - sat[..., rows, cols + patch]
             - sat[..., rows + patch, cols] + sat[..., rows, cols])
    return total / patch**2


def window_lonlat(crs: Any, transform: Affine, rows: np.ndarray, cols: np.ndarray, patch: int) -> np.ndarray:
    """WGS84 (lon, lat) of every window centre: (N, 2) float32."""
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    x_pix, y_pix = cols + patch / 2, rows + patch / 2  # window centres in pixel coordinates
    t = transform
    xs, ys = t.c + t.a * x_pix + t.b * y_pix, t.f + t.d * x_pix + t.e * y_pix
    lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    return np.stack([lon, lat], axis=1).astype(np.float32)


class Recent:
    """A bounded memo of decoded stacks.

    Windows of one scene are read many times and decoding GeoTIFFs costs more than a training step,
    but a full archive does not fit in memory: keep the ``size`` most recently used stacks.
    """

    def __init__(self, load: Callable[[int], Any], size: int):
        self.load, self.size = load, max(1, size)
        self._items: OrderedDict[int, Any] = OrderedDict()

    def __getstate__(self) -> dict:
        """Worker processes start with an empty memo rather than a pickled copy of the parent's."""
        return {"load": self.load, "size": self.size, "_items": OrderedDict()}

    def __call__(self, key: int) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self.load(key)
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


def day_of_year(iso: str) -> int:
    return date.fromisoformat(iso[:10]).timetuple().tm_yday


# ----------------------------------------------------------------------------------------------
# eo-learn Slovenia EOPatch


def load_npy(path: Path, shape: tuple[int | None, ...] | None = None, like: str = "") -> np.ndarray:
    """Memory-map an EOPatch array; a missing file or a disagreeing shape is an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (an eo-learn EOPatch needs it)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated or not an .npy file
        raise ValueError(f"{path}: cannot read .npy ({type(exc).__name__}: {exc})") from exc
    agrees = shape is None or (arr.ndim == len(shape) and all(s in (None, a) for s, a in zip(shape, arr.shape)))
    if not agrees:
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{path}: shape {arr.shape} disagrees with {like} (expected {want})")
    return arr


def eopatch_dates(path: Path, steps: int) -> tuple[str, ...]:
    """ISO dates (YYYY-MM-DD) of the EOPatch time axis, from timestamps.json."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (an eo-learn EOPatch needs it)")
    stamps = json.loads(path.read_text())
    if len(stamps) != steps:
        raise ValueError(f"{path}: {len(stamps)} timestamps but the EOPatch arrays have {steps} dates")
    return tuple(datetime.fromisoformat(s).date().isoformat() for s in stamps)


def eopatch_grid(path: Path, height: int, width: int) -> tuple[str, Affine]:
    """CRS and affine transform of the EOPatch raster from bbox.geojson (rows run north to south)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (an eo-learn EOPatch needs it for coordinates)")
    geo = json.loads(path.read_text())
    code = re.search(r"EPSG::?(\d+)", json.dumps(geo.get("crs", "")))
    if not code:
        raise ValueError(f"{path}: no EPSG code in its 'crs' member")
    ring = np.asarray(geo["coordinates"][0], dtype=np.float64)  # (N, 2) polygon vertices
    (minx, miny), (maxx, maxy) = ring.min(0), ring.max(0)
    return f"EPSG:{code.group(1)}", Affine((maxx - minx) / width, 0, minx, 0, -(maxy - miny) / height, maxy)


def one_per_day(candidates: np.ndarray, days: tuple[str, ...], clear: np.ndarray) -> np.ndarray:
    """Keep the clearest acquisition of each calendar day (the EOPatch has two on 2015-12-08).

    Two images of one day would carry the same ``doy`` and tell a temporal model nothing new.
    """
    best: dict[str, int] = {}
    for t in candidates:
        if days[t] not in best or clear[t] > clear[best[days[t]]]:
            best[days[t]] = int(t)
    return np.asarray(sorted(best.values()), dtype=np.int64)


def spread_pick(candidates: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of the time-sorted ``candidates``, one drawn from each of k consecutive equal chunks.

    Spreads a sample over the whole series (seasons, years) while still varying with the seed;
    the result stays sorted in time because the chunks are.
    """
    return np.asarray([chunk[rng.integers(len(chunk))] for chunk in np.array_split(candidates, k)], dtype=np.int64)


class SloveniaSeries(Dataset):
    """NDVI time-series windows of the eo-learn Slovenia EOPatch, each with its own clear dates.

    Item ``i`` is window ``i`` of the stride grid with ``num_dates`` dates drawn (seeded by
    ``(seed, i)``) among the dates whose clear fraction in that window (not cloud in CLM, data in
    IS_DATA, finite NDVI) is >= 1 - ``max_cloud``, one per calendar day, spread over the series.
    Windows with fewer such dates are dropped. ``mask`` carries the LULC map of the window
    (eo-learn land-cover codes, 0 = no data) for segmentation probes.
    """

    def __init__(self, root: str | Path | None = None, patch: int = 32, stride: int = 16, num_dates: int = 6,
                 max_cloud: float = 0.1, seed: int = 0, eopatch: str = SLOVENIA_DIR):
        root = data_root(root)
        folder = root / eopatch
        if num_dates < 1:
            raise ValueError(f"num_dates must be >= 1, got {num_dates}")
        self.rel, self.patch, self.num_dates, self.seed = eopatch, patch, num_dates, seed
        ndvi = load_npy(folder / "data" / "NDVI.npy")
        if ndvi.ndim != 4 or ndvi.shape[-1] != 1:
            raise ValueError(f"{folder / 'data' / 'NDVI.npy'}: shape {ndvi.shape}, expected (T, H, W, 1)")
        steps, height, width = ndvi.shape[:3]
        like = f"data/NDVI.npy {ndvi.shape}"
        cloud = load_npy(folder / "mask" / "CLM.npy", (steps, height, width, 1), like)
        has_data = load_npy(folder / "mask" / "IS_DATA.npy", (steps, height, width, 1), like)
        lulc = load_npy(folder / "mask_timeless" / "LULC.npy", (height, width, 1), like)
        self.dates = eopatch_dates(folder / "timestamps.json", steps)
        crs, transform = eopatch_grid(folder / "bbox.geojson", height, width)

        self.ndvi = ndvi[..., 0]  # (T, H, W, 1) -> (T, H, W), still memory-mapped
        self.lulc = np.asarray(lulc[..., 0], dtype=np.int64)  # (H, W, 1) -> (H, W)
        clear = (cloud[..., 0] == 0) & (has_data[..., 0] != 0) & np.isfinite(self.ndvi)  # (T, H, W)
        rows, cols = window_grid(height, width, patch, stride)
        if len(rows) == 0:
            raise ValueError(f"{folder}: {height}x{width} px is smaller than one {patch}x{patch} window")
        frac = window_fraction(clear, rows, cols, patch)  # (T, N)
        keep, self.candidates = [], []
        for w in range(len(rows)):
            dates = one_per_day(np.flatnonzero(frac[:, w] >= 1 - max_cloud), self.dates, frac[:, w])
            if len(dates) >= num_dates:
                keep.append(w)
                self.candidates.append(dates)
        if len(keep) < len(rows):
            log.info("%s: dropped %d of %d windows with fewer than %d dates that are >= %.0f%% clear",
                     eopatch, len(rows) - len(keep), len(rows), num_dates, 100 * (1 - max_cloud))
        self.rows, self.cols = rows[keep], cols[keep]
        self.clear_fraction = frac[:, keep]  # (T, N kept): what the date choice was based on
        self.lonlat = window_lonlat(crs, transform, self.rows, self.cols, patch)

    def __len__(self) -> int:
        return len(self.rows)

    def date_indices(self, i: int) -> np.ndarray:
        """Indices into the EOPatch time axis of item ``i``'s dates (sorted, deterministic)."""
        return spread_pick(self.candidates[i], self.num_dates, np.random.default_rng((self.seed, i)))

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        t = self.date_indices(i)
        r, c, p = int(self.rows[i]), int(self.cols[i]), self.patch
        window = np.asarray(self.ndvi[t, r : r + p, c : c + p], dtype=np.float32)  # (T, H, W)
        window = np.where(np.isfinite(window), window, NDVI_FILL)[:, None]  # (T, H, W) -> (T, 1, H, W)
        dates = tuple(self.dates[k] for k in t)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(window)),
            "bands": ("NDVI",),
            "unit": "index",
            "source": "slovenia",
            "doy": torch.tensor([day_of_year(d) for d in dates], dtype=torch.int64),
            "dates": dates,
            "id": f"{self.rel}@{r},{c}+{p}",
            "lonlat": torch.from_numpy(self.lonlat[i]),
            "mask": torch.from_numpy(self.lulc[r : r + p, c : c + p].copy()),
        }


# ----------------------------------------------------------------------------------------------
# SSL4EO-S12 seasons


def read_ssl4eo_s2(date_dir: Path, root: Path, bands: tuple[str, ...] = S2_L2A) -> Scene:
    """One SSL4EO-S12 Sentinel-2 date, exactly as ``scenes.ssl4eo_s12`` reads it.

    The reader in scenes.py is a generator over every date of every location; datasets that read
    one date at a time (lazily, in a worker) need random access, so this repeats its few steps with
    the same helpers: band files resampled to B02's grid, offset from PROCESSING_BASELINE.
    """
    rel = str(date_dir.relative_to(root))
    raw, meta, notes = read_band_files(date_dir, bands, rel)
    raw, check = screen_pixels(raw, bands, rel)
    md_path = date_dir / "metadata.json"
    md = json.loads(md_path.read_text()) if md_path.exists() else {}
    offset = offset_from_baseline(md.get("PROCESSING_BASELINE"))
    product, d = date_dir.parent.parent.name, date_dir.name[:8]
    return make_scene(rel, f"ssl4eo_{product}", bands, to_reflectance_dn(raw, offset), (raw == 0).all(0), None, meta,
                  f"{d[:4]}-{d[4:6]}-{d[6:]}", "L2A" if product == "s2a" else "L1C",
                  notes + [f"radiometric offset {offset} removed"], check)


class SSL4EOSeries(Dataset):
    """Windows of SSL4EO-S12 locations with all their Sentinel-2 dates: image (T, C, H, W) reflectance.

    Every location of the release has the same number of seasons (4 in the full data set, 2 in the
    shared sample); a location with a different count is an error, since its series would not batch.
    A window is kept when >= ``min_valid`` of its pixels have data on every date. Decoded locations
    are memoised (``cache_size`` of them), so memory stays bounded on the full archive.
    """

    def __init__(self, root: str | Path | None = None, bands: tuple[str, ...] = S2_L2A, patch: int = 64,
                 stride: int = 32, min_valid: float = 0.95, product: str = "s2a", cache_size: int = 8):
        self.root = data_root(root)
        self.bands, self.patch = tuple(bands), patch
        base = self.root / "ssl4eo-s12" / product
        self.locations = [d for d in sorted(base.glob("*")) if d.is_dir()]
        if not self.locations:
            raise FileNotFoundError(f"{base}: no SSL4EO-S12 locations (expected <location>/<date>/B*.tif)")
        self._series = Recent(self._load, cache_size)
        self.steps: int | None = None
        index: list[tuple[int, int, int]] = []
        lonlat = []
        for k, loc in enumerate(self.locations):
            dn, valid, dates, crs, transform = self._series(k)
            if self.steps is None:
                self.steps = len(dates)
            elif len(dates) != self.steps:
                raise ValueError(f"{loc}: {len(dates)} dates, {self.locations[0]} has {self.steps} (would not batch)")
            rows, cols = window_grid(*dn.shape[-2:], patch, stride)
            keep = window_fraction(valid, rows, cols, patch) >= min_valid
            rows, cols = rows[keep], cols[keep]
            index += [(k, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
            lonlat.append(window_lonlat(crs, transform, rows, cols, patch))
        self.index = index
        self.lonlat = np.concatenate(lonlat)

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str, Affine]:
        """(T, C, H, W) digital numbers, (H, W) valid on every date, dates, CRS, transform of one location."""
        loc = self.locations[k]
        scenes = sorted((read_ssl4eo_s2(d, self.root, self.bands) for d in sorted(loc.glob("*")) if d.is_dir()),
                        key=lambda s: s.time)
        if not scenes:
            raise FileNotFoundError(f"{loc}: no date folders")
        first = scenes[0]
        for s in scenes[1:]:
            if s.dn.shape != first.dn.shape or s.transform != first.transform or s.crs != first.crs:
                raise ValueError(f"{s.id}: grid {s.dn.shape} {s.crs} {s.transform} differs from {first.id} "
                                 f"({first.dn.shape} {first.crs} {first.transform})")
        dn = np.stack([s.dn for s in scenes])  # T x (C, H, W) -> (T, C, H, W)
        valid = np.logical_and.reduce([s.valid for s in scenes])  # (H, W)
        return dn, valid, tuple(s.time for s in scenes), first.crs, Affine(*first.transform)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, r, c = self.index[i]
        p = self.patch
        dn, _, dates, _, _ = self._series(k)
        window = dn[:, :, r : r + p, c : c + p].astype(np.float32) * REFLECTANCE_SCALE  # (T, C, p, p)
        rel = self.locations[k].relative_to(self.root)
        return {
            "image": torch.from_numpy(window),
            "bands": self.bands,
            "unit": "reflectance",
            "source": "ssl4eo",
            "doy": torch.tensor([day_of_year(d) for d in dates], dtype=torch.int64),
            "dates": dates,
            "id": f"{rel}@{r},{c}+{p}",
            "lonlat": torch.from_numpy(self.lonlat[i]),
        }
