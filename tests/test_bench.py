"""The benchmark command runs end to end on CPU and writes a complete, sane table.

Timings are not asserted (they depend on the machine and its load); only that every model and
precision produced a row with positive throughput and an MFU that is a fraction of the measured peak.
"""

import csv

from benchmarks.throughput import MODELS, PRECISIONS, main
from eolab.provenance import git_commit


def test_quick_bench_writes_a_row_per_model_and_precision(tmp_path):
    out = tmp_path / "bench.csv"
    assert main(["--quick", "--device", "cpu", "--threads", "1", "--profile", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))

    train = {(r["model"], r["precision"]): r for r in rows if r["section"] == "train"}
    assert set(train) == {(m, p) for m in MODELS for p in PRECISIONS}
    for key, r in train.items():
        assert float(r["images_per_s"]) > 0, key
        assert float(r["gflop_per_step"]) > 0, key
        assert 0 < float(r["mfu"]) <= 1, key
        shares = {k: float(v) for k, v in r.items() if k.startswith("profile_") and k != "profile_ms_per_step"}
        assert float(r["profile_ms_per_step"]) > 0, key
        assert abs(sum(shares.values()) - 1) < 1e-6 and shares["profile_matmul"] > 0.05, (key, shares)
    median, low, high = (float(v) for v in train[("eolab", "fp32")]["paired_ratio_to_fastest_peer_eager"].strip("[]").split(","))
    assert 0 < low <= median <= high

    loader = {r["loader"]: r for r in rows if r["section"] == "loader"}
    assert set(loader) == {"scene_cache", "geotiff"}
    assert all(float(r["images_per_s"]) > 0 for r in loader.values())
    assert {r["precision"] for r in rows if r["section"] == "peak"} == set(PRECISIONS)
    assert {r["commit"] for r in rows} == {git_commit()}  # every row names the code it measured
