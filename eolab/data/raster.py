"""GeoTIFF reading with errors that name the file.

rasterio's own messages for a truncated or corrupt file mention TIFF internals but often not which
of thousands of files failed; every read here is wrapped so the path is in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform


class RasterError(ValueError):
    """A GeoTIFF that cannot be used: unreadable, truncated, or with the wrong band count."""


DN_RANGE = (1, 65534)
"""Valid Sentinel-2 digital numbers (L1C and L2A products): 0 marks no data and 65535 saturated or
defective pixels (ESA's product specification: NODATA 0, SATURATED 65535)."""
CONSTANT_MIN_NATIVE_PIXELS = 256
"""A band is called constant (broken) only if it covers at least this many pixels at its native
resolution: a 60 m band over a 64 x 64 px EuroSAT patch (about 11 x 11 native pixels) may well be
flat, and one real EuroSAT patch (SeaLake_2159) has a constant B09."""


@dataclass
class PixelCheck:
    """What `check_pixels` found in a (C, H, W) stack: per-band counts of unusable pixels, bands
    that hold no data at all (`bad_bands`), and the (H, W) mask of pixels whose every band holds a
    finite value in range, bad bands aside (a run that does not read a bad band can use its scene;
    one that does must leave the scene out, see `cache.SceneCache.tiles`)."""

    usable: np.ndarray
    nonfinite: dict[str, int] = field(default_factory=dict)  # band -> pixels NaN or +-inf
    out_of_range: dict[str, int] = field(default_factory=dict)  # band -> finite pixels outside the valid range
    bad_bands: dict[str, str] = field(default_factory=dict)  # band -> why it holds no data
    valid_range: tuple[float, float] = DN_RANGE

    @property
    def masked(self) -> int:
        """Pixels that the pixel checks made no-data (bad bands are reported, not counted here)."""
        return int(self.usable.size - np.count_nonzero(self.usable))

    @property
    def clean(self) -> bool:
        return not (self.nonfinite or self.out_of_range or self.bad_bands)

    def problems(self) -> list[str]:
        """One message per bad band: what is wrong with it and on how many pixels."""
        n = self.usable.size
        lo, hi = self.valid_range
        out = [f"band {b}: {why}" for b, why in self.bad_bands.items()]
        out += [f"band {b}: {k} of {n} pixels NaN or infinite" for b, k in self.nonfinite.items() if b not in self.bad_bands]
        out += [f"band {b}: {k} of {n} pixels outside the valid range [{lo:g}, {hi:g}]"
                for b, k in self.out_of_range.items() if b not in self.bad_bands]
        return out

    def to_json(self) -> dict:
        """The manifest's record of it: masked pixels, and the counts behind them."""
        return {"masked_pixels": self.masked, "nonfinite_pixels": self.nonfinite,
                "out_of_range_pixels": self.out_of_range, "bad_bands": self.bad_bands}


def check_pixels(stack: np.ndarray, bands: tuple[str, ...], valid_range: tuple[float, float] = DN_RANGE,
                 zero_is_nodata: bool = True, grid_m: float = 10.0,
                 resolutions: dict[str, float] | None = None) -> PixelCheck:
    """Find NaN and infinite values, values outside ``valid_range`` and bands without data (all
    NaN, all zero, or constant) in a (C, H, W) stack on a ``grid_m`` grid.

    With ``zero_is_nodata`` (Sentinel-2 products), 0 is the product's no-data value, not a value
    out of range (pixels where every band is 0 are no-data already); without it (EuroSAT, which
    has no no-data), a 0 is out of range. ``usable`` is False on every pixel where some band that
    holds data is NaN, infinite or out of range. ``resolutions`` (band -> native ground sampling
    distance, from the sensor card) defaults to eolab's Sentinel-2/Sentinel-1 bands.
    """
    from .bands import BANDS

    if resolutions is None:
        resolutions = {name: b.resolution_m for name, b in BANDS.items()}

    lo, hi = valid_range
    _, h, w = stack.shape
    usable = np.ones((h, w), dtype=bool)
    result = PixelCheck(usable=usable, valid_range=valid_range)
    floating = np.issubdtype(stack.dtype, np.floating)
    all_zero_stack = not np.any(stack)
    for b, name in enumerate(bands):
        band = stack[b]
        finite = np.isfinite(band) if floating else np.ones((h, w), dtype=bool)
        n_bad = int(h * w - np.count_nonzero(finite))
        if n_bad:
            result.nonfinite[name] = n_bad
        if n_bad == h * w:
            result.bad_bands[name] = "NaN or infinite on every pixel"
            continue
        usable &= finite
        values = np.where(finite, band, lo)
        outside = finite & ((values < lo) | (values > hi))
        if zero_is_nodata:
            outside &= values != 0
        n_out = int(np.count_nonzero(outside))
        if n_out:
            result.out_of_range[name] = n_out
            usable &= ~outside
        present = band[finite]
        native = h * w * (grid_m / resolutions[name]) ** 2 if name in resolutions else h * w
        if not all_zero_stack and not np.any(present):
            result.bad_bands[name] = "zero on every pixel (no data in this band)"
        elif native >= CONSTANT_MIN_NATIVE_PIXELS and present.min() == present.max() and present.min() != 0:
            result.bad_bands[name] = f"constant ({present.min():g}) on every pixel"
    return result


def require_valid_pixels(stack: np.ndarray, bands: tuple[str, ...], path: Path,
                         valid_range: tuple[float, float] = DN_RANGE) -> None:
    """Raise RasterError naming the file and every bad band, for data without no-data (EuroSAT)."""
    check = check_pixels(stack, bands, valid_range, zero_is_nodata=False)
    if not check.clean:
        raise RasterError(f"{path}: bad pixels: {'; '.join(check.problems())}")


def read_raster(
    path: Path,
    *,
    expected_count: int | None = None,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.bilinear,
) -> tuple[np.ndarray, dict]:
    """Read all bands of ``path`` as (C, H, W), optionally resampled to ``out_shape``.

    Returns the array and a dict with ``crs``, ``transform`` (of the returned grid), ``nodata``.
    """
    try:
        with rasterio.open(path) as ds:
            if expected_count is not None and ds.count != expected_count:
                raise RasterError(f"{path}: expected {expected_count} bands, found {ds.count}")
            if out_shape is None or out_shape == ds.shape:
                array = ds.read()
                tf = ds.transform
            else:
                array = ds.read(out_shape=(ds.count, *out_shape), resampling=resampling)
                tf = ds.transform @ ds.transform.scale(ds.width / out_shape[1], ds.height / out_shape[0])
            meta = {"crs": ds.crs, "transform": tf, "nodata": ds.nodata}
    except RasterError:
        raise
    except Exception as exc:  # rasterio raises several unrelated types for damaged files
        raise RasterError(f"{path}: cannot read GeoTIFF ({type(exc).__name__}: {exc})") from exc
    return array, meta


def centre_lonlat(meta: dict, height: int, width: int) -> tuple[float, float]:
    """Longitude/latitude (WGS84) of the centre of a (height, width) window on ``meta``'s grid."""
    t = meta["transform"]
    x, y = t.c + t.a * width / 2 + t.b * height / 2, t.f + t.d * width / 2 + t.e * height / 2
    if meta["crs"] is None:
        raise RasterError("raster has no CRS; cannot compute its longitude/latitude")
    lon, lat = warp_transform(meta["crs"], "EPSG:4326", [x], [y])
    return float(lon[0]), float(lat[0])
