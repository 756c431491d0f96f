"""Sampler benchmark (not a test): time each sampler on a strided pool and measure its representativeness.

    python -m benchmarks.sampling --pool-stride 4 --budget 2000     # from the repository root
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from eolab.data.cache import build_scene_cache
from eolab.data.sampling import Pool, pool_reference, select

# torchgeo_grid at the default stride (= patch, no overlap) has fewer windows than a 2000 budget on the shared scenes.
BENCH_SPECS = ("uniform", "pandas_uniform", "geo_grid", "stratified:source", "stratified:scene", "stratified:season", "kcenter",
               "kmeans", "clear", "torchgeo_grid(grid_stride=32)", "torchgeo_random", "0.5*uniform+0.5*kcenter")


def _timed(fn: Callable[[], object], trace: bool) -> tuple[object, float, float]:
    """(result, seconds, peak traced MB). Timing and tracing are separate runs: tracing slows Python code."""
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = 0.0
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out, dt, peak


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Time each sampler on a strided pool and measure its representativeness.")
    ap.add_argument("--pool-stride", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--min-valid", type=float, default=0.95)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", default=",".join(BENCH_SPECS), help="comma-separated specs")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "sampling_benchmark"))
    args = ap.parse_args(argv)

    # Library imports are a once-per-process cost; time them apart so the first sampler using them is not charged.
    _, t_import, _ = _timed(lambda: (__import__("sklearn.cluster"), __import__("torchgeo.samplers")), False)
    rss = {"after_imports": _rss_mb()}
    cache = build_scene_cache(args.data_root)
    tiles, t_tiles, _ = _timed(lambda: cache.tiles(args.patch, args.pool_stride, args.min_valid), False)
    pool = Pool(tiles, cache, patch=args.patch)
    _, t_feat, _ = _timed(lambda: (pool.features, pool.z), False)
    rss["after_features"] = _rss_mb()
    ref, t_ref, _ = _timed(lambda: pool_reference(pool, seed=args.seed), False)
    rss["after_reference"] = _rss_mb()
    print(f"pool: {len(pool)} windows of {args.patch} px at stride {args.pool_stride} from {len(cache.scenes)} scenes; "
          f"tiles {t_tiles:.2f} s, features {t_feat:.2f} s, metric reference {t_ref:.2f} s (imports {t_import:.1f} s)")
    rows = []
    for spec in [s.strip() for s in args.samplers.split(",") if s.strip()]:
        sel, dt, _ = _timed(lambda spec=spec: select(spec, pool, args.budget, args.seed), False)
        _, _, peak = _timed(lambda spec=spec: select(spec, pool, args.budget, args.seed), True)
        metrics, t_metrics, _ = _timed(lambda sel=sel: ref.measure(sel.indices), False)
        rows.append({"sampler": spec, "time_s": dt, "peak_traced_mb": peak, "metrics_s": t_metrics,
                     "ids_sha1": sel.manifest["ids_sha1"], **metrics})
        print(f"  {spec:26s} {dt:6.2f} s  peak {peak:7.1f} MB  metrics {t_metrics:5.2f} s", flush=True)
    table = pd.DataFrame(rows).set_index("sampler")
    cols = ["time_s", "peak_traced_mb", "vendi_cos", "vendi_rbf", "coverage_mean", "coverage_p95", "spectral_js",
            "spectral_sw1", "geo_js", "balance_source", "ess_source", "balance_scene", "ess_scene", "overlap_frac",
            "mean_cloud", "mean_nodata"]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 3):
        print(table[[c for c in cols if c in table.columns]])
    result = {
        "pool": {"n": len(pool), "patch": args.patch, "stride": args.pool_stride, "min_valid": args.min_valid,
                 "scenes": len(cache.scenes), "sha1": pool.sha1, "tiles_s": t_tiles, "features_s": t_feat,
                 "reference_s": t_ref, "imports_s": t_import, **ref.pool_summary()},
        "budget": args.budget, "seed": args.seed, "cpu_count": len(__import__("os").sched_getaffinity(0)),
        "load_avg": list(__import__("os").getloadavg()), "peak_rss_mb": _rss_mb(), "rss_stages_mb": rss,
        "samplers": rows,
        "notes": "time_s: one untraced call of select() on a Pool whose features were computed once (features_s); "
                 "peak_traced_mb: tracemalloc peak of a second call (numpy/Python allocations; BLAS/OpenMP scratch "
                 "not traced); peak_rss_mb: process maximum resident set over the whole benchmark; rss_stages_mb: the "
                 "same maximum after importing torch/sklearn/torchgeo, after tiles+features, after the metric reference.",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"stride{args.pool_stride}_budget{args.budget}_seed{args.seed}.json"
    (out / name).write_text(json.dumps(result, indent=1, default=float))
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB (after imports {rss['after_imports']:.0f}, features "
          f"{rss['after_features']:.0f}, reference {rss['after_reference']:.0f}); wrote {out / name}")
    return result


if __name__ == "__main__":
    main()
