"""Which input folders a run needs, and whether the data root has them: checked without reading a
pixel (and without torch), so that `ablate` can refuse a missing data root or source before any
kernel starts instead of each run failing after its kernel start.

The layout is the one the readers expect (see ``scenes.py`` and ``eurosat.py``); the pre-training
sources' and windowed datasets' files come from their source files (``sources.py``), built-in or a
user's YAML.
"""

from __future__ import annotations

import os
from pathlib import Path

from .paths import REPO_ROOT
from .sources import SourceError, builtin_sources, builtin_window_sources, source_globs

SOURCE_FILES = {name: source_globs(name) for name in builtin_sources()}
"""Files each built-in source decodes (any one pattern matching is enough), from its source file."""
SOURCE_DIRS = {name: patterns[0].split("/", 1)[0] for name, patterns in SOURCE_FILES.items()}
"""Built-in pre-training scene source -> its folder under the data root."""

DATASET_FILES = {name: source_globs(name) for name in builtin_window_sources()}
"""Files the windowed pre-training datasets read (s1s2, slovenia, ssl4eo_series: any one pattern
matching is enough), from their source files."""

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
    """Whether any of the glob ``patterns`` matches a file under ``root`` (absolute patterns as they are;
    URLs are not listed here: a source's own check lists them before its scenes are read)."""
    def matches(p: str) -> bool:
        if "://" in p:
            return True
        path = Path(p)
        base, rel = (Path(path.anchor), str(path.relative_to(path.anchor))) if path.is_absolute() else (root, p)
        return next(base.glob(rel), None) is not None

    return any(matches(p) for p in patterns)


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
    wanted = {}
    if dataset == "scenes":
        for s in (*sources, *val_sources):
            try:
                wanted[f"source {s!r}"] = SOURCE_FILES.get(s) or source_globs(s)
            except SourceError as exc:
                problems.append(str(exc))
    elif dataset in DATASET_FILES:
        wanted[f"dataset {dataset!r}"] = DATASET_FILES[dataset]
    if eurosat in EUROSAT_FILES:
        wanted["EuroSAT (the probe)"] = EUROSAT_FILES[eurosat]
    for what, patterns in wanted.items():
        if not has_files(root, patterns):
            problems.append(f"data root {root} (from {how}) has no files for {what}: expected {' or '.join(patterns)}")
    return problems
