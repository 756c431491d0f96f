"""Which pre-training patches to use: subset samplers over the tile index, swappable by name.

``samplers.py`` orders batches for training; this module chooses *which* patches enter
pre-training at all, for a given budget. ``select(spec, tiles, budget, seed, cache)`` returns a
``Selection`` (sorted positions into ``tiles`` plus a manifest with the ids' hash); ``SAMPLERS``
lists the names a notebook parameter may hold.

Spec strings (one notebook parameter): ``name[:arg][(key=value,...)]``, joined by ``+`` into a
mixture with optional weights written ``weight*name``, e.g. ``uniform``, ``stratified:source``,
``geo_grid(cell_km=50)``, ``0.7*uniform+0.3*kcenter(max_cloud=0.1)``. The weight goes before a
``*`` rather than after a ``:`` because ``:`` already carries the column of ``stratified``.
Mixture components draw in the order written, each from the patches earlier ones left, with
budgets rounded by largest remainder (so they sum to the budget exactly).

Every sampler also takes the pool filters ``max_cloud``, ``max_nodata`` (fractions of a window's
pixels; unset = no filter) and ``unknown_cloud`` ("keep" or "drop" windows of sources without a
cloud mask); ``clear`` is ``uniform`` with both filters at 0 by default.

Features for diversity samplers and metrics: per band, the mean and log(std + 0.001) of each
window's reflectance, from summed-area tables of x and x^2 per scene (exact int64 sums), so a pool
of 100,000+ overlapping windows costs one pass over each scene, not one read per window. The std is
logged because it is heavy-tailed (edges of water, clouds): in linear units a few such windows
would dominate every distance. Features can instead be passed in (``features=``), e.g. embeddings
from an existing encoder. Distances use pool-standardised features.

Benchmark (not a test): ``python -m eolab.data.sampling --pool-stride 4 --budget 2000``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .bands import canonical_band_name
from .cache import SceneCache
from .representativeness import (
    PoolReference,
    equal_area_cells,
    one_blas_thread,
    standardize,
)

# ----------------------------------------------------------------------------------------------
# The pool: tiles plus lazily computed features and quality fractions
# ----------------------------------------------------------------------------------------------

DERIVED_COLUMNS = ("season", "month", "year", "lat_zone")
_NORTH_SEASONS = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
                  6: "summer", 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn"}
# Latitude bands as a crude climate proxy (tropics and polar circles at 23.44 and 66.56 degrees).
# It is not a Koppen zone: that needs temperature and precipitation the tiles do not carry.
_LAT_ZONES = ((23.44, "tropical"), (35.0, "subtropical"), (55.0, "temperate"), (66.56, "subpolar"), (90.1, "polar"))


def box_sums(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int) -> np.ndarray:
    """Sum of ``image`` (H, W) over each ``patch`` x ``patch`` window at (rows, cols), via a summed-area table.

    Integer images are summed in int64, so the sums are exact (uint16 squared over a 1068^2 scene
    stays below 2^53).
    """
    acc = np.int64 if np.issubdtype(image.dtype, np.integer) or image.dtype == bool else np.float64
    sat = np.zeros((image.shape[0] + 1, image.shape[1] + 1), acc)
    np.cumsum(image, axis=0, dtype=acc, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    r, c = rows.astype(np.int64), cols.astype(np.int64)
    return sat[r + patch, c + patch] - sat[r, c + patch] - sat[r + patch, c] + sat[r, c]


def _scene_dir(cache: SceneCache, scene: int) -> Path | None:
    """The scene's product in the data root it was cached from (None when that is gone)."""
    p = Path(cache.manifest.get("data_root", "")) / cache.scenes[scene]["id"]
    return p if p.exists() else None


