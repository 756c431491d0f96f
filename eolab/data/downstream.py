"""Downstream tasks of the embedding benchmark: labelled data sets over the shared real data, what each
one provides and how it is split (the proxy tasks a run pre-trains with are `eolab.tasks`).

A task declares its inputs before anything is computed - band names, the unit and the sensor
(modality) of every band, the number of time steps, whether the steps carry acquisition days, the
spatial size of a sample - so that whether an encoder can read it is decided from declarations
(``eolab.evaluate.encoders``), never by feeding it whatever channels happen to be there.

``Task.load(root)`` returns one batch dict, always with an explicit time axis:

    image     float32 tensor (N, T, C, H, W); T = 1 for single images, H = W = 1 for a pixel time
              series. A segmentation task stores its scene(s) here, (S, T, C, H, W), and its samples
              are pixels of them (``pixel``)
    bands, units, modality   tuples, one entry per channel
    target    numpy (N,) int class index | (N,) float | (N, L) 0/1 multi-label
    id        N stable sample ids;  lonlat (N, 2) float64 sample centres (WGS84)
    time      N ISO dates, or None when the acquisition dates are unknown
    doy       int64 (N, T) day of year of every step (dated tasks only)
    group     int (N,): the spatial block of each sample, for the blocked split
    is_test   bool (N,): the task's documented train/test split, or None when it has none
    classes   names of the classes (classification, multilabel, segmentation)
    pixel     segmentation only: int (N, 3) (scene, row, col) of each sample
    valid     optional bool (S, T, H, W): clear observations (cloud-free, with data)

Every task's docstring says how its samples, its blocked split and its documented split are made.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import torch
from rasterio.warp import transform as warp_transform

from . import eurosat
from .bands import S2_L1C, S2_L2A
from .pairs import bigearthnet_metadata, read_bigearthnet_s2
from .raster import centre_lonlat
from .splits import spatial_blocks
from .taskdef import (  # noqa: F401 - the task contract, re-exported where the tasks are
    KINDS,
    SAMPLE_KEYS,
    TASK_VERSION,
    Task,
    batch_digest,
    contiguous_labels,
    files_digest,
    loader_identity,
    make_batch,
    normalise_batch,
    resolve_files,
)
from .taskfile import load_task_file
from .timeseries import (
    NDVI_FILL,
    REFLECTANCE_SCALE,
    SLOVENIA_DIR,
    day_of_year,
    eopatch_dates,
    eopatch_grid,
    load_npy,
)

# ----------------------------------------------------------------------------------------------
# EuroSAT-MS


def load_eurosat(root: Path) -> dict:
    """EuroSAT-MS scene classification: 273 patches, 64 x 64 px, 13 L1C bands, 10 classes.

    Documented split: the data set's ``train`` folder (and the 3 ``extra`` patches) train, its
    ``test`` folder tests. Blocked split: 2 x 2 degree cells of the patch centres (86 cells).
    No acquisition dates (EuroSAT does not publish them).
    """
    d = eurosat.load(root)
    n = len(d["label"])
    lonlat = d["lonlat"].double().numpy()
    return make_batch(d["bands"], ("reflectance",) * len(d["bands"]), ("s2",) * len(d["bands"]),
                  d["image"][:, None], d["label"].numpy(), d["id"], lonlat, spatial_blocks(lonlat, 2.0),
                  is_test=np.array([s == "test" for s in d["split"]]), classes=d["classes"], n=n)


# ----------------------------------------------------------------------------------------------
# BigEarthNet (Sentinel-2 part)

BIGEARTHNET_CROP = 64


def load_bigearthnet(root: Path) -> dict:
    """BigEarthNet-S2 multi-label land cover: the 11 shared L2A patches, a smoke task.

    Each 120 x 120 px patch is cropped to its central 64 x 64 px (the labels describe the whole
    patch; with 11 patches this task checks that the multi-label path runs, it does not rank
    encoders). Labels: the CORINE classes of the patch metadata that are present in at least 2
    and absent from at least 2 patches. Blocked split: the Sentinel-2 product (same tile and
    date). No documented split.
    """
    folders = sorted(d for d in (root / "bigearthnet" / "s2").glob("*") if d.is_dir())
    if not folders:
        raise FileNotFoundError(f"{root / 'bigearthnet' / 's2'}: no BigEarthNet S2 patch folders")
    images, labels, lonlat, times, products = [], [], [], [], []
    c = BIGEARTHNET_CROP
    for folder in folders:
        dn, _, meta = read_bigearthnet_s2(folder, S2_L2A)  # (12, 120, 120) DN, offset removed
        h, w = dn.shape[1:]
        r0, c0 = (h - c) // 2, (w - c) // 2
        images.append(torch.from_numpy(dn[:, r0 : r0 + c, c0 : c0 + c].astype(np.float32) * REFLECTANCE_SCALE))
        md = bigearthnet_metadata(folder)
        labels.append(md["labels"])
        lonlat.append(centre_lonlat(meta, h, w))
        times.append(md["acquisition_date"][:10])
        products.append(re.match(r"(S2[AB]_MSIL2A_\d{8}T\d+)_", folder.name).group(1))
    names = sorted({name for ls in labels for name in ls})
    multi_hot = np.array([[name in ls for name in names] for ls in labels], dtype=np.int64)  # (N, L)
    usable = (multi_hot.sum(0) >= 2) & ((1 - multi_hot).sum(0) >= 2)
    _, group = np.unique(products, return_inverse=True)
    return make_batch(S2_L2A, ("reflectance",) * len(S2_L2A), ("s2",) * len(S2_L2A),
                  torch.stack(images)[:, None], multi_hot[:, usable],
                  [str(f.relative_to(root)) for f in folders], lonlat, group,
                  time=times, doy=np.array([[day_of_year(t)] for t in times]),
                  classes=tuple(n for n, u in zip(names, usable, strict=True) if u))


# ----------------------------------------------------------------------------------------------
# Slovenia land cover (eo-learn EOPatch)

# eo-learn's example land-cover codes (LULC.npy); 0 means no data.
LULC_NAMES = {1: "Cultivated land", 2: "Forest", 3: "Grassland", 4: "Shrubland", 5: "Water", 6: "Wetlands",
              7: "Tundra", 8: "Artificial surface", 9: "Bareland", 10: "Snow and ice"}
SLOVENIA_PIXELS_PER_CLASS = 150  # sampled pixel locations per class (seeded)
SLOVENIA_MIN_PIXELS = 50  # classes with fewer labelled pixels in the scene are left out
SLOVENIA_BLOCK_PX = 32  # blocked split: 32 x 32 px (320 m) squares of the scene


def slovenia_pixels(lulc: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Sampled pixels (N, 2) (row, col), their class index and the class names.

    Up to ``SLOVENIA_PIXELS_PER_CLASS`` pixels per land-cover class, drawn with a fixed seed so that
    both Slovenia tasks probe the very same pixels; no-data pixels (0) and classes with fewer than
    ``SLOVENIA_MIN_PIXELS`` pixels (too few to split) are left out.
    """
    rng = np.random.default_rng(seed)
    codes = [c for c in np.unique(lulc) if c != 0 and (lulc == c).sum() >= SLOVENIA_MIN_PIXELS]
    rows, target = [], []
    for k, code in enumerate(codes):
        where = np.argwhere(lulc == code)  # (M, 2)
        take = rng.choice(len(where), min(len(where), SLOVENIA_PIXELS_PER_CLASS), replace=False)
        rows.append(where[np.sort(take)])
        target += [k] * len(take)
    return np.concatenate(rows), np.asarray(target), tuple(LULC_NAMES[int(c)] for c in codes)


