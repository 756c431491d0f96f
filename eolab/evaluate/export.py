"""Embeddings out: a saved encoder over a folder (or glob) of GeoTIFFs, written with coordinates.

    python -m eolab embed --checkpoint encoder.pt --data 'scenes/*.tif' --out emb.nc

Each file is cut into windows of the encoder's ``img_size`` (stride ``stride``, default the window
size; a file of exactly that size is one sample); each window becomes one row of the
``embedding`` variable (dims ``sample``, ``dim``), with coordinates: ``sample`` (id: the file's path
relative to the data folder, plus ``:row:col`` of the window when a file has several), ``file``,
``row``, ``col`` (pixel offset of the window), ``lon``/``lat`` (WGS84 centre of the window, from the
file's CRS and geotransform) and ``crs``. Attributes record the checkpoint, pool and bands. The
format follows the suffix: ``.nc`` (netCDF4) or ``.zarr``.

Band names: ``bands`` (the file's bands in file order), else the file's band descriptions when they
are band names, else the 13-band EuroSAT-MS order when a file has 13 bands; otherwise an error
naming the file. Values are divided by ``scale`` (default 10000: Sentinel-2 digital numbers to
reflectance) after subtracting ``offset``; the encoder's normalisation then selects and orders the
bands it was trained on by name.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from ..checkpoint import load_encoder
from ..data.bands import EUROSAT_FILE_ORDER, canonical_band_name
from ..data.raster import RasterError, centre_lonlat, read_raster
from .probe import embed

POOLS = ("mean", "cls", "mean_std")


class EmbedError(ValueError):
    """Bad input to ``embed_files`` (no files, unknown bands, a file smaller than a window)."""


def find_files(data: str | Path) -> tuple[list[Path], Path]:
    """GeoTIFFs of a folder (recursively) or a glob, sorted; and the folder ids are relative to."""
    text = str(data)
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        base = Path(text.split("*")[0].split("?")[0].split("[")[0])
        base = base if base.is_dir() else base.parent
    elif Path(text).is_dir():
        base = Path(text)
        files = sorted(p for p in base.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and p.is_file())
    elif Path(text).is_file():
        files, base = [Path(text)], Path(text).parent
    else:
        raise EmbedError(f"--data {text}: no such file or folder")
    if not files:
        raise EmbedError(f"--data {text}: no GeoTIFF (*.tif, *.tiff) found")
    return files, base


def file_bands(path: Path, count: int, bands: tuple[str, ...] | None) -> tuple[str, ...]:
    """Band names of a file's channels, in file order (see the module docstring)."""
    if bands:
        if len(bands) != count:
            raise EmbedError(f"{path}: has {count} bands, but --bands names {len(bands)}: {','.join(bands)}")
        return bands
    with rasterio.open(path) as ds:
        descriptions = ds.descriptions
    named: tuple[str, ...] = ()
    for sensor in ("sentinel2", "sentinel1"):  # names resolve within one sensor, never across
        try:
            named = tuple(canonical_band_name(d, sensor) for d in descriptions if d)
            break
        except KeyError:
            continue
    if len(named) == count and len(set(named)) == count:
        return named
    if count == len(EUROSAT_FILE_ORDER):
        return EUROSAT_FILE_ORDER
    raise EmbedError(f"{path}: {count} bands without band names in the file; name them in file order with "
                     "--bands (e.g. --bands B02,B03,B04,B08)")


@dataclass
class Window:
    sample: str
    file: str
    row: int
    col: int
    lon: float
    lat: float
    crs: str


