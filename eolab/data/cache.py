"""Packed on-disk cache of pre-training scenes, and the patch index over it.

Decoding and resampling per-band GeoTIFFs costs far more than a training step, so scenes are decoded
once into memory-mappable ``.npy`` arrays (uint16, reflectance x 10000, C x H x W on the 10 m grid;
float32 for sources in other units, such as dB) plus a JSON manifest. The scenes come from data
sources (``sources.py``): built-in names or source YAML files. Patches are windows into those
arrays: a patch read is a slice of a memmap.

The cache key hashes the source files' text, their input files (path, size, mtime), the band set
and the cache format version, so changed inputs rebuild it. A build writes into a temporary folder
and renames it into place, so a killed build never leaves a half-written cache that a later run
would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rasterio.warp import transform as warp_transform
from torch.utils.data import Dataset

from .bands import S2_L2A
from .paths import cache_root, data_root
from .sources import NoScenesError, SourceError, SourceSpec, check_source, input_files, load_source, read_source

log = logging.getLogger(__name__)
FORMAT_VERSION = 3  # 2: pixel validity checked, masked pixels in the manifest; 3: sources from source files


def _fingerprint(root: Path, specs: list[SourceSpec], checked: list[dict], bands: tuple[str, ...]) -> str:
    """Hash of the cache format, the band set, each source file's text and every input file (path,
    size, mtime): a changed source file or input rebuilds the cache."""
    h = hashlib.sha1(json.dumps([FORMAT_VERSION, [s.name for s in specs], bands]).encode())
    for spec, found in zip(specs, checked, strict=True):
        h.update(spec.text.encode())
        for f in input_files(spec, found, root):
            st = f.stat()
            h.update(f"{f.relative_to(root) if f.is_relative_to(root) else f}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


@dataclass
class SceneCache:
    """A built cache: the manifest plus lazily memory-mapped scene arrays."""

    path: Path
    manifest: dict

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.manifest["bands"])

    @property
    def scenes(self) -> list[dict]:
        return self.manifest["scenes"]

    def array(self, i: int) -> np.ndarray:
        return np.load(self.path / f"scene_{i:05d}.npy", mmap_mode="r")

    def valid(self, i: int) -> np.ndarray:
        return np.load(self.path / f"valid_{i:05d}.npy", mmap_mode="r")

    def tiles(self, patch: int = 64, stride: int = 32, min_valid: float = 0.95,
              bands: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Index of patch windows: one row per (scene, row, col) with >= ``min_valid`` valid pixels.

        Columns: scene, source, row, col, lon, lat, valid_frac, time, id. The id is stable across
        cache rebuilds, so a sample manifest can refer to it. With ``bands`` (what the run reads),
        scenes where one of them holds no data (all NaN, all zero or constant; the manifest's
        ``bad_bands``) are left out.
        """
        rows = []
        left_out = []
        for i, sc in enumerate(self.scenes):
            h, w = sc["shape"][1:]
            if h < patch or w < patch:
                continue
            bad = sorted(set(sc.get("pixels", {}).get("bad_bands", {})) & set(bands or ()))
            if bad:
                left_out.append(f"{sc['id']} ({', '.join(bad)})")
                log.warning("%s: left out, band(s) %s hold no data", sc["id"], bad)
                continue
            valid = np.asarray(self.valid(i), dtype=np.float32)
            # Valid fraction of every window from a summed-area table (cheap even at stride 1).
            sat = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            r = np.arange(0, h - patch + 1, stride)
            c = np.arange(0, w - patch + 1, stride)
            rr, cc = np.meshgrid(r, c, indexing="ij")
            frac = (sat[rr + patch, cc + patch] - sat[rr, cc + patch] - sat[rr + patch, cc] + sat[rr, cc]) / patch**2
            keep = frac >= min_valid
            rr, cc, frac = rr[keep], cc[keep], frac[keep]
            a, b, c0, d, e, f0 = sc["transform"]  # affine of the scene's 10 m grid
            x_pix, y_pix = cc + patch / 2, rr + patch / 2  # window centres in pixel coordinates
            xs, ys = c0 + a * x_pix + b * y_pix, f0 + d * x_pix + e * y_pix
            lon, lat = warp_transform(sc["crs"], "EPSG:4326", np.ravel(xs), np.ravel(ys)) if len(rr) else ([], [])
            rows.append(pd.DataFrame({
                "scene": i, "source": sc["source"], "row": rr, "col": cc, "lon": lon, "lat": lat,
                "valid_frac": frac, "time": sc["time"],
                "id": [f"{sc['id']}@{a},{b}+{patch}" for a, b in zip(rr, cc, strict=True)],
            }))
        if not rows:
            why = f"; left out for bands without data: {', '.join(left_out)}" if left_out else ""
            raise ValueError(f"no {patch}x{patch} patches with >= {min_valid:.0%} valid pixels in cache {self.path}{why}")
        return pd.concat(rows, ignore_index=True)