def _slovenia_labels(root: Path, height: int, width: int) -> dict:
    """Pixels, targets, coordinates and blocks shared by both Slovenia tasks."""
    folder = root / SLOVENIA_DIR
    lulc = np.asarray(load_npy(folder / "mask_timeless" / "LULC.npy", (height, width, 1), "the scene"))[..., 0]
    pixels, target, classes = slovenia_pixels(lulc)
    crs, transform = eopatch_grid(folder / "bbox.geojson", height, width)
    xs, ys = transform @ (pixels[:, 1] + 0.5, pixels[:, 0] + 0.5)  # pixel centres in the scene's CRS
    lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    blocks = pixels // SLOVENIA_BLOCK_PX  # (N, 2) block row, block col
    _, group = np.unique(blocks, axis=0, return_inverse=True)
    return {"target": target, "classes": classes, "lonlat": np.stack([lon, lat], 1), "group": group.ravel(),
            "pixel": np.c_[np.zeros(len(pixels), dtype=np.int64), pixels],
            "id": [f"{SLOVENIA_DIR}@{r},{c}" for r, c in pixels]}


def load_slovenia_landcover(root: Path) -> dict:
    """Per-pixel land cover of the Slovenia scene from 5 full Sentinel-2 L1C scenes.

    Input: ``REFERENCE_SCENES.npy`` (5 dates x 101 x 100 px x 13 bands, L1C reflectance in
    eolab's band order; acquisition dates are not published, so the task is undated). Labels:
    ``mask_timeless/LULC.npy`` of the same 101 x 100 px, sampled per class (``slovenia_pixels``).
    Segmentation-style probe: an encoder embeds the scene (tiled into its own window size) and
    each sampled pixel gets the dense feature at its position. Blocked split: 32 x 32 px squares
    (16 blocks). No documented split.
    """
    path = root / "eo-learn-slovenia" / "REFERENCE_SCENES.npy"
    scenes = np.asarray(load_npy(path), dtype=np.float32)
    if scenes.ndim != 4 or scenes.shape[-1] != len(S2_L1C):
        raise ValueError(f"{path}: shape {scenes.shape}, expected (T, H, W, {len(S2_L1C)})")
    labels = _slovenia_labels(root, *scenes.shape[1:3])
    image = torch.from_numpy(np.ascontiguousarray(scenes.transpose(0, 3, 1, 2)))[None]  # (T,H,W,C) -> (1,T,C,H,W)
    return make_batch(S2_L1C, ("reflectance",) * len(S2_L1C), ("s2",) * len(S2_L1C), image, labels.pop("target"),
                  labels.pop("id"), labels.pop("lonlat"), labels.pop("group"), **labels)


