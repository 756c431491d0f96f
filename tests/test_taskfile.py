"""Tasks for the embedding benchmark from anyone's data: task files, the registry, content-keyed
caches, and the data conditions that must become rows with a reason instead of an aborted call."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eolab.cli.benchmark import main
from eolab.config import PretrainConfig
from eolab.data.downstream import TASKS, Task, UnknownTaskError, get_task, register_task, unregister_task
from eolab.data.taskfile import TaskFileError, load_task_file
from eolab.evaluate.battery import Settings, evaluate
from eolab.evaluate.encoders import FunctionEncoder
from eolab.reports.benchmark import headline

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
BANDS = ("B02", "B03", "B04", "B08")
UNITS, MODALITY = ("reflectance",) * 4, ("s2",) * 4
FAST = Settings(folds=3, repeats=1, shots=(1,), draws=2, subsamples=3)


def _means(x: torch.Tensor) -> torch.Tensor:
    """Per-band spatial mean and std of (B, C, H, W) images: a small, fast, deterministic encoder."""
    return torch.cat([x.flatten(2).mean(-1), x.flatten(2).std(-1, correction=0)], 1)


MEANS = FunctionEncoder(_means, bands=BANDS, unit="reflectance", name="means")


def toy_batch(n=48, classes=3, seed=0, shuffle=False, labels=None, lonlat=True, nan=0):
    """n 8 x 8 px images whose brightness depends on the class; 12 places of 4 samples."""
    rng = np.random.default_rng(seed)
    target = np.arange(n) % classes
    image = rng.normal(0.1, 0.02, (n, 1, 4, 8, 8)).astype(np.float32) + target[:, None, None, None, None] * 0.05
    if nan:
        image.reshape(-1)[rng.choice(image.size, nan, replace=False)] = np.nan
    if shuffle:
        target = rng.permutation(target)
    place = np.arange(n) // 4
    return {"image": torch.from_numpy(image), "bands": BANDS, "units": UNITS, "modality": MODALITY,
            "target": target if labels is None else np.asarray(labels)[target], "id": [f"toy/{i}" for i in range(n)],
            "lonlat": np.c_[place % 4 * 3.0, place // 4 * 3.0] if lonlat else None,
            "group": place if lonlat else None, "time": None, "doy": None, "is_test": None}


def toy(name="toy", **kwargs) -> Task:
    return Task(name, "classification", BANDS, UNITS, MODALITY, num_dates=1, size=8, gsd_m=10.0, dated=False,
                loader=lambda root: toy_batch(**kwargs))


def run(tasks, tmp_path, protocols=("linear",), **kwargs):
    kwargs = {"baselines": (), "settings": FAST, "pretraining": None, "cache_dir": tmp_path / "cache", **kwargs}
    return evaluate(MEANS, tasks=tasks, protocols=protocols, **kwargs)


def accuracy(table, task="toy", split="random"):
    rows = table[(table["task"] == task) & (table["split"] == split) & (table["metric"] == "accuracy")]
    return float(rows["value"].iloc[0])


# ----------------------------------------------------------------------------------------------
# Caches keyed by content


@pytest.mark.parametrize("reuse", [True, False])
def test_shuffled_labels_under_the_same_name_give_chance_not_the_cached_score(tmp_path, reuse):
    first = run([toy()], tmp_path, reuse_results=reuse)
    assert accuracy(first) > 0.9
    shuffled = run([toy(shuffle=True)], tmp_path, reuse_results=reuse)
    assert shuffled.attrs["cache"]["misses"] == 1 and shuffled.attrs["cache"]["result_hits"] == 0
    assert accuracy(shuffled) < 0.6  # 3 classes: chance is 1/3
    again = run([toy()], tmp_path, reuse_results=reuse)  # the original labels: the original cached numbers
    assert accuracy(again) == accuracy(first)


def test_a_task_file_is_keyed_by_its_data_files(tmp_path):
    table = pd.DataFrame({"id": [f"s{i}" for i in range(30)], "label": np.arange(30) % 2,
                          **{f"{b}_t0": np.arange(30) % 2 * 0.1 + 0.01 * np.arange(30) % 3 for b in BANDS}})
    table.to_csv(tmp_path / "pixels.csv", index=False)
    spec = tmp_path / "task.yaml"
    spec.write_text(f"""name: pixels
