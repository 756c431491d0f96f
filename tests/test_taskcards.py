"""Task bands from sensor cards, values converted to the unit an encoder reads, and the guard
against digital numbers declared as reflectance."""

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from eolab.data.downstream import get_task
from eolab.data.taskfile import TaskFileError, load_task_file
from eolab.evaluate.battery import Settings, evaluate
from eolab.evaluate.encoders import FunctionEncoder, NotApplicable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
FAST = Settings(folds=3, repeats=1, shots=(1,), draws=2, subsamples=3)
# The Corsica example's bands as they were declared inline before it named its sensor card
CORSICA_INLINE = {
    "unit": "reflectance", "scale": 0.0001, "nodata": 65535, "modality": "s2",
    "bands": [{"name": n, "column": f"S2-L2A-{n}", "wavelength_nm": w, "bandwidth_nm": b} for n, w, b in (
        ("B02", 492.4, 66), ("B03", 559.8, 36), ("B04", 664.6, 31), ("B05", 704.1, 15), ("B06", 740.5, 15),
        ("B07", 782.8, 20), ("B08", 832.8, 106), ("B11", 1613.7, 91), ("B12", 2202.4, 175))]}
TERRAMESH_INLINE = {
    "unit": "reflectance", "scale": 0.0001, "modality": "s2",
    "bands": [{"name": n, "wavelength_nm": w, "bandwidth_nm": b} for n, w, b in (
        ("B01", 442.7, 21), ("B02", 492.4, 66), ("B03", 559.8, 36), ("B04", 664.6, 31), ("B05", 704.1, 15),
        ("B06", 740.5, 15), ("B07", 782.8, 20), ("B08", 832.8, 106), ("B8A", 864.7, 21), ("B09", 945.1, 20),
        ("B11", 1613.7, 91), ("B12", 2202.4, 175))]}


def _inline(example: str, inline: dict, tmp_path: Path) -> Path:
    """The example task file with its card replaced by the inline band declarations."""
    spec = yaml.safe_load((EXAMPLES / example).read_text())
    for key in ("sensor", "nodata"):
        spec.pop(key, None)
    spec.update(inline, name=spec["name"])
    spec["data"]["root"] = spec["data"]["root"]
    out = tmp_path / example
    out.write_text(yaml.safe_dump(spec))
    return out


