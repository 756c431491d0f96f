"""Windowed pre-training datasets from source files: multi-date stacks of one place and co-registered
sensor pairs, in the same source system as the scene sources (``sources.py``, docs/data.md).

A source file becomes a dataset of windows (``patch`` x ``patch`` on a ``stride`` grid) by one of two fields:

- ``series``: each *place* is a stack of dates, ``image`` (T, C, H, W) with ``doy`` and ``dates``. A
  place is a folder of dated scenes (kind ``geotiff`` with ``place: parent``: every scene folder of one
  location folder is a date, read exactly as a scene source reads it) or one eo-learn EOPatch (kind
  ``eopatch``: ``.npy`` arrays with the time axis first, read by numpy). The ``dates`` rule picks a
  window's dates: ``all`` (every date; every place must have as many, or its series would not batch;
  a window is kept when >= ``min_valid`` of its pixels are usable on every date) or ``clear`` (per
  window, the dates >= 1 - ``max_cloud`` clear in it, the clearest of each calendar day with
  ``one_per_day``, then the run's ``num_dates`` of them spread over the series, seeded by the run's
  seed and the item's index; windows with fewer such dates are dropped).
- ``pair``: each scene of the product (the first sensor) with a second sensor's scene put on its grid
  (``align``: ``pixel`` or ``georef``, ``pairs.read_on_grid``), the second matched by nearest date within
  the same location folder (``match: {by: nearest_date, place: parent}``) or named in the second's
  metadata JSON (``match: {by: named_by, file, key}``); ``image`` (C_first + C_second, H, W) with
  ``modality`` naming each channel's sensor and ``<second modality>_time`` the second's date.

Each field is checked (`series_rule`, `pair_rule`) before any pixel is read; a bad one is a
SourceError naming the file and the field. Decoded places and pairs are memoised (``timeseries.Recent``)
so memory stays bounded on a full archive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.transform import Affine
from torch.utils.data import Dataset

from .pairs import ALIGNS, PairStack, nearest, read_on_grid
from .sources import (
    NoScenesError,
    Product,
    SourceError,
    SourceSpec,
    builtin_window_sources,
    check_product,
    folder_json_value,
    load_source,
    make_product,
    product_bands,
    read_scene,
    scene_time,
)
from .timeseries import (
    Recent,
    day_of_year,
    eopatch_dates,
    eopatch_grid,
    load_npy,
    one_per_day,
    spread_pick,
    window_fraction,
    window_grid,
    window_lonlat,
)

log = logging.getLogger(__name__)

SERIES_FIELDS = ("place", "dates", "min_valid", "max_cloud", "one_per_day", "pick")
DATE_RULES = ("all", "clear")
PICKS = ("spread",)
PLACES = ("parent",)
ARRAY_FIELDS = ("bands", "cloud", "has_data", "labels", "fill")
PAIR_FIELDS = ("match", "align", "fill", "unit", "modality", "min_valid")
"""The ``pair`` field's own keys; the others are the second sensor's product fields (card, scenes, bands, time, ...)."""
MATCHES = ("nearest_date", "named_by")


# ------------------------------------------------------------------------------------- the fields


def _fraction(raw: dict, key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SourceError(f"{where}.{key}' must be a number in [0, 1], got {value!r}")
    return float(value)


def _one_of(raw: dict, key: str, choices: tuple[str, ...], default: str | None, where: str) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise SourceError(f"{where}.{key}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def _at(product: Product) -> str:
    """Where a product's field is, for errors: its file and the product's name (a file may hold several)."""
    return f"{product.where}: product {product.name!r}"


def _mapping(product: Product, key: str, allowed: tuple[str, ...]) -> tuple[dict, str]:
    raw = product.get(key)
    where = f"{_at(product)}: field '{key}"
    if not isinstance(raw, dict):
        raise SourceError(f"{where}' must be a mapping of {', '.join(allowed)}, got {raw!r}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise SourceError(f"{where}': unknown key(s) {unknown}; it takes {list(allowed)}")
    return raw, where


@dataclass(frozen=True)
class SeriesRule:
    """A product's ``series`` field, checked."""

    dates: str  # "all" or "clear"
    min_valid: float  # all: fraction of a window usable on every date
    max_cloud: float  # clear: a date is clear in a window when >= 1 - max_cloud of it is usable
    one_per_day: bool  # clear: the clearest acquisition of each calendar day only
    pick: str  # clear: how num_dates are chosen among the clear ones