def windows(path: Path, base: Path, size: int, stride: int, bands: tuple[str, ...] | None,
            scale: float, offset: float) -> Iterator[tuple[Window, np.ndarray, tuple[str, ...]]]:
    """Every ``size`` x ``size`` window of one file: (where it is, its (C, size, size) values, bands)."""
    array, meta = read_raster(path)
    names = file_bands(path, array.shape[0], bands)
    _, h, w = array.shape
    if h < size or w < size:
        raise EmbedError(f"{path}: {h} x {w} px is smaller than the encoder's {size} x {size} px window")
    if meta["crs"] is None:
        raise RasterError(f"{path}: raster has no CRS; cannot compute its longitude/latitude")
    values = (array.astype(np.float32) - offset) / scale
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
    starts = [(r, c) for r in range(0, h - size + 1, stride) for c in range(0, w - size + 1, stride)]
    for r, c in starts:
        t = meta["transform"]
        window_meta = {**meta, "transform": t * t.translation(c, r)}
        lon, lat = centre_lonlat(window_meta, size, size)
        sample = rel if len(starts) == 1 else f"{rel}:{r}:{c}"
        yield Window(sample, rel, r, c, lon, lat, str(meta["crs"])), values[:, r : r + size, c : c + size], names


def embed_files(checkpoint: str | Path, data: str | Path, out: str | Path | None = None, pool: str = "mean_std",
                stride: int = 0, bands: tuple[str, ...] | None = None, scale: float = 10_000.0, offset: float = 0.0,
                batch_size: int = 128):
    """Embeddings of every window of every GeoTIFF in ``data``, as an xarray Dataset (written to
    ``out`` when given: ``.nc`` or ``.zarr``)."""
    import xarray as xr

    if pool not in POOLS:
        raise EmbedError(f"--pool must be one of {POOLS}, got {pool!r}")
    encoder, norm, config = load_encoder(checkpoint)
    size = int(config["img_size"])
    stride = stride or size
    files, base = find_files(data)
    where: list[Window] = []
    vectors: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_bands: tuple[str, ...] | None = None

    def flush() -> None:
        if pending:
            batch = {"image": torch.from_numpy(np.stack(pending)), "bands": pending_bands, "unit": norm.unit}
            vectors.append(embed(encoder, norm, batch, pool, batch_size=batch_size, where=f"GeoTIFFs in {data}"))
            pending.clear()

    for path in files:
        for window, values, names in windows(path, base, size, stride, bands, scale, offset):
            if pending_bands is not None and names != pending_bands:
                flush()
            pending_bands = names
            pending.append(values)
            where.append(window)
            if len(pending) >= batch_size:
                flush()
    flush()
    matrix = np.concatenate(vectors).astype(np.float32)
    coords = {"sample": [w.sample for w in where], "dim": np.arange(matrix.shape[1])}
    for name in ("file", "row", "col", "lon", "lat", "crs"):
        coords[name] = ("sample", [getattr(w, name) for w in where])
    ds = xr.Dataset({"embedding": (("sample", "dim"), matrix)}, coords=coords)
    ds["lon"].attrs.update(units="degrees_east", long_name="longitude of the window centre (WGS84)")
    ds["lat"].attrs.update(units="degrees_north", long_name="latitude of the window centre (WGS84)")
    ds.attrs.update({
        "checkpoint": Path(checkpoint).name, "pool": pool, "window_px": size, "stride_px": stride,
        "encoder_bands": ",".join(norm.bands), "unit": norm.unit, "scale": scale, "offset": offset,
        "encoder_config": json.dumps(config), "data": str(data),
    })
    if out is not None:
        write(ds, out)
    return ds


def write(ds, out: str | Path) -> Path:
    """``ds`` to ``out``: netCDF4 for ``.nc``, zarr for ``.zarr`` (replaced if present)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".zarr":
        ds.to_zarr(out, mode="w", zarr_format=2, consolidated=True)  # v2: readable by every zarr reader
    elif out.suffix in (".nc", ".nc4"):
        tmp = out.with_suffix(out.suffix + ".tmp")
        ds.to_netcdf(tmp, engine="netcdf4")
        tmp.replace(out)
    else:
        raise EmbedError(f"--out {out}: use a .nc (netCDF) or .zarr path")
    return out
