"""GeoTIFF reading with errors that name the file.

rasterio's own messages for a truncated or corrupt file mention TIFF internals but often not which
of thousands of files failed; every read here is wrapped so the path is in the message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform


class RasterError(ValueError):
    """A GeoTIFF that cannot be used: unreadable, truncated, or with the wrong band count."""


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
