"""Benchmark tasks declared in a file (YAML), no Python: ``get_task("path/to/task.yaml")``,
``--tasks path/to/task.yaml`` on the command line, ``tasks:`` in the benchmark notebook and
``benchmark:`` in the pre-training notebook.

A task file says where the data are, what each band is, how values become the declared unit,
what the labels are and how the task is split; the format is in ``docs/benchmark.md`` and every
field is checked before anything is read (an unknown or missing field is an error naming the file
and the field). Four kinds of data:

    geotiff   one GeoTIFF chip per sample (``files``: globs, read in the order given, each sorted);
              label from a folder of the path (``label: {path_part: -2}``) or a column of a table
              (``label: {table: labels.csv, id_column: file, column: crop}``); coordinates from the
              chip's CRS and geotransform
    table     CSV or Parquet pixel time series: ``layout: long`` (one row per sample and date:
              ``id_column``, ``time_column``) or ``wide`` (one row per sample, a band's columns named
              by a ``{t}`` pattern); label, coordinates, groups and the documented split from columns
    scenes    per-pixel (segmentation) tasks: scene rasters with a label raster each (``labels:
              LULC/{stem}.tif``) or a vector file of labelled polygons (``labels: fields.gpkg``,
              ``label_field: crop``; GeoJSON, GeoPackage, shapefile, FlatGeobuf, GeoParquet, burnt onto
              each scene's grid in its CRS), labelled pixels sampled per class, blocks of ``block_px`` squares
    arrays    npy, HDF5 (``file.h5:dataset``) or zarr (``store.zarr:array``) arrays with declared
              ``axes`` (any of sample, time, band, y, x); targets, coordinates, groups, test flags,
              months or days of year from arrays of the same samples

Bands: declared inline (name, wavelength, bandwidth, unit, scale, ...) or taken from a sensor card
(``sensor: sentinel2_l2a`` or a card's path; bands by name, or all of the card's), inline fields
overriding the card's (``_bands_from_card``).

Values: ``value = raw * scale + offset`` per band (a scale whose inverse is an integer, such as
0.0001, divides by that integer: exact in float32); ``nodata`` raw values become no-data, which the
benchmark fills and counts (``downstream.normalise_batch``). Labels: any values, mapped to named
contiguous classes (``labels.map``), rare classes dropped with ``labels.min_samples``, unlisted ones
dropped with ``labels.others: drop``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from .splits import spatial_blocks
from .taskdef import KINDS, Task, make_batch, resolve_files
from .timeseries import day_of_year

FORMATS = ("geotiff", "table", "arrays", "scenes")
TOP_FIELDS = {"name", "kind", "description", "data", "sensor", "processing_baseline", "bands", "unit", "scale", "offset",
              "nodata", "modality", "steps", "size", "gsd_m", "labels", "splits", "smoke"}
BAND_FIELDS = {"name", "wavelength_nm", "bandwidth_nm", "unit", "scale", "offset", "nodata", "modality", "column"}
DATA_FIELDS = {
    "geotiff": {"format", "root", "files", "label", "documented_split"},
    "table": {"format", "root", "files", "layout", "id_column", "time_column", "label_column", "lon_column",
              "lat_column", "group_column", "test_column", "test_values", "filter"},
    "arrays": {"format", "root", "inputs", "axes", "target", "lonlat", "latlon", "group", "is_test", "ids", "months",
               "doy"},
    "scenes": {"format", "root", "files", "labels", "label_field", "pixels_per_class", "ignore", "block_px", "seed"},
}
AXES = ("sample", "time", "band", "y", "x")
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet", ".geoparquet")
"""A ``scenes`` task's ``labels`` file with one of these suffixes is a vector file (read by pyogrio):
its polygons, reprojected to each scene's CRS, are burnt onto the scene grid by ``label_field``."""


class TaskFileError(ValueError):
    """A task file that cannot be read as declared (names the file and the field)."""




def _fail(path, field: str, what: str):
    raise TaskFileError(f"{path}: {field}: {what}")