def load_slovenia_ndvi_landcover(root: Path) -> dict:
    """Per-pixel land cover of the Slovenia scene from its 68-date NDVI time series.

    Input: ``TestEOPatch/data/NDVI.npy`` (68 dates, 2015-07 .. 2017-12), with ``valid`` marking
    clear observations (CLM cloud mask 0, IS_DATA set, finite NDVI; others are filled with 0) and
    ``date_clear`` the clear fraction of each date over the scene, from which a temporal encoder
    picks its dates. Same pixels, labels and blocked split as ``slovenia_landcover``.
    """
    folder = root / SLOVENIA_DIR
    ndvi = load_npy(folder / "data" / "NDVI.npy")
    steps, height, width = ndvi.shape[:3]
    like = f"data/NDVI.npy {ndvi.shape}"
    cloud = load_npy(folder / "mask" / "CLM.npy", (steps, height, width, 1), like)[..., 0]
    has_data = load_npy(folder / "mask" / "IS_DATA.npy", (steps, height, width, 1), like)[..., 0]
    values = np.asarray(ndvi[..., 0], dtype=np.float32)  # (T, H, W)
    valid = (cloud == 0) & (has_data != 0) & np.isfinite(values)
    values = np.where(np.isfinite(values), values, NDVI_FILL)
    dates = eopatch_dates(folder / "timestamps.json", steps)
    labels = _slovenia_labels(root, height, width)
    image = torch.from_numpy(values)[None, :, None]  # (T, H, W) -> (1, T, 1, H, W)
    doy = np.array([[day_of_year(d) for d in dates]] * len(labels["target"]))  # every pixel sees every date
    return make_batch(("NDVI",), ("index",), ("index",), image, labels.pop("target"), labels.pop("id"),
                  labels.pop("lonlat"), labels.pop("group"), doy=doy, dates=dates, valid=valid[None],
                  date_clear=valid.mean((1, 2)), **labels)


# ----------------------------------------------------------------------------------------------
# Presto pixel time series (nasaharvest/presto evaluation data)

