"""The windowed source files (eolab/data/sources/{slovenia,ssl4eo_series,s1s2}.yaml, read by
eolab.data.series) against the special-case readers they replaced, on the real shared data; and the
errors of bad ``series``, ``arrays`` and ``pair`` fields."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from eolab.data.paths import data_root
from eolab.data.pretraining import pretraining_set
from eolab.data.series import PairDataset, SeriesDataset, window_dataset, window_spec
from eolab.data.sources import BUILTIN_DIR, SourceError, builtin_sources, check_source, load_source
from eolab.data.stats import compute_normalization

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "data" / "series_pairs_reference.json").read_text())
"""Every sample and the band statistics of SloveniaSeries, SSL4EOSeries and PairedS1S2 at f050ae8, before
they became source files (written by tests/data/make_series_pairs_reference.py at that commit)."""


@pytest.fixture(scope="module")
def root() -> Path:
    return data_root()


def describe(sample: dict) -> dict:
    """As the reference describes a sample: tensors by dtype, shape and sha256, the rest as JSON values."""
    out = {}
    for key, value in sample.items():
        if isinstance(value, torch.Tensor):
            a = value.numpy()
            out[key] = {"dtype": str(a.dtype), "shape": list(a.shape),
                        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    out["_keys"] = list(sample)
    return out


def build(name: str, case: dict, root: Path):
    if name == "s1s2":
        bands = (*case["s2_bands"], "VV", "VH")
    else:
        bands = tuple(case.get("bands", ("NDVI",)))
    return window_dataset(name, root, bands, case["patch"], case["stride"], num_dates=case.get("num_dates", 4),
                          seed=case.get("seed", 0))


CASES = [(name, i) for name, cases in REFERENCE.items() for i in range(len(cases))]


@pytest.mark.parametrize("name, i", CASES)
def test_windowed_sources_give_the_old_readers_samples_and_statistics_bit_for_bit(root, name, i):
    ref = REFERENCE[name][i]
    ds = build(name, ref["case"], root)
    assert isinstance(ds, PairDataset if name == "s1s2" else SeriesDataset)
    assert len(ds) == ref["len"] and len(ds.lonlat) == len(ds)
    for k, want in enumerate(ref["samples"]):
        assert describe(ds[k]) == want, (name, ref["case"], k)
    stats, want = compute_normalization(ds, seed=0, corpus=name).to_dict(), ref["normalization"]
    # The samples are bit for bit; the statistics are float sums whose last digit depends on the
    # CPU's vector width (a reference made on one machine differed in the 17th digit of one band's
    # std on another), so they must agree to 12 digits: a changed window, seed or alignment moves
    # them by far more.
    assert {k: v for k, v in stats.items() if k not in ("mean", "std")} == \
        {k: v for k, v in want.items() if k not in ("mean", "std")}
    for key in ("mean", "std"):
        assert stats[key] == pytest.approx(want[key], rel=1e-12, abs=0), (name, key)


def test_pretraining_builds_the_windowed_datasets_from_their_source_files(root):
    ref = REFERENCE["slovenia"][0]
    params = SimpleNamespace(dataset="slovenia", source_list=(), band_list=("NDVI",), img_size=64, tile_stride=32,
                             num_dates=4, n_pretrain=0, sampling="", seed=0)
    chosen = pretraining_set(params, root)
    assert chosen.ids == [s["id"] for s in ref["samples"]] and chosen.sources == ["slovenia"] * ref["len"]
    pairs = pretraining_set(SimpleNamespace(**{**vars(params), "dataset": "s1s2", "band_list": ("B02", "VV", "VH")}), root)
    assert len(pairs.dataset) == REFERENCE["s1s2"][0]["len"] and pairs.dataset.bands == ("B02", "VV", "VH")
    with pytest.raises(ValueError, match="parameter 'bands' for dataset 's1s2' must list sentinel2 bands, then VV,VH"):
        pretraining_set(SimpleNamespace(**{**vars(params), "dataset": "s1s2", "band_list": ("VV", "B02", "VH")}), root)


def test_windowed_sources_are_not_scene_sources(root):
    assert {"slovenia", "ssl4eo_series", "s1s2"}.isdisjoint(builtin_sources())
    with pytest.raises(SourceError, match=r"s1s2.yaml: source 'ssl4eo' describes windows .* not an entry of 'sources'"):
        check_source(load_source("s1s2"), root, ("B02",))


# ------------------------------------------------------------------------------------- bad fields


def _variant(tmp_path: Path, name: str, edit) -> Path:
    raw = yaml.safe_load((BUILTIN_DIR / f"{name}.yaml").read_text())
    raw["card"] = raw.get("card", "sentinel2_l2a")
    edit(raw)
    path = tmp_path / f"bad_{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name, edit, message", [
    ("slovenia", lambda r: r["series"].update(dates="sometimes"), r"field 'series.dates' must be one of all, clear, got 'sometimes'"),
    ("slovenia", lambda r: r["series"].update(max_cloud=1.5), r"field 'series.max_cloud' must be a number in \[0, 1\], got 1.5"),
    ("slovenia", lambda r: r["series"].update(min_valid=0.9), r"field 'series': key\(s\) \['min_valid'\] do not apply to dates: clear"),
    ("slovenia", lambda r: r["series"].update(place="parent"), r"field 'series.place': an EOPatch is one place"),
    ("slovenia", lambda r: r["series"].update(every="day"), r"field 'series': unknown key\(s\) \['every'\]"),
    ("slovenia", lambda r: r["arrays"].update(bands={"EVI": "data/EVI.npy"}), r"field 'arrays.bands': unknown band name 'EVI'"),
    ("ssl4eo_series", lambda r: r["series"].update(place="grandparent"), r"field 'series.place' must be one of parent"),
    ("ssl4eo_series", lambda r: r["series"].update(pick="spread"), r"key\(s\) \['pick'\] do not apply to dates: all"),
    ("s1s2", lambda r: r["products"][0]["pair"].update(align="nearest"), r"product 'ssl4eo': field 'pair.align' must be one of georef, pixel"),
    ("s1s2", lambda r: r["products"][1]["pair"]["match"].pop("key"), r"product 'bigearthnet': field 'pair.match': by: named_by needs 'file' .* and 'key'"),
    ("s1s2", lambda r: r["products"][0]["pair"]["match"].update(by="closest"), r"field 'pair.match.by' must be one of nearest_date, named_by"),
    ("s1s2", lambda r: r["products"][0]["pair"].update(modality=["s2"]), r"field 'pair.modality' must name the two sensors"),
    ("s1s2", lambda r: r["products"][0]["pair"].update(bands={"order": ["VV", "VH"]}), r"field 'pair.bands': the second sensor is read one file per band"),
    ("s1s2", lambda r: r["products"][0]["pair"].update(card="sentinel9"), r"field 'pair': field 'card'"),
])
def test_a_bad_series_or_pair_field_is_an_error_naming_the_file_and_field(tmp_path, name, edit, message):
    path = _variant(tmp_path, name, edit)
    with pytest.raises(SourceError, match=message) as info:
        window_spec(str(path))
    assert str(path) in str(info.value)


def test_a_pair_whose_second_sensor_has_no_date_is_an_error_naming_the_folder_and_field(root, tmp_path):
    def undated(r):
        r["products"] = r["products"][:1]
        r["products"][0]["pair"]["time"] = {"from_name": "^(\\d{8})", "format": "%Y%m%d"}  # S1 names start with S1A_
    path = _variant(tmp_path, "s1s2", undated)
    with pytest.raises(SourceError, match=r"ssl4eo-s12/s1/0000200/S1A.*: cannot read its acquisition date .* field 'pair.time'"):
        window_dataset(str(path), root, ("B02", "VV", "VH"), 64, 32)


@pytest.mark.parametrize("name, bands", [("slovenia", ("NDVI",)), ("ssl4eo_series", ("B02", "B03")),
                                         ("s1s2", ("B02", "VV", "VH"))])
def test_windowed_datasets_pickle_for_loader_workers_without_their_memo(root, name, bands):
    import pickle

    ds = window_dataset(name, root, bands, 64, 32)
    again = pickle.loads(pickle.dumps(ds))
    assert not again._stacks._items and len(again) == len(ds)
    assert describe(again[len(ds) - 1]) == describe(ds[len(ds) - 1])
