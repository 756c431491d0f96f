"""Embeddings stored as labelled arrays (xarray), reused instead of recomputed.

An embedding set is an ``xarray.Dataset`` with the variable ``embedding`` (sample, dim) and the
coordinates of every sample (``id``, ``lon``, ``lat`` and, where known, ``time``), plus attributes
that say what produced it: encoder name and fingerprint (the SHA-1 of a checkpoint file, or of the
weights), the encoder's bands, checkpoint path, task and task fingerprint (its input files), the
bands read, pooling, block, adapter and variant (e.g. bands dropped at test time, an augmented view).
It is written as netCDF under ``<cache>/embeddings/<encoder fingerprint>/``, keyed by
(encoder fingerprint, task fingerprint, pool, block, variant): a second benchmark call, from a
notebook, the command line or the ablation runner, reads it back instead of running the encoder.

A task's sample table (targets, blocks, documented split, coordinates) is stored the same way, so
that a call whose embeddings are all cached does not read the task's images at all.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..data.paths import cache_root
from ..io import write_atomic
from ..text import file_safe

ENGINE = "netcdf4"


def code_version(*modules) -> str:
    """Short hash of the source of ``modules``: part of every cache key, so that editing the code
    that produced a cached array or result makes it be recomputed rather than silently reused."""
    h = hashlib.sha1()
    for m in modules:
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()[:10]


def _coords(samples: dict) -> dict:
    coords = {"id": ("sample", np.asarray(samples["id"], dtype=object)),
              "lon": ("sample", np.asarray(samples["lonlat"])[:, 0]),
              "lat": ("sample", np.asarray(samples["lonlat"])[:, 1])}
    if samples.get("time") is not None:
        coords["time"] = ("sample", np.asarray(samples["time"], dtype=object))
    return coords


def embeddings_dataset(features: np.ndarray, samples: dict, attrs: dict) -> xr.Dataset:
    """Label an (N, D) feature array with its samples' coordinates and its provenance."""
    n, d = features.shape
    if n != len(samples["id"]):
        raise ValueError(f"{n} embeddings for {len(samples['id'])} samples")
    flat = {k: json.dumps(v) if isinstance(v, list | tuple | dict) else v for k, v in attrs.items()}
    flat["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return xr.Dataset({"embedding": (("sample", "dim"), features.astype(np.float32))},
                      coords={"sample": np.arange(n), "dim": np.arange(d), **_coords(samples)}, attrs=flat)


def samples_dataset(samples: dict) -> xr.Dataset:
    """A task's sample table: target, spatial block, documented split (-1: none), coordinates."""
    target = np.asarray(samples["target"])
    data = {"target": (("sample", "label") if target.ndim == 2 else ("sample",), target),
            "group": ("sample", np.asarray(samples["group"])),
            "is_test": ("sample", np.full(len(target), -1, dtype=np.int8) if samples.get("is_test") is None
                        else np.asarray(samples["is_test"], dtype=np.int8))}
    if samples.get("pixel") is not None:
        data["pixel"] = (("sample", "axis"), np.asarray(samples["pixel"]))
    return xr.Dataset(data, coords={"sample": np.arange(len(target)), **_coords(samples)},
                      attrs={"classes": json.dumps(list(samples.get("classes") or ())),
                             "notes": json.dumps(list(samples.get("notes") or ()))})


def samples_from_dataset(ds: xr.Dataset) -> dict:
    """Inverse of ``samples_dataset``."""
    is_test = ds["is_test"].values
    return {"target": ds["target"].values, "group": ds["group"].values,
            "is_test": None if (is_test < 0).all() else is_test.astype(bool),
            "id": [str(i) for i in ds["id"].values], "lonlat": np.c_[ds["lon"].values, ds["lat"].values],
            "time": [str(t) for t in ds["time"].values] if "time" in ds.coords else None,
            "pixel": ds["pixel"].values if "pixel" in ds else None,
            "classes": tuple(json.loads(ds.attrs.get("classes", "[]"))),
            "notes": tuple(json.loads(ds.attrs.get("notes", "[]")))}


@dataclass(frozen=True)
class EmbeddingKey:
    encoder: str  # encoder fingerprint
    task: str
    task_fingerprint: str
    pool: str
    block: str
    variant: str = ""
    code: str = ""  # version of the code that computes embeddings (``code_version``)

    def filename(self) -> str:
        variant = f"-{hashlib.sha1(self.variant.encode()).hexdigest()[:10]}" if self.variant else ""
        return file_safe(f"{self.task}-{self.task_fingerprint}-{self.pool}-b{self.block}{variant}-c{self.code}.nc")


@dataclass
class EmbeddingStore:
    """The on-disk cache of embeddings and task sample tables (``<cache_root>/embeddings``)."""

    root: Path = field(default_factory=lambda: cache_root() / "embeddings")
    hits: int = 0  # embeddings read back
    misses: int = 0  # embeddings computed
    result_hits: int = 0  # result rows read back (embeddings and probes skipped)

    def __post_init__(self):
        self.root = Path(self.root)

    def path(self, key: EmbeddingKey) -> Path:
        return self.root / key.encoder[:16] / key.filename()

    def load(self, key: EmbeddingKey) -> xr.Dataset | None:
        path = self.path(key)
        if not path.is_file():
            return None
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
        # The key is in the name; the attributes confirm it (a hash clash or a hand-copied file).
        same = (ds.attrs.get("encoder_fingerprint") == key.encoder and ds.attrs.get("task_fingerprint") == key.task_fingerprint
                and ds.attrs.get("variant", "") == key.variant and ds.attrs.get("code_version", "") == key.code)
        return ds if same else None

    def get(self, key: EmbeddingKey, samples, compute, attrs: dict) -> xr.Dataset:
        """The cached embeddings of ``key``, or ``compute()`` -> (N, D) stored with ``attrs``.

        ``samples`` (a dict, or a function returning it) labels a new array; it is only called on a miss.
        """
        cached = self.load(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        ds = embeddings_dataset(compute(), samples() if callable(samples) else samples,
                                {**attrs, "task": key.task, "task_fingerprint": key.task_fingerprint,
                                 "pool": key.pool, "block": key.block, "variant": key.variant, "code_version": key.code})
        write_atomic(self.path(key), lambda tmp: ds.to_netcdf(tmp, engine=ENGINE))
        return ds

    def rows(self, encoder: str, task: str, key: dict, compute: Callable[[], list[dict]]) -> list[dict]:
        """Result rows of one encoder on one task for the settings in ``key`` (protocols, splits, axes,
        protocol parameters, code version): read back, or ``compute()``-d and stored as CSV."""
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.root / "results" / encoder[:16] / file_safe(f"{task}-{digest}.csv")
        if path.is_file():
            self.result_hits += 1
            table = pd.read_csv(path, keep_default_na=False, na_values={"value": [""], "ci_low": [""], "ci_high": [""]})
            return table.to_dict(orient="records")
        rows = compute()
        write_atomic(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
        return rows

    def samples(self, task: str, task_fingerprint: str, load) -> dict:
        """A task's sample table, from the cache or from ``load()`` (the full batch, then stored)."""
        path = self.root / "tasks" / file_safe(f"{task}-{task_fingerprint}.nc")
        if path.is_file():
            with xr.open_dataset(path, engine=ENGINE) as ds:
                return samples_from_dataset(ds.load())
        batch = load()
        write_atomic(path, lambda tmp: samples_dataset(batch).to_netcdf(tmp, engine=ENGINE))
        return samples_from_dataset(samples_dataset(batch))