kind: classification
data: {{format: table, root: {tmp_path}, files: pixels.csv, id_column: id, label_column: label}}
gsd_m: 10
bands: [{", ".join(f"{{name: {b}, column: '{b}_t{{t}}'}}" for b in BANDS)}]
splits: {{blocked: {{by: coordinates}}}}
""")
    task = get_task(str(spec))
    key = task.fingerprint()
    table.assign(label=np.random.default_rng(0).permutation(table["label"])).to_csv(tmp_path / "pixels.csv", index=False)
    assert get_task(str(spec)).fingerprint() != key


# ----------------------------------------------------------------------------------------------
# A call never aborts for one task


def test_missing_coordinates_leave_leakage_and_blocks_not_applicable(tmp_path):
    footprints = pd.DataFrame({"lon": [0.0], "lat": [0.0], "dates": [""], "size_m": [640.0]})
    table = run([toy(lonlat=False)], tmp_path, protocols=("linear", "leakage"), pretraining=footprints)
    leak = table[table["protocol"] == "leakage"]
    assert leak["value"].isna().all() and leak["not_applicable"].str.contains("no sample coordinates").all()
    blocked = table[table["split"] == "blocked"]
    assert blocked["not_applicable"].str.contains("neither coordinates nor groups").all()
    assert accuracy(table) > 0.9 and table["note"].str.contains("48 of 48 samples without coordinates").any()


def test_one_class_task_is_a_row_with_the_reason(tmp_path):
    table = run([toy(classes=1), toy("toy2")], tmp_path)
    one = table[table["task"] == "toy"]
    assert one["value"].isna().all() and one["not_applicable"].str.contains("single class").all()
    assert accuracy(table, "toy2") > 0.9


def test_labels_of_any_values_are_mapped_to_named_contiguous_classes(tmp_path):
    task = toy(labels=[10, 20, 40])
    batch = task.load()
    assert batch["target"].tolist()[:3] == [0, 1, 2] and batch["classes"] == ("10", "20", "40")
    table = run([task], tmp_path)
    assert accuracy(table) > 0.9 and table["note"].str.contains(r"labels \[10, 20, 40\] mapped").all()
    named = toy(labels=np.array(["water", "forest", "crop"])).load()
    assert named["classes"] == ("crop", "forest", "water") and set(named["target"]) == {0, 1, 2}


def test_too_few_samples_for_five_folds_use_fewer_with_a_note(tmp_path):
    table = run([toy(n=9)], tmp_path, settings=Settings(folds=5, repeats=1), protocols=("linear", "knn"))
    random = table[table["split"] == "random"]
    assert (random["not_applicable"] == "").all() and random["note"].str.contains("3-fold instead of 5-fold").all()
    tiny = run([toy(n=3)], tmp_path, settings=Settings(folds=5, repeats=1))  # one sample per class
    assert tiny[tiny["split"] == "random"]["not_applicable"].str.contains("too few for a 5-fold split").all()


def test_nan_inputs_are_filled_and_counted_before_embedding(tmp_path):
    task = toy(nan=50)
    batch = task.load()
    assert torch.isfinite(batch["image"]).all()
    table = run([task], tmp_path)
    assert accuracy(table) > 0.9 and table["note"].str.contains("50 no-data input values").all()
    empty = toy_batch()
    empty["image"][:, :, 2] = float("nan")
    with pytest.raises(ValueError, match="band B04 has no finite value"):
        Task("dead", "classification", BANDS, UNITS, MODALITY, 1, 8, 10.0, False, loader=lambda r: empty).load()


def test_a_failing_task_is_a_row_and_every_other_row_is_written(tmp_path):
    def broken(root):
        raise OSError("disk on fire")

    bad = Task("broken", "classification", BANDS, UNITS, MODALITY, 1, 8, 10.0, False, loader=broken)
    table = run([bad, toy()], tmp_path, output_dir=tmp_path / "out", baselines=("band_stats",))
    failed = table[table["task"] == "broken"]
    assert set(failed["encoder"]) == {"means", "band_stats"}
    assert failed["not_applicable"].str.contains("error: broken task could not be loaded: OSError: disk on fire").all()
    assert accuracy(table) > 0.9
    written = pd.read_csv(tmp_path / "out" / "benchmark.csv")
    assert len(written) == len(table) and set(written["task"]) == {"broken", "toy"}


def test_headline_of_a_diagnostics_only_table_is_empty_not_an_error(tmp_path):
    table = run([toy()], tmp_path, protocols=("diagnostics",))
    assert (table["protocol"] == "diagnostics").all()
    head = headline(table)
    assert head.empty and list(head.index.names) == ["task", "encoder", "pool", "block"]


# ----------------------------------------------------------------------------------------------
# Naming tasks: the registry, task files, the command line, the pre-training parameter


def test_registered_task_is_found_by_name(tmp_path):
    task = register_task(toy("my_toy"))
    try:
        assert get_task("my_toy") is task
        assert accuracy(run(["my_toy"], tmp_path), "my_toy") > 0.9
        with pytest.raises(ValueError, match="built in"):
            register_task(toy("eurosat"))
    finally:
        unregister_task("my_toy")
    with pytest.raises(UnknownTaskError, match="unknown task 'my_toy'.*eurosat"):
        get_task("my_toy")


def test_unknown_task_is_a_usage_error_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", "x.pt", "--tasks", "eurosat,mytask"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: unknown task 'mytask'" in err and "presto_algae" in err
    with pytest.raises(SystemExit):
        main(["--checkpoint", "x.pt", "--tasks", "missing/task.yaml"])
    assert "task file 'missing/task.yaml' does not exist" in capsys.readouterr().err


def test_pretraining_benchmark_parameter_takes_task_files():
    cfg = PretrainConfig(benchmark=f"eurosat, {EXAMPLES / 'presto_algae.yaml'}")
    assert get_task(cfg.benchmark_list[1]).name == "presto_algae_file"


def test_task_file_globs_absolute_and_matching_nothing(tmp_path):
    task = Task("abs", "classification", BANDS, UNITS, MODALITY, 1, 8, 10.0, False, loader=lambda r: toy_batch(),
                files=(str(EXAMPLES / "*.yaml"),))
    assert task.fingerprint()  # an absolute glob, outside the data root
    nothing = Task("none", "classification", BANDS, UNITS, MODALITY, 1, 8, 10.0, False,
                   loader=load_task_file, files=("no/such/*.tif",))
    with pytest.raises(FileNotFoundError, match="'no/such/\\*.tif' matches no file"):
        nothing.fingerprint()


def test_task_file_fields_are_checked_with_the_file_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: classification\ndata: {format: table, files: a.csv}\ngsd_m: 10\n"
                   "bands: [{name: B02, wavelenght_nm: 490}]\n")
    with pytest.raises(TaskFileError, match=r"bad.yaml: bands\[0\]: unknown field\(s\) \['wavelenght_nm'\]"):
        load_task_file(bad)
    bad.write_text("name: x\nkind: classification\ndata: {format: parquet}\ngsd_m: 10\nbands: [{name: B02}]\n")
    with pytest.raises(TaskFileError, match="data.format: one of"):
        load_task_file(bad)


def test_task_file_forms_wide_csv_long_parquet_hdf5_zarr(tmp_path):
    rng = np.random.default_rng(0)
    n, t = 40, 3
    label = np.array(["wheat", "maize"])[np.arange(n) % 2]
    values = rng.normal(1000, 50, (n, t, 2)) + (np.arange(n) % 2)[:, None, None] * 300
    values[0, 1, 0] = 65535  # no data
    wide = pd.DataFrame({"pid": [f"p{i}" for i in range(n)], "crop": label, "x": rng.uniform(0, 5, n),
                         "y": rng.uniform(40, 45, n),
                         **{f"{b}-ts{k}": values[:, k, j] for j, b in enumerate(("red", "nir")) for k in range(t)}})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    long = pd.DataFrame([{"pid": f"p{i}", "date": f"2021-0{k + 1}-15", "crop": label[i], "red": values[i, k, 0],
                          "nir": values[i, k, 1]} for i in range(n) for k in range(t)])
    long.to_parquet(tmp_path / "long.parquet")
    import h5py
    import zarr

    x = values.transpose(0, 2, 1)  # stored (sample, band, time)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["x"], f["y"] = x, (np.arange(n) % 2) * 7 + 3  # labels 3 and 10
    zarr.save(str(tmp_path / "a.zarr"), x=x, y=(np.arange(n) % 2) * 7 + 3)
    bands = ("bands: [{name: B04, column: 'red-ts{t}', wavelength_nm: 665}, "
             "{name: B08, column: 'nir-ts{t}', wavelength_nm: 842}]")
    forms = {
        "wide": "format: table, files: wide.csv, id_column: pid, label_column: crop, lon_column: x, lat_column: y",
        "long": "format: table, layout: long, files: long.parquet, id_column: pid, time_column: date, label_column: crop",
        "h5": "format: arrays, inputs: 'a.h5:x', target: 'a.h5:y', axes: [sample, band, time]",
        "zarr": "format: arrays, inputs: 'a.zarr:x', target: 'a.zarr:y', axes: [sample, band, time]",
    }
    for form, data in forms.items():
        spec = tmp_path / f"{form}.yaml"
        b = bands if form == "wide" else bands.replace("'red-ts{t}'", "red").replace("'nir-ts{t}'", "nir")
        spec.write_text(f"name: {form}\nkind: classification\ndata: {{root: {tmp_path}, {data}}}\nsteps: {t}\n"
                        f"gsd_m: 10\nscale: 0.0001\nnodata: 65535\n{b}\n")
        task = get_task(str(spec))
        batch = task.load()
        assert batch["image"].shape == (n, t, 2, 1, 1) and task.wavelengths == (665, 842)
        assert torch.isfinite(batch["image"]).all() and len(batch["classes"]) == 2
        assert np.isclose(float(batch["image"][1, 0, 1, 0, 0]), values[1, 0, 1] / 1e4, rtol=1e-6)
        assert any("no-data" in note for note in batch["notes"])
        assert task.dated == (form == "long") and (batch["doy"] is not None) == (form == "long")


# ----------------------------------------------------------------------------------------------
# Built-in tasks rewritten as task files give identical results (real data)


@pytest.mark.slow
@pytest.mark.parametrize(("builtin", "file"), [("eurosat", "eurosat.yaml"), ("presto_algae", "presto_algae.yaml")])
def test_builtin_task_as_a_task_file_gives_identical_numbers(tmp_path, root, builtin, file):
    task = get_task(str(EXAMPLES / file))
    assert task.bands == TASKS[builtin].bands or set(task.bands) == set(TASKS[builtin].bands)
    kwargs = {"protocols": ("linear", "knn"), "baselines": ("band_stats",), "data_root": root,
              "settings": Settings(folds=3, repeats=1)}
    a = run([builtin], tmp_path, **kwargs)
    b = run([task], tmp_path, **kwargs)
    assert len(a) == len(b) and (a["not_applicable"] == "").all()
    columns = ["encoder", "protocol", "split", "metric", "value", "ci_low", "ci_high", "n", "n_samples"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))


@pytest.mark.slow
def test_worldcereal_task_file_runs_on_the_benchmark(tmp_path, root):
    task = get_task(str(EXAMPLES / "worldcereal_corsica_monthly.yaml"))
    table = run([task], tmp_path, baselines=("band_stats",), data_root=root, settings=Settings(folds=3, repeats=1))
    lin = table[(table["metric"] == "accuracy") & (table["split"] == "random")]
    assert set(lin["encoder"]) == {"means", "band_stats"} and (lin["value"] > 1 / 11).all()
    assert table["note"].str.contains("no-data input values").all()


# ----------------------------------------------------------------------------------------------
# Bands matched by wavelength


def test_bands_are_matched_by_wavelength_and_never_cross_by_name_alone(tmp_path):
    from eolab.data.bands import BANDS
    from eolab.evaluate.encoders import NotApplicable

    # Landsat OLI surface reflectance, named as Landsat names them: SR_B2 (blue) .. SR_B7 (SWIR 2)
    oli = {"SR_B2": 482, "SR_B3": 561, "SR_B4": 655, "SR_B5": 865, "SR_B6": 1609, "SR_B7": 2201}
    rng = np.random.default_rng(0)
    n = 30
    np.save(tmp_path / "x.npy", rng.normal(0.2, 0.05, (n, len(oli))) + (np.arange(n) % 2)[:, None] * 0.1)
    np.save(tmp_path / "y.npy", np.arange(n) % 2)
    bands = ", ".join(f"{{name: {b}, wavelength_nm: {w}}}" for b, w in oli.items())
    spec = tmp_path / "landsat.yaml"
    spec.write_text(f"name: landsat\nkind: classification\ndata: {{format: arrays, root: {tmp_path}, inputs: x.npy, "
                    f"target: y.npy, axes: [sample, band]}}\ngsd_m: 30\nbands: [{bands}]\n")
    task = get_task(str(spec))
    s2 = FunctionEncoder(lambda x: x.flatten(1), bands=[BANDS[b] for b in ("B02", "B03", "B04", "B8A", "B11", "B12")],
                         unit="reflectance", name="s2")
    plan = s2.plan(task)
    assert plan.bands == ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
    assert plan.as_bands == ("B02", "B03", "B04", "B8A", "B11", "B12") and "B8A<-SR_B5 (0 nm apart)" in plan.adapter
    table = evaluate(s2, tasks=[task], protocols=("linear",), splits=("random",), baselines=(), settings=FAST,
                     pretraining=None, cache_dir=tmp_path / "cache")
    assert (table["not_applicable"] == "").all() and table["adapter"].str.contains("B11<-SR_B6").all()
    assert accuracy(table, "landsat") > 0.9
    # An S2 band with no OLI counterpart (red edge B05, 704 nm) is named in a not-applicable row.
    red_edge = FunctionEncoder(lambda x: x.flatten(1), bands=[BANDS["B04"], BANDS["B05"]], unit="reflectance")
    assert isinstance(reason := red_edge.plan(task), NotApplicable) and "['B05']" in reason.reason
    # A task band called B05 at 865 nm (another sensor's numbering) is not Sentinel-2's B05 (704 nm).
    spec.write_text(spec.read_text().replace("SR_B5", "B05"))
    assert isinstance(red_edge.plan(get_task(str(spec))), NotApplicable)


# ----------------------------------------------------------------------------------------------
# Aggregation and the leaderboard


def _scores_table() -> pd.DataFrame:
    """3 tasks x 3 seeds; random_init scores 0.5, band_stats 0.7, the encoder 0.7 + 0.1 * task index."""
    rows = []
    for t, task in enumerate(("eurosat", "presto_algae", "slovenia_landcover")):
        for seed in range(3):
            for enc, value in (("random_init", 0.5), ("band_stats", 0.7), ("enc", 0.7 + 0.1 * t + 0.01 * seed)):
                rows.append({"task": task, "encoder": enc, "protocol": "linear", "split": "random", "pool": "",
                             "block": "", "variant": "", "adapter": "", "metric": "accuracy", "value": value,
                             "ci_low": value, "ci_high": value, "n": 5, "not_applicable": "", "seed": seed})
    return pd.DataFrame(rows)


def test_scores_normalised_between_baselines_and_their_interquartile_mean():
    from eolab.reports.benchmark import aggregate, iqm, leaderboard, normalised_scores

    table = _scores_table()
    norm = normalised_scores(table)
    enc = norm[norm["encoder"] == "enc"]
    np.testing.assert_allclose(enc.sort_values(["task", "seed"])["normalised"].to_numpy()[:3], [1.0, 1.05, 1.1])
    assert set(norm[norm["encoder"] == "random_init"]["normalised"]) == {0.0}
    assert iqm([0, 1, 2, 3, 100]) == pytest.approx(2.0)  # the outlier does not count
    agg = aggregate(table, n_boot=200)
    overall = agg[(agg["encoder"] == "enc") & (agg["group"] == "all")].iloc[0]
    assert overall["iqm"] == pytest.approx(iqm(enc["normalised"])) and overall["tasks"] == 3 and overall["seeds"] == 3
    assert overall["ci_low"] <= overall["iqm"] <= overall["ci_high"] and overall["ci_low"] < overall["ci_high"]
    assert {"image", "time series", "per-pixel", "all"} <= set(agg["group"])
    board = leaderboard(table)
    assert list(board.columns[:5]) == ["backbone", "task", "metric", "seed", "protocol"] and len(board) == 27


def test_command_line_runs_a_registered_task_and_writes_the_leaderboard(tmp_path, capsys):
    from eolab.checkpoint import save_encoder
    from eolab.data.stats import Normalization
    from eolab.models.vit import build_encoder, encoder_config

    torch.manual_seed(0)
    vit = build_encoder("vit_nano", BANDS, img_size=8, patch_size=4)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.1), dict.fromkeys(BANDS, 0.05), "test")
    checkpoint = save_encoder(tmp_path / "run" / "encoder.pt", vit, encoder_config("vit_nano", BANDS, 8, 4), norm)
    register_task(toy("cli_toy"))
    try:
        code = main(["--checkpoint", str(checkpoint), "--tasks", "cli_toy", "--protocols", "linear", "--splits", "random",
                     "--folds", "3", "--repeats", "1", "--no-leakage-record", "--output", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache")])
    finally:
        unregister_task("cli_toy")
    assert code == 0
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert set(board["backbone"]) == {"run (mean, 2/2)", "random_init (mean, 2/2)", "band_stats"}
    assert set(board["seed"]) == {0} and "cli_toy" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Temporal baselines


def test_temporal_baselines_read_the_season_that_band_statistics_average_away(tmp_path):
    """Two classes with the same values in a different seasonal order: per-band mean and std are
    identical, the flattened series and the harmonic summary tell them apart."""
    n, t = 60, 12
    rng = np.random.default_rng(0)
    season = np.sin(np.arange(t) / t * 2 * np.pi)  # (T,)
    cls = np.arange(n) % 2
    series = np.where(cls[:, None] == 0, season, season[::-1].copy())[..., None] + rng.normal(0, 0.05, (n, t, 1))
    image = torch.from_numpy(np.repeat(series, 4, -1)[..., None, None].astype(np.float32) * 0.1 + 0.2)  # (N, T, 4, 1, 1)
    doy = np.tile(np.arange(t) * 30 + 15, (n, 1))

    def load(root):
        return {**toy_batch(n=n, classes=2), "image": image, "doy": doy, "target": cls}

    task = Task("season", "classification", BANDS, UNITS, MODALITY, num_dates=t, size=1, gsd_m=10.0, dated=True,
                loader=load)
    table = evaluate(MEANS, tasks=[task, toy()], protocols=("linear",), splits=("random",),
                     baselines=("band_stats", "flat_series", "series_summary"), settings=FAST, pretraining=None,
                     cache_dir=tmp_path / "cache")
    lin = table[(table["task"] == "season") & (table["metric"] == "accuracy")].set_index("encoder")["value"]
    assert lin["flat_series"] > 0.9 and lin["series_summary"] > 0.9 and lin["band_stats"] < 0.75
    single = table[(table["task"] == "toy") & table["encoder"].isin(["flat_series", "series_summary"])]
    assert single["not_applicable"].str.contains("summarises time series").all()


@pytest.mark.slow
def test_an_s2_vit_reads_worldcereal_bands_of_other_names_by_wavelength(tmp_path, root):
    """WorldCereal's wide-form Parquet with its own band names (OPTICAL-B02 ...): an eolab ViT on
    Sentinel-2 names reads it through the wavelength mapping, normalised under its own band names."""
    from eolab.data.stats import Normalization
    from eolab.evaluate.encoders import EolabEncoder
    from eolab.models.vit import build_encoder, encoder_config

    s2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    torch.manual_seed(0)
    vit = EolabEncoder(build_encoder("vit_nano", s2, img_size=8, patch_size=4),
                       Normalization(s2, "reflectance", dict.fromkeys(s2, 0.15), dict.fromkeys(s2, 0.1), "test"),
                       "s2_vit", encoder_config("vit_nano", s2, 8, 4))
    task = get_task(str(EXAMPLES / "worldcereal_ssd_uga.yaml"))
    plan = vit.plan(task)
    assert plan.as_bands == s2 and plan.bands == tuple(f"OPTICAL-{b}" for b in s2)
    table = evaluate(vit, tasks=[task], protocols=("linear",), splits=("random", "blocked"), settings=FAST,
                     data_root=root, pretraining=None, cache_dir=tmp_path / "cache")
    ran = table[table["not_applicable"] == ""]
    assert set(ran["encoder"]) == {"s2_vit", "random_init", "band_stats"}
    assert ran[ran["encoder"] == "s2_vit"]["adapter"].str.contains("B8A<-OPTICAL-B8A (0 nm apart)", regex=False).all()
    assert (ran[ran["metric"] == "accuracy"]["value"] > 0.2).all()  # 5 crop classes


def test_function_encoder_key_follows_its_code_and_captured_weights():
    def make(scale):
        layer = torch.nn.Linear(4, 2)
        torch.nn.init.constant_(layer.weight, scale)
        torch.nn.init.zeros_(layer.bias)
        return FunctionEncoder(lambda x: layer(x.flatten(2).mean(-1)), bands=BANDS, unit="reflectance", name="f")

    assert make(1.0).fingerprint() == make(1.0).fingerprint() != make(2.0).fingerprint()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_task_files_declare_their_bands_with_wavelengths(path):
    task = load_task_file(path)
    assert task.source == str(path.resolve()) and len(task.wavelengths) == len(task.bands)
    assert any(w is not None for w in task.wavelengths) and task.files


def test_aggregate_leaves_smoke_tasks_out_and_counts_dense_rows_for_each_pooling():
    from eolab.reports.benchmark import aggregate

    table = _scores_table()
    table["smoke"] = False
    table.loc[table["encoder"] == "enc", "pool"] = "mean"
    seg = table["task"] == "slovenia_landcover"
    table.loc[seg & (table["encoder"] == "enc"), "pool"] = "patch"  # a dense encoder's per-pixel rows
    smoke = table[table["task"] == "eurosat"].assign(task="bigearthnet", smoke=True, value=0.0)
    agg = aggregate(pd.concat([table, smoke]), n_boot=50)
    enc = agg[agg["encoder"] == "enc"]
    assert set(enc["pool"]) == {"mean"} and enc[enc["group"] == "all"]["tasks"].iloc[0] == 3
    assert "multilabel" not in set(agg["group"])


def test_digital_numbers_declared_as_reflectance_are_flagged(tmp_path):
    def dn(root):
        batch = toy_batch()
        return {**batch, "image": batch["image"] * 10_000}

    task = Task("dn", "classification", BANDS, UNITS, MODALITY, 1, 8, 10.0, False, loader=dn)
    notes = task.load()["notes"]
    assert any("declared as reflectance hold larger values: B02 (median" in n for n in notes), notes
    assert not any("digital numbers" in n for n in toy().load()["notes"])


def test_geotiff_chips_with_a_label_table_and_a_chip_without_crs(tmp_path):
    import rasterio
    from rasterio.transform import Affine

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        crop = ("wheat", "maize")[i % 2]
        data = (rng.normal(1000, 30, (2, 4, 4)) + (i % 2) * 400).astype(np.uint16)
        crs = None if i == 0 else "EPSG:32633"
        with rasterio.open(tmp_path / f"chip{i:02d}.tif", "w", driver="GTiff", height=4, width=4, count=2, dtype="uint16",
                           crs=crs, transform=Affine(10, 0, 500_000 + i * 1000, 0, -10, 5_000_000)) as dst:
            dst.write(data)
        rows.append({"file": f"chip{i:02d}.tif", "crop": crop})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "chips.yaml").write_text(f"""name: chips
