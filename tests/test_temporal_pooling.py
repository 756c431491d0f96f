"""Temporal pooling of a single-date encoder's per-date embeddings of a series: mean (the default,
unchanged), concatenation in date order, and a small attention probe learned on each fold's
training part only."""

import numpy as np
import pytest
import torch

from eolab.cli import benchmark as cli
from eolab.data.downstream import Task
from eolab.data.paths import data_root
from eolab.evaluate import encoders
from eolab.evaluate import protocols as P
from eolab.evaluate.battery import Settings, TaskRun, evaluate
from eolab.evaluate.encoders import FunctionEncoder
from eolab.evaluate.store import EmbeddingStore

BANDS = ("B02", "B03", "B04", "B08")
STEPS = 4


def series_batch(n=60, seed=0):
    """n pixel series of 4 dates; the class shows at date 2 only (the other dates are noise), and
    band B02 holds the sample's index / 1000 at every date (so a probe's training rows can be read back)."""
    rng = np.random.default_rng(seed)
    target = np.arange(n) % 3
    image = rng.normal(0.3, 0.3, (n, STEPS, len(BANDS), 1, 1)).astype(np.float32)
    image[:, 2] = rng.normal(0.2, 0.03, (n, len(BANDS), 1, 1))
    image[:, 2, 1:, 0, 0] += target[:, None] * 0.2
    image[:, :, 0, 0, 0] = np.arange(n)[:, None] / 1000
    return {"image": torch.from_numpy(image), "bands": BANDS, "units": ("reflectance",) * 4, "modality": ("s2",) * 4,
            "target": target, "id": [f"s/{i}" for i in range(n)], "lonlat": np.c_[np.arange(n) % 6 * 2.0, np.zeros(n)],
            "group": np.arange(n) % 6, "time": None, "doy": None, "is_test": None}


def _load(root):
    return series_batch()


SERIES = Task("series", "classification", BANDS, ("reflectance",) * 4, ("s2",) * 4, num_dates=STEPS, size=1, gsd_m=10.0,
              dated=False, loader=_load)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


ENC = FunctionEncoder(_identity, bands=BANDS, unit="reflectance", name="pixel")
FAST = Settings(folds=3, repeats=1, shots=(1,), draws=2, subsamples=3)


def _run(tmp_path, settings=FAST) -> TaskRun:
    return TaskRun(SERIES, data_root(None), EmbeddingStore(tmp_path / "cache"), settings)


def _evaluate(tmp_path, temporal, protocols=("linear",), **kwargs):
    settings = Settings(folds=3, repeats=1, shots=(1,), draws=2, subsamples=3, temporal_pooling=temporal)
    return evaluate(ENC, tasks=[SERIES], protocols=protocols, splits=("random",), baselines=(), settings=settings,
                    pretraining=None, cache_dir=tmp_path / "cache", **kwargs)


def test_concat_is_the_per_date_embeddings_in_date_order(tmp_path):
    run, plan = _run(tmp_path), ENC.plan(SERIES)
    assert plan.per_date
    x = run.features(ENC, plan, "mean", -1, "", temporal="concat")
    d = len(BANDS)
    assert x.shape == (60, STEPS * d)  # T x D
    image = series_batch()["image"][:, :, :, 0, 0].numpy()  # (N, T, C): the identity encoder's per-date embedding
    for t in range(STEPS):
        np.testing.assert_array_equal(x[:, t * d:(t + 1) * d], image[:, t])


