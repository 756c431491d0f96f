"""Where data and caches live.

The data root is configurable (``EOLAB_DATA`` or an explicit argument) because users keep large
archives outside the repository; the default ``../shared/data`` is resolved against the repository
root, not the working directory, so notebooks executed from ``notebooks/`` find it too.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve and check the data root; raise FileNotFoundError naming where it looked."""
    if explicit:
        root, how = Path(explicit).expanduser(), "the data_root argument"
    elif os.environ.get("EOLAB_DATA"):
        root, how = Path(os.environ["EOLAB_DATA"]).expanduser(), "$EOLAB_DATA"
    else:
        root, how = REPO_ROOT / ".." / "shared" / "data", "the default ../shared/data"
    root = root.resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root {root} (from {how}) does not exist; set EOLAB_DATA or pass data_root= "
            "to the folder holding eurosat-ms/, major-tom/, hydro/, ssl4eo-s12/"
        )
    return root


def cache_root() -> Path:
    """Packed caches go to ``EOLAB_CACHE`` or ``<repo>/.cache/eolab`` (git-ignored)."""
    root = Path(os.environ.get("EOLAB_CACHE", REPO_ROOT / ".cache" / "eolab")).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root
