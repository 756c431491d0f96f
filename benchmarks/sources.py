"""Data-source benchmark (not a test): what the checks before work cost, and how fast each source decodes.

    python -m benchmarks.sources                      # from the repository root; built-in + sources/*.yaml
    python -m benchmarks.sources --sources hydro sources/bigearthnet_s2.yaml

For each source: the time of `check_source` (every check that needs no pixel: globs, band counts and
names, CRSs), then of decoding every scene through `read_source` (card conversion, pixel checks,
resampling), as scenes/s and megapixels/s (pixels of the common grid, all bands).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eolab.data.bands import S2_L2A
from eolab.data.paths import data_root
from eolab.data.sources import builtin_sources, check_source, load_source, read_source

ROOT = Path(__file__).resolve().parents[1]


def measure(ref: str, root: Path, bands: tuple[str, ...]) -> dict:
    spec = load_source(ref)
    t0 = time.perf_counter()
    checked = check_source(spec, root, bands)
    t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    scenes, pixels = 0, 0
    for scene in read_source(spec, root, bands, checked):
        scenes += 1
        pixels += scene.dn.size
    t_read = time.perf_counter() - t0
    return {"source": ref, "scenes": scenes, "check_s": round(t_check, 3), "decode_s": round(t_read, 3),
            "scenes_per_s": round(scenes / t_read, 2), "megapixels_per_s": round(pixels / t_read / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="*", default=None, help="names or source files (default: built-in + sources/*.yaml)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    refs = args.sources or [*builtin_sources(), *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "sources").glob("*.yaml")))]
    root = data_root(args.data_root)
    for ref in refs:
        bands = ("VV", "VH") if load_source(ref).products[0].card.sensor == "sentinel1" else S2_L2A
        print(json.dumps(measure(ref, root, bands)))


if __name__ == "__main__":
    main()