def series_rule(product: Product) -> SeriesRule:
    """The ``series`` field of ``product``; errors name the file and the key."""
    raw, where = _mapping(product, "series", SERIES_FIELDS)
    if product.kind == "geotiff":
        _one_of(raw, "place", PLACES, None, where)
    elif product.kind == "eopatch":
        if "place" in raw:
            raise SourceError(f"{where}.place': an EOPatch is one place (its arrays hold the dates); leave it out")
    else:
        raise SourceError(f"{where}': kind {product.kind!r} has no multi-date form; use kind geotiff or eopatch")
    dates = _one_of(raw, "dates", DATE_RULES, "all", where)
    wrong = sorted(k for k in ("max_cloud", "one_per_day", "pick") if k in raw) if dates == "all" else \
        (["min_valid"] if "min_valid" in raw else [])
    if wrong:
        raise SourceError(f"{where}': key(s) {wrong} do not apply to dates: {dates}")
    one = raw.get("one_per_day", True)
    if not isinstance(one, bool):
        raise SourceError(f"{where}.one_per_day' must be true or false, got {one!r}")
    return SeriesRule(dates, _fraction(raw, "min_valid", 0.95, where), _fraction(raw, "max_cloud", 0.1, where), one,
                      _one_of(raw, "pick", PICKS, "spread", where))


@dataclass(frozen=True)
class EOPatchArrays:
    """A kind-eopatch product's ``arrays`` field: files relative to each EOPatch folder."""

    bands: dict[str, str]  # band -> (T, H, W, 1) .npy
    cloud: str | None  # (T, H, W, 1): non-zero is cloud
    has_data: str | None  # (T, H, W, 1): zero is no data
    labels: str | None  # (H, W, 1): the samples' "mask"
    fill: float  # written where a band is not finite


