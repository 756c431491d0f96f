"""Leakage check: which benchmark samples overlap the encoder's pre-training data in space and time.

A test patch that the encoder saw during pre-training (the same place, possibly the same day)
flatters it in a way a new region would not. Footprints are compared as discs whose diameter is the
side of the square footprint (a patch of 64 px at 10 m: 640 m): two samples overlap when their
centres are closer than the mean of the two sides (plus ``margin_m``); a same-date overlap also
shares an acquisition date. The pre-training footprints of an eolab run are rebuilt from its
``record.json`` exactly as the run chose them (the patch list's SHA-1 is checked against the record).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import BallTree

from ..config import PretrainConfig
from ..data.paths import data_root
from ..data.pretraining import pretraining_set

EARTH_RADIUS_M = 6_371_008.8
log = logging.getLogger(__name__)


def tile_footprints(tiles: pd.DataFrame, img_size: int) -> pd.DataFrame:
    """Footprints (lon, lat, dates, size_m, id) of scene windows (``SceneCache.tiles`` rows) of
    ``img_size`` pixels; every scene source is on a 10 m grid."""
    return pd.DataFrame({"lon": tiles["lon"], "lat": tiles["lat"], "dates": tiles["time"].astype(str),
                         "size_m": img_size * 10.0, "id": tiles["id"]})


def pretraining_footprints(record: str | Path) -> pd.DataFrame:
    """Footprints (lon, lat, dates, size_m, id) of the pre-training samples of an eolab run, from
    its ``record.json`` (or the run folder holding it)."""
    path = Path(record)
    path = path / "record.json" if path.is_dir() else path
    rec = json.loads(path.read_text())
    cfg = PretrainConfig.from_params(rec["params"])
    chosen = pretraining_set(cfg, data_root(cfg.data_root or None))
    dataset, tiles, ids = chosen.dataset, chosen.tiles, chosen.ids
    expected = rec.get("data", {}).get("patches_sha1")
    if expected and hashlib.sha1("\n".join(ids).encode()).hexdigest() != expected:
        log.warning("%s: the rebuilt pre-training patches differ from the recorded ones (data changed?)", path)
    if tiles is not None:
        return tile_footprints(tiles, cfg.img_size)
    size_m = cfg.img_size * 10.0  # every pre-training source is on a 10 m grid
    dates = []
    for i in range(len(dataset)):  # series and pairs: the dates each window was drawn with
        item = dataset[i]
        dates.append(",".join(item.get("dates", ())) or item.get("time", ""))
    lonlat = np.asarray(dataset.lonlat)
    return pd.DataFrame({"lon": lonlat[:, 0], "lat": lonlat[:, 1], "dates": dates, "size_m": size_m, "id": ids})


def overlaps(lonlat: np.ndarray, times: list[str] | None, size_m: float, footprints: pd.DataFrame,
             margin_m: float = 0.0) -> pd.DataFrame:
    """Per sample: distance to the nearest pre-training footprint centre (m), whether any footprint
    overlaps it, and whether an overlapping one shares its date (NaN when dates are unknown)."""
    lonlat = np.asarray(lonlat, dtype=np.float64)
    if len(footprints) == 0:
        return pd.DataFrame({"nearest_m": np.inf, "overlaps": False, "same_date": np.nan}, index=range(len(lonlat)))
    tree = BallTree(np.radians(footprints[["lat", "lon"]].to_numpy()), metric="haversine")
    query = np.radians(lonlat[:, ::-1])  # (N, 2) lat, lon
    dist, _ = tree.query(query, k=1)
    reach = (size_m + float(footprints["size_m"].max())) / 2 + margin_m
    near = tree.query_radius(query, r=reach / EARTH_RADIUS_M, return_distance=True)
    sizes = footprints["size_m"].to_numpy()
    fp_dates = [{x[:10] for x in str(d).split(",") if x} for d in footprints["dates"]]
    overlap, same_date = [], []
    for i, (idx, d) in enumerate(zip(*near, strict=True)):
        hit = idx[d * EARTH_RADIUS_M < (size_m + sizes[idx]) / 2 + margin_m]
        overlap.append(len(hit) > 0)
        day = None if times is None or not times[i] else str(times[i])[:10]
        same_date.append(np.nan if day is None else float(any(day in fp_dates[j] for j in hit)))
    return pd.DataFrame({"nearest_m": dist[:, 0] * EARTH_RADIUS_M, "overlaps": overlap, "same_date": same_date})
