"""Helpers for satellite image time series (multi-date stacks of one place): windows on a raster grid,
the date-selection rules (one acquisition per day, picks spread over the series), day of year, and
eo-learn's EOPatch layout. The series datasets themselves are source files with a ``series`` field
(``sources/slovenia.yaml``, ``sources/ssl4eo_series.yaml``), read by ``eolab.data.series.SeriesDataset``.

Samples follow eolab's schema for series (``eolab.data.schema``): ``image`` is (T, C, H, W), with
``doy`` (T,) and ``dates`` (T ISO dates, sorted) so that a temporal tokenizer encodes the real
acquisition dates rather than the position of an image in the stack.

EOPatches are folders of ``.npy`` arrays (``data/NDVI.npy`` (T, H, W, 1), ``mask/CLM.npy``, ...) plus
``timestamps.json`` and ``bbox.geojson``; numpy memory-maps them directly (eo-learn itself is a large
dependency and would only wrap the same ``np.load``).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

SLOVENIA_DIR = "eo-learn-slovenia/TestEOPatch"
NDVI_FILL = 0.0  # written where NDVI is not finite (no data); such pixels also count as not clear
REFLECTANCE_SCALE = 1e-4  # digital numbers (offset removed) to reflectance


# ----------------------------------------------------------------------------------------------
# Windows on a raster grid (series and pairs)


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
