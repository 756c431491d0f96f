"""The embedding benchmark from the command line: one or more checkpoints through every task.

    python -m eolab benchmark --checkpoint results/.../encoder.pt --output results/benchmark
    python -m eolab benchmark --encoder torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO --tasks eurosat
    python -m eolab benchmark --encoder torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO@moco.pth --encoder my_timm.yaml
    python -m eolab benchmark --checkpoint results/.../encoder.pt --timing
    python -m eolab benchmark --checkpoint results/.../encoder.pt --tasks eurosat,path/to/my_task.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..text import split_names

# The battery's defaults, spelled out so that --help needs no torch (tests/test_benchmark.py checks
# they equal eolab.evaluate.battery's PROTOCOLS, SPLITS and BASELINES).
DEFAULT_PROTOCOLS = "linear,knn,few_shot,robustness,diagnostics,leakage"
DEFAULT_SPLITS = "random,blocked,official"
DEFAULT_BASELINES = "random_init,band_stats"
TEMPORAL_POOLINGS = "mean,concat,probe"  # eolab.evaluate.encoders.TEMPORAL_POOLINGS (checked by the tests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eolab benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="eolab encoder checkpoint (repeatable)")
    parser.add_argument("--encoder", action="append", default=[], metavar="SPEC",
                        help="another encoder (repeatable): torchgeo:<Weights>.<NAME>[@weights.pth|@random], dofa:[<Weights>.<NAME>][@weights.pth|@random], "
                             "embeddings:<file.parquet|.zarr|.nc>, or an encoder YAML file (docs/benchmark.md)")
    parser.add_argument("--name", default=None, help="display name of the (single) checkpoint's encoder")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task names or task files (*.yaml, see docs/benchmark.md); default: all")
    parser.add_argument("--protocols", default=DEFAULT_PROTOCOLS, help=f"comma-separated (default {DEFAULT_PROTOCOLS})")
    parser.add_argument("--splits", default=DEFAULT_SPLITS, help=f"comma-separated (default {DEFAULT_SPLITS})")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES, help="random_init,band_stats (default), flat_series,series_summary (time series), or ''")
    parser.add_argument("--pools", default="mean", help="ViT pooling axis, e.g. mean,cls,mean_std")
    parser.add_argument("--blocks", default="-1", help="ViT depth axis, e.g. -1,-2 (last, the one before)")
    parser.add_argument("--temporal-pooling", default="mean",
                        help="axis for single-date encoders on time series: per-date embeddings pooled by mean "
                             "(default), concat (T x D, date order) or probe (attention learned per fold), e.g. mean,concat")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: <EOLAB_CACHE>/embeddings)")
    parser.add_argument("--no-leakage-record", action="store_true", help="do not rebuild pre-training footprints")
    parser.add_argument("--output", default=None, help="folder for benchmark.csv and benchmark.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timing", action="store_true",
                        help="run three times (a fresh cache unless --cache-dir): from scratch, with cached embeddings "
                             "(probes refitted), with cached results; print the wall times")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.encoder:
        parser.error("give --checkpoint or --encoder (either repeatable)")
    temporal = tuple(split_names(args.temporal_pooling))
    if not temporal or set(temporal) - set(TEMPORAL_POOLINGS.split(",")):
        parser.error(f"--temporal-pooling: choose from {TEMPORAL_POOLINGS} (comma-separated), got {args.temporal_pooling!r}")
    # the training stack, only once there is work to do (--help and usage errors stay fast)
    import pandas as pd
    import torch

    from ..checkpoint import CheckpointError
    from ..data.downstream import UnknownTaskError, check_task_names, task_names
    from ..evaluate.battery import Settings, evaluate
    from ..reports.benchmark import diagnostics, headline, write_leaderboard

    tasks = split_names(args.tasks) if args.tasks else task_names()
    try:  # an unknown name or a missing task file is a usage error, before any work
        check_task_names(tasks)
    except UnknownTaskError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    kwargs = {"tasks": tasks, "protocols": split_names(args.protocols), "splits": split_names(args.splits),
              "baselines": split_names(args.baselines), "pools": split_names(args.pools),
              "blocks": [int(b) for b in split_names(args.blocks)], "data_root": args.data_root,
              "pretraining": None if args.no_leakage_record else "auto", "name": args.name,
              "settings": Settings(folds=args.folds, repeats=args.repeats, seed=args.seed, temporal_pooling=temporal)}
    from ..evaluate.adapters import AdapterError, spec_encoder

    try:  # every encoder is built before any work: a bad spec is named now
        others = [spec_encoder(spec, seed=args.seed) for spec in args.encoder]
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = [*args.checkpoint, *others]
    encoder = items if len(items) > 1 else items[0]
    try:
        if args.timing:
            with tempfile.TemporaryDirectory(prefix="eolab-bench-") as tmp:
                cache = args.cache_dir or tmp
                calls = [("first call", evaluate(encoder, cache_dir=cache, **kwargs)),
                         ("second call, probes refitted on cached embeddings",
                          evaluate(encoder, cache_dir=cache, reuse_results=False, **kwargs)),
                         ("third call, cached results", evaluate(encoder, cache_dir=cache, output_dir=args.output, **kwargs))]
            for label, t in calls:
                c = t.attrs["cache"]
                print(f"{label}: {t.attrs['wall_time_s']:.1f} s (embeddings computed {c['misses']}, reused {c['hits']}; "
                      f"result sets reused {c['result_hits']})")
            print(f"torch threads: {torch.get_num_threads()}")
            table = calls[-1][1]
        else:
            table = evaluate(encoder, cache_dir=args.cache_dir, output_dir=args.output, **kwargs)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:  # bad inputs, named (a task file's field, a file)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output:  # the long (backbone, task, metric, seed, protocol) form leaderboards collect
        write_leaderboard(table, Path(args.output) / "leaderboard.csv")
    with pd.option_context("display.max_colwidth", 60):
        head = headline(table)
        print((head if len(head) else diagnostics(table)).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
