"""Pack pre-training patches into WebDataset shards, with a manifest: ``python -m eolab data pack``.

The sources go through the scene cache (``build_scene_cache``) and its tile index, so the validity
rules (>= 95% valid pixels, bands without data leave a scene out) are the cache's own; a sampler
(``eolab.data.sampling.select``) decides which windows go in when ``n`` is set. Each source is one
*part* of the corpus, keyed by what decides its content (source, cache key, patch, stride, bands,
sampler, budget, seed, shard size), so packing a new source next to old ones writes only its shards.

One shard = one tar file (WebDataset's layout: ``<key>.image.npy`` C x H x W, the scene cache's values
as they are: uint16 digital numbers, or float32 for other units such as SAR in dB; and
``<key>.meta.json`` per patch) plus a sidecar ``<shard>.json`` with the shard's sha256, its
patches' records (id, source, scene, row, col, lon/lat, footprint, time) and the exact per-band
sums of its pixels. The tar is written to a temporary name and renamed, then the sidecar is
written atomically: a shard is finished exactly when its sidecar exists, so a killed pack resumes
without redoing finished shards and never trusts a half-written one.

Statistics are computed in the same single pass that writes the shards: per band the count, the
sum and the sum of squares as exact integers (Python ints across shards and parts), so mean and
variance are the exact two-pass values, rounded once to float. For uint16 these are the sums of the
digital numbers; for float32 they are fixed-point sums (``float_sums``: each value is an integer
mantissa times a power of two, summed per exponent), with NaN and the cache's no-data pixels left
out and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..io import exclusive_lock, write_json_atomic
from .cache import SceneCache, build_scene_cache

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 512  # patches per shard: 64x64x12 uint16 patches make ~50 MB shards
UINT16_MAX = 65535


class ShardError(ValueError):
    """A packed corpus that cannot be trusted or read: the message names the shard or location."""


@dataclass(frozen=True)
class PackOptions:
    patch: int = 64
    stride: int = 32
    bands: tuple[str, ...] | None = None  # default: every band of the scene cache
    sampling: str = "uniform"
    n: int = 0  # patches per source chosen by ``sampling``; 0 = every valid window
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    repeat: int = 1  # scale tests only: every chosen window packed ``repeat`` times (the manifest says so)


# ----------------------------------------------------------------------------------------------
# Exact per-band statistics, mergeable across shards and parts
# ----------------------------------------------------------------------------------------------


def integer_sums(dn: np.ndarray) -> dict[str, list[int]]:
    """Count, sum and sum of squares per band of uint16 patches (n, C, H, W), as exact ints."""
    if dn.dtype != np.uint16:
        raise TypeError(f"exact integer statistics need uint16 digital numbers, got {dn.dtype}")
    flat = dn.transpose(1, 0, 2, 3).reshape(dn.shape[1], -1)  # (C, n*H*W)
    if flat.shape[1] * UINT16_MAX**2 >= 2**63:  # int64 sums of squares would overflow
        raise ValueError(f"{flat.shape[1]} pixels per band in one shard overflow int64 sums; use smaller shards")
    sq = flat.astype(np.int64)
    return {"count": [flat.shape[1]] * flat.shape[0], "sum": [int(v) for v in sq.sum(1)],
            "sumsq": [int(v) for v in (sq * sq).sum(1)]}


# A finite float32 is m * 2**(e - 24) with an integer mantissa |m| < 2**24 (np.frexp: x = f * 2**e,
# 0.5 <= |f| < 1) and -148 <= e <= 128 (subnormals included). The smallest power of two any of them is a
# multiple of is 2**FLOAT_SUM_EXP, so sum(x) * 2**-FLOAT_SUM_EXP and sum(x**2) * 2**(-2 * FLOAT_SUM_EXP)
# are integers: exact fixed-point sums, merged by adding Python ints like the uint16 sums.
FLOAT_MANT_BITS = 24
FLOAT_EMIN, FLOAT_EMAX = -148, 128
FLOAT_SUM_EXP = FLOAT_EMIN - FLOAT_MANT_BITS  # -172
_HALF = 12  # m = hi * 2**12 + lo: hi, lo and their products stay below 2**24 in magnitude
_CHUNK = 1 << 24  # values per bincount: float64 partial sums of integers below 2**24 * 2**24 < 2**53 stay exact


def _float_band_sums(x: np.ndarray) -> tuple[int, int]:
    """Exact fixed-point (sum * 2**172, sum of squares * 2**344) of finite float32 values ``x`` (1-D)."""
    total, total_sq = 0, 0
    for start in range(0, x.size, _CHUNK):
        f, e = np.frexp(x[start : start + _CHUNK])  # x = f * 2**e, f float32 with 24 significant bits
        m = (f * np.float32(2**FLOAT_MANT_BITS)).astype(np.int64)  # exact: a power-of-two scaling
        hi, lo = m >> _HALF, m & ((1 << _HALF) - 1)  # m = hi * 4096 + lo (floor division: holds for m < 0)
        key = (e - FLOAT_EMIN).astype(np.intp)  # one bucket per exponent; zeros (m = 0) add nothing
        nb = FLOAT_EMAX - FLOAT_EMIN + 1
        # per-exponent sums of integers below 2**24 in magnitude, at most 2**24 of them: exact in float64
        s_m = np.bincount(key, weights=m.astype(np.float64), minlength=nb)
        s_hh = np.bincount(key, weights=(hi * hi).astype(np.float64), minlength=nb)
        s_hl = np.bincount(key, weights=(hi * lo).astype(np.float64), minlength=nb)
        s_ll = np.bincount(key, weights=(lo * lo).astype(np.float64), minlength=nb)
        for k in np.flatnonzero(np.bincount(key, minlength=nb)):
            shift = int(k)  # e - 24 - FLOAT_SUM_EXP = (e - FLOAT_EMIN): x = m * 2**(FLOAT_SUM_EXP + shift)
            sum_m = int(s_m[k])
            sum_m2 = (int(s_hh[k]) << (2 * _HALF)) + (int(s_hl[k]) << (_HALF + 1)) + int(s_ll[k])
            total += sum_m << shift
            total_sq += sum_m2 << (2 * shift)
    return total, total_sq


def float_sums(x: np.ndarray, valid: np.ndarray | None = None) -> dict[str, list[int]]:
    """Count, no-data count, and exact fixed-point sum and sum of squares per band of float32 patches
    (n, C, H, W); ``valid`` (n, H, W) marks the pixels that count (the scene cache's validity mask).

    NaN, infinities and pixels outside ``valid`` are no data: left out of the sums and counted in
    ``nodata``. ``sum`` is sum(x) * 2**-``sum_exp`` and ``sumsq`` is sum(x**2) * 2**-``sumsq_exp``,
    both exact Python ints (``merge_sums`` adds them like the uint16 sums).
    """
    if x.dtype != np.float32:
        raise TypeError(f"exact float statistics need float32 values, got {x.dtype}")
    out: dict[str, list[int]] = {"count": [], "nodata": [], "sum": [], "sumsq": []}
    for c in range(x.shape[1]):
        band = x[:, c]  # (n, H, W)
        keep = np.isfinite(band) if valid is None else np.isfinite(band) & valid
        s, ss = _float_band_sums(band[keep])
        out["count"].append(int(keep.sum()))
        out["nodata"].append(int(keep.size - keep.sum()))
        out["sum"].append(s)
        out["sumsq"].append(ss)
    return {**out, "sum_exp": FLOAT_SUM_EXP, "sumsq_exp": 2 * FLOAT_SUM_EXP}


def merge_sums(parts: list[dict]) -> dict:
    """Add the exact sums of several shards (Python ints do not overflow). Float sums carry their
    fixed-point exponents (all shards the same), uint16 sums none (exponent 0)."""
    exps = {(p.get("sum_exp", 0), p.get("sumsq_exp", 0)) for p in parts}
    if len(exps) > 1:
        raise ShardError(f"shards of one corpus mix fixed-point exponents {sorted(exps)} (integer and float sums)")
    keys = ("count", "sum", "sumsq") + (("nodata",) if all("nodata" in p for p in parts) else ())
    out: dict = {k: [sum(vals) for vals in zip(*(p[k] for p in parts), strict=True)] for k in keys}
    if exps != {(0, 0)}:
        out["sum_exp"], out["sumsq_exp"] = exps.pop()
    return out


def band_statistics(sums: dict, bands: tuple[str, ...], scale: float) -> dict[str, dict]:
    """Mean and (population) std per band name, in the unit of ``scale`` x stored value.

    Mean = S/n and variance = (n*SS - S^2)/n^2 are computed as exact fractions (S and SS with their
    fixed-point exponents for float sums), then rounded to float once: the same numbers a two-pass
    computation over every valid pixel gives, up to that rounding.
    """
    e1, e2 = Fraction(2) ** sums.get("sum_exp", 0), Fraction(2) ** sums.get("sumsq_exp", 0)
    out = {}
    for i, band in enumerate(bands):
        n, s, ss = sums["count"][i], sums["sum"][i], sums["sumsq"][i]
        if n == 0:
            raise ShardError(f"band {band}: no valid values in the packed patches (all no data)")
        mean = Fraction(s, n) * e1
        var = (n * ss * e2 - (s * e1) ** 2) / (n * n)
        stats = {"mean": float(mean) * scale, "std": float(var) ** 0.5 * scale, "count": n}
        if "sum_exp" in sums:  # float values: how many were no data (the exact sums stay in the sidecars)
            stats["nodata"] = sums["nodata"][i]
        else:
            stats |= {"sum_dn": s, "sumsq_dn": ss}
        out[band] = stats
    return out


# ----------------------------------------------------------------------------------------------
# Writing one shard (in a worker process)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    out: str  # corpus folder
    name: str  # shard file name (…tar)
    cache_path: str
    channels: tuple[int, ...]  # cache channel of each packed band, by name
    patch: int
    rows: tuple[dict, ...]  # the patches' records (id, source, scene, scene_index, row, col, lon, lat, time, ...)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_shard(job: ShardJob) -> dict:
    """Write one shard (tar, then its sidecar); returns the sidecar. Runs in a worker process."""
    import webdataset as wds

    out = Path(job.out)
    cache = SceneCache(Path(job.cache_path), json.loads((Path(job.cache_path) / "manifest.json").read_text()))
    arrays: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    p = job.patch
    dtype = cache.array(job.rows[0]["scene_index"]).dtype
    dn = np.empty((len(job.rows), len(job.channels), p, p), dtype)  # (n, C, H, W) as the cache holds them
    valid = np.empty((len(job.rows), p, p), bool) if dtype == np.float32 else None  # (n, H, W)
    for k, rec in enumerate(job.rows):
        s = rec["scene_index"]
        if s not in arrays:
            arrays[s] = cache.array(s)
        window = np.s_[rec["row"] : rec["row"] + p, rec["col"] : rec["col"] + p]
        dn[k] = arrays[s][(list(job.channels), *window)]
        if valid is not None:  # the cache stores its no-data pixels of float scenes as 0: its mask says which
            if s not in masks:
                masks[s] = cache.valid(s)
            valid[k] = masks[s][window]
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{job.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with wds.TarWriter(tmp) as sink:
            for k, rec in enumerate(job.rows):
                buf = io.BytesIO()
                np.save(buf, dn[k])
                sink.write({"__key__": f"{k:06d}", "image.npy": buf.getvalue(), "meta.json": json.dumps(rec).encode()})
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / job.name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sidecar = {"format": SHARD_FORMAT, "shard": job.name, "n": len(job.rows), "sha256": _sha256(out / job.name),
               "bytes": (out / job.name).stat().st_size, "sums": integer_sums(dn) if valid is None else float_sums(dn, valid), "patches": list(job.rows)}
    write_json_atomic(out / f"{job.name}.json", sidecar)  # written last: the shard is finished now
    return sidecar


# ----------------------------------------------------------------------------------------------
# The packer
# ----------------------------------------------------------------------------------------------


def _footprint(sc: dict, row: int, col: int, patch: int) -> list[float]:
    """Lon/lat bounds (west, south, east, north) of a window of a scene's 10 m grid."""
    from rasterio.warp import transform as warp_transform

    a, b, c0, d, e, f0 = sc["transform"]
    xs = [c0 + a * x + b * y for x, y in ((col, row), (col + patch, row), (col, row + patch), (col + patch, row + patch))]
    ys = [f0 + d * x + e * y for x, y in ((col, row), (col + patch, row), (col, row + patch), (col + patch, row + patch))]
    lon, lat = warp_transform(sc["crs"], "EPSG:4326", xs, ys)
    return [min(lon), min(lat), max(lon), max(lat)]


def _part_key(source: str, cache: SceneCache, bands: tuple[str, ...], opts: PackOptions) -> str:
    what = [SHARD_FORMAT, source, cache.manifest["key"], opts.patch, opts.stride, list(bands),
            opts.sampling if opts.n else "all", opts.n, opts.seed, opts.shard_size, opts.repeat]
    return hashlib.sha1(json.dumps(what).encode()).hexdigest()[:10]


def _plan_part(source: str, root, opts: PackOptions) -> tuple[dict, list[ShardJob]]:
    """The part of one source: its patches (tiled, sampled), cut into shard jobs."""
    from .sampling import Pool, select
    from .sources import source_bands

    # bands by name: the ones asked for, else every band the source's card gives
    cache = build_scene_cache(root, (source,), bands=tuple(opts.bands or source_bands(source)))
    bands = tuple(opts.bands or cache.bands)
    missing = [b for b in bands if b not in cache.bands]
    if missing:
        raise ValueError(f"source {source!r}: bands {missing} are not in its scenes (they have {list(cache.bands)})")
    dtype = cache.array(0).dtype
    if dtype not in (np.uint16, np.float32):  # the two forms the scene cache writes, each with exact statistics
        raise ValueError(f"source {source!r}: its cache holds {dtype} {cache.manifest.get('unit')} values; "
                         "the packer packs uint16 digital numbers or float32 values")
    tiles = cache.tiles(patch=opts.patch, stride=opts.stride, bands=bands)
    selection = None
    if opts.n:
        selection = select(opts.sampling, Pool(tiles, cache, patch=opts.patch), opts.n, seed=opts.seed,
                           param="--sampling", budget_param="--n")
        tiles = tiles.iloc[selection.indices].reset_index(drop=True)
    key = _part_key(source, cache, bands, opts)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem if source.endswith((".yaml", ".yml")) else source)
    records = []
    for rep in range(opts.repeat):
        for t in tiles.itertuples(index=False):
            sc = cache.scenes[int(t.scene)]
            records.append({
                "id": t.id if opts.repeat == 1 else f"{t.id}#{rep}", "source": t.source, "scene": sc["id"],
                "scene_index": int(t.scene), "row": int(t.row), "col": int(t.col), "lon": float(t.lon), "lat": float(t.lat),
                "time": t.time, "valid_frac": float(t.valid_frac),
            })
    footprints: dict[tuple[int, int, int], list[float]] = {}
    for rec in records:  # (repeats share their window's footprint)
        k = (rec["scene_index"], rec["row"], rec["col"])
        if k not in footprints:
            footprints[k] = _footprint(cache.scenes[k[0]], k[1], k[2], opts.patch)
        rec["footprint"] = footprints[k]
    channels = tuple(cache.bands.index(b) for b in bands)
    jobs = []
    for i, start in enumerate(range(0, len(records), opts.shard_size)):
        rows = tuple(records[start : start + opts.shard_size])
        jobs.append(ShardJob("", f"{label}-{key}-{i:05d}.tar", str(cache.path), channels, opts.patch, rows))
    part = {"source": source, "key": key, "cache_key": cache.manifest["key"], "bands": list(bands),
            "unit": cache.manifest.get("unit", "reflectance"), "scale": cache.manifest.get("scale", 1e-4),
            "dtype": str(dtype),
            "sensor": "/".join(sorted({" ".join(str(v) for v in (sc.get("sensor", "sentinel2"), sc.get("level")) if v)
                                       for sc in cache.scenes})),  # the card's sensor and product level
            "patch": opts.patch, "stride": opts.stride, "n_scenes": len(cache.scenes), "n_windows": len(tiles),
            "sampling": selection.manifest if selection is not None else None, "repeat": opts.repeat,
            "shards": [j.name for j in jobs], "n": len(records)}
    return part, jobs