def _fields(path, where: str, given: dict, allowed: set, required: tuple = ()) -> None:
    if not isinstance(given, dict):
        _fail(path, where, f"expected a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    if unknown:
        _fail(path, where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    for name in required:
        if name not in given:
            _fail(path, f"{where}.{name}" if where else name, "missing (required)")


def read_task_file(path: str | Path) -> dict:
    """The task file's content, checked field by field (no data are read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TaskFileError(f"{path}: not valid YAML ({exc})") from exc
    _fields(path, "", spec, TOP_FIELDS, ("name", "kind", "data") + (() if "sensor" in spec else ("bands", "gsd_m")))
    if spec["kind"] not in ("classification", "regression", "segmentation"):
        _fail(path, "kind", f"task files support 'classification', 'regression' and 'segmentation' (of {KINDS}), "
              f"got {spec['kind']!r}")
    data = spec["data"]
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        _fail(path, "data.format", f"one of {FORMATS}, got {data.get('format') if isinstance(data, dict) else data!r}")
    if (spec["kind"] == "segmentation") != (data["format"] == "scenes"):
        _fail(path, "kind", "a per-pixel (segmentation) task reads format: scenes (a scene raster and a label raster), "
              "and format: scenes is a segmentation task")
    if data["format"] == "scenes" and "labels" not in data:
        _fail(path, "data.labels", "missing (required): the label raster of each scene, e.g. LULC/{stem}.tif")
    _fields(path, "data", data, DATA_FIELDS[data["format"]], ("files",) if data["format"] != "arrays" else ("inputs", "axes", "target"))
    if isinstance(spec.get("bands"), dict) and "card" in spec["bands"]:
        _fail(path, "bands.card", "name the card with the top-level field sensor: (a card name or a card YAML path), "
              "then list the bands by name, or leave bands: out to take all of the card's")
    if "sensor" in spec:
        spec = {**spec, **_bands_from_card(path, spec)}
    elif "processing_baseline" in spec:
        _fail(path, "processing_baseline", "applies to a sensor card's digital numbers: give sensor: as well")
    bands = spec["bands"]
    if not isinstance(bands, list) or not bands:
        _fail(path, "bands", "a list of bands (name, wavelength_nm, bandwidth_nm, ...)")
    for i, band in enumerate(bands):
        _fields(path, f"bands[{i}]", band, BAND_FIELDS | CARD_FIELDS, ("name",))
        for key in ("wavelength_nm", "bandwidth_nm", "scale", "offset"):
            if key in band and not isinstance(band[key], int | float):
                _fail(path, f"bands[{i}].{key}", f"a number, got {band[key]!r}")
    names = [b["name"] for b in bands]
    if len(set(names)) != len(names):
        _fail(path, "bands", f"band names repeat: {names}")
    if data["format"] == "arrays":
        axes = data["axes"]
        if not isinstance(axes, list) or len(set(axes)) != len(axes) or not {"sample", "band"} <= set(axes) \
                or not set(axes) <= set(AXES):
            _fail(path, "data.axes", f"distinct names from {AXES}, with sample and band, got {axes!r}")
    labels = spec.get("labels") or {}
    _fields(path, "labels", labels, {"map", "others", "min_samples", "names"})
    if labels.get("others", "error") not in ("error", "drop"):
        _fail(path, "labels.others", f"'error' or 'drop', got {labels['others']!r}")
    splits = spec.get("splits") or {}
    _fields(path, "splits", splits, {"blocked"})
    blocked = splits.get("blocked") or {"by": "coordinates"}
    _fields(path, "splits.blocked", blocked, {"by", "cell_deg"})
    if blocked.get("by") not in ("coordinates", "group"):
        _fail(path, "splits.blocked.by", f"'coordinates' or 'group', got {blocked.get('by')!r}")
    return spec


CARD_FIELDS = {"raw_offset", "converts"}
"""Band fields a sensor card fills in (never written in a task file): the digital-number offset of a
processing baseline, added before ``scale``, and the affine conversions ``[unit, scale, offset]``
from the band's loaded unit to others (the benchmark applies one when an encoder reads that unit)."""
SENSOR_MODALITY = {"sentinel2": "s2", "sentinel1": "s1"}
"""A card's sensor -> eolab's modality name (other sensors: none; their bands go by wavelength)."""
CARD_UNIT = {"db": "dB", "kelvin": "K"}
"""A card's unit -> the spelling tasks and encoders use (the others are spelled alike)."""


def _card_unit(unit: str) -> str:
    return CARD_UNIT.get(unit, unit)


def _bands_from_card(path, spec: dict) -> dict:
    """``bands`` (and ``gsd_m``, where not given) filled in from the task's sensor card.

    Each band is a card band's name (any spelling the card knows, e.g. ``B2`` or ``blue``: the task
    uses the card's own name) or a mapping with ``name`` and inline fields, which override the card's.
    No ``bands``: every band of the card, in its order. The unit a band is loaded in: the band's or
    the task's ``unit`` where given, else the card's physical unit (``to``). Loaded in that unit, the
    card's ``scale``/``offset`` (and a ``processing_baseline``'s digital-number offset) convert the
    stored numbers on reading, as an inline ``scale`` would; loaded in the card's raw unit (``unit:
    dn``), the numbers stay as stored and the conversion is declared for encoders that read the other."""
    from .cards import CardError, load_card

    try:
        card = load_card(spec["sensor"], base=Path(path).parent)
    except CardError as exc:
        _fail(path, "sensor", str(exc))
    baseline = spec.get("processing_baseline")
    if baseline is not None and not card.baseline_offsets:
        _fail(path, "processing_baseline", f"card {card.name} ({card.where}) declares no processing-baseline offsets")
    dn = card.baseline_offset(str(baseline)) if baseline is not None else 0.0
    given = spec.get("bands", list(card.band_names))
    if not isinstance(given, list) or not given:
        _fail(path, "bands", f"a list of band names of card {card.name} (or leave it out for all: {list(card.band_names)})")
    bands = []
    for i, item in enumerate(given):
        band = {"name": item} if isinstance(item, str | int) else item
        _fields(path, f"bands[{i}]", band, BAND_FIELDS, ("name",))
        try:
            cb = card.band(str(band["name"]))
        except (KeyError, ValueError):
            _fail(path, f"bands[{i}].name", f"{band['name']!r} is not a band of sensor card {card.name} ({card.where}); "
                  f"its bands: {', '.join(card.band_names)}")
        raw, to = _card_unit(card.unit), _card_unit(cb.to)
        unit = band.get("unit", spec.get("unit", to))
        out = {**band, "name": cb.name, "unit": unit}
        for key in ("wavelength_nm", "bandwidth_nm"):
            value = band.get(key, getattr(cb, key))
            if value is not None:
                out[key] = value
        out["nodata"] = band.get("nodata", spec.get("nodata", card.nodata))
        out["modality"] = band.get("modality", spec.get("modality", SENSOR_MODALITY.get(card.sensor, "")))
        scale = band.get("scale", spec.get("scale"))
        offset = band.get("offset", spec.get("offset"))
        if unit == to and raw != to:  # converted on reading: (stored + baseline) * scale + offset
            out["scale"] = cb.scale if scale is None else scale
            out["offset"] = cb.offset if offset is None else offset
            out["raw_offset"] = dn
            s, o = float(out["scale"]), float(out["offset"])
            out["converts"] = [[raw, 1 / s, (-o / s - dn) or 0.0]]  # the inverse, for an encoder that reads digital numbers
        elif unit == raw and raw != to:  # kept as stored; the card's conversion is declared for the benchmark
            out["scale"], out["offset"] = (1.0 if scale is None else scale), (0.0 if offset is None else offset)
            out["converts"] = [[to, cb.scale, cb.offset + dn * cb.scale]]
        else:  # the card converts nothing (e.g. dB to dB), or the task file names another unit: its own fields
            out["scale"], out["offset"] = (1.0 if scale is None else scale), (0.0 if offset is None else offset)
        bands.append(out)
    gsd = spec.get("gsd_m", min(card.band(b["name"]).gsd_m for b in bands))
    return {"bands": bands, "gsd_m": gsd, "sensor_card": str(card.where)}


def _band(spec: dict, band: dict, key: str, default=None):
    return band.get(key, spec.get(key, default))


def load_task_file(path: str | Path) -> Task:
    """A ``Task`` from a task file (checked now; its data are read when the benchmark loads it)."""
    path = Path(path).expanduser().resolve()
    spec = read_task_file(path)
    bands = spec["bands"]
    data = spec["data"]
    steps = int(spec.get("steps", 1))
    size = int(spec.get("size", 1))
    dated = bool(data.get("time_column") or data.get("months") or data.get("doy"))
    root = data.get("root", "")
    files = data["files"] if data["format"] != "arrays" else [
        data[k].split(":")[0] for k in ("inputs", "target", "lonlat", "latlon", "group", "is_test", "ids", "months", "doy")
        if data.get(k)]
    files = [files] if isinstance(files, str) else list(files)
    patterns = tuple(str(Path(root) / f) if root and not Path(f).is_absolute() else f for f in files)
    if data["format"] == "arrays" and any(f.endswith(".zarr") for f in patterns):
        patterns = tuple(f"{f}/**" if f.endswith(".zarr") else f for f in patterns)  # a zarr store is a folder
    split = ["random: k-fold" + (" stratified" if spec["kind"] == "classification" else "")]
    blocked = (spec.get("splits") or {}).get("blocked") or {"by": "coordinates"}
    split.append(f"blocked: {blocked['by']}" + (f" ({blocked.get('cell_deg', 1.0)}-degree cells)"
                                                  if blocked["by"] == "coordinates" else ""))
    if data.get("documented_split") or data.get("test_column") or data.get("is_test"):
        split.append("documented: from the task file")
    spec_text = json.dumps(spec, sort_keys=True, default=str)
    return Task(
        spec["name"], spec["kind"], tuple(b["name"] for b in bands),
        tuple(_band(spec, b, "unit", "reflectance") for b in bands),
        tuple(_band(spec, b, "modality", "") or "" for b in bands),
        num_dates=steps, size=size, gsd_m=float(spec["gsd_m"]), dated=dated,
        loader=functools.partial(load_from_spec, spec_text, str(path)), files=patterns,
        split="; ".join(split), smoke=bool(spec.get("smoke", False)),
        wavelengths=tuple(b.get("wavelength_nm") for b in bands), bandwidths=tuple(b.get("bandwidth_nm") for b in bands),
        source=str(path),
        conversions=tuple(tuple((str(u), float(a), float(c)) for u, a, c in b.get("converts", ())) for b in bands)
        if any(b.get("converts") for b in bands) else ())


# ----------------------------------------------------------------------------------------------
# Reading the data


def scale_values(raw: np.ndarray, scale: float, offset: float, nodata, raw_offset: float = 0.0) -> np.ndarray:
    """Raw values (any dtype) -> float32 ``(raw + raw_offset) * scale + offset``, no-data as NaN
    (``raw_offset``: a processing baseline's digital-number offset). A scale whose inverse is an
    integer divides by it (exact in float32, and what digital-number readers do)."""
    out = np.asarray(raw).astype(np.float32)
    missing = ~np.isfinite(out)
    if nodata is not None:
        missing |= np.asarray(raw) == nodata
    if raw_offset:
        out = out + np.float32(raw_offset)
    if scale != 1:
        inverse = 1 / scale
        out = out / np.float32(round(inverse)) if abs(inverse - round(inverse)) < 1e-6 else out * np.float32(scale)
    if offset:
        out = out + np.float32(offset)
    out[missing] = np.nan
    return out


def _resolve(root: Path, data: dict, name: str) -> Path:
    sub = data.get("root", "")
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / sub / p


def load_from_spec(spec_text: str, path: str, root: Path) -> dict:
    """The loader of a task file (``functools.partial`` of this with the file's content: the cache
    key hashes that content, this module and the data files)."""
    spec = json.loads(spec_text)
    data = spec["data"]
    reader = {"geotiff": _read_geotiffs, "table": _read_table, "arrays": _read_arrays, "scenes": _read_scenes}[data["format"]]
    out = reader(spec, path, Path(root))
    image = out.pop("raw")  # (N, T, C, H, W) raw values
    bands = spec["bands"]
    scaled = np.stack([scale_values(image[:, :, c], float(_band(spec, b, "scale", 1.0)),
                                    float(_band(spec, b, "offset", 0.0)), _band(spec, b, "nodata"),
                                    float(b.get("raw_offset", 0.0)))
                       for c, b in enumerate(bands)], 2)  # (N, T, C, H, W) float32
    target, keep, classes, notes = _labels(spec, path, out.pop("target"))
    lonlat = out.pop("lonlat")
    group = out.pop("group", None)
    default = {"by": "group"} if data["format"] == "scenes" else {"by": "coordinates"}  # scenes: pixel squares
    blocked = (spec.get("splits") or {}).get("blocked") or default
    if blocked["by"] == "coordinates":
        group = None
        located = np.zeros(0, dtype=bool) if lonlat is None else np.isfinite(lonlat).all(1)
        if located.any():  # samples without coordinates share block -1 (the note counts them)
            group = np.full(len(lonlat), -1, dtype=np.int64)
            group[located] = spatial_blocks(lonlat[located], float(blocked.get("cell_deg", 1.0)))
    elif group is None:
        _fail(path, "splits.blocked", "by: group needs a group column or array in data")
    else:
        _, group = np.unique(np.asarray(group).astype(str), return_inverse=True)
    ids = out.pop("id")

    def take(value):
        if value is None:
            return None
        return value[keep] if isinstance(value, np.ndarray) else [value[i] for i in np.flatnonzero(keep)]

    extra = {k: take(v) if k in ("doy", "is_test", "time", "pixel") else v for k, v in out.items()}  # per sample, or not
    per_pixel = spec["kind"] == "segmentation"  # the image holds whole scenes; the samples are pixels of them
    names = tuple(b["name"] for b in bands)
    return make_batch(names, tuple(_band(spec, b, "unit", "reflectance") for b in bands),
                  tuple(_band(spec, b, "modality", "") or "" for b in bands),
                  torch.from_numpy(np.ascontiguousarray(scaled if per_pixel else scaled[keep])), target, take(ids),
                  None if lonlat is None else lonlat[keep], None if group is None else group[keep],
                  **({"classes": classes} if classes is not None else {}), notes=tuple(notes),
                  **{k: v for k, v in extra.items() if v is not None})


def _labels(spec: dict, path: str, values: np.ndarray):
    """Targets, the samples kept, class names and notes, as ``labels`` declares."""
    values = np.asarray(values)
    n = len(values)
    if spec["kind"] == "regression":
        target = values.astype(np.float64)
        keep = np.isfinite(target)
        notes = [f"{int((~keep).sum())} samples without a target dropped"] if not keep.all() else []
        return target[keep], keep, None, notes
    labels = spec.get("labels") or {}
    notes = []
    mapping = labels.get("map")
    if mapping:
        names = list(dict.fromkeys(str(v) for v in mapping.values()))  # class order: as first listed
        lookup = {str(k): names.index(str(v)) for k, v in mapping.items()}
        codes = np.array([lookup.get(_key(v), -1) for v in values])
        unknown = sorted({str(_key(v)) for v, c in zip(values, codes, strict=True) if c < 0})
        if unknown and labels.get("others", "error") == "error":
            _fail(path, "labels.map", f"values {unknown[:10]} are not mapped (add them, or set labels.others: drop)")
        keep = codes >= 0
        if unknown:
            notes.append(f"{int((~keep).sum())} samples with unmapped labels {unknown[:6]} dropped")
    else:
        names_given = labels.get("names")
        keys = np.array([_key(v) for v in values])
        names = list(names_given) if names_given else sorted(set(keys), key=_sort_key)
        lookup = {k: i for i, k in enumerate(names)} if not names_given else {str(i): i for i in range(len(names))}
        codes = np.array([lookup.get(k, -1) for k in keys])
        keep = codes >= 0
        if not keep.all():
            _fail(path, "labels.names", f"{int((~keep).sum())} labels are not indices 0..{len(names) - 1} of names")
    minimum = int(labels.get("min_samples", 0))
    if minimum:
        counts = np.bincount(codes[keep], minlength=len(names))
        rare = [str(names[c]) for c in np.flatnonzero((counts > 0) & (counts < minimum))]
        if rare:
            keep &= ~np.isin(codes, [names.index(r) for r in rare])
            notes.append(f"{len(rare)} classes with fewer than {minimum} samples dropped: {rare[:6]}")
    present = sorted(set(codes[keep]))
    remap = {c: i for i, c in enumerate(present)}
    target = np.array([remap[c] for c in codes[keep]], dtype=np.int64)
    if n and not keep.any():
        _fail(path, "labels", "no sample keeps a label")
    return target, keep, tuple(str(names[c]) for c in present), notes


def _key(value) -> str:
    """A label value as text: 1, 1.0 and "1" are the same class."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def _sort_key(text: str):
    return (0, float(text), text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else (1, 0.0, text)


def _read_geotiffs(spec: dict, path: str, root: Path) -> dict:
    from .raster import centre_lonlat, read_raster

    data = spec["data"]
    files = data["files"] if isinstance(data["files"], list) else [data["files"]]
    base = root / data.get("root", "")
    paths = resolve_files(tuple(files), base, spec["name"])
    label = data.get("label") or {"path_part": -2}
    _fields(path, "data.label", label, {"path_part", "table", "id_column", "column"})
    if "table" in label:
        table = _read_frame(_resolve(root, data, label["table"]))
        for key in ("id_column", "column"):
            if label.get(key) not in table:
                _fail(path, f"data.label.{key}", f"column {label.get(key)!r} not in {label['table']}")
        by_id = dict(zip(table[label["id_column"]].astype(str), table[label["column"]], strict=True))
    images, targets, lonlat, ids, is_test = [], [], [], [], []
    split = data.get("documented_split")
    if split:
        _fields(path, "data.documented_split", split, {"path_part", "test"}, ("path_part", "test"))
    for f in paths:
        dn, meta = read_raster(f, expected_count=len(spec["bands"]))
        _, h, w = dn.shape
        if h != int(spec.get("size", 1)) or w != h:
            _fail(path, "size", f"{f} is {h} x {w} px, the task file declares size {spec.get('size', 1)}")
        rel = f.relative_to(base) if f.is_relative_to(base) else f
        ids.append(str(rel))
        if "table" in label:
            if str(rel) not in by_id and f.name not in by_id:
                _fail(path, "data.label.table", f"no label for {rel} in {label['table']}")
            targets.append(by_id.get(str(rel), by_id.get(f.name)))
        else:
            targets.append(rel.parts[int(label["path_part"])])
        if meta.get("nodata") is not None and spec.get("nodata") is None:  # the file's own no-data value
            dn = np.where(dn == meta["nodata"], np.nan, dn)
        images.append(dn[None])  # (1, C, H, W): one date
        try:
            lonlat.append(centre_lonlat(meta, h, w))
        except Exception:  # a chip without a CRS has no coordinates: leakage and blocks do not apply
            lonlat.append((np.nan, np.nan))
        if split:
            is_test.append(rel.parts[int(split["path_part"])] in split["test"])
    out = {"raw": np.stack(images), "target": np.asarray(targets, dtype=object), "id": ids,
           "lonlat": np.asarray(lonlat, dtype=np.float64)}
    if is_test:
        out["is_test"] = np.asarray(is_test)
    return out


def _read_scenes(spec: dict, path: str, root: Path) -> dict:
    """Scene rasters and their label rasters (``labels``: a path pattern with ``{stem}``, the scene
    file's name without suffix); up to ``pixels_per_class`` labelled pixels per class over all scenes
    (seeded), ``ignore`` label values (no data) left out; blocks are ``block_px`` squares of a scene."""
    from rasterio.warp import transform as warp_transform

    from .raster import read_raster

    data = spec["data"]
    base = root / data.get("root", "")
    files = data["files"] if isinstance(data["files"], list) else [data["files"]]
    scenes = resolve_files(tuple(files), base, spec["name"])
    size = int(spec.get("size", 1))
    images, labels, metas = [], [], []
    vector_values: list = []  # a vector file's label values; pixel code i + 1 is vector_values[i], 0 is unlabelled
    for f in scenes:
        dn, meta = read_raster(f, expected_count=len(spec["bands"]))
        label_file = base / data["labels"].format(stem=f.stem, name=f.name)
        if not label_file.is_file():
            _fail(path, "data.labels", f"no label file {label_file} for scene {f}")
        if label_file.suffix.lower() in VECTOR_SUFFIXES:
            lab = _burn_labels(label_file, data.get("label_field"), meta, dn.shape[1:], vector_values, path)[None]
        else:
            lab, _ = read_raster(label_file, expected_count=1)
        if dn.shape[1:] != (size, size) or lab.shape[1:] != dn.shape[1:]:
            _fail(path, "size", f"{f} is {dn.shape[1:]} px and its labels {lab.shape[1:]}, the task file declares {size}")
        images.append(dn[None])  # (1, C, H, W): one date
        labels.append(lab[0])
        metas.append(meta)
    stack = np.stack(labels)  # (S, H, W)
    ignore = set(data.get("ignore", [])) if not vector_values else {0}  # vector: pixels in no polygon
    rng = np.random.default_rng(int(data.get("seed", 0)))
    per_class = int(data.get("pixels_per_class", 150))
    picked = []
    for value in sorted(set(np.unique(stack)) - ignore):
        where = np.argwhere(stack == value)  # (M, 3) scene, row, col
        take = rng.choice(len(where), min(len(where), per_class), replace=False)
        picked.append(where[np.sort(take)])
    pixel = np.concatenate(picked)  # (N, 3)
    lonlat = np.full((len(pixel), 2), np.nan)
    for s, meta in enumerate(metas):
        mine = pixel[:, 0] == s
        if meta["crs"] is None or not mine.any():
            continue
        xs, ys = meta["transform"] @ (pixel[mine, 2] + 0.5, pixel[mine, 1] + 0.5)  # pixel centres in the scene's CRS
        lon, lat = warp_transform(meta["crs"], "EPSG:4326", list(xs), list(ys))
        lonlat[mine] = np.c_[lon, lat]
    block = int(data.get("block_px", 32))
    _, group = np.unique(np.c_[pixel[:, 0], pixel[:, 1:] // block], axis=0, return_inverse=True)
    rel = [str(f.relative_to(base)) for f in scenes]
    target = stack[pixel[:, 0], pixel[:, 1], pixel[:, 2]]
    if vector_values:  # codes back to the file's own values, which ``labels`` maps like any others
        target = np.array(vector_values, dtype=object)[target - 1]
    return {"raw": np.stack(images), "target": target, "pixel": pixel,
            "id": [f"{rel[s]}@{r},{c}" for s, r, c in pixel], "lonlat": lonlat, "group": group.ravel()}


def _burn_labels(file: Path, field: str | None, meta: dict, shape: tuple[int, int], values: list, path: str) -> np.ndarray:
    """A vector label file burnt onto one scene's grid: (H, W) int codes, 0 where no polygon lies,
    i + 1 where one with ``field`` value ``values[i]`` does (``values`` grows as new values appear,
    so codes mean the same in every scene). Polygons are reprojected to the scene's CRS first; a
    pixel is labelled when its centre is inside (where polygons overlap, the later one wins)."""
    import pyogrio.raw
    import shapely
    from pyproj import Transformer
    from rasterio.features import rasterize

    if not field:
        _fail(path, "data.label_field", f"missing (required with a vector label file such as {file.name}): "
              "the attribute holding each polygon's class")
    if meta["crs"] is None:
        _fail(path, "data.labels", f"vector labels {file} need a georeferenced scene; {meta.get('path', 'a scene')} has no CRS")
    try:
        info, _, wkb, columns = pyogrio.raw.read(file, columns=[field])
    except Exception as exc:  # noqa: BLE001 - any reader error, named
        _fail(path, "data.labels", f"{file} cannot be read as a vector file: {type(exc).__name__}: {exc}")
    if field not in list(info["fields"]):
        _fail(path, "data.label_field", f"{file} has no attribute {field!r} (it has {list(info['fields'])})")
    geoms = shapely.from_wkb(wkb)
    if info["crs"] and str(info["crs"]) != str(meta["crs"]):
        to_scene = Transformer.from_crs(info["crs"], meta["crs"], always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.c_[to_scene.transform(xy[:, 0], xy[:, 1])])
    codes = []
    for value in columns[0]:
        value = value.item() if isinstance(value, np.generic) else value
        if value not in values:
            values.append(value)
        codes.append(values.index(value) + 1)
    shapes = [(g, c) for g, c in zip(geoms, codes, strict=True) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, np.int64)
    return rasterize(shapes, out_shape=shape, transform=meta["transform"], fill=0, dtype="int32").astype(np.int64)


def _read_frame(file: Path) -> pd.DataFrame:
    if file.suffix.lower() in (".parquet", ".geoparquet", ".pq"):
        return pd.read_parquet(file)
    if file.suffix.lower() in (".csv", ".txt", ".tsv"):
        return pd.read_csv(file, sep="\t" if file.suffix.lower() == ".tsv" else ",")
    raise TaskFileError(f"{file}: a table must be CSV or Parquet")


def _read_table(spec: dict, path: str, root: Path) -> dict:
    data = spec["data"]
    files = data["files"] if isinstance(data["files"], list) else [data["files"]]
    frame = pd.concat([_read_frame(f) for f in resolve_files(tuple(files), root / data.get("root", ""), spec["name"])],
                      ignore_index=True)
    for key, value in (data.get("filter") or {}).items():
        if key not in frame:
            _fail(path, "data.filter", f"column {key!r} not in the table")
        frame = frame[frame[key].isin(value if isinstance(value, list) else [value])]
    layout = data.get("layout", "wide")
    bands, steps = spec["bands"], int(spec.get("steps", 1))
    id_col = data.get("id_column")
    columns = [b.get("column", b["name"]) for b in bands]
    needed = [c for c in (id_col, data.get("label_column"), data.get("lon_column"), data.get("lat_column"),
                          data.get("group_column"), data.get("test_column"), data.get("time_column")) if c]
    if layout == "long":
        needed += columns
    else:
        needed += [c.format(t=t) for c in columns for t in range(steps)]
    absent = [c for c in needed if c not in frame]
    if absent:
        _fail(path, "data", f"columns {absent[:8]} are not in the table (it has {list(frame.columns)[:12]} ...)")
    out: dict = {}
    if layout == "long":
        if not id_col or not data.get("time_column"):
            _fail(path, "data", "layout: long needs id_column and time_column")
        frame = frame.assign(_t=pd.to_datetime(frame[data["time_column"]]))
        times = sorted(frame["_t"].unique())
        if len(times) != steps:
            _fail(path, "steps", f"the table has {len(times)} dates, the task file declares {steps}")
        first = frame.drop_duplicates(id_col).set_index(id_col)
        ids = list(first.index)
        cube = np.full((len(ids), steps, len(bands)), np.nan)
        row = pd.Index(ids).get_indexer(frame[id_col])
        col = pd.Index(times).get_indexer(frame["_t"])
        cube[row, col] = frame[columns].to_numpy(dtype=np.float64)  # (N, T, C); absent dates stay NaN
        doy = np.array([[day_of_year(str(pd.Timestamp(t).date())) for t in times]] * len(ids))
        out["doy"], out["dates"] = doy, [str(pd.Timestamp(t).date()) for t in times]
        per_sample = first
    else:
        per_sample = frame.set_index(id_col) if id_col else frame
        ids = [str(i) for i in per_sample.index]
        cube = np.stack([per_sample[[c.format(t=t) for c in columns]].to_numpy(dtype=np.float64)
                         for t in range(steps)], 1)  # (N, T, C)
    if len(set(ids)) != len(ids):
        _fail(path, "data.id_column", "sample ids repeat")
    out["raw"] = cube[..., None, None]  # (N, T, C) -> (N, T, C, 1, 1)
    out["id"] = [str(i) for i in ids]
    if not data.get("label_column"):
        _fail(path, "data.label_column", "missing (required)")
    out["target"] = per_sample[data["label_column"]].to_numpy()
    lon, lat = data.get("lon_column"), data.get("lat_column")
    out["lonlat"] = per_sample[[lon, lat]].to_numpy(dtype=np.float64) if lon and lat else None
    if data.get("group_column"):
        out["group"] = per_sample[data["group_column"]].to_numpy()
    if data.get("test_column"):
        test = per_sample[data["test_column"]]
        out["is_test"] = test.isin(data["test_values"]).to_numpy() if data.get("test_values") else test.astype(bool).to_numpy()
    return out


def _read_array(root: Path, data: dict, ref: str) -> np.ndarray:
    """``file.npy``, ``file.h5:dataset`` (HDF5) or ``store.zarr:array``."""
    name, _, inner = ref.partition(":")
    file = _resolve(root, data, name)
    if not file.exists():
        raise FileNotFoundError(f"{file}: missing (task file array {ref!r})")
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)
    if file.suffix in (".h5", ".hdf5", ".hdf"):
        import h5py

        with h5py.File(file, "r") as f:
            if inner not in f:
                raise TaskFileError(f"{file}: no dataset {inner!r} (has {list(f.keys())})")
            return f[inner][()]
    if file.suffix == ".zarr":
        import zarr

        store = zarr.open(str(file), mode="r")
        return np.asarray(store[inner] if inner else store)
    raise TaskFileError(f"{file}: arrays must be .npy, .h5/.hdf5 (file:dataset) or .zarr (store:array)")


def _read_arrays(spec: dict, path: str, root: Path) -> dict:
    data = spec["data"]
    x = _read_array(root, data, data["inputs"])
    axes = list(data["axes"])
    if x.ndim != len(axes):
        _fail(path, "data.axes", f"{data['inputs']} has {x.ndim} axes {x.shape}, the task file names {axes}")
    for axis in AXES:  # the missing axes have length 1
        if axis not in axes:
            x, axes = x[..., None], [*axes, axis]
    x = np.transpose(x, [axes.index(a) for a in AXES])  # -> (N, T, C, H, W)
    n = len(x)
    if x.shape[2] != len(spec["bands"]):
        _fail(path, "bands", f"{data['inputs']} has {x.shape[2]} bands, the task file declares {len(spec['bands'])}")
    out = {"raw": x, "target": _read_array(root, data, data["target"])}
    if len(out["target"]) != n:
        _fail(path, "data.target", f"{len(out['target'])} targets for {n} samples")
    if data.get("lonlat") or data.get("latlon"):
        ll = _read_array(root, data, data.get("lonlat") or data["latlon"]).astype(np.float64)
        out["lonlat"] = ll if data.get("lonlat") else ll[:, ::-1]
    else:
        out["lonlat"] = None
    if data.get("group"):
        out["group"] = _read_array(root, data, data["group"])
    if data.get("is_test"):
        out["is_test"] = _read_array(root, data, data["is_test"]).astype(bool)
    stem = Path(data["inputs"].split(":")[0]).parent
    out["id"] = ([str(i) for i in _read_array(root, data, data["ids"])] if data.get("ids")
                 else [f"{stem}/{i}" for i in range(n)])
    if data.get("months"):  # 0-based month per sample and step: the 15th of that month (no year stored)
        months = _read_array(root, data, data["months"])
        out["doy"] = np.array([[date(2021, int(m) + 1, 15).timetuple().tm_yday for m in row] for row in months])
    elif data.get("doy"):
        out["doy"] = _read_array(root, data, data["doy"]).astype(np.int64)
    return out


def task_file_digest(path: str | Path) -> str:
    """SHA-1 of a task file's bytes (for records)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()