def build_scene_cache(
    root: str | Path | None = None,
    sources: tuple[str, ...] = ("major_tom", "hydro", "ssl4eo"),
    bands: tuple[str, ...] = S2_L2A,
    cache_dir: Path | None = None,
) -> SceneCache:
    """Decode the scenes of ``sources`` once into a packed cache; reuse it when inputs are unchanged.

    Each entry of ``sources`` is a built-in source name (``sources.builtin_sources()``) or the path to a
    source YAML file. Every source is checked before any scene is decoded (`sources.check_source`:
    globs that match nothing, band counts or names that contradict the card, bands the run needs that
    a source lacks, mixed CRSs without a target grid), each error naming the file and field.
    """
    root = data_root(root)
    sources, bands = tuple(str(s) for s in sources), tuple(bands)
    specs = []
    for s in sources:
        try:
            specs.append(load_source(s))
        except SourceError as exc:
            raise ValueError(f"pre-training source {s!r}: {exc}") from exc
    units = {f"{p.where} ({p.name})": sorted({p.card.band(b).to for b in bands if b in p.card.band_names})
             for spec in specs for p in spec.products}
    if len({tuple(u) for u in units.values()}) > 1:  # one cache holds one unit: refuse before decoding anything
        raise ValueError(f"sources convert bands {list(bands)} to different units, and one cache holds one unit: {units}")
    checked = []
    for spec in specs:  # an empty cache would be saved and trusted by every later run
        try:
            checked.append(check_source(spec, root, bands))
        except NoScenesError as exc:
            raise FileNotFoundError(f"data root {root} has no scenes of source {spec.name!r}: {exc}") from exc
    key = _fingerprint(root, specs, checked, bands)
    final = (cache_dir or cache_root()) / f"scenes-{key}"
    if (final / "manifest.json").exists():
        return SceneCache(final, json.loads((final / "manifest.json").read_text()))

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        scenes = []
        units = set()
        for spec, found in zip(specs, checked, strict=True):
            for scene in read_source(spec, root, bands, found):
                units.add((scene.unit, scene.scale))
                if len(units) > 1:
                    raise ValueError(f"source {spec.name!r}: scene {scene.id} is in {scene.unit} (x {scene.scale:g}), other "
                                     f"scenes in {sorted(units - {(scene.unit, scene.scale)})}: one cache holds one unit")
                i = len(scenes)
                np.save(tmp / f"scene_{i:05d}.npy", scene.dn)
                np.save(tmp / f"valid_{i:05d}.npy", scene.valid)
                for note in scene.notes:
                    log.info("%s: %s", scene.id, note)
                scenes.append({
                    "id": scene.id, "source": scene.source, "sensor": scene.sensor, "shape": list(scene.dn.shape),
                    "crs": scene.crs,
                    "transform": list(scene.transform), "time": scene.time, "level": scene.level,
                    "notes": scene.notes, "pixels": scene.pixels,
                })
        if not scenes:
            raise FileNotFoundError(f"data root {root}: the readers of {list(sources)} found no scenes")
        unit, scale = units.pop()
        manifest = {"format": FORMAT_VERSION, "key": key, "data_root": str(root), "sources": list(sources),
                    "bands": list(bands), "unit": unit, "scale": scale, "scenes": scenes,
                    "masked_pixels": sum(sc["pixels"].get("masked_pixels", 0) for sc in scenes),
                    "bad_bands": [f"{sc['id']}: {b} {why}" for sc in scenes
                                  for b, why in sc["pixels"].get("bad_bands", {}).items()]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SceneCache(final, json.loads((final / "manifest.json").read_text()))


class PatchDataset(Dataset):
    """Pre-training patches read from the scene cache; samples follow the eolab schema."""

    def __init__(self, cache: SceneCache, tiles: pd.DataFrame, patch: int = 64, bands: tuple[str, ...] | None = None):
        self.cache, self.patch = cache, patch
        self.bands = tuple(bands or cache.bands)
        missing = [b for b in self.bands if b not in cache.bands]
        if missing:
            raise ValueError(f"bands {missing} are not in the scene cache (it has {list(cache.bands)})")
        # A slice when the bands are the cache's own, so the common case copies nothing extra.
        self._channels = slice(None) if self.bands == cache.bands else [cache.bands.index(b) for b in self.bands]
        self.scene = tiles["scene"].to_numpy()
        self.row = tiles["row"].to_numpy()
        self.col = tiles["col"].to_numpy()
        self.lonlat = tiles[["lon", "lat"]].to_numpy(np.float32)
        self.ids = tiles["id"].tolist()
        self.sources = tiles["source"].tolist()
        self.times = tiles["time"].tolist()
        self._arrays: dict[int, np.ndarray] = {}  # memmaps opened lazily, per worker process

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        s = int(self.scene[i])
        if s not in self._arrays:
            self._arrays[s] = self.cache.array(s)
        r, c, p = self.row[i], self.col[i], self.patch
        window = np.asarray(self._arrays[s][self._channels, r : r + p, c : c + p], dtype=np.float32)
        sample = {
            "image": torch.from_numpy(window * self.cache.manifest["scale"]),
            "bands": self.bands,
            "unit": self.cache.manifest.get("unit", "reflectance"),
            "source": self.sources[i],
            "lonlat": torch.tensor(self.lonlat[i]),
            "id": self.ids[i],
        }
        if self.times[i]:
            sample["time"] = self.times[i]
        return sample