def _shard_done(out: Path, name: str) -> dict | None:
    """The sidecar of a finished shard (its tar present with the recorded size), else None."""
    side, tar = out / f"{name}.json", out / name
    if not side.is_file() or not tar.is_file():
        return None
    sidecar = json.loads(side.read_text())
    return sidecar if sidecar.get("bytes") == tar.stat().st_size else None


def pack(sources: tuple[str, ...], out: str | Path, root=None, opts: PackOptions = PackOptions(), workers: int = 2,
         progress=print) -> dict:
    """Pack ``sources`` into shards under ``out``; returns the corpus manifest (also ``out/manifest.json``).

    Finished shards (their sidecar exists) are kept as they are; parts already in the manifest and
    not named now stay in it, so packing one more source adds its shards to the corpus. One packer
    at a time per folder (a lock): it removes what a killed one left half-written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.shard_size < 1 or opts.repeat < 1 or opts.n < 0 or workers < 1:
        raise ValueError(f"shard size, --repeat and --workers must be >= 1 and --n >= 0, got {opts}")
    with exclusive_lock(out / ".pack.lock"):
        for stale in out.glob(".*.tmp"):  # temporary files of a killed packer: never a finished shard
            stale.unlink(missing_ok=True)
        return _pack_locked(sources, out, root, opts, workers, progress)


def _pack_locked(sources: tuple[str, ...], out: Path, root, opts: PackOptions, workers: int, progress) -> dict:
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {"parts": []}
    planned = [_plan_part(s, root, opts) for s in sources]  # every source checked before any shard is written
    parts = {p["source"]: p for p in old["parts"]}
    for part, _ in planned:
        parts[part["source"]] = part
    first = next(iter(parts.values()))
    for p in parts.values():  # one corpus, one band order, unit, value type and patch size
        if _part_form(p) != _part_form(first):
            raise ValueError(f"{out}: part {p['source']!r} has bands {p['bands']} ({p['unit']}, {_dtype(p)}, {p['patch']} px) "
                             f"but part {first['source']!r} has {first['bands']} ({first['unit']}, {_dtype(first)}, "
                             f"{first['patch']} px)")
    jobs = [ShardJob(str(out), j.name, j.cache_path, j.channels, j.patch, j.rows) for _, js in planned for j in js]
    todo = [j for j in jobs if _shard_done(out, j.name) is None]
    progress(f"{out}: {len(jobs)} shard(s) of {sum(p['n'] for p, _ in planned)} patches from {', '.join(sources)}; "
             f"{len(jobs) - len(todo)} already packed, {len(todo)} to write with {workers} process(es)")
    if todo:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for k, sidecar in enumerate(pool.map(write_shard, todo), 1):
                if k % max(1, len(todo) // 10) == 0 or k == len(todo):
                    progress(f"  {k}/{len(todo)} shards written (last {sidecar['shard']}, {sidecar['n']} patches)")
    return write_manifest(out, list(parts.values()))


def _dtype(part: dict) -> str:
    return part.get("dtype", "uint16")  # parts packed before float sources were: uint16


def _part_form(part: dict) -> tuple:
    return part["bands"], part["unit"], _dtype(part), part["patch"]


def write_manifest(out: Path, parts: list[dict]) -> dict:
    """The corpus manifest from the parts and their finished shards' sidecars (statistics merged exactly)."""
    shards, sums = [], []
    for part in parts:
        part_sums = []
        for name in part["shards"]:
            sidecar = _shard_done(out, name)
            if sidecar is None:
                raise ShardError(f"{out}: shard {name} of part {part['source']!r} is not finished (re-run the pack)")
            shards.append({"name": name, "n": sidecar["n"], "sha256": sidecar["sha256"], "bytes": sidecar["bytes"],
                           "source": part["source"]})
            part_sums.append(sidecar["sums"])
        part["stats"] = band_statistics(merge_sums(part_sums), tuple(part["bands"]), part["scale"])
        sums.extend(part_sums)
    first = parts[0]
    bands = tuple(first["bands"])
    manifest = {
        "format": SHARD_FORMAT, "kind": "eolab packed corpus (WebDataset tar shards)",
        "bands": list(bands), "unit": first["unit"], "scale": first["scale"], "dtype": _dtype(first), "patch": first["patch"],
        "sensors": sorted({p["sensor"] for p in parts}), "n": sum(s["n"] for s in shards),
        "repeated": any(p["repeat"] > 1 for p in parts),
        "stats": band_statistics(merge_sums(sums), bands, first["scale"]),
        "stats_note": ("one pass over every packed pixel: exact integer sums of digital numbers, x scale"
                       if _dtype(first) == "uint16" else "one pass over every valid packed pixel (NaN and the cache's "
                       "no-data pixels left out, counted in nodata): exact fixed-point sums of the float32 values, x scale"),
        "parts": parts, "shards": shards,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
