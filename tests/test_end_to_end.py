"""The real thing, small: pre-train on real scenes through the notebook and the ablation command.

Slow (papermill kernels plus a short training run per notebook): runs in CI through `make test`,
skipped locally with `-m "not slow"`.
"""

import json

import numpy as np
import pandas as pd
import pytest

from eolab.__main__ import main

pytestmark = pytest.mark.slow

SPEC = """\
name: e2e
notebook: notebooks/pretrain.ipynb
summary: notebooks/summary.ipynb
base:
  epochs: 2
  n_pretrain: 256
  batch_size: 32
  model_size: vit_nano
  decoder_depth: 1
  probe_folds: 3
  probe_repeats: 1
grid:
  mask_ratio: [0.5, 0.9]
seeds: [0]
"""


def test_real_ablation_end_to_end(tmp_path):
    spec = tmp_path / "e2e.yaml"
    spec.write_text(SPEC)
    assert main(["ablate", str(spec), "--results-root", str(tmp_path / "results")]) == 0
    out = tmp_path / "results" / "e2e"
    records = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/record.json"))]
    assert [r["params"]["mask_ratio"] for r in records] == [0.5, 0.9]
    for r in records:
        assert r["data"]["n_patches"] == 256 and r["data"]["n_labelled"] == 273
        assert r["git_commit"] and r["seed"] == 0 and r["wall_time_s"] > 0
        assert set(r["normalization"]["mean"]) == set(r["params"]["bands"].split(","))
        assert 0.0 <= r["metrics"]["pretrained_acc_mean"] <= 1.0
        assert r["metrics"]["pretrained_effective_rank"] > 1 and r["metrics"]["pretrained_collapsed"] == 0.0
        assert "output_dir" not in r["params"] and r["checkpoint"] == "encoder.pt"
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 2 * 3 * 3  # runs x encoders x folds
    assert set(table["encoder"]) == {"pretrained", "random_init", "band_stats"}
    history = pd.read_csv(next(out.glob("runs/*/history.csv")))
    assert {"step", "loss", "lr"} <= set(history.columns) and len(history) == 2 * (256 // 32)
    html = (out / "summary.html").read_text()
    assert "data:image/png;base64" in html


def test_bad_parameter_value_fails_before_any_run(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace("epochs: 2", "epochs: two"))
    assert main(["ablate", str(spec), "--results-root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and "bad.yaml" in err
    assert not (tmp_path / "results" / "bad").exists() or not list((tmp_path / "results").rglob("record.json"))


def test_invalid_value_in_the_notebook_names_the_parameter(tmp_path, capsys):
    # found by the preflight (the notebook's own PretrainConfig rules), before any kernel starts
    spec = tmp_path / "e2e_badsize.yaml"
    spec.write_text(SPEC.replace("model_size: vit_nano", "model_size: vit_huge").replace("[0.5, 0.9]", "[0.5]"))
    assert main(["ablate", str(spec), "--results-root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "before any run started" in err and "model_size" in err and "vit_huge" in err
    assert not (tmp_path / "results").exists()


TINY = {"epochs": 1, "model_size": "vit_nano", "decoder_dim": 32, "decoder_depth": 1, "probe_folds": 2, "probe_repeats": 1}
S1S2 = "B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12,VV,VH"


@pytest.mark.parametrize("params", [
    # multi-modal: Sentinel-2 groups contrasted with the Sentinel-1 group of the same place
    {"dataset": "s1s2", "bands": S1S2, "tokenizer": "groups", "band_groups": "B02,B03,B04,B08|B05,B06,B07,B8A|B11,B12|VV,VH",
     "objective": "cross_view", "batch_size": 16},
    # time series: masked reconstruction over 4 dates of the Slovenia NDVI series, tube masking
    {"dataset": "slovenia", "bands": "NDVI", "tokenizer": "temporal", "img_size": 32, "tile_stride": 16,
     "num_dates": 4, "objective": "mae", "mask": "group_consistent", "batch_size": 8},
], ids=["s1s2-cross-view", "slovenia-time-series"])
def test_multimodal_and_time_series_runs_end_to_end(tmp_path, params):
    import eolab.pipeline as ex

    cfg = ex.PretrainConfig(**TINY, **params, output_dir=str(tmp_path))
    data = ex.prepare_data(cfg)
    run = ex.pretrain(cfg, data)
    record = ex.write_record(cfg, data, run, ex.evaluate(cfg, data, run))
    assert record["task"] == params["objective"] and record["metrics"]["train_steps"] >= 1
    assert record["metrics"]["flops_per_step"] > 0 and (tmp_path / "encoder.pt").exists()
    if params["dataset"] == "s1s2":  # probed on EuroSAT through its Sentinel-2 tokens
        assert 0 < record["metrics"]["pretrained_acc_mean"] <= 1
    else:  # a time-series encoder cannot read single-date EuroSAT: said, not faked
        assert "not applicable" in record["evaluation"]["not_applicable"]
        assert not any(k.endswith("_acc_mean") for k in record["metrics"])


def test_scene_run_with_sampler_held_out_loss_and_benchmark(tmp_path):
    """The pieces the scaling, sampling and benchmark studies add to one run, through the entry point."""
    import json

    import eolab.pipeline as ex

    cfg = ex.PretrainConfig(**TINY, sources="major_tom,ssl4eo", val_sources="hydro", n_pretrain=128,
                            sampling="kcenter", probe_baselines=False, knn_every=0,
                            benchmark="eurosat,era5_next_day_t2m", output_dir=str(tmp_path))
    data = ex.prepare_data(cfg)
    run = ex.pretrain(cfg, data)
    table = ex.embedding_benchmark(cfg, data, run)
    record = ex.write_record(cfg, data, run, ex.evaluate(cfg, data, run))
    metrics = record["metrics"]
    assert metrics["val_loss"] > 0 and "sample_vendi_cos" in metrics  # held-out loss, sample representativeness
    assert metrics["flops_per_step"] == pytest.approx(metrics["analytic_flops_per_step"], rel=0.05)
    assert set(record["folds"][0]) >= {"encoder", "accuracy"} and {f["encoder"] for f in record["folds"]} == {"pretrained"}
    sample = json.loads((tmp_path / ex.SAMPLE_FILE).read_text())
    assert len(sample["ids"]) == 128 and sample["ids_sha1"] == record["data"]["patches_sha1"]
    assert record["benchmark"] == "benchmark.csv" and (tmp_path / "benchmark.csv").exists()
    era5 = table[table["task"] == "era5_next_day_t2m"]
    pretrained = era5[era5["encoder"] == "pretrained"]
    assert len(pretrained) and pretrained["not_applicable"].str.contains("lacks bands").all()  # said, not faked
    assert (table[(table["task"] == "eurosat") & (table["encoder"] == "pretrained")]["value"].notna()).any()


def test_loss_metrics_of_one_step_is_undecided_not_an_error():
    from eolab.pipeline import loss_metrics

    one = loss_metrics(pd.DataFrame({"step": [1], "loss": [0.8]}))
    assert one["loss_first10pct"] == one["loss_last10pct"] == 0.8 and np.isnan(one["loss_fell"])
    falling = loss_metrics(pd.DataFrame({"step": range(1, 21), "loss": np.linspace(1.0, 0.5, 20)}))
    assert falling["loss_fell"] == 1.0 and falling["loss_first10pct"] > falling["loss_last10pct"]


def test_a_single_optimiser_step_run_writes_its_record(tmp_path):
    """One optimiser step (a smoke test of a new configuration) used to fail in write_record."""
    import eolab.pipeline as ex

    cfg = ex.PretrainConfig(**TINY, sources="hydro", n_pretrain=16, batch_size=16, knn_every=0,
                            probe_baselines=False, output_dir=str(tmp_path))
    data = ex.prepare_data(cfg)
    run = ex.pretrain(cfg, data)
    record = ex.write_record(cfg, data, run, ex.evaluate(cfg, data, run))
    metrics = record["metrics"]
    assert metrics["train_steps"] == 1 and np.isfinite(metrics["loss_last10pct"]) and np.isnan(metrics["loss_fell"])
    assert (tmp_path / "record.json").exists()