def window_statistics(cache: SceneCache, tiles: pd.DataFrame, patch: int) -> dict[str, np.ndarray]:
    """Per-window spectral features and quality fractions, one pass per scene.

    Returns ``features`` (n, 2C) float32 (per band: mean reflectance, log(std + 0.001)),
    ``feature_names``, ``nodata_frac`` (pixels where every band is 0) and ``cloud_frac`` (pixels
    the cache marks invalid although they hold data, i.e. flagged by the source's cloud mask; NaN
    for scenes whose product has no cloud mask, which is "unknown", not "clear").
    """
    bands = cache.bands
    scale = float(cache.manifest.get("scale", 1e-4))
    n, area = len(tiles), float(patch * patch)
    feats = np.empty((n, 2 * len(bands)), np.float32)  # [means of all bands | log-stds of all bands]
    nodata = np.empty(n, np.float32)
    cloud = np.full(n, np.nan, np.float32)
    scene_of = tiles["scene"].to_numpy()
    rows_all, cols_all = tiles["row"].to_numpy(), tiles["col"].to_numpy()
    for s in np.unique(scene_of):
        at = np.flatnonzero(scene_of == s)
        r, c = rows_all[at], cols_all[at]
        arr = cache.array(int(s))  # (C, H, W) uint16 memmap; one band in memory at a time
        empty = None
        for b in range(len(bands)):
            x = np.asarray(arr[b])
            s1 = box_sums(x, r, c, patch).astype(np.float64)
            s2 = box_sums(x.astype(np.int64) ** 2, r, c, patch).astype(np.float64)
            mean = s1 / area
            var = np.clip(s2 / area - mean**2, 0.0, None)
            feats[at, b] = mean * scale
            feats[at, len(bands) + b] = np.log(np.sqrt(var) * scale + 1e-3)
            empty = (x == 0) if empty is None else (empty & (x == 0))
        nodata[at] = box_sums(empty, r, c, patch) / area
        product = _scene_dir(cache, int(s))
        if product is not None and product.is_dir() and (product / "cloud_mask.tif").exists():
            flagged = ~np.asarray(cache.valid(int(s)), bool) & ~empty  # invalid but with data = cloud
            cloud[at] = box_sums(flagged, r, c, patch) / area
    names = [f"{b}_mean" for b in bands] + [f"{b}_logstd" for b in bands]
    return {"features": feats, "feature_names": names, "nodata_frac": nodata, "cloud_frac": cloud}


def _infer_patch(tiles: pd.DataFrame) -> int:
    """The window size from tile ids ('<scene>@row,col+<patch>', as ``SceneCache.tiles`` writes them)."""
    sizes = tiles["id"].astype(str).str.rsplit("+", n=1).str[-1].unique()
    if len(sizes) != 1 or not str(sizes[0]).isdigit():
        raise ValueError(f"cannot infer the patch size from tile ids (found suffixes {list(sizes)[:5]}); pass patch=")
    return int(sizes[0])


