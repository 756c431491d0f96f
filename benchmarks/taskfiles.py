"""Task files against the built-in tasks, and the content-keyed cache, on the shared real data.

    python -m benchmarks.taskfiles                       # a seeded random-init eolab ViT, band stats, a band-mean function
    python -m benchmarks.taskfiles --checkpoint results/.../encoder.pt

Prints, for EuroSAT and Presto's algae blooms, the benchmark of the built-in task and of its task
file (``examples/tasks/``): rows, the largest difference of any value or interval bound (0 means
identical numbers) and the wall time of each; then the shuffled-label check (EuroSAT with its
labels permuted under the same name, after the real labels filled the cache: the probe must fall
to chance, not return the cached score); then the WorldCereal task file's headline table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eolab.data.downstream import TASKS, Task, get_task
from eolab.data.stats import Normalization
from eolab.evaluate.battery import Settings, evaluate
from eolab.evaluate.encoders import EolabEncoder, FunctionEncoder
from eolab.models.vit import build_encoder, encoder_config
from eolab.reports.benchmark import headline

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
S2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
VALUES = ["value", "ci_low", "ci_high"]


def random_vit() -> EolabEncoder:
    torch.manual_seed(0)
    vit = build_encoder("vit_nano", S2, img_size=64, patch_size=16)
    norm = Normalization(S2, "reflectance", dict.fromkeys(S2, 0.15), dict.fromkeys(S2, 0.1), "nominal")
    return EolabEncoder(vit, norm, "vit_nano_seed0", encoder_config("vit_nano", S2, 64, 16))


def band_means(x: torch.Tensor) -> torch.Tensor:
    """Spatial mean and standard deviation of each band: (B, C, H, W) -> (B, 2C)."""
    return torch.cat([x.flatten(2).mean(-1), x.flatten(2).std(-1, correction=0)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    encoder = args.checkpoint or random_vit()
    means = FunctionEncoder(band_means, bands=("B02", "B03", "B04", "B08"), unit="reflectance", name="band_means")
    settings = Settings(folds=args.folds, repeats=args.repeats)
    kwargs = {"protocols": ("linear", "knn"), "settings": settings, "pretraining": None}
    baselines = ("band_stats",) if args.checkpoint is None else ("random_init", "band_stats")
    with tempfile.TemporaryDirectory(prefix="eolab-taskfiles-") as cache:
        for builtin, file in (("eurosat", "eurosat.yaml"), ("presto_algae", "presto_algae.yaml")):
            t0 = time.perf_counter()
            a = evaluate([encoder, means], tasks=[builtin], baselines=baselines, cache_dir=cache, **kwargs)
            t1 = time.perf_counter()
            b = evaluate([encoder, means], tasks=[str(EXAMPLES / file)], baselines=baselines, cache_dir=cache, **kwargs)
            t2 = time.perf_counter()
            ran = a["not_applicable"] == ""
            diff = np.nanmax(np.abs(a[VALUES].to_numpy() - b[VALUES].to_numpy())) if len(a) == len(b) else np.nan
            print(f"{builtin}: {len(a)} rows ({int(ran.sum())} computed), task file {len(b)} rows; largest difference "
                  f"{diff:.3g}; wall {t1 - t0:.1f} s built-in, {t2 - t1:.1f} s task file")
        # Shuffled labels under the same name, after the real labels are cached.
        real = TASKS["eurosat"]
        rng = np.random.default_rng(0)

        def shuffled(root):
            batch = real.load(root)
            return {**batch, "target": rng.permutation(batch["target"])}

        fake = Task("eurosat", real.kind, real.bands, real.units, real.modality, real.num_dates, real.size,
                    real.gsd_m, real.dated, loader=shuffled)
        for reuse in (True, False):
            t = evaluate([means], tasks=[fake], baselines=(), cache_dir=cache, reuse_results=reuse,
                         splits=("random",), **kwargs)
            acc = t[(t["protocol"] == "linear") & (t["metric"] == "accuracy")]["value"].iloc[0]
            c = t.attrs["cache"]
            print(f"eurosat, labels shuffled, same name, reuse_results={reuse}: linear accuracy {acc:.3f} "
                  f"(embeddings computed {c['misses']}, reused {c['hits']}; result sets reused {c['result_hits']})")
        t = evaluate([means], tasks=["eurosat"], baselines=(), cache_dir=cache, splits=("random",), **kwargs)
        acc = t[(t["protocol"] == "linear") & (t["metric"] == "accuracy")]["value"].iloc[0]
        print(f"eurosat, real labels again: linear accuracy {acc:.3f} (result sets reused {t.attrs['cache']['result_hits']})")
        # A task declared only by a file: WorldCereal parcels, a long-form Parquet series with no-data.
        t0 = time.perf_counter()
        wc = evaluate([encoder, means], tasks=[get_task(str(EXAMPLES / "worldcereal_corsica_monthly.yaml"))],
                      baselines=baselines, cache_dir=cache, **kwargs)
        print(f"worldcereal_corsica_monthly: {time.perf_counter() - t0:.1f} s; notes: {wc['note'].iloc[0]}")
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(headline(wc).to_string())


if __name__ == "__main__":
    main()