# Channel order of ``s1_s2_era5_srtm.npy``: presto's BANDS (S1, S2 without B1 and B10, ERA5,
# SRTM, NDVI), checked against the value ranges of the files. ERA5 and SRTM keep their units.
PRESTO_BANDS = ("VV", "VH", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
                "t2m", "tp", "elevation", "slope", "NDVI")
PRESTO_UNITS = ("dB",) * 2 + ("reflectance",) * 11 + ("K", "m", "m", "degree", "index")
PRESTO_MODALITY = ("s1",) * 2 + ("s2",) * 11 + ("era5",) * 2 + ("srtm",) * 2 + ("index",)
_PRESTO_S2 = slice(2, 13)
PRESTO_BLOCK_DEG = 1.0  # blocked split: 1 x 1 degree cells


def _presto_arrays(root: Path, task: str) -> dict[str, np.ndarray]:
    folder = root / "presto" / task / "npy"
    names = ("s1_s2_era5_srtm", "target", "latlon", "month", "is_test")
    arrays = {}
    for name in names:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (presto {task} evaluation array)")
        arrays[name] = np.load(path, allow_pickle=False)
    x = arrays["s1_s2_era5_srtm"]
    if x.ndim != 3 or x.shape[-1] != len(PRESTO_BANDS):
        raise ValueError(f"{folder / 's1_s2_era5_srtm.npy'}: shape {x.shape}, expected (N, T, {len(PRESTO_BANDS)})")
    return arrays


def _presto_batch(root: Path, task: str, target: np.ndarray, arrays: dict, **extra) -> dict:
    x = arrays["s1_s2_era5_srtm"].astype(np.float32)  # (N, T, 18)
    # Earth Engine S2 digital numbers -> reflectance, divided (exact in float32, as a task file's scale)
    x[..., _PRESTO_S2] /= np.float32(round(1 / REFLECTANCE_SCALE))
    lonlat = arrays["latlon"][:, ::-1].astype(np.float64)  # presto stores (lat, lon)
    # Presto's month index (0 = January) of every step; the year is not stored, so the day of year
    # of a step is taken as the 15th of its month (an approximation a temporal encoder can use).
    doy = np.array([[date(2021, m + 1, 15).timetuple().tm_yday for m in row] for row in arrays["month"]])
    ids = extra.pop("ids", [f"presto/{task}/{i}" for i in range(len(x))])
    return make_batch(PRESTO_BANDS, PRESTO_UNITS, PRESTO_MODALITY, torch.from_numpy(x)[..., None, None], target,
                  ids, lonlat, spatial_blocks(lonlat, PRESTO_BLOCK_DEG), doy=doy,
                  is_test=arrays["is_test"].astype(bool), **extra)  # image (N, T, C) -> (N, T, C, 1, 1)


def load_presto_algae(root: Path) -> dict:
    """Algae-bloom severity (classes 1..5) from 12 monthly S1+S2+ERA5+SRTM pixel steps (1122 lakes
    sampled in the US Midwest; presto's eval data).

    Documented split: presto's ``is_test`` (samples east of 93 W and south of 41 N test). Blocked
    split: 1 x 1 degree cells. Severity 5 has 6 samples only.
    """
    arrays = _presto_arrays(root, "algae_blooms")
    uid = root / "presto" / "algae_blooms" / "npy" / "uid.npy"
    ids = [f"presto/algae_blooms/{u}" for u in np.load(uid)] if uid.is_file() else None
    severity = arrays["target"].astype(np.int64)
    return _presto_batch(root, "algae_blooms", severity - 1, arrays, classes=tuple(f"severity {s}" for s in range(1, 6)),
                         **({"ids": ids} if ids else {}))


def load_presto_fuel_moisture(root: Path) -> dict:
    """Live fuel moisture (percent, regression) from 3 S1+S2+ERA5+SRTM pixel steps (2313 samples
    at 150 sites in the western US; presto's eval data).

    Documented split: presto's ``is_test``, a split by site (``train_test_split.json``). Blocked
    split: 1 x 1 degree cells (neighbouring sites share a cell).
    """
    arrays = _presto_arrays(root, "fuel_moisture")
    return _presto_batch(root, "fuel_moisture", arrays["target"].astype(np.float64), arrays)