class Pool:
    """Candidate patches: the tile index, plus features and quality computed once, on first use.

    ``features`` may be given (n, d), e.g. encoder embeddings; otherwise they are the spectral
    window statistics from ``cache``. Samplers and metrics then share one computation.
    """

    def __init__(self, tiles: pd.DataFrame, cache: SceneCache | None = None, features: np.ndarray | None = None,
                 patch: int | None = None):
        missing = [c for c in ("id",) if c not in tiles.columns]
        if missing:
            raise ValueError(f"tiles lack columns {missing}")
        if len(tiles) == 0:
            raise ValueError("the pool of candidate patches is empty")
        self.tiles = tiles.reset_index(drop=True)
        self.cache = cache
        self.patch = patch
        if features is not None:
            features = np.asarray(features, np.float32)
            if features.ndim != 2 or len(features) != len(tiles):
                raise ValueError(f"features must be (n_tiles, d) = ({len(tiles)}, d), got {features.shape}")
        self._given = features

    def __len__(self) -> int:
        return len(self.tiles)

    @cached_property
    def window_size(self) -> int:
        return self.patch or _infer_patch(self.tiles)

    @cached_property
    def ids(self) -> list[str]:
        return self.tiles["id"].astype(str).tolist()

    @cached_property
    def sha1(self) -> str:
        return hashlib.sha1("\n".join(self.ids).encode()).hexdigest()

    @cached_property
    def _stats(self) -> dict[str, np.ndarray]:
        needed = [c for c in ("scene", "row", "col") if c not in self.tiles.columns]
        if self.cache is None or needed:
            raise ValueError("spectral features and cloud/no-data fractions need the scene cache (cache=) and tiles "
                             f"with scene, row, col{f' (missing {needed})' if needed else ''}; or pass features=")
        return window_statistics(self.cache, self.tiles, self.window_size)

    @property
    def features(self) -> np.ndarray:
        return self._given if self._given is not None else self._stats["features"]

    @property
    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self._given.shape[1])] if self._given is not None else self._stats["feature_names"]

    @cached_property
    def z(self) -> np.ndarray:
        """Pool-standardised features (float32), the space every distance is measured in."""
        return standardize(self.features)

    @property
    def nodata_frac(self) -> np.ndarray:
        """Fraction of each window's pixels without data: the tiles' column if given, else from the cache."""
        return self._quality("nodata_frac")

    @property
    def cloud_frac(self) -> np.ndarray:
        """Fraction of each window's pixels flagged cloudy; NaN = the source has no cloud mask (unknown)."""
        return self._quality("cloud_frac")

    def _quality(self, name: str) -> np.ndarray:
        if name in self.tiles.columns:  # pools from a catalogue may carry their own quality flags
            return self.tiles[name].to_numpy(np.float32)
        return self._stats[name]

    @cached_property
    def lonlat(self) -> np.ndarray:
        missing = [c for c in ("lon", "lat") if c not in self.tiles.columns]
        if missing:
            raise ValueError(f"geographic sampling needs lon/lat columns; tiles lack {missing}")
        return self.tiles[["lon", "lat"]].to_numpy(np.float64)

    def column(self, name: str) -> np.ndarray:
        """Stratum labels (str) of a tiles column or a derived one; missing values become 'unknown'."""
        if name in self.tiles.columns:
            col = self.tiles[name]
            return np.where(col.isna(), "unknown", col.astype(str)).astype(str)
        if name not in DERIVED_COLUMNS:
            raise ValueError(f"no column {name!r} to stratify by; tiles have {list(self.tiles.columns)}, "
                             f"derivable: {list(DERIVED_COLUMNS)}")
        if name == "lat_zone":
            lat = np.abs(self.lonlat[:, 1])
            return np.array([z for _, z in _LAT_ZONES])[np.searchsorted([b for b, _ in _LAT_ZONES], lat, side="right")]
        if "time" not in self.tiles.columns:
            raise ValueError(f"column {name!r} is derived from 'time', which the tiles lack")
        t = pd.to_datetime(self.tiles["time"], errors="coerce")
        known = t.notna().to_numpy()
        if name == "year":
            values = t.dt.year.to_numpy(np.float64)
        else:
            values = t.dt.month.to_numpy(np.float64)
        out = np.full(len(t), "unknown", dtype=object)
        if name == "season":  # meteorological, shifted by six months in the southern hemisphere
            month = np.where(self.lonlat[:, 1] < 0, (values + 5) % 12 + 1, values)
            out[known] = [_NORTH_SEASONS[int(m)] for m in month[known]]
        else:
            out[known] = [f"{int(v):02d}" if name == "month" else str(int(v)) for v in values[known]]
        return out.astype(str)


# ----------------------------------------------------------------------------------------------
# Samplers: (pool, candidates, budget, rng, arg, **options) -> positions into the pool
# ----------------------------------------------------------------------------------------------


