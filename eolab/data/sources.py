"""Declarative data sources: a YAML file says where a sensor's scenes are and how to read them.

Each kind is an existing library underneath, so the common cases need no Python:

- ``geotiff``: a glob of GeoTIFF/COG files or of folders with one file per band, local or any
  fsspec/GDAL URL (rasterio); bands found by an explicit ``order``, by the files' band
  ``descriptions`` or by a file-name pattern such as ``{band}.tif``; bands at different native
  resolutions resampled to one grid (a reference band's, or a target CRS and resolution);
- ``stac``: a local STAC catalogue or item collection (pystac); each item is a scene, its assets
  mapped to bands through the card's band names and aliases (or an explicit ``assets`` map);
- ``xarray``: a zarr or netCDF cube with named dimensions, time optional (xarray);
- ``torchgeo``: a torchgeo ``GeoDataset`` class by name with its arguments; each file it indexes
  is a scene;
- ``eopatch``: eo-learn EOPatch folders of ``.npy`` arrays with the time axis first (numpy), always
  with a ``series`` field.

A ``series`` field (multi-date stacks of one place) or a ``pair`` field (a second sensor put on the
first's grid) makes a source a windowed pre-training dataset of its own, read by ``eolab.data.series``
(``slovenia``, ``ssl4eo_series``, ``s1s2``); `builtin_sources` lists only the scene sources.

Whatever the kind, a source yields `scenes.Scene` objects in eolab's form: bands selected by name
into the order the run asks for, digital numbers converted through the sensor card (``cards.py``:
scale, offset, the processing-baseline offset), no-data and quality flags folded into ``valid``, the
pixel checks of ``raster.check_pixels`` applied. So the scene cache (`cache.build_scene_cache`,
`SceneCache.tiles`, `PatchDataset`) and the samplers work unchanged on any source.

A source file (see docs/data.md for every field)::

    name: hydro                  # the scenes' source name (tiles' "source" column)
    kind: geotiff
    card: sentinel2_l2a          # a shipped card, or a path to a card YAML (relative to this file)
    scenes: hydro/*.tif          # glob under the data root, or an absolute path or URL
    bands: {order: [B01, B02, ...]}
    offset: {infer: darkest}

``products:`` lists several parts of one source that differ in some fields (SSL4EO-S12's L2A and
L1C folders); each entry overrides the top-level fields. `check_source` runs every check that needs
no pixel (globs match, band counts and names agree with the card, the run's bands are there, one
CRS per scene or a target grid) before any scene is decoded; each error names the file and field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from .bands import S2_L2A
from .cards import Card, CardError, load_card
from .paths import REPO_ROOT
from .raster import RasterError, check_pixels
from .scenes import Scene, make_scene, screen_pixels, to_reflectance_dn

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "sources"
"""The source files eolab ships (package data): the built-in pre-training sources."""
KINDS = ("geotiff", "stac", "xarray", "torchgeo", "eopatch")
FIELDS = {
    "common": {"name", "kind", "card", "products", "offset", "time", "level", "description"},
    "geotiff": {"scenes", "bands", "grid", "cloud_mask", "quality", "series", "pair"},
    "stac": {"catalog", "assets", "grid", "quality"},
    "xarray": {"path", "variable", "variables", "dims", "crs", "engine"},
    "torchgeo": {"dataset", "args", "bands"},
    "eopatch": {"path", "arrays", "series"},
}
REQUIRED = {"geotiff": "scenes", "stac": "catalog", "xarray": "path", "torchgeo": "dataset", "eopatch": "path"}
WINDOW_FIELDS = ("series", "pair")
"""Fields that make a source a windowed pre-training dataset (``eolab.data.series``), not a scene source."""


class SourceError(ValueError):
    """A source file that cannot be used; the message names the file and the field."""


class NoScenesError(SourceError):
    """A source whose glob (or catalogue) finds nothing under the data root."""


@dataclass
class Product:
    """One part of a source: the fields of its YAML file with the product's overrides applied."""

    name: str
    kind: str
    card: Card
    fields: dict
    spec_path: Path | None

    @property
    def where(self) -> str:
        return f"{self.spec_path or 'source ' + repr(self.name)}"

    def get(self, key, default=None):
        return self.fields.get(key, default)


@dataclass
class SourceSpec:
    name: str
    path: Path | None
    products: list[Product]
    text: str = ""  # the file's text, for the cache key

    @property
    def where(self) -> str:
        return str(self.path) if self.path else self.name


@dataclass
class _SceneFiles:
    """What one scene is read from: per-band files (or one multi-band file), before decoding."""

    rel: str
    band_files: dict[str, str] = field(default_factory=dict)  # band -> file (one file per band)
    stack: str | None = None  # one multi-band file
    stack_bands: tuple[str, ...] = ()  # its bands in file order
    extra: dict = field(default_factory=dict)  # cloud-mask file, quality file, metadata file, time