def eopatch_arrays(product: Product) -> EOPatchArrays:
    raw, where = _mapping(product, "arrays", ARRAY_FIELDS)
    bands = raw.get("bands")
    if not isinstance(bands, dict) or not bands:
        raise SourceError(f"{where}.bands' must map band names to .npy files, e.g. {{NDVI: data/NDVI.npy}}")
    try:
        bands = {product.card.canonical(str(b)): str(f) for b, f in bands.items()}
    except KeyError as exc:
        raise SourceError(f"{where}.bands': {exc.args[0]}") from None
    for key in ("cloud", "has_data", "labels"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise SourceError(f"{where}.{key}' must be a .npy file relative to the EOPatch folder, got {raw[key]!r}")
    fill = raw.get("fill", 0.0)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise SourceError(f"{where}.fill' must be a number, got {fill!r}")
    return EOPatchArrays(bands, raw.get("cloud"), raw.get("has_data"), raw.get("labels"), float(fill))


@dataclass(frozen=True)
class PairRule:
    """A product's ``pair`` field, checked: the second sensor as a product of its own, and how it pairs."""

    second: Product
    match: str  # "nearest_date" or "named_by"
    match_file: str  # named_by: the second's metadata JSON ({name}: its folder's name)
    match_key: str  # named_by: the key naming the first's folder
    align: str
    fill: float
    unit: str
    modality: tuple[str, str]
    min_valid: float


def pair_rule(product: Product) -> PairRule:
    """The ``pair`` field of ``product``; errors name the file and the key."""
    raw = product.get("pair")
    where = f"{_at(product)}: field 'pair"
    if not isinstance(raw, dict):
        raise SourceError(f"{where}' must be a mapping: the second sensor's fields (card, scenes, bands, ...) and "
                          f"{', '.join(PAIR_FIELDS)}")
    if product.kind != "geotiff":
        raise SourceError(f"{where}': pairs are read from kind geotiff, not {product.kind!r}")
    fields = {"kind": "geotiff", **{k: v for k, v in raw.items() if k not in PAIR_FIELDS}}
    nested = [k for k in ("series", "pair", "products") if k in fields]
    if nested:
        raise SourceError(f"{where}': the second sensor cannot have field(s) {nested}")
    if fields["kind"] != "geotiff" or "file" not in (fields.get("bands") or {}):
        raise SourceError(f"{where}.bands': the second sensor is read one file per band: {{file: '{{band}}.tif'}}")
    second = make_product(fields, f"{where}'", product.spec_path, str(fields.get("name", f"{product.name}_pair")))
    match = raw.get("match")
    if not isinstance(match, dict):
        raise SourceError(f"{where}.match' must be {{by: nearest_date, place: parent}} or "
                          f"{{by: named_by, file: ..., key: ...}}, got {match!r}")
    by = _one_of(match, "by", MATCHES, None, f"{where}.match")
    allowed = {"nearest_date": {"by", "place"}, "named_by": {"by", "file", "key"}}[by]
    unknown = sorted(set(match) - allowed)
    if unknown:
        raise SourceError(f"{where}.match': unknown key(s) {unknown} for by: {by} (it takes {sorted(allowed)})")
    if by == "nearest_date":
        _one_of(match, "place", PLACES, None, f"{where}.match")
    elif not isinstance(match.get("file"), str) or not isinstance(match.get("key"), str):
        raise SourceError(f"{where}.match': by: named_by needs 'file' (the second's JSON, {{name}} = its folder) and 'key'")
    modality = raw.get("modality")
    if not (isinstance(modality, list) and len(modality) == 2 and all(isinstance(m, str) and m for m in modality)):
        raise SourceError(f"{where}.modality' must name the two sensors as samples carry them, e.g. [s2, s1], got {modality!r}")
    fill = raw.get("fill")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise SourceError(f"{where}.fill' must be the number written where the second sensor has no data, got {fill!r}")
    unit = raw.get("unit")
    if not isinstance(unit, str) or not unit:
        raise SourceError(f"{where}.unit' must name the samples' unit (e.g. reflectance+dB), got {unit!r}")
    return PairRule(second, by, str(match.get("file", "")), str(match.get("key", "")),
                    _one_of(raw, "align", ALIGNS, None, where), float(fill), unit, tuple(modality),
                    _fraction(raw, "min_valid", 0.95, where))


def is_series(spec: SourceSpec) -> bool:
    return all("series" in p.fields for p in spec.products)


def is_pairs(spec: SourceSpec) -> bool:
    return all("pair" in p.fields for p in spec.products)


def window_spec(ref: str | Path) -> SourceSpec:
    """A windowed source file (every product a series, or every product a pair), its fields checked."""
    spec = load_source(ref)
    if not (is_series(spec) or is_pairs(spec)):
        raise SourceError(f"{spec.where}: a windowed dataset's products all have field 'series' or all have field "
                          "'pair' (a source without them is a scene source: dataset 'scenes')")
    for p in spec.products:
        series_rule(p) if is_series(spec) else pair_rule(p)
        if p.kind == "eopatch":
            eopatch_arrays(p)
    return spec


def window_bands(ref: str | Path) -> tuple[str, ...]:
    """The bands a windowed dataset can provide: the series' bands (an EOPatch's ``arrays.bands``), or a
    pair's first bands then its second's; for several products, those every product has."""
    spec = window_spec(ref)
    per_product = []
    for p in spec.products:
        if p.kind == "eopatch":
            per_product.append(tuple(eopatch_arrays(p).bands))
        elif "pair" in p.fields:
            per_product.append(product_bands(p) + product_bands(pair_rule(p).second))
        else:
            per_product.append(product_bands(p))
    return tuple(b for b in per_product[0] if all(b in names for names in per_product[1:]))


WINDOW_DATASETS = tuple(builtin_window_sources())
"""Built-in windowed pre-training datasets: each is the source file ``sources/<name>.yaml``."""


# ------------------------------------------------------------------------------------- series


@dataclass
class PlaceStack:
    """One place's dates, decoded (or memory-mapped)."""

    layers: list  # per band: (T, H, W) digital numbers (integer: times ``scale``) or floats (non-finite: ``fill``)
    clear: np.ndarray  # (T, H, W) bool: usable pixels per date
    dates: tuple[str, ...]  # ISO, sorted
    crs: str
    transform: Affine
    unit: str
    scale: float | None  # digital numbers to ``unit``; None: the layers are in ``unit`` already
    fill: float
    labels: np.ndarray | None  # (H, W) int64 (eopatch ``arrays.labels``)


def eopatch_places(product: Product, root: Path) -> list[Path]:
    """The EOPatch folders of a kind-eopatch product (its ``path``: a glob under the data root)."""
    pattern = str(product.get("path"))
    base = Path(pattern) if Path(pattern).is_absolute() else root / pattern
    anchor = Path(base.anchor)
    folders = [p for p in sorted(anchor.glob(str(base.relative_to(anchor)))) if p.is_dir()]
    if not folders:
        raise NoScenesError(f"{product.where}: field 'path': {base} matches no EOPatch folder (source {product.name!r})")
    return folders


def read_eopatch(folder: Path, arrays: EOPatchArrays, bands: tuple[str, ...], unit: str) -> PlaceStack:
    """An EOPatch's bands, memory-mapped, with its clear mask (not cloud, has data, every band finite)."""
    first = folder / arrays.bands[bands[0]]
    ref = load_npy(first)
    if ref.ndim != 4 or ref.shape[-1] != 1:
        raise ValueError(f"{first}: shape {ref.shape}, expected (T, H, W, 1)")
    steps, height, width = ref.shape[:3]
    like = f"{arrays.bands[bands[0]]} {ref.shape}"
    layers = [load_npy(folder / arrays.bands[b], (steps, height, width, 1), like)[..., 0] for b in bands]  # (T, H, W)
    clear = np.ones((steps, height, width), dtype=bool)
    if arrays.cloud:
        clear &= load_npy(folder / arrays.cloud, (steps, height, width, 1), like)[..., 0] == 0
    if arrays.has_data:
        clear &= load_npy(folder / arrays.has_data, (steps, height, width, 1), like)[..., 0] != 0
    for layer in layers:
        clear &= np.isfinite(layer)
    labels = None
    if arrays.labels:
        labels = np.asarray(load_npy(folder / arrays.labels, (height, width, 1), like)[..., 0], dtype=np.int64)  # (H, W)
    dates = eopatch_dates(folder / "timestamps.json", steps)
    crs, transform = eopatch_grid(folder / "bbox.geojson", height, width)
    return PlaceStack(layers, clear, dates, crs, transform, unit, None, arrays.fill, labels)


def read_dated_scenes(product: Product, files: list, bands: tuple[str, ...], where: str) -> PlaceStack:
    """A place's dated scenes (one folder each), read as the scene source reads them, sorted by date."""
    scenes = [read_scene(product, sf, bands) for sf in files]
    undated = [s.id for s in scenes if not s.time]
    if undated:
        raise SourceError(f"{undated[0]}: no date ({product.where} field 'time' finds none)")
    scenes.sort(key=lambda s: s.time)
    first = scenes[0]
    for s in scenes[1:]:
        if s.dn.shape != first.dn.shape or s.transform != first.transform or s.crs != first.crs:
            raise ValueError(f"{s.id}: grid {s.dn.shape} {s.crs} {s.transform} differs from {first.id} "
                             f"({first.dn.shape} {first.crs} {first.transform}); the dates of {where} must share one grid")
    dn = np.stack([s.dn for s in scenes])  # T x (C, H, W) -> (T, C, H, W)
    layers = [dn[:, k] for k in range(dn.shape[1])]  # C x (T, H, W)
    clear = np.stack([s.valid for s in scenes])  # (T, H, W)
    integer = np.issubdtype(dn.dtype, np.integer)
    return PlaceStack(layers, clear, tuple(s.time for s in scenes), first.crs, Affine(*first.transform), first.unit,
                      first.scale if integer else None, 0.0, None)


class SeriesDataset(Dataset):
    """Windows of multi-date stacks, from a source file with a ``series`` field (see the module docstring)."""

    def __init__(self, spec: SourceSpec, root: Path, bands: tuple[str, ...], patch: int, stride: int,
                 num_dates: int = 4, seed: int = 0, cache_size: int = 8):
        if num_dates < 1:
            raise ValueError(f"num_dates must be >= 1, got {num_dates}")
        self.spec, self.root, self.bands = spec, Path(root), tuple(bands)
        self.patch, self.num_dates, self.seed = patch, num_dates, seed
        self.rules = [series_rule(p) for p in spec.products]
        self.arrays = [eopatch_arrays(p) if p.kind == "eopatch" else None for p in spec.products]
        for p, arrays in zip(spec.products, self.arrays, strict=True):
            have = tuple(arrays.bands) if arrays else product_bands(p)
            lacking = [b for b in self.bands if b not in have]
            if lacking:
                raise SourceError(f"{p.where}: the run needs band(s) {lacking} that source {p.name!r} lacks (it has {list(have)})")
        self.places: list[tuple[int, str, object]] = []  # (product, place id, its folder or scene files)
        for j, p in enumerate(spec.products):
            if p.kind == "eopatch":
                self.places += [(j, str(f.relative_to(self.root)) if f.is_relative_to(self.root) else str(f), f)
                                for f in eopatch_places(p, self.root)]
                continue
            groups: dict[str, list] = {}
            for sf in check_product(p, self.root, self.bands):
                groups.setdefault(str(Path(sf.rel).parent), []).append(sf)
            self.places += [(j, rel, files) for rel, files in groups.items()]
        self._stacks = Recent(self._load, cache_size)
        self.index: list[tuple[int, int, int]] = []  # (place, row, col)
        self.candidates: list[np.ndarray] = []  # dates: clear: each item's clear dates (indices into its place's dates)
        lonlat, steps = [], None
        for k, (j, rel, _) in enumerate(self.places):
            stack, rule = self._stacks(k), self.rules[j]
            height, width = stack.clear.shape[1:]
            rows, cols = window_grid(height, width, patch, stride)
            if len(rows) == 0:
                raise ValueError(f"{self.root / rel}: {height}x{width} px is smaller than one {patch}x{patch} window")
            if rule.dates == "all":
                if steps is not None and len(stack.dates) != steps[0]:
                    raise ValueError(f"{self.root / rel}: {len(stack.dates)} dates, {steps[1]} has {steps[0]} (would not batch)")
                steps = steps or (len(stack.dates), self.root / rel)
                keep = np.flatnonzero(window_fraction(stack.clear.all(0), rows, cols, patch) >= rule.min_valid)
                self.candidates += [np.arange(len(stack.dates))] * len(keep)
            else:
                frac = window_fraction(stack.clear, rows, cols, patch)  # (T, N)
                keep = []
                for w in range(len(rows)):
                    dates = np.flatnonzero(frac[:, w] >= 1 - rule.max_cloud)
                    if rule.one_per_day:
                        dates = one_per_day(dates, stack.dates, frac[:, w])
                    if len(dates) >= num_dates:
                        keep.append(w)
                        self.candidates.append(dates)
                if len(keep) < len(rows):
                    log.info("%s: dropped %d of %d windows with fewer than %d dates that are >= %.0f%% clear",
                             rel, len(rows) - len(keep), len(rows), num_dates, 100 * (1 - rule.max_cloud))
            rows, cols = rows[keep], cols[keep]
            self.index += [(k, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
            lonlat.append(window_lonlat(stack.crs, stack.transform, rows, cols, patch))
        self.lonlat = np.concatenate(lonlat) if lonlat else np.zeros((0, 2), dtype=np.float32)

    def _load(self, k: int) -> PlaceStack:
        j, rel, what = self.places[k]
        product = self.spec.products[j]
        if product.kind == "eopatch":
            return read_eopatch(what, self.arrays[j], self.bands, product.card.to)
        return read_dated_scenes(product, what, self.bands, rel)

    def __len__(self) -> int:
        return len(self.index)

    def date_indices(self, i: int) -> np.ndarray:
        """Indices into item ``i``'s place's dates of the dates it carries (sorted, deterministic)."""
        k = self.index[i][0]
        if self.rules[self.places[k][0]].dates == "all":
            return self.candidates[i]
        return spread_pick(self.candidates[i], self.num_dates, np.random.default_rng((self.seed, i)))

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        k, r, c = self.index[i]
        j, rel, _ = self.places[k]
        p, stack, t = self.patch, self._stacks(k), self.date_indices(i)
        window = np.stack([np.asarray(layer[t, r : r + p, c : c + p]) for layer in stack.layers], axis=1)  # (T, C, p, p)
        if stack.scale is not None:
            window = window.astype(np.float32) * stack.scale
        else:
            window = np.asarray(window, dtype=np.float32)
            window = np.where(np.isfinite(window), window, stack.fill)
        dates = tuple(stack.dates[d] for d in t)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(window)),
            "bands": self.bands,
            "unit": stack.unit,
            "source": self.spec.products[j].name,
            "doy": torch.tensor([day_of_year(d) for d in dates], dtype=torch.int64),
            "dates": dates,
            "id": f"{rel}@{r},{c}+{p}",
            "lonlat": torch.from_numpy(self.lonlat[i]),
        }
        if stack.labels is not None:
            sample["mask"] = torch.from_numpy(stack.labels[r : r + p, c : c + p].copy())
        return sample


# ------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class Pair:
    """One scene of the first sensor and the second sensor's scene paired with it."""

    product: int
    first: object  # the scene files `check_product` found
    second: object
    first_time: str
    second_time: str


def _dated(product: Product, sf, field: str) -> str:
    t = scene_time(product, sf)
    if not t:
        raise SourceError(f"{sf.rel}: cannot read its acquisition date ({product.where} field '{field}')")
    return t


def match_pairs(j: int, product: Product, rule: PairRule, firsts: list, seconds: list) -> list[Pair]:
    """The pairs of one product, by its ``pair.match`` rule (see the module docstring)."""
    pairs = []
    if rule.match == "nearest_date":
        by_place: dict[str, list] = {}
        for sf in seconds:
            by_place.setdefault(Path(sf.rel).parent.name, []).append(sf)
        unpaired: set[str] = set()
        for sf in firsts:
            place = Path(sf.rel).parent.name
            candidates = by_place.get(place, [])
            if not candidates:
                unpaired.add(str(Path(sf.rel).parent))
                continue
            dates = [_dated(rule.second, c, "pair.time") for c in candidates]
            first_time = _dated(product, sf, "time")
            k = nearest(first_time, dates)
            pairs.append(Pair(j, sf, candidates[k], first_time, dates[k]))
        for place in sorted(unpaired):
            log.info("%s: no %s scene of this place; its scenes are not paired", place, rule.second.name)
        return pairs
    by_name = {Path(sf.rel).name: sf for sf in firsts}
    absent = 0
    for sf in seconds:
        spec = {"file": rule.match_file, "key": rule.match_key}
        name = folder_json_value(sf, spec)
        if not name:
            json_file = Path(sf.extra.get("folder", sf.rel)) / rule.match_file.replace("{name}", Path(sf.rel).name)
            raise SourceError(f"{json_file}: no {rule.match_key!r} ({product.where} field 'pair.match.key')")
        if name not in by_name:
            absent += 1
            continue
        first = by_name[name]
        pairs.append(Pair(j, first, sf, _dated(product, first, "time"), _dated(rule.second, sf, "pair.time")))
    if absent:
        log.info("%s: %d %s scenes name a scene that is not present; skipped", product.name, absent, rule.second.name)
    return pairs


class PairDataset(Dataset):
    """Windows of co-registered sensor pairs on the first sensor's grid, from a source file whose products
    have a ``pair`` field (see the module docstring). ``bands`` are the first sensor's; the second's
    bands (its ``bands.names``, else its card's) follow them in every sample."""

    def __init__(self, spec: SourceSpec, root: Path, bands: tuple[str, ...], patch: int, stride: int,
                 cache_size: int = 16):
        self.spec, self.root, self.patch = spec, Path(root), patch
        self.rules = [pair_rule(p) for p in spec.products]
        seconds = {product_bands(r.second) for r in self.rules}
        units, modalities = {r.unit for r in self.rules}, {r.modality for r in self.rules}
        if len(seconds) > 1 or len(units) > 1 or len(modalities) > 1:
            raise SourceError(f"{spec.where}: the products' 'pair' fields disagree on the second sensor's bands "
                              f"{sorted(seconds)}, unit {sorted(units)} or modality {sorted(modalities)}; samples would not batch")
        self.first_bands, self.second_bands = tuple(bands), seconds.pop()
        self.bands = self.first_bands + self.second_bands
        self.unit = units.pop()
        first_m, second_m = modalities.pop()
        self.modality = (first_m,) * len(self.first_bands) + (second_m,) * len(self.second_bands)
        self.second_time_key = f"{second_m}_time"
        self.pairs: list[Pair] = []
        for j, (p, rule) in enumerate(zip(spec.products, self.rules, strict=True)):
            firsts = check_product(p, self.root, self.first_bands)
            self.pairs += match_pairs(j, p, rule, firsts, check_product(rule.second, self.root, self.second_bands))
        self._stacks = Recent(self._load, cache_size)
        index, lonlat = [], []
        for k, pair in enumerate(self.pairs):
            stack = self._stacks(k)
            rows, cols = window_grid(*stack.valid.shape, patch, stride)
            keep = window_fraction(stack.valid, rows, cols, patch) >= self.rules[pair.product].min_valid
            rows, cols = rows[keep], cols[keep]
            index += [(k, int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
            lonlat.append(window_lonlat(stack.crs, stack.transform, rows, cols, patch))
        self.index = index
        self.lonlat = np.concatenate(lonlat) if lonlat else np.zeros((0, 2), dtype=np.float32)

    def _load(self, k: int) -> PairStack:
        """Both sensors of pair ``k`` on the first's grid: the first as its scene source reads it, the
        second's band files put on that grid by the pair's ``align``."""
        pair = self.pairs[k]
        product, rule = self.spec.products[pair.product], self.rules[pair.product]
        scene = read_scene(product, pair.first, self.first_bands)
        transform = Affine(*scene.transform)
        files = [pair.second.band_files[b] for b in self.second_bands]
        second = read_on_grid(files, scene.crs, transform, scene.dn.shape[1:], rule.align)
        valid = scene.valid & np.isfinite(second).all(0)
        first = scene.dn.astype(np.float32) * scene.scale
        image = np.concatenate([first, np.nan_to_num(second, nan=rule.fill)])  # (C_first + C_second, H, W)
        return PairStack(image.astype(np.float32), valid, scene.crs, transform)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, r, c = self.index[i]
        pair, p = self.pairs[k], self.patch
        window = self._stacks(k).image[:, r : r + p, c : c + p]  # (C_first + C_second, p, p)
        return {
            "image": torch.from_numpy(window.copy()),
            "bands": self.bands,
            "unit": self.unit,
            "source": self.spec.products[pair.product].name,
            "modality": self.modality,
            "id": f"{pair.first.rel}|{pair.second.rel}@{r},{c}+{p}",
            "lonlat": torch.from_numpy(self.lonlat[i]),
            "time": pair.first_time,
            self.second_time_key: pair.second_time,
        }


def window_dataset(ref: str | Path, root: Path, bands: tuple[str, ...], patch: int, stride: int, num_dates: int = 4,
                   seed: int = 0) -> SeriesDataset | PairDataset:
    """The windowed dataset of a source file (a built-in name such as ``slovenia``, or a path). For
    pairs, ``bands`` are the run's bands: the first sensor's, then every band of the second."""
    spec = window_spec(ref)
    if is_series(spec):
        return SeriesDataset(spec, root, bands, patch, stride, num_dates=num_dates, seed=seed)
    second = product_bands(pair_rule(spec.products[0]).second)
    first = tuple(b for b in bands if b not in second)
    if tuple(bands) != first + second:
        raise ValueError(f"parameter 'bands' for dataset {spec.name!r} must list {spec.products[0].card.sensor} bands, "
                         f"then {','.join(second)}")
    return PairDataset(spec, root, first, patch, stride)