def _equal_quota(counts: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Water-filling: every stratum gets the same share, capped at its size; the rest goes to the larger ones.

    Strata that cannot fill their share give it up to the others, so the total is exactly ``budget``;
    when the share does not divide evenly, seeded random strata get one more.
    """
    quota = np.zeros(len(counts), np.int64)
    left, order = budget, np.argsort(counts, kind="stable")
    for pos, k in enumerate(order):
        share = left // (len(order) - pos)
        if counts[k] <= share:
            quota[k] = counts[k]
            left -= counts[k]
            continue
        rest = order[pos:]  # all of these hold more than the share
        quota[rest] = share
        quota[rng.choice(rest, left - share * len(rest), replace=False)] += 1
        break
    return quota


def _proportional_quota(counts: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Largest-remainder rounding of budget * count / total (ties broken at random, seeded)."""
    exact = budget * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    frac = exact - quota
    extra = np.lexsort((rng.random(len(counts)), -frac))[: budget - quota.sum()]
    quota[extra] += 1
    return quota


def allocate(labels: np.ndarray, budget: int, rng: np.random.Generator, alloc: str = "equal",
             priority: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``labels``) of a stratified sample: quotas per stratum, members by priority.

    Within a stratum, members are taken in increasing ``priority`` (default: a seeded random key,
    i.e. a simple random sample per stratum). Vectorised: one lexsort, no loop over members.
    """
    strata, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = (_equal_quota if alloc == "equal" else _proportional_quota)(counts, budget, rng)
    key = rng.random(len(labels)) if priority is None else priority
    order = np.lexsort((key, inv))  # grouped by stratum, then by key
    grouped = inv[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, np.arange(len(strata)))[grouped]  # rank within stratum
    return order[rank < quota[grouped]]


def uniform(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None) -> np.ndarray:
    """Simple random sample without replacement."""
    return rng.choice(cand, budget, replace=False)


def pandas_uniform(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.RandomState, arg: str | None) -> np.ndarray:
    """The draw eolab made before these samplers: ``tiles.sample(n=budget, random_state=seed)``.

    Kept so that runs recorded with that draw keep their exact patch sets. ``select`` hands this
    sampler ``np.random.RandomState(seed)``, which is what pandas builds from an integer seed; it
    reproduces pandas only over the whole pool, so filters and earlier mixture components are errors.
    """
    if len(cand) != len(pool):
        raise ValueError("sampler 'pandas_uniform' reproduces DataFrame.sample over the whole pool: it takes no "
                         "filters and must come first in a mixture")
    return rng.choice(len(pool), size=budget, replace=False)


def geo_grid(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None,
             cell_km: float = 100.0, alloc: str = "equal") -> np.ndarray:
    """Stratified by equal-area cells of ``cell_km`` (see ``equal_area_cells``): each place counts alike.

    With the default 100 km, a cell is about one scene location, so each location gets the same
    share however many overlapping scenes or windows it has; smaller cells balance within scenes.
    """
    lonlat = pool.lonlat[cand]
    cells = equal_area_cells(lonlat[:, 0], lonlat[:, 1], cell_km)
    return cand[allocate(cells, budget, rng, alloc)]


def stratified(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None,
               alloc: str = "equal") -> np.ndarray:
    """Stratified by a metadata column (``stratified:<column>``): equal or proportional quotas."""
    return cand[allocate(pool.column(arg)[cand], budget, rng, alloc)]


def greedy_kcenter(z: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Farthest-point (Gonzalez) greedy k-center: a 2-approximation of minimising the largest distance.

    O(budget x n x d) time, O(n) extra memory: one float32 vector of running minimum squared
    distances, updated with one matrix-vector product per pick (|x - c|^2 = |x|^2 + |c|^2 - 2 x.c).
    The first centre is a seeded random point. Known trait: it picks outliers early.
    """
    z = np.ascontiguousarray(z, np.float32)
    sq = (z * z).sum(1)
    mind = np.full(len(z), np.inf, np.float32)
    chosen = np.empty(budget, np.int64)
    buf = np.empty(len(z), np.float32)
    j = int(rng.integers(len(z)))
    with one_blas_thread():  # a memory-bound matrix-vector product per pick: threads only add waiting
        for t in range(budget):
            chosen[t] = j
            np.dot(z, z[j], out=buf)
            buf *= -2.0
            buf += sq
            buf += sq[j]
            np.minimum(mind, buf, out=mind)
            mind[j] = -1.0  # chosen: never again, even when every remaining distance is 0 (duplicates)
            j = int(np.argmax(mind))
    return chosen


def kcenter(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None) -> np.ndarray:
    """Greedy k-center on pool-standardised features: spread the sample over feature space."""
    return cand[greedy_kcenter(pool.z[cand], budget, rng)]


def kmeans(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None,
           max_k: int = 1024, fit_per_cluster: int = 10, iters: int = 10) -> np.ndarray:
    """k-means with k = min(budget, max_k); each cluster gets an equal (water-filled) quota.

    Within a cluster the member nearest its centroid comes first, then random members. With
    k = budget (budget <= max_k) that is one representative per centroid; a larger budget becomes
    cluster-stratified sampling, since k-means with tens of thousands of centres would cost more than
    the sample is worth. Empty or small clusters pass their quota on to the others.

    Cost: sklearn ``KMeans`` (k-means++, Lloyd, ``iters`` iterations) is fitted on a seeded
    subsample of ``fit_per_cluster * k`` candidates, then every candidate is assigned to its nearest
    centroid. Measured on 2 shared cores, this was 1.6 s for k = 1024, where ``MiniBatchKMeans`` over
    the full 150k pool took 10 s.
    """
    from sklearn.cluster import KMeans

    z = pool.z[cand]
    k = min(budget, max_k)
    fit = z[np.sort(rng.choice(len(z), min(len(z), fit_per_cluster * k), replace=False))]
    km = KMeans(n_clusters=k, n_init=1, max_iter=iters, random_state=int(rng.integers(2**31 - 1))).fit(fit)
    labels = km.predict(z)
    d2 = ((z - km.cluster_centers_[labels].astype(np.float32)) ** 2).sum(1)
    priority = rng.random(len(z)) + 1.0  # random members after the representative
    by_dist = np.lexsort((d2, labels))
    first = by_dist[np.r_[True, labels[by_dist][1:] != labels[by_dist][:-1]]]  # nearest member of each cluster
    priority[first] = 0.0
    return cand[allocate(labels, budget, rng, "equal", priority)]


# --- torchgeo path: windows enumerated by torchgeo's geo samplers over the scene rasters ---------


def _scene_raster(cache: SceneCache, scene: int) -> Path:
    """The GeoTIFF on the scene's 10 m grid: the B02 file of a one-file-per-band product, or the stacked file."""
    product = _scene_dir(cache, scene)
    if product is None:
        raise ValueError(f"scene {cache.scenes[scene]['id']!r} is not under data root {cache.manifest.get('data_root')}; "
                         "the torchgeo samplers read the source rasters")
    if product.is_file():
        return product
    for f in sorted(product.glob("B*.tif")):
        try:
            if canonical_band_name(f.stem) == "B02":
                return f
        except KeyError:
            continue
    raise ValueError(f"{product}: no B02 GeoTIFF for the torchgeo samplers")


def _windows_to_tiles(boxes: list, scene: dict, rows: np.ndarray, cols: np.ndarray, patch: int) -> np.ndarray:
    """Positions (into rows/cols) of the pool tiles nearest to torchgeo's boxes; -1 for boxes not used.

    A box's top-left corner (xmin, ymax) maps to pixel (col, row) through the scene's affine. Boxes
    that reach past the raster are dropped: torchgeo's grid adds a last chip per row and column that
    overhangs the edge (and would pad it with no-data), which snapped back inside would overlap its
    neighbour. The pool tiles sit on their own stride lattice (and some were filtered), so each box
    snaps to the nearest tile, at most patch/2 px away; when the pool stride does not divide the
    box offsets, a snap can shift a window by up to stride/2 px.
    """
    from scipy.spatial import cKDTree

    a, _, c0, _, e, f0 = scene["transform"]
    h, w = scene["shape"][1:]
    corner = np.array([[(b[0].start - c0) / a, (b[1].stop - f0) / e] for b in boxes])  # (n_boxes, 2): col, row
    tol = 1e-6 * max(h, w)
    inside = (corner >= -tol).all(1) & (corner[:, 0] <= w - patch + tol) & (corner[:, 1] <= h - patch + tol)
    dist, nearest = cKDTree(np.c_[cols, rows]).query(corner)
    return np.where(inside & (dist <= patch / 2), nearest, -1)


def _torchgeo(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, kind: str, grid_stride: int) -> np.ndarray:
    import torch
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    if pool.cache is None:
        raise ValueError(f"sampler 'torchgeo_{kind}' needs the scene cache (cache=)")
    patch = pool.window_size
    scene = pool.tiles["scene"].to_numpy()[cand]
    rows, cols = pool.tiles["row"].to_numpy()[cand], pool.tiles["col"].to_numpy()[cand]
    scenes, counts = np.unique(scene, return_counts=True)
    # Random: budget shared over scenes in proportion to their candidate windows (uniform over
    # windows). torchgeo would weight by area in CRS units, which differ between UTM and degrees.
    quota = _proportional_quota(counts, budget, rng) if kind == "random" else None
    picked: list[np.ndarray] = []
    for k, s in enumerate(scenes):
        members = np.flatnonzero(scene == s)
        ds = RasterDataset(paths=[str(_scene_raster(pool.cache, int(s)))])
        meta = pool.cache.scenes[int(s)]
        if kind == "grid":
            boxes = list(GridGeoSampler(ds, size=patch, stride=grid_stride))
            hit = _windows_to_tiles(boxes, meta, rows[members], cols[members], patch)
            picked.append(members[np.unique(hit[hit >= 0])])
            continue
        need, got = int(quota[k]), np.empty(0, np.int64)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        for _ in range(20):  # draw more boxes until the scene's quota of distinct windows is met
            if len(got) >= need:
                break
            boxes = list(RandomGeoSampler(ds, size=patch, length=2 * (need - len(got)) + 8, generator=gen))
            hit = _windows_to_tiles(boxes, meta, rows[members], cols[members], patch)
            got = np.unique(np.r_[got, hit[hit >= 0]])
        if len(got) < need:
            raise ValueError(f"torchgeo_random found only {len(got)} distinct windows of {need} in scene {s}")
        picked.append(members[rng.choice(got, need, replace=False)])
    found = np.concatenate(picked)
    if len(found) < budget:
        raise ValueError(f"sampler 'torchgeo_grid' found {len(found)} grid windows (grid_stride={grid_stride}), "
                         f"fewer than the budget {budget}; lower grid_stride")
    return cand[found if kind == "random" else rng.choice(found, budget, replace=False)]


def torchgeo_grid(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None,
                  grid_stride: int = 0) -> np.ndarray:
    """torchgeo ``GridGeoSampler`` windows over each scene raster (default stride = patch: no overlap), subsampled."""
    return _torchgeo(pool, cand, budget, rng, "grid", grid_stride or pool.window_size)


def torchgeo_random(pool: Pool, cand: np.ndarray, budget: int, rng: np.random.Generator, arg: str | None) -> np.ndarray:
    """torchgeo ``RandomGeoSampler`` boxes per scene raster, snapped to the nearest pool window."""
    return _torchgeo(pool, cand, budget, rng, "random", 0)


# ----------------------------------------------------------------------------------------------
# Registry, spec parsing, filters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    kind: type
    default: object
    check: Callable[[object], bool] = lambda v: True
    rule: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplerDef:
    fn: Callable[..., np.ndarray]
    options: dict[str, Option] = field(default_factory=dict)
    arg: str | None = None  # name of the required ':arg' (stratified: the column)


_FRACTION = {"check": lambda v: v is None or 0.0 <= v <= 1.0, "rule": "a fraction in [0, 1]"}
FILTER_OPTIONS = {
    "max_cloud": Option(float, None, **_FRACTION),
    "max_nodata": Option(float, None, **_FRACTION),
    "unknown_cloud": Option(str, "keep", choices=("keep", "drop")),
}
_ALLOC = Option(str, "equal", choices=("equal", "proportional"))
SAMPLERS: dict[str, SamplerDef] = {
    "uniform": SamplerDef(uniform),
    "pandas_uniform": SamplerDef(pandas_uniform),
    "clear": SamplerDef(uniform),  # filter defaults below
    "geo_grid": SamplerDef(geo_grid, {"cell_km": Option(float, 100.0, lambda v: v > 0, "> 0"), "alloc": _ALLOC}),
    "stratified": SamplerDef(stratified, {"alloc": _ALLOC}, arg="column"),
    "kcenter": SamplerDef(kcenter),
    "kmeans": SamplerDef(kmeans, {"max_k": Option(int, 1024, lambda v: v >= 1, ">= 1"),
                                  "fit_per_cluster": Option(int, 10, lambda v: v >= 1, ">= 1"),
                                  "iters": Option(int, 10, lambda v: v >= 1, ">= 1")}),
    "torchgeo_grid": SamplerDef(torchgeo_grid, {"grid_stride": Option(int, 0, lambda v: v >= 0, ">= 0 (0 = patch)")}),
    "torchgeo_random": SamplerDef(torchgeo_random),
}
_DEFAULTS = {"clear": {"max_cloud": 0.0, "max_nodata": 0.0}}


@dataclass
class Component:
    name: str
    arg: str | None
    weight: float
    options: dict[str, object]

    def spec(self, with_weight: bool) -> str:
        text = self.name + (f":{self.arg}" if self.arg else "")
        if self.options:
            text += "(" + ",".join(f"{k}={v}" for k, v in sorted(self.options.items())) + ")"
        return f"{self.weight:g}*{text}" if with_weight else text


_TERM = re.compile(r"^(?:(?P<w>\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?(?P<name>[A-Za-z_]\w*)(?::(?P<arg>[\w.-]+))?"
                   r"(?:\((?P<opts>[^()]*)\))?$")


def _split_terms(spec: str) -> list[str]:
    """Split on '+' outside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [*terms, cur]


def _coerce(value: object, opt: Option, where: str) -> object:
    if isinstance(value, np.generic):  # numpy scalars from a notebook: np.int64(5) is not an int
        value = value.item()
    try:
        if isinstance(value, str) and opt.kind is not str:
            value = opt.kind(float(value)) if opt.kind is int and re.fullmatch(r"\d+(\.0*)?", value) else opt.kind(value)
        elif opt.kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif opt.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, opt.kind) or isinstance(value, bool):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be {opt.kind.__name__}, got {value!r}") from None
    if opt.choices and value not in opt.choices:
        raise ValueError(f"{where} must be one of {list(opt.choices)}, got {value!r}")
    if not opt.check(value):
        raise ValueError(f"{where} must be {opt.rule}, got {value!r}")
    return value


def parse_spec(spec: str, options: dict | None = None, param: str = "sampling") -> list[Component]:
    """Parse and validate a spec string into components; errors name the parameter and the part at fault.

    ``options`` (keyword options of ``select``) apply to every component; options written in the
    spec override them.
    """
    where = f"parameter {param!r} = {spec!r}"
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{where}: empty; name a sampler, one of {sorted(SAMPLERS)}")
    comps = []
    for raw in _split_terms(spec.replace(" ", "")):
        m = _TERM.match(raw)
        if not m:
            raise ValueError(f"{where}: cannot read {raw!r}; write name[:arg][(key=value,...)], joined by '+', "
                             "weights as 0.5*name")
        name, arg = m["name"], m["arg"]
        if name not in SAMPLERS:
            raise ValueError(f"{where}: unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
        sdef = SAMPLERS[name]
        if sdef.arg and not arg:
            raise ValueError(f"{where}: sampler {name!r} needs a {sdef.arg}, e.g. {name}:source")
        if arg and not sdef.arg:
            raise ValueError(f"{where}: sampler {name!r} takes no ':{arg}'")
        given = dict(options or {})
        for item in filter(None, (m["opts"] or "").split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"{where}: option {item!r} of {name!r} must be key=value")
            given[key] = value
        allowed = {**FILTER_OPTIONS, **sdef.options}
        opts = {}
        for key, value in given.items():
            if key not in allowed:
                raise ValueError(f"{where}: sampler {name!r} has no option {key!r}; options: {sorted(allowed)}")
            opts[key] = _coerce(value, allowed[key], f"{where}: option {key!r} of {name!r}")
        weight = float(m["w"]) if m["w"] else 1.0
        if not weight > 0:
            raise ValueError(f"{where}: weight of {name!r} must be > 0, got {weight}")
        comps.append(Component(name, arg, weight, {**_DEFAULTS.get(name, {}), **opts}))
    return comps


def apply_filters(pool: Pool, cand: np.ndarray, max_cloud: float | None = None, max_nodata: float | None = None,
                  unknown_cloud: str = "keep") -> np.ndarray:
    """Candidates whose windows pass the cloud and no-data limits (fractions of the window's pixels)."""
    keep = np.ones(len(cand), bool)
    if max_nodata is not None:
        keep &= pool.nodata_frac[cand] <= max_nodata
    if max_cloud is not None or unknown_cloud == "drop":
        cloud = pool.cloud_frac[cand]
        known = np.isfinite(cloud)
        limit = 1.0 if max_cloud is None else max_cloud
        keep &= np.where(known, cloud <= limit, unknown_cloud == "keep")
    return cand[keep]


def _split_budget(weights: list[float], budget: int) -> list[int]:
    """Largest-remainder rounding of the normalised weights times the budget (ties: first written wins)."""
    w = np.asarray(weights, np.float64) / sum(weights)
    exact = w * budget
    n = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - n), kind="stable")
    n[order[: budget - n.sum()]] += 1
    return n.tolist()