def is_window_source(fields: dict) -> bool:
    """Whether a source file's (or product's) fields describe windows of multi-date stacks or of
    sensor pairs (``series``, ``pair``, kind ``eopatch``) rather than single-date scenes."""
    parts = fields.get("products") or [{}]
    return any(f in fields or any(isinstance(p, dict) and f in p for p in parts) for f in WINDOW_FIELDS) \
        or fields.get("kind") == "eopatch"


def _builtin(windows: bool) -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml") if is_window_source(yaml.safe_load(p.read_text())) == windows)


def builtin_sources() -> list[str]:
    """Names of the scene source files eolab ships (for the scene cache: dataset ``scenes``)."""
    return _builtin(windows=False)


def builtin_window_sources() -> list[str]:
    """Names of the windowed source files eolab ships: each is a pre-training dataset of its name
    (multi-date stacks or sensor pairs, read by ``eolab.data.series``)."""
    return _builtin(windows=True)


def is_source_path(ref: str) -> bool:
    return str(ref).endswith((".yaml", ".yml")) or "/" in str(ref)


def source_file(ref: str) -> Path:
    """The YAML file of a source: a built-in name, or a path (absolute, relative to the current
    directory, or relative to the repository root, in that order)."""
    if not is_source_path(ref):
        path = BUILTIN_DIR / f"{ref}.yaml"
        if not path.is_file():
            raise SourceError(f"unknown pre-training source {ref!r}; built-in sources: {', '.join(builtin_sources())}, "
                              f"windowed: {', '.join(builtin_window_sources())} "
                              "(or give the path to a source YAML file)")
        return path
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([Path.cwd() / path, REPO_ROOT / path]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise SourceError(f"source file {ref} does not exist (looked for {', '.join(map(str, candidates))})")


def load_source(ref: str | Path) -> SourceSpec:
    """Parse and check a source file's fields (no data are read); errors name the file and field."""
    path = source_file(str(ref))
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SourceError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SourceError(f"{path}: a source file is a YAML mapping of fields")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SourceError(f"{path}: missing field 'name' (the scenes' source name)")
    parts = raw.get("products") or [{}]
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise SourceError(f"{path}: field 'products' must be a list of mappings of fields")
    products = []
    for i, part in enumerate(parts):
        fields = {**{k: v for k, v in raw.items() if k != "products"}, **part}
        where = f"{path}" + (f": products[{i}]" if raw.get("products") else "")
        products.append(make_product(fields, where, path, str(fields.get("name", name))))
    return SourceSpec(name, path, products, text)


def make_product(fields: dict, where: str, path: Path | None, name: str) -> Product:
    """One product from its fields (a source file's, with a product's overrides, or a ``pair`` field's
    second sensor); ``where`` names the file and entry in errors."""
    kind = fields.get("kind")
    if kind not in KINDS:
        raise SourceError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(fields) - FIELDS["common"] - FIELDS[kind])
    if unknown:
        raise SourceError(f"{where}: unknown field(s) {unknown} for kind {kind!r}; "
                          f"it takes {sorted(FIELDS['common'] | FIELDS[kind])}")
    if "card" not in fields:
        raise SourceError(f"{where}: missing field 'card' (a sensor card name or the path to a card YAML)")
    try:
        card = load_card(fields["card"], base=path.parent if path else None)
    except CardError as exc:
        raise SourceError(f"{where}: field 'card': {exc}") from exc
    if REQUIRED[kind] not in fields:
        raise SourceError(f"{where}: missing field {REQUIRED[kind]!r} for kind {kind!r}")
    return Product(name, kind, card, fields, path)


# --- where files are: local paths or fsspec URLs ---------------------------------------------------


def _is_url(p: str) -> bool:
    return "://" in p


def _resolve(pattern: str, root: Path) -> str:
    """A pattern from a source file: URLs and absolute paths as they are, others under the data root."""
    if _is_url(pattern) or Path(pattern).is_absolute():
        return pattern
    return str(root / pattern)


def _glob(pattern: str) -> list[str]:
    if _is_url(pattern):
        import fsspec

        fs, _ = fsspec.core.url_to_fs(pattern)
        proto = pattern.split("://", 1)[0]
        return sorted(p if "://" in p else f"{proto}://{p}" for p in fs.glob(pattern))
    p = Path(pattern)
    anchor = Path(p.anchor)
    return [str(f) for f in sorted(anchor.glob(str(p.relative_to(anchor))))]


def _is_dir(p: str) -> bool:
    if _is_url(p):
        import fsspec

        fs, path = fsspec.core.url_to_fs(p)
        return fs.isdir(path)
    return Path(p).is_dir()


def _listdir(p: str) -> list[str]:
    if _is_url(p):
        import fsspec

        fs, path = fsspec.core.url_to_fs(p)
        proto = p.split("://", 1)[0]
        return sorted(f"{proto}://{f}" for f in fs.ls(path, detail=False))
    return [str(f) for f in Path(p).iterdir()]


