"""What a pre-training run's benchmark step spends reading its tasks, with and without the task cache.

    python -m benchmarks.task_loading                  # 3 repeats, every built-in task
    python -m benchmarks.task_loading --repeats 1 --tasks eurosat,presto_algae

Each repeat, from an empty ``EOLAB_CACHE`` (a temporary folder), does what ``pipeline.prepare_data``
and the run's benchmark step do: every task loaded once as a check, then the battery (a seeded
random-init ViT and band statistics; linear probe, random split, 2 folds). ``before`` bypasses the
task cache (``Task.load`` calling the loader every time, as the code did), ``after`` uses it. Prints
the seconds spent in ``Task.load`` during the check and during the battery and the wall time of
each repeat, then the medians. Wall times on a shared machine vary: compare medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from eolab.data import taskdef
from eolab.data.downstream import TASKS, get_task, task_names
from eolab.data.paths import data_root
from eolab.data.stats import Normalization
from eolab.evaluate.battery import Settings, evaluate
from eolab.evaluate.encoders import EolabEncoder
from eolab.models.vit import build_encoder, encoder_config


def random_vit() -> EolabEncoder:
    bands = TASKS["eurosat"].bands
    torch.manual_seed(0)
    vit = build_encoder("vit_nano", bands, img_size=64, patch_size=16)
    norm = Normalization(bands, "reflectance", dict.fromkeys(bands, 0.15), dict.fromkeys(bands, 0.1), "nominal")
    return EolabEncoder(vit, norm, "vit_nano_seed0", encoder_config("vit_nano", bands, 64, 16))


def one_run(tasks: list[str], cached: bool) -> tuple[float, float, float]:
    """(seconds loading in the check, seconds loading in the battery, wall seconds) from empty caches."""
    spent = [0.0]
    original_load, original_loaded = taskdef.Task.load, taskdef.Task._loaded

    def timed_load(self, root=None, key=None):
        t0 = time.perf_counter()
        try:
            return original_load(self, root, key)
        finally:
            spent[0] += time.perf_counter() - t0

    taskdef.Task.load = timed_load
    if not cached:
        taskdef.Task._loaded = lambda self, root, key: self.loader(root)
    old = os.environ.get("EOLAB_CACHE")
    try:
        with tempfile.TemporaryDirectory(prefix="eolab-task-loading-") as tmp:
            os.environ["EOLAB_CACHE"] = tmp
            t0 = time.perf_counter()
            for name in tasks:  # pipeline.prepare_data: a bad benchmark input fails before training
                get_task(name).load(data_root(None))
            check, spent[0] = spent[0], 0.0
            evaluate(random_vit(), tasks=tasks, protocols=("linear",), splits=("random",), baselines=("band_stats",),
                     pretraining=None, cache_dir=Path(tmp) / "embeddings", settings=Settings(folds=2, repeats=1))
            return check, spent[0], time.perf_counter() - t0
    finally:
        taskdef.Task.load, taskdef.Task._loaded = original_load, original_loaded
        if old is None:
            os.environ.pop("EOLAB_CACHE", None)
        else:
            os.environ["EOLAB_CACHE"] = old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default=None, help="comma-separated (default: every built-in task)")
    args = parser.parse_args()
    tasks = args.tasks.split(",") if args.tasks else task_names()
    results: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": []}
    for rep in range(args.repeats):
        for label in results:
            results[label].append(one_run(tasks, cached=label == "after"))
            check, battery, wall = results[label][-1]
            print(f"repeat {rep + 1} {label}: loading in the check {check:.1f} s, in the battery {battery:.1f} s; "
                  f"wall {wall:.1f} s")
    for label, runs in results.items():
        check, battery, wall = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"median {label}: loading in the check {check:.1f} s, in the battery {battery:.1f} s; wall {wall:.1f} s")


if __name__ == "__main__":
    main()
