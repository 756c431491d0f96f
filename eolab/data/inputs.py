"""Which input folders a run needs, and whether the data root has them: checked without reading a
pixel (and without torch), so that `ablate` can refuse a missing data root or source before any
kernel starts instead of each run failing after its kernel start.

The layout is the one the readers expect (see ``scenes.py``, ``pairs.py``, ``timeseries.py`` and
``eurosat.py``); `SOURCE_DIRS` is the one place that maps pre-training source names to folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from .paths import REPO_ROOT

SOURCE_DIRS = {"major_tom": "major-tom", "hydro": "hydro", "ssl4eo": "ssl4eo-s12"}
"""Pre-training scene source -> its folder under the data root."""

SOURCE_FILES = {
    "major_tom": ("major-tom/S2L2A/*/*/*/B*.tif",),
    "hydro": ("hydro/*.tif",),
    "ssl4eo": ("ssl4eo-s12/s2a/*/*/B*.tif", "ssl4eo-s12/s2c/*/*/B*.tif"),
}
"""Files each source's reader decodes (any one pattern matching is enough)."""

DATASET_FILES = {
    "s1s2": ("ssl4eo-s12/s1/*/*/*.tif", "bigearthnet/s1/*/*.tif"),
    "slovenia": ("eo-learn-slovenia/TestEOPatch/data/NDVI.npy",),
    "ssl4eo_series": ("ssl4eo-s12/s2a/*/*/B*.tif",),
}
"""Files the other pre-training datasets read (any one pattern matching is enough)."""

EUROSAT_FILES = {"local": ("eurosat-ms/*/*/*.tif",)}
"""The labelled probe set by variant (torchgeo downloads its own copy, so it is not checked here)."""


def resolve_root(data_root: str) -> tuple[Path, str]:
    """The data root a run with parameter ``data_root`` reads (same rule as ``paths.data_root``), and
    where that came from."""
    if data_root:
        return Path(data_root).expanduser().resolve(), "parameter data_root"
    if os.environ.get("EOLAB_DATA"):
        return Path(os.environ["EOLAB_DATA"]).expanduser().resolve(), "$EOLAB_DATA"
    return (REPO_ROOT / ".." / "shared" / "data").resolve(), "the default ../shared/data"


def has_files(root: Path, patterns: tuple[str, ...]) -> bool:
    """Whether any of the glob ``patterns`` matches a file under ``root``."""
    return any(next(root.glob(p), None) is not None for p in patterns)


def missing_inputs(data_root: str, dataset: str, sources: tuple[str, ...] = (), val_sources: tuple[str, ...] = (),
                   eurosat: str = "local") -> list[str]:
    """What a run with these parameters would not find: one message per missing folder (empty: all there)."""
    root, how = resolve_root(data_root)
    if not root.is_dir():
        return [f"data root {root} (from {how}) does not exist; set EOLAB_DATA or the data_root parameter "
                "to the folder holding eurosat-ms/, major-tom/, hydro/, ssl4eo-s12/"]
    if next(root.iterdir(), None) is None:
        return [f"data root {root} (from {how}) is empty"]
    problems = []
    wanted = {f"source {s!r}": SOURCE_FILES[s] for s in (*sources, *val_sources) if s in SOURCE_FILES} \
        if dataset == "scenes" else {f"dataset {dataset!r}": DATASET_FILES[dataset]} if dataset in DATASET_FILES else {}
    if eurosat in EUROSAT_FILES:
        wanted["EuroSAT (the probe)"] = EUROSAT_FILES[eurosat]
    for what, patterns in wanted.items():
        if not has_files(root, patterns):
            problems.append(f"data root {root} (from {how}) has no files for {what}: expected {' or '.join(patterns)}")
    return problems