def _arrays_task(tmp_path: Path, raw: np.ndarray, name="cardtask", **fields) -> Path:
    """A pixel task file (format: arrays) over ``raw`` (N, C) values, 3 classes by sample index."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    np.save(folder / "x.npy", raw)
    np.save(folder / "y.npy", np.arange(len(raw)) % 3)
    spec = {"name": name, "kind": "classification",
            "data": {"format": "arrays", "root": str(folder), "inputs": "x.npy", "axes": ["sample", "band"],
                     "target": "y.npy"}, "size": 1, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _identity(bands, unit, name="ident"):
    return FunctionEncoder(lambda x: x.flatten(1), bands=bands, unit=unit, name=name)


def _dn(n=30, bands=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1500, 4000, (n, bands)).astype(np.uint16)


# ----------------------------------------------------------------------------------------------
# Bands from a card


def test_bands_named_on_a_card_take_its_wavelengths_unit_and_scale(tmp_path):
    path = _arrays_task(tmp_path, _dn(), sensor="sentinel2_l2a",
                        bands=["B2", "red", {"name": "B08", "wavelength_nm": 833.0}])
    task = load_task_file(path)
    assert task.bands == ("B02", "B04", "B08")  # the card's own names, whatever spelling the file used
    assert task.wavelengths == (492.4, 664.6, 833.0) and task.bandwidths == (66, 31, 106)  # inline overrides
    assert task.units == ("reflectance",) * 3 and task.modality == ("s2",) * 3 and task.gsd_m == 10
    batch = task.load()
    raw = np.load(tmp_path / "cardtask" / "x.npy")
    np.testing.assert_array_equal(batch["image"][:, 0, :, 0, 0].numpy(), raw.astype(np.float32) / 10_000)


def test_no_bands_takes_every_band_of_the_card(tmp_path):
    path = _arrays_task(tmp_path, _dn(bands=12), sensor="sentinel2_l2a")
    task = load_task_file(path)
    assert task.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    assert task.gsd_m == 10  # the finest of the card's bands


def test_a_band_not_on_the_card_names_the_file_field_and_the_card_bands(tmp_path):
    path = _arrays_task(tmp_path, _dn(), sensor="sentinel2_l2a", bands=["B02", "B10", "B04"])
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    message = str(err.value)
    assert str(path) in message and "bands[1].name" in message and "'B10'" in message and "B8A, B09, B11" in message
    with pytest.raises(TaskFileError, match="sensor: unknown sensor card 'sentinel9'"):
        load_task_file(_arrays_task(tmp_path, _dn(), sensor="sentinel9"))
    with pytest.raises(TaskFileError, match="processing_baseline.*no processing-baseline offsets"):
        load_task_file(_arrays_task(tmp_path, _dn(), sensor="landsat89_oli", processing_baseline="04.00", bands=["B2"]))


def test_a_user_card_is_a_path_relative_to_the_task_file(tmp_path):
    card = yaml.safe_load((Path(__file__).resolve().parents[1] / "eolab/data/sensors/sentinel2_l2a.yaml").read_text())
    card["name"], card["scale"] = "my_s2", 0.001
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "my_s2.yaml").write_text(yaml.safe_dump(card))
    task = load_task_file(_arrays_task(tmp_path, _dn(), sensor="cards/my_s2.yaml", bands=["B02", "B03", "B04"]))
    assert float(task.load()["image"].max()) < 4.0  # x 0.001, the user's card


@pytest.mark.parametrize(("example", "inline"), [("worldcereal_corsica_monthly.yaml", CORSICA_INLINE),
                                                 ("terramesh_lulc.yaml", TERRAMESH_INLINE)])
def test_example_on_its_card_gives_the_batch_of_its_inline_declaration(tmp_path, root, example, inline):
    card, plain = get_task(str(EXAMPLES / example)), get_task(str(_inline(example, inline, tmp_path)))
    for field in ("bands", "units", "modality", "wavelengths", "bandwidths", "gsd_m", "num_dates", "size"):
        assert getattr(card, field) == getattr(plain, field), field
    a, b = card.load(root), plain.load(root)
    assert torch.equal(a["image"], b["image"]) and np.array_equal(a["target"], b["target"]) and a["id"] == b["id"]
    np.testing.assert_array_equal(a["lonlat"], b["lonlat"])
    assert a["notes"] == b["notes"]


@pytest.mark.slow
def test_corsica_on_its_card_gives_the_rows_of_its_inline_declaration(tmp_path, root):
    enc = FunctionEncoder(lambda x: x.flatten(1), bands=("B02", "B04", "B08", "B11"), unit="reflectance", name="px")
    kwargs = {"protocols": ("linear", "knn"), "baselines": ("band_stats",), "data_root": root, "pretraining": None,
              "settings": Settings(folds=3, repeats=1), "cache_dir": tmp_path / "cache", "splits": ("random", "blocked")}
    a = evaluate(enc, tasks=[str(EXAMPLES / "worldcereal_corsica_monthly.yaml")], **kwargs)
    b = evaluate(enc, tasks=[str(_inline("worldcereal_corsica_monthly.yaml", CORSICA_INLINE, tmp_path))], **kwargs)
    assert len(a) == len(b) and (a["not_applicable"] == "").all()
    columns = ["encoder", "protocol", "split", "metric", "value", "ci_low", "ci_high", "n", "n_samples", "note"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))


# ----------------------------------------------------------------------------------------------
# Units converted through the card


def test_digital_numbers_kept_as_stored_are_converted_for_the_encoder_with_the_baseline_offset(tmp_path):
    """Sentinel-2 L2A from processing baseline 04.00 on: reflectance = (DN - 1000) / 10000."""
    raw = _dn()
    kept = load_task_file(_arrays_task(tmp_path, raw, "kept", sensor="sentinel2_l2a", processing_baseline="04.00",
                                       unit="dn", bands=["B02", "B03", "B04"]))
    read = load_task_file(_arrays_task(tmp_path, raw, "read", sensor="sentinel2_l2a", processing_baseline="04.00",
                                       bands=["B02", "B03", "B04"]))
    assert kept.units == ("dn",) * 3 and read.units == ("reflectance",) * 3
    expected = (raw.astype(np.float32) - 1000) / 10_000
    np.testing.assert_allclose(read.load()["image"][:, 0, :, 0, 0].numpy(), expected, rtol=0, atol=1e-7)
    enc = _identity(("B02", "B03", "B04"), "reflectance")
    plan = enc.plan(kept)
    assert not isinstance(plan, NotApplicable) and plan.unit == "reflectance"
    assert "units dn -> reflectance (x * 0.0001 - 0.1) for B02, B03, B04" in plan.adapter
    x = enc.features(kept, kept.load(), plan)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6)
    table = evaluate(enc, tasks=[kept], protocols=("linear",), splits=("random",), baselines=(), settings=FAST,
                     pretraining=None, cache_dir=tmp_path / "cache")
    assert (table["not_applicable"] == "").all() and table["adapter"].str.contains("dn -> reflectance").all()
    # and an encoder that reads digital numbers gets the stored ones back from a task converted on reading
    back = _identity(("B02", "B03", "B04"), "dn").features(read, read.load(), _identity(("B02", "B03", "B04"), "dn").plan(read))
    np.testing.assert_allclose(back, raw, rtol=0, atol=1e-3)


def test_landsat_collection2_scale_and_offset_from_the_card(tmp_path):
    raw = np.random.default_rng(1).integers(7273, 20000, (30, 2)).astype(np.uint16)
    task = load_task_file(_arrays_task(tmp_path, raw, sensor="landsat89_oli", bands=["SR_B4", "ST_B10"]))
    assert task.bands == ("B4", "B10") and task.units == ("reflectance", "K") and task.gsd_m == 30
    image = task.load()["image"][:, 0, :, 0, 0].numpy()
    np.testing.assert_allclose(image[:, 0], raw[:, 0] * 2.75e-5 - 0.2, rtol=1e-5)
    np.testing.assert_allclose(image[:, 1], raw[:, 1] * 0.00341802 + 149.0, rtol=1e-5)


def test_sar_decibels_are_converted_to_linear_power_for_an_encoder_that_reads_it(tmp_path):
    db = np.random.default_rng(2).uniform(-25, -5, (30, 2)).astype(np.float32)
    task = load_task_file(_arrays_task(tmp_path, db, sensor="sentinel1_grd", bands=["VV", "VH"]))
    assert task.units == ("dB", "dB") and task.modality == ("s1", "s1")
    enc = _identity(("VV", "VH"), "linear", "linear_sar")
    plan = enc.plan(task)
    assert "units dB -> linear (10^(x/10)) for VV, VH" in plan.adapter
    np.testing.assert_allclose(enc.features(task, task.load(), plan), 10 ** (db / 10), rtol=1e-5)
    assert _identity(("VV", "VH"), "dB").plan(task).adapter == ""  # read as it is


def test_a_unit_without_a_conversion_is_a_not_applicable_row_naming_both_units(tmp_path):
    raw = np.random.default_rng(1).integers(7273, 20000, (30, 2)).astype(np.uint16)
    task = load_task_file(_arrays_task(tmp_path, raw, sensor="landsat89_oli", bands=["B4", "B10"]))
    bands = (SimpleNamespace(name="B4", wavelength_nm=655.0), SimpleNamespace(name="B10", wavelength_nm=10895.0))
    enc = _identity(bands, "reflectance", "thermal_as_reflectance")
    table = evaluate(enc, tasks=[task], protocols=("linear",), splits=("random",), baselines=(), settings=FAST,
                     pretraining=None, cache_dir=tmp_path / "cache")
    reason = table["not_applicable"].iloc[0]
    assert "B10 in 'K'" in reason and "reads 'reflectance'" in reason and "no conversion from 'K'" in reason


def test_digital_numbers_declared_as_reflectance_are_named_with_the_task_and_band_before_embedding(tmp_path, caplog):
    path = _arrays_task(tmp_path, _dn(), "mislabelled", sensor="sentinel2_l2a", unit="reflectance", scale=1,
                        bands=["B02", "B03", "B04"])
    enc = _identity(("B02", "B03", "B04"), "reflectance")
    with caplog.at_level(logging.WARNING):
        table = evaluate(enc, tasks=[str(path)], protocols=("linear",), splits=("random",), baselines=(), settings=FAST,
                         pretraining=None, cache_dir=tmp_path / "cache")
    assert "task mislabelled: bands declared as reflectance hold larger values: B02 (median" in caplog.text
    assert table["note"].str.contains("task mislabelled: bands declared as reflectance hold larger values").all()
    # the converse: a DN card over values already scaled to reflectance
    scaled = load_task_file(_arrays_task(tmp_path, _dn().astype(np.float32) / 1e4, "scaled", sensor="sentinel2_l2a",
                                         unit="dn", bands=["B02", "B03", "B04"]))
    assert any("task scaled: bands declared as digital numbers hold reflectance-like values: B02" in n
               for n in scaled.load()["notes"])


# ----------------------------------------------------------------------------------------------
# A task's files are decoded once: the check before pre-training and the benchmark after it share it


def test_a_file_keyed_task_is_read_from_its_files_once_until_they_change(tmp_path, monkeypatch, caplog):
    from eolab.data import taskfile
    from eolab.data.paths import cache_root
    from eolab.data.taskdef import TASK_CACHE

    monkeypatch.setenv("EOLAB_CACHE", str(tmp_path / "cache"))
    reads = []
    read_arrays = taskfile._read_arrays
    monkeypatch.setattr(taskfile, "_read_arrays", lambda *a: reads.append(1) or read_arrays(*a))
    path = _arrays_task(tmp_path, _dn(), sensor="sentinel2_l2a", bands=["B02", "B03", "B04"])
    first, second = load_task_file(path).load(), load_task_file(path).load()
    assert len(reads) == 1 and torch.equal(first["image"], second["image"]) and first["notes"] == second["notes"]
    np.save(tmp_path / "cardtask" / "x.npy", _dn(seed=5))  # new content: a new key, read again
    third = load_task_file(path).load()
    assert len(reads) == 2 and not torch.equal(first["image"], third["image"])
    for entry in (cache_root() / TASK_CACHE).glob("cardtask-*.pkl"):
        entry.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        again = load_task_file(path).load()
    assert len(reads) == 3 and torch.equal(again["image"], third["image"]) and "unreadable" in caplog.text