def test_mean_is_unchanged_and_the_cache_holds_one_per_date_set_for_every_pooling(tmp_path):
    run, plan = _run(tmp_path), ENC.plan(SERIES)
    before = ENC.features(SERIES, SERIES.load(), plan)  # the encoder's own mean over steps
    np.testing.assert_array_equal(run.features(ENC, plan, "mean", -1, "", temporal="mean"), before)
    table = _evaluate(tmp_path, ("mean", "concat", "probe"))
    assert table.attrs["cache"]["misses"] == 0 and table.attrs["cache"]["hits"] == 3  # the set run.features stored
    acc = table[table["metric"] == "accuracy"].set_index("temporal_pooling")
    assert list(acc.index) == ["mean", "concat", "probe"] and list(acc["pool"]) == ["", "concat", "probe"]
    assert acc.loc["mean", "adapter"] == "each of 4 steps embedded, mean over steps"
    assert "concatenated in date order (4 x D)" in acc.loc["concat", "adapter"]
    assert acc.loc["concat", "value"] > acc.loc["mean", "value"]  # the class shows at one date: the mean dilutes it
    fresh = _evaluate(tmp_path / "other", ("mean",))
    assert fresh.attrs["cache"]["misses"] == 1
    assert fresh["value"].tolist() == table[table["temporal_pooling"] == "mean"]["value"].tolist()


def test_single_date_tasks_and_temporal_baselines_have_no_temporal_pooling(tmp_path):
    settings = Settings(folds=3, repeats=1, temporal_pooling=("mean", "concat"))
    table = evaluate(ENC, tasks=[SERIES], protocols=("linear",), splits=("random",),
                     baselines=("flat_series",), settings=settings, pretraining=None, cache_dir=tmp_path / "cache")
    flat = table[table["encoder"] == "flat_series"]
    assert len(flat) == 2 and (flat["temporal_pooling"] == "").all()  # accuracy, balanced accuracy: once
    with pytest.raises(ValueError, match="temporal_pooling: unknown value"):
        _evaluate(tmp_path, ("median",))


def test_the_temporal_probe_is_fitted_on_each_folds_training_part_only(tmp_path, monkeypatch):
    seen = []
    fit = P.TemporalProbe.fit

    def spy(self, x, y):
        seen.append(np.sort(np.rint(x[:, 0] * 1000).astype(int)))  # B02 of date 0 holds the sample index / 1000
        return fit(self, x, y)

    monkeypatch.setattr(P.TemporalProbe, "fit", spy)
    table = _evaluate(tmp_path, ("probe",), protocols=("linear", "knn", "diagnostics"))
    folds = _run(tmp_path).folds["random"]
    assert len(seen) == len(folds)
    for rows, fold in zip(seen, folds, strict=True):
        np.testing.assert_array_equal(rows, np.sort(fold.train))
        assert not set(rows) & set(fold.test)
    linear = table[table["protocol"] == "linear"]
    assert (linear["not_applicable"] == "").all() and (linear["temporal_pooling"] == "probe").all()
    assert "learned on each fold's training part" in linear["adapter"].iloc[0]
    others = table[table["protocol"] != "linear"]
    assert set(others["protocol"]) == {"knn", "diagnostics"} and others["not_applicable"].str.contains("probe").all()


def test_the_temporal_probe_is_deterministic_and_finds_the_informative_date():
    batch = series_batch()
    x = batch["image"][:, :, 1:, 0, 0].flatten(1).numpy()  # (N, T*3) without the index band
    y = batch["target"]
    a = P.TemporalProbe("classification", STEPS, seed=0).fit(x[:45], y[:45])
    b = P.TemporalProbe("classification", STEPS, seed=0).fit(x[:45], y[:45])
    np.testing.assert_array_equal(a.predict(x[45:]), b.predict(x[45:]))
    np.testing.assert_array_equal(a.attention(x), b.attention(x))
    assert (a.predict(x[45:]) == y[45:]).mean() > 0.9
    assert a.attention(x).mean(0).argmax() == 2
    reg = P.TemporalProbe("regression", STEPS, seed=0).fit(x[:45], y[:45].astype(float))
    assert np.abs(reg.predict(x[45:]) - y[45:]).mean() < 0.5


def test_the_command_line_flag_names_the_poolings_of_the_battery():
    assert cli.TEMPORAL_POOLINGS.split(",") == list(encoders.TEMPORAL_POOLINGS)
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x.pt", "--temporal-pooling", "median"])