# ----------------------------------------------------------------------------------------------
# ERA5 climate cube (read through xarray)

ERA5_FILE = "climate/era5-2mt-2019-03-uk.nc"
ERA5_WINDOW = 8  # grid cells (0.25 degree) per side of a region
ERA5_TEST_DAYS = 9  # the last days (by input day) form the documented, temporal test split


def load_era5_next_day(root: Path) -> dict:
    """Next-day regional mean 2 m temperature over the UK from today's hourly cube (ERA5, March 2019).

    The cube (744 hours x 33 x 49 cells of 0.25 degrees) is read with xarray. A sample is a region of
    8 x 8 cells (2 x 2 degrees; 24 regions on a stride-8 grid) on one day: input the 24 hourly
    fields of the day, (24, 1, 8, 8) in kelvin; target the mean 2 m temperature of the region over
    the next day. 30 input days x 24 regions = 720 samples. Documented split: temporal, the last 9
    input days test. Blocked split: the region. The time steps are hours, not acquisition dates.
    """
    import xarray as xr

    path = root / ERA5_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (ERA5 2 m temperature cube)")
    with xr.open_dataset(path) as ds:
        t2m = ds["t2m"].transpose("time", "latitude", "longitude").load()
    days = t2m.coarsen(time=24).construct(time=("day", "hour"))  # (D, 24, lat, lon); needs whole days
    w = ERA5_WINDOW
    lat0 = np.arange(0, t2m.sizes["latitude"] - w + 1, w)
    lon0 = np.arange(0, t2m.sizes["longitude"] - w + 1, w)
    cube = days.values.astype(np.float32)  # (D, 24, lat, lon)
    images, target, ids, lonlat, group, times = [], [], [], [], [], []
    for d in range(cube.shape[0] - 1):  # the last day has no next day
        day = str(days["time"].values[d, 0])[:10]
        for k, (r, c) in enumerate((r, c) for r in lat0 for c in lon0):
            images.append(cube[d, :, r : r + w, c : c + w])
            target.append(float(cube[d + 1, :, r : r + w, c : c + w].mean()))
            ids.append(f"{ERA5_FILE}@{day}/{r},{c}+{w}")
            lonlat.append((float(t2m.longitude[c : c + w].mean()), float(t2m.latitude[r : r + w].mean())))
            group.append(k)
            times.append(day)
    n_days = cube.shape[0] - 1
    day_index = np.repeat(np.arange(n_days), len(lat0) * len(lon0))
    image = torch.from_numpy(np.stack(images))[:, :, None]  # (N, 24, 8, 8) -> (N, 24, 1, 8, 8)
    return make_batch(("t2m",), ("K",), ("era5",), image, np.asarray(target), ids, lonlat, group, time=times,
                  is_test=day_index >= n_days - ERA5_TEST_DAYS)


# ----------------------------------------------------------------------------------------------
# Registry

_S2_L1C_DECL = {"bands": S2_L1C, "units": ("reflectance",) * len(S2_L1C), "modality": ("s2",) * len(S2_L1C)}