def _gdal_path(p: str) -> str:
    """What rasterio opens: local paths as they are; URLs through GDAL's virtual file systems."""
    if p.startswith("file://"):
        return p[len("file://"):]
    return p  # rasterio maps http(s)://, s3://, gs://, az:// to GDAL's /vsicurl/, /vsis3/, ...


def _rel(p: str, root: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return p


# --- finding each scene's files (no pixels read) ---------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    if "{band}" not in pattern:
        raise SourceError(f"file-name pattern {pattern!r} has no '{{band}}'")
    parts = [re.escape(s).replace(r"\*", ".*").replace(r"\?", ".") for s in pattern.split("{band}")]
    return re.compile("(?P<band>.+?)".join(parts))


def _band_file_map(folder: str, product: Product, pattern: str) -> dict[str, str]:
    """band -> file in a one-file-per-band folder, by ``bands.file``; names resolve through the card."""
    rx = _pattern_regex(pattern)
    found: dict[str, str] = {}
    quality = product.card.quality
    for f in sorted(_listdir(folder)):
        m = rx.fullmatch(f.rsplit("/", 1)[-1])
        if not m:
            continue
        try:
            found[product.card.canonical(m.group("band"))] = f
        except KeyError:
            if quality and m.group("band").upper() == quality.band.upper():
                found[quality.band] = f
            continue
    return found


def _geotiff_scenes(product: Product, root: Path, bands: tuple[str, ...]) -> list[_SceneFiles]:
    pattern = _resolve(str(product.get("scenes")), root)
    matches = _glob(pattern)
    if not matches:
        raise NoScenesError(f"{product.where}: field 'scenes': {pattern!r} matches nothing (source {product.name!r})")
    how = product.get("bands")
    if not isinstance(how, dict) or len(set(how) & {"order", "descriptions", "file"}) != 1:
        raise SourceError(f"{product.where}: field 'bands' must be one of {{order: [names in file order]}}, "
                          "{descriptions: true} or {file: '{band}.tif'}")
    out = []
    for m in matches:
        rel = _rel(m, root)
        if "file" in how:
            if not _is_dir(m):
                continue  # the glob may match other files beside the scene folders
            sf = _SceneFiles(rel, band_files=_band_file_map(m, product, str(how["file"])))
            cloud = product.get("cloud_mask")
            if cloud:
                mask = f"{m.rstrip('/')}/{cloud['file']}"
                if _is_url(mask) or Path(mask).exists():
                    sf.extra["cloud_mask"] = mask
            sf.extra["folder"] = m
        else:
            if _is_dir(m):
                continue
            sf = _SceneFiles(rel, stack=m)
            if "order" in how:
                order = how["order"]
                if not isinstance(order, list) or not order:
                    raise SourceError(f"{product.where}: field 'bands.order' must list the file's band names in file order")
                try:
                    sf.stack_bands = tuple(product.card.canonical(str(b)) for b in order)
                except KeyError as exc:
                    raise SourceError(f"{product.where}: field 'bands.order': {exc.args[0]}") from exc
        out.append(sf)
    if not out:
        raise NoScenesError(f"{product.where}: field 'scenes': {pattern!r} matches no "
                          + ("folder (bands.file means one folder per scene)" if "file" in how else "file"))
    return out


# --- checks before work starts --------------------------------------------------------------------


def check_source(spec: SourceSpec, root: Path, bands: tuple[str, ...]) -> dict[str, list[_SceneFiles]]:
    """Every check that needs no pixel, for every product of ``spec``: what would be read, by product.

    Raises SourceError naming the file and field: a glob that matches nothing, a file whose band count
    or names contradict its card or the source's band order, a band of ``bands`` the source lacks, files
    of one scene in different CRSs without a target grid (``grid.crs``)."""
    found = {}
    for product in spec.products:
        if is_window_source(product.fields):
            raise SourceError(f"{product.where}: source {product.name!r} describes windows of multi-date stacks or "
                              f"sensor pairs (fields {', '.join(WINDOW_FIELDS)} or kind 'eopatch'), not scenes: it is a "
                              "pre-training dataset of its own (parameter 'dataset'), not an entry of 'sources'")
        found[product.name] = check_product(product, root, bands)
    return found


def check_product(product: Product, root: Path, bands: tuple[str, ...]) -> list[_SceneFiles]:
    """`check_source` for one product: what it would read (empty for xarray and torchgeo, whose library
    opens the data; they are checked as they are read)."""
    missing_in_card = [b for b in bands if b not in product.card.band_names]
    if missing_in_card:
        raise SourceError(f"{product.where}: the run needs band(s) {missing_in_card} that source {product.name!r} "
                          f"lacks: its card {product.card.where} has {list(product.card.band_names)}")
    if product.kind == "geotiff":
        scenes = _geotiff_scenes(product, root, bands)
        for sf in scenes:
            _check_geotiff_scene(product, sf, bands)
        return scenes
    if product.kind == "stac":
        scenes = _stac_scenes(product, root, bands)
        for sf in scenes:
            _check_geotiff_scene(product, sf, bands)
        return scenes
    return []


def _check_geotiff_scene(product: Product, sf: _SceneFiles, bands: tuple[str, ...]) -> None:
    import rasterio

    grid = product.get("grid") or {}
    if sf.stack is not None:
        try:
            with rasterio.open(_gdal_path(sf.stack)) as ds:
                count, descriptions = ds.count, ds.descriptions
        except Exception as exc:
            raise RasterError(f"{sf.stack}: cannot read GeoTIFF ({type(exc).__name__}: {exc})") from exc
        if sf.stack_bands:
            if count != len(sf.stack_bands):
                raise SourceError(f"{sf.stack}: has {count} bands, but {product.where} field 'bands.order' names "
                                  f"{len(sf.stack_bands)} ({', '.join(sf.stack_bands)})")
        else:  # bands.descriptions
            if not all(descriptions):
                raise SourceError(f"{sf.stack}: band(s) {[i + 1 for i, d in enumerate(descriptions) if not d]} have no "
                                  f"description, but {product.where} field 'bands' says the descriptions name them")
            try:
                sf.stack_bands = tuple(product.card.canonical(d) for d in descriptions)
            except KeyError as exc:
                raise SourceError(f"{sf.stack}: band descriptions {list(descriptions)} contradict card "
                                  f"{product.card.where}: {exc.args[0]}") from exc
        lacking = [b for b in bands if b not in sf.stack_bands]
        if lacking:
            raise SourceError(f"{sf.stack}: lacks band(s) {lacking} that the run needs (it has {list(sf.stack_bands)}; "
                              f"{product.where} field 'bands')")
        return
    lacking = [b for b in bands if b not in sf.band_files]
    ref = grid.get("band")
    if ref and ref not in sf.band_files:
        lacking.append(ref)
    if lacking:
        raise SourceError(f"{sf.rel}: lacks band(s) {lacking} that the run needs (it has {sorted(sf.band_files)}; "
                          f"{product.where} field '{'assets' if product.kind == 'stac' else 'bands.file'}')")
    crss = {}
    for b in (*bands, *([ref] if ref else [])):
        try:
            with rasterio.open(_gdal_path(sf.band_files[b])) as ds:
                if ds.count != 1:
                    raise SourceError(f"{sf.band_files[b]}: has {ds.count} bands, but {product.where} field 'bands.file' "
                                      f"says it holds the one band {b}")
                crss[sf.band_files[b]] = ds.crs.to_string() if ds.crs else None
        except SourceError:
            raise
        except Exception as exc:
            raise RasterError(f"{sf.band_files[b]}: cannot read GeoTIFF ({type(exc).__name__}: {exc})") from exc
    if len(set(crss.values())) > 1 and not grid.get("crs"):
        by_crs: dict[str, list[str]] = {}
        for f, c in crss.items():
            by_crs.setdefault(str(c), []).append(f.rsplit("/", 1)[-1])
        raise SourceError(f"{sf.rel}: files of one scene are in different CRSs ({by_crs}) and {product.where} "
                          "gives no target grid: set field 'grid' to {crs: EPSG:..., resolution_m: ...}")


# --- decoding: card conversion, pixel checks, the Scene ---------------------------------------------


def _offset_dn(product: Product, sf: _SceneFiles, raw: np.ndarray) -> tuple[int, str]:
    """DN offset to remove (positive: subtracted) and how it was found, by the source's ``offset`` field."""
    how = product.get("offset") or {}
    card = product.card
    if "dn" in how:
        return int(how["dn"]), ""
    if "baseline_from_name" in how:
        m = re.search(how["baseline_from_name"], sf.rel.rsplit("/", 1)[-1])
        return int(-card.baseline_offset(m.group(1) if m else None)), ""
    if "baseline_from_json" in how:
        spec = how["baseline_from_json"]
        value = folder_json_value(sf, spec)
        if value is not None and spec.get("pattern"):  # the baseline inside a longer value (a product name)
            m = re.search(spec["pattern"], str(value))
            value = m.group(1) if m else None
        return int(-card.baseline_offset(value)), ""
    if "baseline" in sf.extra:
        return int(-card.baseline_offset(sf.extra["baseline"])), ""
    if how.get("infer") == "darkest":
        return _infer_offset(raw), " (heuristic: inferred from the darkest pixels)"
    return 0, ""


def _infer_offset(raw: np.ndarray) -> int:
    """1000 if the darkest 5% of pixels with data (minimum over bands) are still >= 800, else 0: where
    the baseline-04.00 offset was applied, even open water sits near 1000 in every band."""
    lowest = raw.min(axis=0)
    has_data = raw.max(axis=0) > 0
    darkest = np.percentile(lowest[has_data], 5) if has_data.any() else 0
    return 1000 if darkest >= 800 else 0


def folder_json_value(sf: _SceneFiles, spec: dict):
    """``spec["key"]`` of the JSON file ``spec["file"]`` in a scene's folder (``{name}`` is the folder's
    name: BigEarthNet's ``{name}_labels_metadata.json``); None if the file or key is absent."""
    folder = Path(sf.extra.get("folder", ""))
    meta = folder / str(spec["file"]).replace("{name}", folder.name)
    md = json.loads(meta.read_text()) if meta.exists() else {}
    return md.get(spec["key"])


def scene_time(product: Product, sf: _SceneFiles) -> str | None:
    """A scene's ISO date by the source's ``time`` field: from a JSON file of its folder (``from_json``,
    first ten characters), else from its name (``from_name``, a regex with one group, and ``format``)."""
    if "time" in sf.extra:
        return sf.extra["time"]
    how = product.get("time") or {}
    if "from_json" in how:
        value = folder_json_value(sf, how["from_json"])
        if value:
            return str(value)[:10]
    if "from_name" in how:
        m = re.search(how["from_name"], sf.rel.rsplit("/", 1)[-1])
        if not m:
            return None
        return datetime.strptime(m.group(1), how.get("format", "%Y%m%d")).strftime("%Y-%m-%d")
    return None


def _convert(product: Product, raw: np.ndarray, bands: tuple[str, ...], offset: int) -> tuple[np.ndarray, str, float]:
    """Digital numbers -> the cache's form, through the card: reflectance as uint16 x 10000 (the exact
    integer path when the card's scale is 1e-4, as Sentinel-2 and HLS), other units as float32."""
    card = product.card
    units = {card.band(b).to for b in bands}
    if len(units) > 1:
        raise SourceError(f"{product.where}: bands {list(bands)} convert to different units {sorted(units)} "
                          f"(card {card.where}); a scene holds one unit: pick bands of one unit")
    unit = units.pop()
    scales = [(card.band(b).scale, card.band(b).offset) for b in bands]
    if unit == "reflectance":
        if all(s == 1e-4 and o == 0 for s, o in scales):
            return to_reflectance_dn(raw, offset), unit, 1e-4
        scale = np.array([s for s, _ in scales])[:, None, None]
        off = np.array([o for _, o in scales])[:, None, None]
        refl = ((raw.astype(np.float64) - offset) * scale + off) / 1e-4
        nodata = raw == 0  # screened no-data stays 0
        return np.where(nodata, 0, np.clip(np.rint(refl), 1, 65535)).astype(np.uint16), unit, 1e-4
    scale = np.array([s for s, _ in scales], dtype=np.float32)[:, None, None]
    off = np.array([o for _, o in scales], dtype=np.float32)[:, None, None]
    return ((raw.astype(np.float32) - offset) * scale + off).astype(np.float32), unit, 1.0


def _scene(product: Product, sf: _SceneFiles, raw: np.ndarray, bands: tuple[str, ...], meta: dict, clear,
           notes: list[str]) -> Scene:
    card = product.card
    if card.to == "reflectance" and card.unit == "dn":
        if card.nodata not in (None, 0):  # eolab's integer form marks no data as 0 (HLS: -9999)
            raw = np.where(raw == card.nodata, 0, raw)
        raw, check = screen_pixels(raw, bands, sf.rel)
        offset, how = _offset_dn(product, sf, raw)
        dn, unit, scale = _convert(product, raw, bands, offset)
        nodata = (raw == 0).all(0)
        notes = notes + [f"radiometric offset {offset} removed{how}"]
    else:  # float products (dB, kelvin): NaN and the card's no-data value are no data
        resolutions = {b.name: b.gsd_m for b in card.bands}
        check = check_pixels(raw, bands, card.valid_range or (-np.inf, np.inf), zero_is_nodata=False,
                             grid_m=min(resolutions[b] for b in bands), resolutions=resolutions)
        nodata = ~np.isfinite(raw).any(0) if np.issubdtype(raw.dtype, np.floating) else np.zeros(raw.shape[1:], bool)
        if card.nodata is not None:
            nodata |= (raw == card.nodata).all(0)
        raw = np.where(check.usable[None], np.nan_to_num(raw, nan=0.0), 0)
        dn, unit, scale = _convert(product, raw, bands, 0)
    cloud = None if clear is None else (~clear).astype(np.uint8)
    scene = make_scene(sf.rel, product.name, bands, dn, nodata, cloud, meta, scene_time(product, sf),
                       str(product.get("level", card.level)), notes, check)
    scene.unit, scene.scale, scene.sensor = unit, scale, card.sensor
    return scene


def _read_stack(product: Product, sf: _SceneFiles, bands: tuple[str, ...]):
    from .raster import read_raster

    raw, meta = read_raster(_gdal_path(sf.stack), expected_count=len(sf.stack_bands))
    idx = [sf.stack_bands.index(b) for b in bands]
    notes = [f"dropped band {b} (not in the pre-training band set)" for b in sf.stack_bands if b not in bands]
    return raw[idx], meta, notes


def _read_band_files(product: Product, sf: _SceneFiles, bands: tuple[str, ...]):
    """One file per band, resampled (bilinear) to the grid of ``grid.band``, or reprojected to ``grid.crs``
    at ``grid.resolution_m``; the default grid is the finest requested band's."""
    from rasterio.enums import Resampling

    from .raster import read_raster

    grid = product.get("grid") or {}
    files = {b: _gdal_path(f) for b, f in sf.band_files.items()}
    known = [b for b in files if b in product.card.band_names]
    notes = [f"dropped band {b} (not in the pre-training band set)" for b in sorted(set(known) - set(bands))]
    ref = grid.get("band") or min(bands, key=lambda b: product.card.band(b).gsd_m)
    if grid.get("crs"):
        return _warp_band_files(files, bands, ref, grid) + (notes,)
    ref_arr, meta = read_raster(files[ref], expected_count=1)
    shape = ref_arr.shape[1:]
    layers = []
    for b in bands:
        arr, _ = read_raster(files[b], expected_count=1, out_shape=shape, resampling=Resampling.bilinear)
        layers.append(arr[0])
    return np.stack(layers), meta, notes


def _warp_band_files(files: dict[str, str], bands, ref: str, grid: dict):
    """Every band reprojected (bilinear) onto the target CRS at ``grid.resolution_m``, over the reference
    band's footprint."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform

    res = float(grid.get("resolution_m") or 0) or None
    with rasterio.open(files[ref]) as ds:
        transform, width, height = calculate_default_transform(ds.crs, grid["crs"], ds.width, ds.height, *ds.bounds,
                                                               resolution=res)
    layers = []
    for b in bands:
        with rasterio.open(files[b]) as ds, WarpedVRT(ds, crs=grid["crs"], transform=transform, width=width, height=height,
                                                      resampling=Resampling.bilinear) as vrt:
            layers.append(vrt.read(1))
    meta = {"crs": rasterio.crs.CRS.from_user_input(grid["crs"]), "transform": transform, "nodata": None}
    return np.stack(layers), meta


def _clear_mask(product: Product, sf: _SceneFiles, shape) -> np.ndarray | None:
    """(H, W) bool: not flagged by the source's cloud mask or the card's quality band (None: no mask)."""
    from rasterio.enums import Resampling

    from .raster import read_raster

    if "cloud_mask" in sf.extra:
        values = read_raster(_gdal_path(sf.extra["cloud_mask"]), expected_count=1, out_shape=shape,
                             resampling=Resampling.nearest)[0][0]
        return np.isin(values, product.get("cloud_mask").get("clear", [0]))
    quality = product.card.quality
    if product.get("quality") and quality and quality.band in sf.band_files:
        values = read_raster(_gdal_path(sf.band_files[quality.band]), expected_count=1, out_shape=shape,
                             resampling=Resampling.nearest)[0][0]
        return quality.usable(values)
    return None


# --- the kinds ----------------------------------------------------------------------------------------


def _stac_scenes(product: Product, root: Path, bands: tuple[str, ...]) -> list[_SceneFiles]:
    import pystac

    path = Path(_resolve(str(product.get("catalog")), root))
    if not path.exists():
        raise NoScenesError(f"{product.where}: field 'catalog': {path} does not exist (source {product.name!r})")
    data = json.loads(path.read_text())
    if data.get("type") == "FeatureCollection":
        items = list(pystac.ItemCollection.from_file(str(path)))
    elif data.get("type") == "Feature":
        items = [pystac.Item.from_file(str(path))]
    else:
        items = list(pystac.Catalog.from_file(str(path)).get_items(recursive=True))
    if not items:
        raise SourceError(f"{product.where}: field 'catalog': {path} holds no STAC item")
    explicit = product.get("assets") or {}
    out = []
    for item in sorted(items, key=lambda i: i.id):
        sf = _SceneFiles(f"{_rel(str(path), root)}#{item.id}")
        for key, asset in item.assets.items():
            band = explicit.get(key)
            if band is None and not explicit:
                names = [key] + [b.get("name") for b in (asset.extra_fields.get("eo:bands") or []) if b.get("name")]
                for n in names:
                    try:
                        band = product.card.canonical(n)
                        break
                    except KeyError:
                        continue
            if band is None and product.card.quality and key.upper() == product.card.quality.band.upper():
                band = product.card.quality.band
            if band is not None:
                sf.band_files[band] = asset.get_absolute_href() or asset.href
        if item.datetime:
            sf.extra["time"] = item.datetime.strftime("%Y-%m-%d")
        for key in ("s2:processing_baseline", "processing:version"):
            if key in item.properties:
                sf.extra["baseline"] = str(item.properties[key])
        out.append(sf)
    return out


def _read_xarray(product: Product, root: Path, bands: tuple[str, ...]) -> Iterator[Scene]:
    import xarray as xr
    from affine import Affine
    from rasterio.crs import CRS

    path = _resolve(str(product.get("path")), root)
    if not _is_url(path) and not Path(path).exists():
        raise SourceError(f"{product.where}: field 'path': {path} does not exist (source {product.name!r})")
    engine = product.get("engine") or ("zarr" if path.rstrip("/").endswith(".zarr") else None)
    ds = xr.open_zarr(path) if engine == "zarr" else xr.open_dataset(path, engine=engine)
    dims = {"band": "band", "y": "y", "x": "x", "time": None, **(product.get("dims") or {})}
    if product.get("variables"):  # one variable per band
        mapping = {product.card.canonical(b): v for b, v in product.get("variables").items()}
        lacking = [b for b in bands if b not in mapping]
        if lacking:
            raise SourceError(f"{product.where}: field 'variables' lacks band(s) {lacking} that the run needs")
        absent = [v for v in mapping.values() if v not in ds]
        if absent:
            raise SourceError(f"{path}: has no variable(s) {absent} named in {product.where} field 'variables'")
        da = xr.concat([ds[mapping[b]] for b in bands], dim=dims["band"])
    else:
        var = product.get("variable")
        if var not in ds:
            raise SourceError(f"{path}: has no variable {var!r} ({product.where} field 'variable'); it has {list(ds.data_vars)}")
        da = ds[var]
        missing_dims = [d for d in (dims["band"], dims["y"], dims["x"], dims["time"]) if d and d not in da.dims]
        if missing_dims:
            raise SourceError(f"{path}: variable {var!r} has dims {list(da.dims)}, not {missing_dims} "
                              f"({product.where} field 'dims')")
        names = [product.card.canonical(str(n)) for n in da[dims["band"]].values]
        lacking = [b for b in bands if b not in names]
        if lacking:
            raise SourceError(f"{path}: variable {var!r} lacks band(s) {lacking} that the run needs (has {names})")
        da = da.isel({dims["band"]: [names.index(b) for b in bands]})
    undeclared = sorted(set(da.dims) - {dims["band"], dims["y"], dims["x"], dims["time"]})
    if undeclared:
        raise SourceError(f"{path}: dimension(s) {undeclared} are not declared in {product.where} field 'dims' "
                          f"(band, y, x and an optional time; it has {list(da.dims)})")
    crs = product.get("crs") or da.attrs.get("crs") or (ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds else None)
    if not crs:
        raise SourceError(f"{path}: no CRS in the file; set {product.where} field 'crs' (e.g. EPSG:32633)")
    x, y = da[dims["x"]].values, da[dims["y"]].values
    transform = Affine(float(x[1] - x[0]), 0.0, float(x[0] - (x[1] - x[0]) / 2), 0.0, float(y[1] - y[0]),
                       float(y[0] - (y[1] - y[0]) / 2))
    meta = {"crs": CRS.from_user_input(crs), "transform": transform, "nodata": None}
    steps = range(da.sizes[dims["time"]]) if dims["time"] else [None]
    for t in steps:
        one = da if t is None else da.isel({dims["time"]: t})
        raw = one.transpose(dims["band"], dims["y"], dims["x"]).values  # (C, H, W)
        sf = _SceneFiles(_rel(path, root) + ("" if t is None else f"#{t}"))
        if t is not None:
            sf.extra["time"] = str(np.datetime_as_string(da[dims["time"]].values[t], unit="D"))
        yield _scene(product, sf, raw, bands, meta, None, [])


def _read_torchgeo(product: Product, root: Path, bands: tuple[str, ...]) -> Iterator[Scene]:
    import importlib

    from affine import Affine
    from rasterio.crs import CRS

    name = str(product.get("dataset"))
    module, _, cls_name = name.rpartition(".") if "." in name else ("torchgeo.datasets", "", name)
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(f"{product.where}: field 'dataset': no class {name!r} ({exc})") from exc
    args = dict(product.get("args") or {})
    if "paths" in args:
        args["paths"] = _resolve(str(args["paths"]), root)
    ds = cls(**args)
    if not hasattr(ds, "index") or not hasattr(ds, "res"):
        raise SourceError(f"{product.where}: field 'dataset': {name} is not a torchgeo GeoDataset (it needs a "
                          "georeferenced index); use kind geotiff for its files")
    order = product.get("bands") or list(getattr(ds, "bands", None) or ())
    try:
        order = [product.card.canonical(str(b)) for b in order]
    except KeyError as exc:
        raise SourceError(f"{product.where}: field 'bands': {exc.args[0]}") from exc
    lacking = [b for b in bands if b not in order]
    if lacking:
        raise SourceError(f"{product.where}: dataset {name} lacks band(s) {lacking} that the run needs (its bands: {order})")
    idx = [order.index(b) for b in bands]
    res_x, res_y = ds.res if isinstance(ds.res, tuple) else (ds.res, ds.res)
    for i, row in enumerate(ds.index.itertuples()):
        minx, miny, maxx, maxy = row.geometry.bounds
        sample = ds[minx:maxx:res_x, miny:maxy:res_y, row.Index.left:row.Index.right]
        image = sample["image"].numpy()
        if image.shape[0] != len(order):
            raise SourceError(f"{product.where}: dataset {name} gives {image.shape[0]} channels, field 'bands' names "
                              f"{len(order)}")
        meta = {"crs": CRS.from_user_input(ds.crs), "transform": Affine(res_x, 0.0, minx, 0.0, -res_y, maxy), "nodata": None}
        sf = _SceneFiles(_rel(str(getattr(row, "filepath", f"{name}#{i}")), root))
        yield _scene(product, sf, image[idx].astype(np.uint16 if product.card.unit == "dn" else np.float32), bands,
                     meta, None, [])


def read_source(spec: SourceSpec, root: Path, bands: tuple[str, ...],
                checked: dict[str, list[_SceneFiles]] | None = None) -> Iterator[Scene]:
    """Scenes of every product of ``spec``, in order; ``checked`` is `check_source`'s answer (run if absent)."""
    checked = checked if checked is not None else check_source(spec, root, bands)
    for product in spec.products:
        if product.kind == "xarray":
            yield from _read_xarray(product, root, bands)
            continue
        if product.kind == "torchgeo":
            yield from _read_torchgeo(product, root, bands)
            continue
        for sf in checked[product.name]:
            yield read_scene(product, sf, bands)


def read_scene(product: Product, sf: _SceneFiles, bands: tuple[str, ...]) -> Scene:
    """One scene of a geotiff or stac product, as `check_product` found it: random access for the
    windowed datasets, which read one place (or one pair) at a time."""
    raw, meta, notes = _read_stack(product, sf, bands) if sf.stack else _read_band_files(product, sf, bands)
    return _scene(product, sf, raw, bands, meta, _clear_mask(product, sf, raw.shape[1:]), notes)


def input_files(spec: SourceSpec, checked: dict[str, list[_SceneFiles]], root: Path) -> list[Path]:
    """Local files a source reads (for the cache key): every file of each scene folder or stack, the
    STAC catalogue, the cube; URLs are left out (their content is keyed by the source file's text)."""
    files: set[Path] = set()
    for product in spec.products:
        for sf in checked.get(product.name, []):
            for f in (*sf.band_files.values(), sf.stack, sf.extra.get("cloud_mask")):
                if f and not _is_url(f):
                    files.add(Path(f))
            folder = sf.extra.get("folder")
            if folder and not _is_url(folder):
                files.update(p for p in Path(folder).iterdir() if p.is_file())
        for key in ("catalog", "path"):
            if product.get(key) and not _is_url(str(product.get(key))):
                p = Path(_resolve(str(product.get(key)), root))
                files.update([p] if p.is_file() else (f for f in p.rglob("*") if f.is_file()))
    return sorted(files)


def reader(ref: str):
    """``reader(ref)(root, bands)``: the scenes of a source, the call shape of the former hard-coded readers."""
    def read(root: Path, bands: tuple[str, ...] = S2_L2A) -> Iterator[Scene]:
        return read_source(load_source(ref), root, bands)

    return read


READERS = {name: reader(name) for name in builtin_sources()}
"""Built-in source name -> its reader (every one a source file in ``sources/``)."""


def source_globs(ref: str) -> tuple[str, ...]:
    """The file patterns (under the data root) a source reads: for the torch-free input checks."""
    spec = load_source(ref)
    out = []
    for p in spec.products:
        if p.kind == "geotiff":
            pattern = str(p.get("scenes"))
            how = p.get("bands") or {}
            out.append(f"{pattern}/{how['file'].replace('{band}', '*')}" if "file" in how else pattern)
        elif p.kind == "stac":
            out.append(str(p.get("catalog")))
        elif p.kind == "xarray":
            out.append(str(p.get("path")))
        elif p.kind == "eopatch":  # the band arrays of each EOPatch folder
            bands = (p.get("arrays") or {}).get("bands") or {}
            out += [f"{p.get('path')}/{f}" for f in (bands.values() if isinstance(bands, dict) else ())]
    return tuple(out)


def source_bands(ref: str) -> tuple[str, ...]:
    """The bands a source can provide, by name: the file's band order where the source declares one
    (``bands.order``; for one file per band, ``bands.names``: the bands its folders hold), else its
    card's bands; for a source of several products, the bands every product has."""
    per_product = [product_bands(p) for p in load_source(ref).products]
    first = per_product[0] if per_product else []
    return tuple(b for b in first if all(b in names for names in per_product[1:]))


def product_bands(p: Product) -> tuple[str, ...]:
    """The bands one product can provide, by name (see `source_bands`)."""
    how = p.get("bands")
    # the file's band order, or the bands a one-file-per-band folder holds (bands.names), else the card's
    order = (how.get("order") or how.get("names")) if isinstance(how, dict) else None
    try:
        return tuple(p.card.canonical(str(b)) for b in order) if isinstance(order, list) and order else p.card.band_names
    except KeyError as exc:
        raise SourceError(f"{p.where}: field 'bands': {exc.args[0]} is not a band of card {p.card.where} "
                          f"(it has {list(p.card.band_names)})") from None