kind: classification
data: {{format: geotiff, root: {tmp_path}, files: "chip*.tif", label: {{table: labels.csv, id_column: file, column: crop}}}}
size: 4
gsd_m: 10
scale: 0.0001
bands: [{{name: B04, wavelength_nm: 665}}, {{name: B08, wavelength_nm: 842}}]
""")
    batch = get_task(str(tmp_path / "chips.yaml")).load()
    assert batch["image"].shape == (12, 1, 2, 4, 4) and batch["classes"] == ("maize", "wheat")
    assert batch["target"].tolist()[:2] == [1, 0] and np.isnan(batch["lonlat"][0]).all()
    assert np.isfinite(batch["lonlat"][1:]).all() and "1 of 12 samples without coordinates" in batch["notes"]
    assert batch["group"][0] == -1 and (batch["group"][1:] >= 0).all()  # blocks for the located chips


@pytest.mark.slow
def test_terramesh_per_pixel_task_file_runs_with_a_dense_encoder(tmp_path, root):
    """A scene raster plus a label raster per tile (format: scenes): a ViT tiles each scene and every
    sampled pixel gets its patch features; band statistics read the pixel and its neighbourhood."""
    from eolab.data.stats import Normalization
    from eolab.evaluate.encoders import EolabEncoder
    from eolab.models.vit import build_encoder, encoder_config

    task = get_task(str(EXAMPLES / "terramesh_lulc.yaml"))
    bands = task.bands
    torch.manual_seed(0)
    vit = EolabEncoder(build_encoder("vit_nano", bands, img_size=32, patch_size=16),
                       Normalization(bands, "reflectance", dict.fromkeys(bands, 0.15), dict.fromkeys(bands, 0.1), "test"),
                       "vit32", encoder_config("vit_nano", bands, 32, 16))
    table = evaluate(vit, tasks=[task], protocols=("linear",), splits=("random", "blocked"), baselines=("band_stats",),
                     settings=FAST, data_root=root, pretraining=None, cache_dir=tmp_path / "cache")
    acc = table[table["metric"] == "accuracy"]
    assert (table["not_applicable"] == "").all() and set(acc["encoder"]) == {"vit32", "band_stats"}
    assert (acc["value"] > 1 / 8).all() and acc["adapter"].str.contains("scene tiled").any()


def test_a_changed_wavelength_changes_the_task_fingerprint(tmp_path):
    """Wavelength-matched and wavelength-conditioned encoders read the declared wavelengths: a task
    whose wavelengths change is another task for every cache, even with the same pixels and labels."""
    import dataclasses

    task = TASKS["eurosat"]
    shifted = dataclasses.replace(task, wavelengths=tuple(500.0 + i for i in range(len(task.bands))))
    assert shifted.fingerprint() != task.fingerprint()


def test_a_per_pixel_task_takes_its_labels_from_a_vector_file(tmp_path):
    """Polygons in lon/lat with class names, burnt onto a UTM scene: each sampled pixel gets the class of
    the polygon its centre lies in, pixels outside every polygon are never samples."""
    import json

    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    transform = from_origin(500000, 5000160, 10, 10)  # 16 x 16 px of 10 m in UTM 33N
    (tmp_path / "scenes").mkdir()
    with rasterio.open(tmp_path / "scenes" / "a.tif", "w", driver="GTiff", width=16, height=16, count=2, dtype="uint16",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(np.random.default_rng(0).integers(0, 3000, (2, 16, 16), dtype=np.uint16))
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)

    def box(x0, y0, x1, y1):  # a UTM rectangle as a lon/lat ring
        return [list(to_lonlat.transform(x, y)) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]

    # west half (columns 0-7) wheat, rows 0-3 of the east half maize, the rest of the scene unlabelled
    features = [{"type": "Feature", "properties": {"crop": crop}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
                for crop, ring in (("wheat", box(500000, 5000000, 500080, 5000160)),
                                   ("maize", box(500080, 5000120, 500160, 5000160)))]
    (tmp_path / "fields.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    spec = tmp_path / "fields.yaml"
    spec.write_text(f"""
name: fields_vector
kind: segmentation
data: {{format: scenes, root: {tmp_path}, files: scenes/*.tif, labels: fields.geojson, label_field: crop,
        pixels_per_class: 500, block_px: 8}}
size: 16
gsd_m: 10
bands: [{{name: B04, wavelength_nm: 665}}, {{name: B08, wavelength_nm: 833}}]
scale: 0.0001
""")
    task = get_task(str(spec))
    batch = task.load()
    rows, cols = batch["pixel"][:, 1], batch["pixel"][:, 2]
    crop = np.where(cols < 8, "wheat", np.where(rows < 4, "maize", "none"))
    assert "none" not in set(crop) and len(crop) == 16 * 8 + 4 * 8  # every labelled pixel, no other
    assert tuple(batch["classes"]) == ("maize", "wheat")  # the file's values, sorted
    assert [batch["classes"][int(t)] for t in batch["target"]] == list(crop)

    no_field = tmp_path / "no_field.yaml"
    no_field.write_text(spec.read_text().replace(", label_field: crop", ""))
    with pytest.raises(TaskFileError, match="label_field"):
        get_task(str(no_field)).load()