def _tasks() -> dict[str, Task]:
    tasks = [
        Task("eurosat", "classification", **_S2_L1C_DECL, num_dates=1, size=64, gsd_m=10.0, dated=False,
             loader=load_eurosat, files=("eurosat-ms/*/*/*.tif",),
             split="random: stratified k-fold; blocked: 2-degree cells; documented: train(+extra) / test folders"),
        Task("bigearthnet", "multilabel", S2_L2A, ("reflectance",) * len(S2_L2A), ("s2",) * len(S2_L2A), num_dates=1,
             size=BIGEARTHNET_CROP, gsd_m=10.0, dated=True, loader=load_bigearthnet,
             files=("bigearthnet/s2/*/*",), split="random: k-fold; blocked: Sentinel-2 product", smoke=True),
        Task("slovenia_landcover", "segmentation", **_S2_L1C_DECL, num_dates=5, size=101, gsd_m=10.0,
             dated=False, loader=load_slovenia_landcover,
             files=("eo-learn-slovenia/REFERENCE_SCENES.npy", f"{SLOVENIA_DIR}/mask_timeless/LULC.npy"),
             split="random: stratified k-fold over pixels; blocked: 32 px squares"),
        Task("slovenia_ndvi_landcover", "segmentation", ("NDVI",), ("index",), ("index",), num_dates=68,
             size=101, gsd_m=10.0, dated=True, loader=load_slovenia_ndvi_landcover,
             files=(f"{SLOVENIA_DIR}/data/NDVI.npy", f"{SLOVENIA_DIR}/mask/*.npy", f"{SLOVENIA_DIR}/mask_timeless/LULC.npy"),
             split="random: stratified k-fold over pixels; blocked: 32 px squares"),
        Task("presto_algae", "classification", PRESTO_BANDS, PRESTO_UNITS, PRESTO_MODALITY, num_dates=12, size=1,
             gsd_m=10.0, dated=True, loader=load_presto_algae, files=("presto/algae_blooms/npy/*.npy",),
             split="random: stratified k-fold; blocked: 1-degree cells; documented: presto is_test (region)"),
        Task("presto_fuel_moisture", "regression", PRESTO_BANDS, PRESTO_UNITS, PRESTO_MODALITY, num_dates=3,
             size=1, gsd_m=10.0, dated=True, loader=load_presto_fuel_moisture, files=("presto/fuel_moisture/npy/*.npy",),
             split="random: k-fold; blocked: 1-degree cells; documented: presto is_test (by site)"),
        Task("era5_next_day_t2m", "regression", ("t2m",), ("K",), ("era5",), num_dates=24, size=ERA5_WINDOW,
             gsd_m=25_000.0, dated=False, loader=load_era5_next_day, files=(ERA5_FILE,),
             split="random: k-fold; blocked: region; documented: last 9 days test"),
    ]
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _tasks()
"""Every benchmark task by name."""


REGISTERED: dict[str, Task] = {}
"""Tasks added with ``register_task`` (beside the built-in ``TASKS``)."""
TASK_FILE_SUFFIXES = (".yaml", ".yml")


class UnknownTaskError(ValueError):
    """A task name that is neither built in, registered, nor a task file."""


def register_task(task: Task, replace: bool = False) -> Task:
    """Make ``task`` available by name to ``evaluate``, the command line and the notebooks of this
    process (``get_task(task.name)``). A built-in name cannot be taken; re-registering a name needs
    ``replace=True`` (so two different tasks never share a name, and so a cache key)."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task, got {type(task).__name__}")
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is built in; give your task another name")
    if task.name in REGISTERED and not replace and REGISTERED[task.name] is not task:
        raise ValueError(f"task {task.name!r} is already registered; pass replace=True to replace it")
    REGISTERED[task.name] = task
    return task


def unregister_task(name: str) -> None:
    REGISTERED.pop(name, None)


def task_names() -> list[str]:
    """Every task that can be named: built in, then registered."""
    return [*TASKS, *REGISTERED]


def is_task_file(name: str) -> bool:
    return str(name).strip().lower().endswith(TASK_FILE_SUFFIXES)


def get_task(name: str | Path | Task) -> Task:
    """A task by name (built in or registered), a task file (``.yaml``: ``eolab.data.taskfile``),
    or a ``Task`` as it is. An unknown name raises ``UnknownTaskError`` listing the valid ones."""
    if isinstance(name, Task):
        return name
    text = str(name).strip()
    if is_task_file(text):
        return load_task_file(text)
    if text in TASKS:
        return TASKS[text]
    if text in REGISTERED:
        return REGISTERED[text]
    raise UnknownTaskError(f"unknown task {text!r}; choose from {task_names()} or give a task file (*.yaml)")


def check_task_names(names) -> None:
    """Raise ``UnknownTaskError`` for the first name that is no task (task files must exist)."""
    for name in names:
        if is_task_file(str(name)):
            if not Path(str(name).strip()).expanduser().is_file():
                raise UnknownTaskError(f"task file {str(name).strip()!r} does not exist")
        else:
            get_task(name)
