"""The embedding benchmark (eolab.evaluate.battery): its contract on tiny tasks and encoders, and
that every real-data task loads what it declares."""

import numpy as np
import pandas as pd
import pytest
import torch

from eolab.checkpoint import CheckpointError, save_encoder
from eolab.cli.benchmark import main
from eolab.data.downstream import TASKS, Task
from eolab.data.stats import Normalization
from eolab.evaluate import protocols as P
from eolab.evaluate.battery import COLUMNS, Settings, TaskRun, evaluate
from eolab.evaluate.diagnostics import alignment, knn_consistency, uniformity
from eolab.evaluate.encoders import (
    BandStats,
    EolabEncoder,
    FunctionEncoder,
    NotApplicable,
    Plan,
)
from eolab.evaluate.leakage import overlaps
from eolab.evaluate.store import EmbeddingStore
from eolab.models.vit import build_encoder, encoder_config

BANDS = ("B02", "B03", "B04", "B08")
SETTINGS = Settings(folds=3, repeats=1, shots=(1, 3), draws=3, subsamples=4)


def _toy_loader(root) -> dict:
    """48 single-date 16 x 16 px images of 3 classes whose brightness depends on the class, at 12
    places (4 samples each); a quarter of the places is the documented test split."""
    rng = np.random.default_rng(0)
    n = 48
    target = np.arange(n) % 3
    image = torch.from_numpy(rng.normal(0.1, 0.02, (n, 1, len(BANDS), 16, 16)).astype(np.float32))
    image += torch.from_numpy(target.astype(np.float32))[:, None, None, None, None] * 0.05
    place = np.arange(n) // 4
    lonlat = np.c_[place % 4 * 3.0, place // 4 * 3.0]
    return {"image": image, "bands": BANDS, "units": ("reflectance",) * 4, "modality": ("s2",) * 4,
            "target": target, "id": [f"toy/{i}" for i in range(n)], "lonlat": lonlat, "group": place,
            "time": None, "doy": None, "is_test": place >= 9, "classes": ("a", "b", "c")}


TOY = Task("toy", "classification", BANDS, ("reflectance",) * 4, ("s2",) * 4, num_dates=1, size=16, gsd_m=10.0,
           dated=False, loader=_toy_loader)


def _normalization(bands=BANDS) -> Normalization:
    return Normalization(bands, "reflectance", dict.fromkeys(bands, 0.1), dict.fromkeys(bands, 0.05), "test")


def _tiny_encoder(bands=BANDS, img_size=16, seed=0) -> EolabEncoder:
    torch.manual_seed(seed)
    enc = build_encoder("vit_nano", bands, img_size=img_size, patch_size=8)
    return EolabEncoder(enc, _normalization(bands), name="nano", config=encoder_config("vit_nano", bands, img_size, 8))


@pytest.fixture(scope="module")
def toy_table(tmp_path_factory, root):
    cache = tmp_path_factory.mktemp("emb")
    table = evaluate(_tiny_encoder(), tasks=[TOY], data_root=root, cache_dir=cache, settings=SETTINGS,
                     protocols=("linear", "knn", "few_shot", "robustness", "diagnostics"), pretraining=None)
    return table, cache


def test_table_is_tidy_with_intervals(toy_table):
    table, _ = toy_table
    assert tuple(table.columns) == COLUMNS
    assert set(table["encoder"]) == {"nano", "random_init", "band_stats"}
    done = table[table["not_applicable"] == ""]
    assert set(done["protocol"]) == {"linear", "knn", "few_shot", "diagnostics"}
    assert {"random", "blocked", "official"} <= set(done["split"])
    assert done["value"].notna().all() and (done["ci_low"] <= done["ci_high"]).all()
    lin = done[(done["protocol"] == "linear") & (done["metric"] == "accuracy")]
    assert (lin["value"] > 0.5).all()  # the classes differ in brightness: every feature set finds it
    # Rows over folds carry every fold's metric, so encoders can be paired fold by fold; the row's
    # value is their mean. A single documented test metric has none.
    over_folds = lin[lin["split"] != "official"]
    for _, row in over_folds.iterrows():
        folds = [float(v) for v in row["fold_values"].split(";")]
        assert len(folds) == row["n"] and np.isclose(np.nanmean(folds), row["value"])
    assert (lin.loc[lin["split"] == "official", "fold_values"] == "").all()
    # No robustness scenario removes some but not all of B02, B03, B04, B08: said, not skipped silently.
    robust = table[table["protocol"] == "robustness"]
    assert len(robust) and (robust["not_applicable"].str.contains("no scenario")).all()


def test_cached_embeddings_are_reused_identically(toy_table, root):
    table, cache = toy_table
    store = EmbeddingStore(cache)
    run = TaskRun(TOY, root, store, SETTINGS)
    enc = _tiny_encoder()
    plan = enc.plan(TOY)
    x = run.features(enc, plan, "mean", -1, "2/2")
    assert store.hits == 1 and store.misses == 0
    fresh = enc.features(TOY, TOY.load(root), plan)
    np.testing.assert_allclose(x, fresh, rtol=1e-5, atol=1e-6)
    kwargs = {"tasks": [TOY], "data_root": root, "cache_dir": cache, "settings": SETTINGS, "pretraining": None,
              "protocols": ("linear", "knn", "few_shot", "robustness", "diagnostics")}
    refit = evaluate(enc, reuse_results=False, **kwargs)  # embeddings from the cache, every probe refitted
    assert refit.attrs["cache"]["misses"] == 0 and refit.attrs["cache"]["hits"] > 0
    pd.testing.assert_frame_equal(refit, table)
    reread = evaluate(enc, **kwargs)  # the rows themselves from the cache
    assert reread.attrs["cache"]["result_hits"] == 3 and reread.attrs["cache"]["hits"] == 0
    pd.testing.assert_frame_equal(reread, table)


def test_embeddings_are_labelled_arrays(toy_table):
    _, cache = toy_table
    import xarray as xr

    path = next(p for p in cache.rglob("toy-*.nc") if "tasks" not in p.parts)
    ds = xr.open_dataset(path)
    assert ds["embedding"].dims == ("sample", "dim")
    assert {"id", "lon", "lat"} <= set(ds.coords) and str(ds["id"].values[0]).startswith("toy/")
    assert ds.attrs["task"] == "toy" and ds.attrs["encoder_fingerprint"] and "pool" in ds.attrs


def test_mismatched_bands_are_not_applicable_with_the_reason(root):
    enc = _tiny_encoder(bands=("B02", "B03", "B04", "B11"))
    plan = enc.plan(TOY)
    assert isinstance(plan, NotApplicable) and "['B11']" in plan.reason
    table = evaluate(enc, tasks=[TOY], data_root=root, baselines=("band_stats",), settings=SETTINGS,
                     protocols=("linear",), pretraining=None, cache_dir=None)
    nano = table[table["encoder"] == "nano"]
    assert len(nano) == 1 and nano["value"].isna().all() and "lacks bands ['B11']" in nano["not_applicable"].iloc[0]
    assert (table[table["encoder"] == "band_stats"]["not_applicable"] == "").all()


def test_real_tasks_declare_what_the_encoders_need():
    s2 = _tiny_encoder(bands=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"), img_size=64)
    assert isinstance(s2.plan(TASKS["era5_next_day_t2m"]), NotApplicable)
    assert isinstance(s2.plan(TASKS["slovenia_ndvi_landcover"]), NotApplicable)
    assert s2.plan(TASKS["slovenia_landcover"]).spatial == "tiles"
    presto = s2.plan(TASKS["presto_algae"])
    assert presto.spatial == "broadcast" and "broadcast" in presto.adapter
    assert s2.plan(TASKS["eurosat"]).adapter == ""
    # A function of the climate variable applies to the climate task and to no Sentinel-2 task.
    climate = FunctionEncoder(lambda x: x.flatten(2).mean(-1), bands=("t2m",), unit="K", name="hourly_means",
                              num_dates=1)
    assert isinstance(climate.plan(TASKS["era5_next_day_t2m"]), Plan)
    assert isinstance(climate.plan(TASKS["eurosat"]), NotApplicable)


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, root, capsys):
    bad = tmp_path / "run" / "encoder.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=str(bad)):
        evaluate(bad, tasks=[TOY], data_root=root)
    assert main(["--checkpoint", str(bad), "--tasks", "eurosat"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_checkpoint_path_round_trip(tmp_path, root):
    enc = _tiny_encoder()
    path = save_encoder(tmp_path / "run" / "encoder.pt", enc.encoder, enc.config, enc.normalization)
    loaded = EolabEncoder.from_checkpoint(path)
    assert loaded.name == "run" and loaded.fingerprint() != enc.random_init().fingerprint()
    np.testing.assert_allclose(loaded.features(TOY, TOY.load(root), loaded.plan(TOY)),
                               enc.features(TOY, TOY.load(root), enc.plan(TOY)), rtol=1e-5, atol=1e-6)


def test_blocked_split_shares_no_block():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 15, 200)
    y = rng.integers(0, 3, 200)
    for kind, target in (("classification", y), ("regression", rng.normal(size=200))):
        folds = P.blocked_splits(target, groups, kind, folds=5, repeats=2)
        assert len(folds) == 10
        for f in folds:
            assert not set(groups[f.train]) & set(groups[f.test])


def test_depth_and_pooling_axes(root):
    enc = _tiny_encoder()
    table = evaluate(enc, tasks=[TOY], data_root=root, baselines=(), settings=SETTINGS, protocols=("linear",),
                     splits=("random",), pools=("mean", "cls"), blocks=(-1, 0), pretraining=None)
    assert set(zip(table["pool"], table["block"], strict=True)) == {("mean", "2/2"), ("mean", "1/2"),
                                                                     ("cls", "2/2"), ("cls", "1/2")}
    x = torch.randn(2, 4, 16, 16)
    layers = enc.encoder(x, return_layers=True)[1]
    torch.testing.assert_close(enc.encoder.tokens(x, block=0), layers[0])
    torch.testing.assert_close(enc.encoder.embed(x), enc.encoder.embed(x, block=-1))


def test_dense_features_of_a_segmentation_scene():
    """A 20 x 18 px scene tiled into 16 px windows (reflect-padded), features at sampled pixels."""
    rng = np.random.default_rng(0)
    pixels = np.c_[np.zeros(10, dtype=int), rng.integers(0, 20, 10), rng.integers(0, 18, 10)]
    batch = {"image": torch.rand(1, 2, 4, 20, 18), "bands": BANDS, "pixel": pixels, "target": np.arange(10) % 2}
    task = Task("scene", "segmentation", BANDS, ("reflectance",) * 4, ("s2",) * 4, num_dates=2, size=20,
                gsd_m=10.0, dated=False, loader=lambda r: batch)
    enc = _tiny_encoder()
    plan = enc.plan(task)
    assert plan.spatial == "tiles" and plan.dates == "mean"
    x = enc.features(task, batch, plan)
    assert x.shape == (10, 64) and np.isfinite(x).all()
    stats = BandStats().features(task, batch, BandStats().plan(task))
    assert stats.shape == (10, 3 * len(BANDS))


def test_broadcast_pixels_and_dropped_bands():
    """A pixel time series read by an image encoder (broadcast), with a band missing at test time."""
    batch = {"image": torch.rand(6, 3, 4, 1, 1), "bands": BANDS, "target": np.arange(6) % 2}
    task = Task("pixels", "classification", BANDS, ("reflectance",) * 4, ("s2",) * 4, num_dates=3, size=1,
                gsd_m=10.0, dated=False, loader=lambda r: batch)
    enc = _tiny_encoder()
    plan = enc.plan(task)
    assert (plan.dates, plan.spatial) == ("mean", "broadcast")
    full, dropped = enc.features(task, batch, plan), enc.features(task, batch, plan, drop=("B08",))
    assert full.shape == dropped.shape == (6, 64) and not np.allclose(full, dropped)


def test_leakage_marks_overlapping_footprints():
    footprints = pd.DataFrame({"lon": [10.0, 50.0], "lat": [45.0, 0.0], "dates": ["2020-06-01", ""],
                               "size_m": [640.0, 640.0]})
    lonlat = np.array([[10.001, 45.001], [10.2, 45.0], [50.0, 0.0]])  # 140 m away, 16 km away, on top
    table = overlaps(lonlat, ["2020-06-01", "2020-06-01", "2021-01-01"], 640.0, footprints)
    assert table["overlaps"].tolist() == [True, False, True]
    assert table["same_date"].tolist() == [1.0, 0.0, 0.0]
    assert table["nearest_m"].iloc[1] > 10_000


def test_label_free_diagnostics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    assert alignment(x, x) == 0 and alignment(x, rng.normal(size=x.shape)) > 1
    assert uniformity(np.ones((20, 4))) == 0 and uniformity(x) < -1
    assert knn_consistency(x, x, k=5) == 1 and knn_consistency(x, rng.normal(size=x.shape), k=5) < 0.3


@pytest.fixture(scope="module")
def loaded(root):
    """Every real-data task, loaded once (about 5 s, most of it EuroSAT's GeoTIFFs)."""
    return {name: task.load(root) for name, task in TASKS.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_real_task_loads_its_declared_shapes(loaded, name):
    task, batch = TASKS[name], loaded[name]
    image, n = batch["image"], len(batch["target"])
    assert image.ndim == 5 and image.shape[1:3] == (task.num_dates, len(task.bands))
    if task.kind == "segmentation":
        assert image.shape[-2:] == (101, 100) and batch["pixel"].shape == (n, 3)
    else:
        assert image.shape[0] == n and image.shape[-1] == task.size
    assert len(batch["id"]) == len(set(batch["id"])) == n
    assert batch["lonlat"].shape == (n, 2) and np.isfinite(batch["lonlat"]).all()
    assert len(np.unique(batch["group"])) >= 2  # a blocked split exists
    assert torch.isfinite(image).all()
    if task.kind in P.CLASSIFICATION:
        assert batch["target"].min() == 0 and len(batch["classes"]) == batch["target"].max() + 1


def test_pretraining_run_names_benchmark_tasks_that_exist():
    from eolab.config import PretrainConfig

    assert PretrainConfig(benchmark="all").benchmark_list == tuple(TASKS)
    assert PretrainConfig(benchmark="eurosat, presto_algae").benchmark_list == ("eurosat", "presto_algae")
    with pytest.raises(ValueError, match="parameter 'benchmark'.*eurosat"):
        PretrainConfig(benchmark="eurosat,eurosatt")


def test_command_line_names_a_corrupt_checkpoint(tmp_path, capsys):
    from eolab.__main__ import main

    bad = tmp_path / "encoder.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["benchmark", "--checkpoint", str(bad), "--tasks", "eurosat"]) == 2  # no `--` needed
    assert str(bad) in capsys.readouterr().err