# ----------------------------------------------------------------------------------------------
# select(): the one entry point
# ----------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """A chosen subset: ``indices`` (sorted positions into the tiles), its ids, and its manifest."""

    indices: np.ndarray
    ids: list[str]
    manifest: dict

    def write(self, path: str | Path) -> Path:
        """Write the manifest with the full id list as JSON (what a run record points to)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.manifest, "ids": self.ids}, indent=1))
        return path


def select(spec: str, tiles: pd.DataFrame | Pool, budget: int, seed: int = 0, cache: SceneCache | None = None,
           features: np.ndarray | None = None, patch: int | None = None, param: str = "sampling",
           budget_param: str = "budget", **options) -> Selection:
    """Choose ``budget`` distinct patches of ``tiles`` with the sampler(s) named by ``spec``.

    ``tiles`` is ``SceneCache.tiles()`` output (or a ``Pool`` built from it, to reuse features
    between calls); ``cache`` is needed by samplers and filters that read pixels (kcenter, kmeans,
    clear, max_cloud/max_nodata, torchgeo_*) unless ``features`` are given. ``param`` and
    ``budget_param`` are the notebook parameter names used in error messages. Deterministic in
    ``seed``: component j draws from ``np.random.default_rng([seed, j])``.
    """
    if isinstance(tiles, Pool) and (cache is not None or features is not None or patch is not None):
        raise ValueError("pass cache/features/patch when building the Pool, not again to select()")
    pool = tiles if isinstance(tiles, Pool) else Pool(tiles, cache, features, patch)
    comps = parse_spec(spec, options, param)
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"parameter {budget_param!r} must be a positive integer, got {budget!r}")
    if budget > len(pool):
        raise ValueError(f"parameter {budget_param!r} = {budget} exceeds the {len(pool)} candidate patches")
    sizes = _split_budget([c.weight for c in comps], int(budget))
    taken = np.zeros(len(pool), bool)
    parts, records = [], []
    for j, (comp, n) in enumerate(zip(comps, sizes, strict=True)):
        rng = np.random.RandomState(seed) if comp.name == "pandas_uniform" else np.random.default_rng([seed, j])
        filters = {k: v for k, v in comp.options.items() if k in FILTER_OPTIONS}
        own = {k: v for k, v in comp.options.items() if k not in FILTER_OPTIONS}
        cand = apply_filters(pool, np.flatnonzero(~taken), **filters)
        if n > len(cand):
            raise ValueError(f"parameter {param!r} = {spec!r}: {comp.spec(False)!r} needs {n} patches but only "
                             f"{len(cand)} remain after its filters and earlier components")
        chosen = SAMPLERS[comp.name].fn(pool, cand, n, rng, comp.arg, **own) if n else np.empty(0, np.int64)
        chosen = np.asarray(chosen, np.int64)
        if len(chosen) != n or len(np.unique(chosen)) != n or taken[chosen].any():  # a sampler bug, never data
            raise RuntimeError(f"sampler {comp.name!r} returned {len(np.unique(chosen))} distinct new patches, not {n}")
        taken[chosen] = True
        parts.append(chosen)
        records.append({"sampler": comp.name, "arg": comp.arg, "weight": comp.weight, "options": comp.options,
                        "n": n, "n_candidates": len(cand)})
    indices = np.sort(np.concatenate(parts))
    ids = [pool.ids[i] for i in indices]
    manifest = {
        "sampler": "+".join(c.spec(len(comps) > 1) for c in comps), "components": records,
        "budget": int(budget), "seed": int(seed), "n_pool": len(pool), "pool_sha1": pool.sha1,
        "ids_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
        "features": "given" if pool._given is not None else "spectral window statistics (mean, log std per band)",
    }
    return Selection(indices, ids, manifest)


def pool_reference(pool: Pool, seed: int = 0, ref_size: int = 20_000, geo_cell_km: float = 10.0) -> PoolReference:
    """The metrics' reference for ``pool``: its features, lon/lat, source and scene strata, windows, quality."""
    t = pool.tiles
    strata = {c: pool.column(c) for c in ("source", "scene") if c in t.columns}
    windows = None
    if {"scene", "row", "col"} <= set(t.columns):
        windows = (t["scene"].to_numpy(), t["row"].to_numpy(), t["col"].to_numpy(), pool.window_size)
    quality = {}
    for name in ("cloud", "nodata"):
        if pool.cache is not None or f"{name}_frac" in t.columns:
            quality[name] = pool._quality(f"{name}_frac")
    lonlat = pool.lonlat if {"lon", "lat"} <= set(t.columns) else None
    return PoolReference(pool.features, lonlat, strata, windows, quality, geo_cell_km=geo_cell_km,
                         ref_size=ref_size, seed=seed)
