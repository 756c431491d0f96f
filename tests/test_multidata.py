"""Time-series and paired S1+S2 datasets on the real shared data: the windowed source files
sources/{slovenia,ssl4eo_series,s1s2}.yaml read by eolab.data.series (with the helpers of
eolab.data.timeseries and eolab.data.pairs)."""

import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
import yaml

from eolab.data.bands import S2_L2A
from eolab.data.pairs import S1_FILL_DB
from eolab.data.schema import collate, validate
from eolab.data.series import window_dataset
from eolab.data.sources import BUILTIN_DIR, SourceError, load_source, read_source
from eolab.data.timeseries import SLOVENIA_DIR

# The ten S2 bands at 10 and 20 m: the 60 m atmospheric bands (B01, B09) carry little surface signal.
PAIR_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _variant(tmp_path: Path, name: str, edit) -> str:
    """A copy of the built-in source file ``name`` with ``edit`` applied to its fields."""
    raw = yaml.safe_load((BUILTIN_DIR / f"{name}.yaml").read_text())
    edit(raw)
    path = tmp_path / f"{name}_variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def slovenia_series(root, source="slovenia", num_dates=6, seed=0):
    """The former SloveniaSeries defaults: windows of 32 at stride 16, 6 dates."""
    return window_dataset(source, root, ("NDVI",), 32, 16, num_dates=num_dates, seed=seed)


def paired(root, source="s1s2"):
    return window_dataset(source, root, (*PAIR_S2_BANDS, "VV", "VH"), 64, 32)


def ssl4eo_only(tmp_path, **pair):
    """s1s2 with its SSL4EO-S12 product only, its pair field updated by ``pair``."""
    def edit(raw):
        raw["products"] = raw["products"][:1]
        raw["products"][0]["pair"].update(pair)
    return _variant(tmp_path, "s1s2", edit)


def _mirror(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Symlink every file under ``src`` into ``dst`` (same layout), except names in ``skip``."""
    for f in src.rglob("*"):
        if f.is_file() and f.name not in skip:
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)


# ---------------------------------------------------------------------------------------------- schema


def _series(t=3, doy=(10, 100, 200), dates=("2020-01-10", "2020-04-09", "2020-07-18")):
    return {"image": torch.zeros(t, 2, 4, 4), "bands": ("B02", "B03"), "unit": "reflectance", "source": "x",
            "doy": torch.tensor(doy), "dates": dates}


def test_schema_accepts_series_and_refuses_inconsistent_dates():
    validate(_series())
    validate({"image": torch.zeros(2, 4, 4), "bands": ("B02", "B03"), "unit": "reflectance", "source": "x"})
    with pytest.raises(ValueError, match="needs field 'doy'"):
        validate({k: v for k, v in _series().items() if k != "doy"})
    with pytest.raises(ValueError, match="1..366"):
        validate(_series(doy=(0, 100, 200)))
    with pytest.raises(ValueError, match="3 time steps"):
        validate(_series(dates=("2020-01-10", "2020-04-09")))
    with pytest.raises(ValueError, match="sorted"):
        validate(_series(dates=("2020-04-09", "2020-01-10", "2020-07-18")))
    batch = collate([_series(), _series()])
    assert batch["image"].shape == (2, 3, 2, 4, 4) and batch["doy"].shape == (2, 3)
    assert batch["dates"] == [_series()["dates"]] * 2


# ---------------------------------------------------------------------------------------------- Slovenia


@pytest.fixture(scope="module")
def slovenia(root):
    return slovenia_series(root)


def test_slovenia_samples_follow_the_series_schema(slovenia):
    assert len(slovenia) == 25  # 5 x 5 windows of 32 at stride 16 on 101 x 100 px, all with >= 6 clear dates
    for i in range(len(slovenia)):
        s = slovenia[i]
        validate(s, where=s["id"])
        assert s["image"].shape == (6, 1, 32, 32) and s["image"].dtype == torch.float32
        assert s["bands"] == ("NDVI",) and s["unit"] == "index" and s["source"] == "slovenia"
        assert s["mask"].shape == (32, 32) and s["mask"].dtype == torch.int64
        assert list(s["dates"]) == sorted(set(s["dates"]))  # sorted, one image per day
        assert s["doy"].tolist() == [date.fromisoformat(d).timetuple().tm_yday for d in s["dates"]]
        assert -1 <= float(s["image"].min()) and float(s["image"].max()) <= 1
    lon, lat = slovenia.lonlat[:, 0], slovenia.lonlat[:, 1]
    assert (lon > 14).all() and (lon < 15).all() and (lat > 45.5).all() and (lat < 46.2).all()  # Slovenia
    assert slovenia[0]["id"] == f"{SLOVENIA_DIR}@0,0+32"


def test_slovenia_dates_are_clear_in_their_window_spread_and_seeded(root, slovenia, tmp_path):
    folder = root / SLOVENIA_DIR
    cloud, has_data = np.load(folder / "mask" / "CLM.npy")[..., 0], np.load(folder / "mask" / "IS_DATA.npy")[..., 0]
    clear = (cloud == 0) & (has_data == 1)  # (T, H, W)
    stamps = [s[:10] for s in json.loads((folder / "timestamps.json").read_text())]
    ndvi = np.load(folder / "data" / "NDVI.npy", mmap_mode="r")
    for i in range(len(slovenia)):
        s = slovenia[i]
        r, c = map(int, re.search(r"@(\d+),(\d+)\+", s["id"]).groups())
        t = slovenia.date_indices(i)
        assert [stamps[k] for k in t] == list(s["dates"])
        assert (clear[t, r : r + 32, c : c + 32].mean(axis=(1, 2)) >= 0.9).all()
        years = {d[:4] for d in s["dates"]}
        assert len(years) >= 2  # spread over the 2015-2017 series, not bunched
        np.testing.assert_array_equal(s["image"][:, 0].numpy(), ndvi[t, r : r + 32, c : c + 32, 0])
    again, other = slovenia_series(root, seed=0), slovenia_series(root, seed=1)
    assert all(again[i]["dates"] == slovenia[i]["dates"] for i in range(len(slovenia)))
    assert any(other[i]["dates"] != slovenia[i]["dates"] for i in range(len(slovenia)))
    strict = slovenia_series(root, _variant(tmp_path, "slovenia", lambda r: r["series"].update(max_cloud=0.0)), num_dates=4)
    for i in range(len(strict)):
        _, r, c = strict.index[i]
        assert clear[strict.date_indices(i), r : r + 32, c : c + 32].all()


def test_slovenia_batches(slovenia):
    batch = collate([slovenia[0], slovenia[7], slovenia[24]])
    assert batch["image"].shape == (3, 6, 1, 32, 32) and batch["doy"].shape == (3, 6)
    assert batch["mask"].shape == (3, 32, 32) and len(batch["dates"]) == 3


def test_slovenia_missing_or_misshapen_files_are_named(root, tmp_path):
    src = root / SLOVENIA_DIR
    _mirror(src, tmp_path / "a" / SLOVENIA_DIR, skip=("CLM.npy",))
    with pytest.raises(FileNotFoundError, match=r"mask/CLM.npy"):
        slovenia_series(tmp_path / "a")
    _mirror(src, tmp_path / "b" / SLOVENIA_DIR, skip=("LULC.npy",))
    np.save(tmp_path / "b" / SLOVENIA_DIR / "mask_timeless" / "LULC.npy", np.zeros((50, 50, 1), np.uint16))
    with pytest.raises(ValueError, match=r"LULC.npy: shape \(50, 50, 1\) disagrees"):
        slovenia_series(tmp_path / "b")


# ---------------------------------------------------------------------------------------------- SSL4EO series


def test_ssl4eo_series_has_both_dates_in_reflectance(root):
    ds = window_dataset("ssl4eo_series", root, S2_L2A, 64, 32)
    assert len(ds) == 49  # 7 x 7 windows of 64 at stride 32 on 264 px
    s = ds[0]
    validate(s, where=s["id"])
    assert s["image"].shape == (2, 12, 64, 64) and s["unit"] == "reflectance" and s["bands"][8] == "B8A"
    assert s["dates"] == ("2020-06-04", "2020-08-13") and s["doy"].tolist() == [156, 226]
    assert 0 < float(s["image"].median()) < 0.6
    batch = collate([ds[0], ds[48]])
    assert batch["image"].shape == (2, 2, 12, 64, 64) and batch["doy"].tolist() == [[156, 226]] * 2


def test_series_dates_are_the_scene_sources_scenes(root):
    """Offsets and resampling must be those of the ssl4eo scene source: a series' dates are its scenes."""
    scenes = [s for s in read_source(load_source("ssl4eo"), root, S2_L2A) if s.source == "ssl4eo_s2a"]
    ds = window_dataset("ssl4eo_series", root, S2_L2A, 64, 32)
    stack = ds._stacks(0)
    assert scenes and stack.dates == tuple(s.time for s in scenes)
    for t, scene in enumerate(scenes):
        np.testing.assert_array_equal(np.stack([layer[t] for layer in stack.layers]), scene.dn)
        np.testing.assert_array_equal(stack.clear[t], scene.valid)


# ---------------------------------------------------------------------------------------------- pairs


@pytest.fixture(scope="module")
def pairs(root):
    return paired(root)


def _source(pairs, pair) -> str:
    return pairs.spec.products[pair.product].name


def test_pairs_follow_the_schema(pairs):
    sources = [_source(pairs, pairs.pairs[k]) for k, _, _ in pairs.index]
    assert len(pairs) == 110 and sources.count("ssl4eo") == 98 and sources.count("bigearthnet") == 12
    for i in (0, 97, 98, 109):
        s = pairs[i]
        validate(s, where=s["id"])
        assert s["image"].shape == (12, 64, 64) and s["image"].dtype == torch.float32
        assert s["bands"] == PAIR_S2_BANDS + ("VV", "VH") and s["unit"] == "reflectance+dB"
        assert s["modality"] == ("s2",) * 10 + ("s1", "s1")
        s2, s1 = s["image"][:10], s["image"][10:]
        assert 0 <= float(s2.min()) and float(s2.median()) < 0.6  # reflectance
        assert -50 <= float(s1.min()) and float(s1.max()) < 15 and float(s1.median()) < -5  # dB
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", s["time"])
    assert torch.isfinite(torch.stack([pairs[i]["image"] for i in range(len(pairs))])).all()
    batch = collate([pairs[0], pairs[109]])
    assert batch["image"].shape == (2, 12, 64, 64) and batch["source"] == ["ssl4eo", "bigearthnet"]
    with pytest.raises(ValueError, match="different bands"):
        collate([pairs[0], {**pairs[1], "modality": ("s2",) * 12}])


def test_ssl4eo_pairs_pick_the_nearest_s1_date(root, pairs):
    s1_dates = [date(*map(int, re.search(r"_(\d{4})(\d\d)(\d\d)T", p.name).groups()))
                for p in (root / "ssl4eo-s12" / "s1" / "0000200").iterdir()]
    got = {r.first_time: r.second_time for r in pairs.pairs if _source(pairs, r) == "ssl4eo"}
    assert got == {"2020-06-04": "2020-06-07", "2020-08-13": "2020-09-03"}
    for s2, s1 in got.items():
        gaps = [abs((d - date.fromisoformat(s2)).days) for d in s1_dates]
        assert abs((date.fromisoformat(s1) - date.fromisoformat(s2)).days) == min(gaps)


def test_bigearthnet_pairs_are_the_named_ones_on_identical_grids(root, pairs):
    refs = [r for r in pairs.pairs if _source(pairs, r) == "bigearthnet"]
    assert len(refs) == 3  # 6 S1 patches, 3 of whose S2 patches are present
    for r in refs:
        s1 = root / r.second.rel
        md = json.loads((s1 / f"{s1.name}_labels_metadata.json").read_text())
        assert Path(r.first.rel).name == md["corresponding_s2_patch"]
    k = pairs.pairs.index(refs[0])
    with rasterio.open(next((root / refs[0].second.rel).glob("*_VV.tif"))) as f:
        np.testing.assert_array_equal(pairs._stacks(k).image[10], f.read(1))  # same grid: values untouched


def _edge_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of smoothed gradient magnitudes: high when the two images' edges coincide."""
    def edges(x):
        x = F.avg_pool2d(torch.as_tensor(x)[None, None], 5, stride=1, padding=2)[0, 0].numpy()
        gy, gx = np.gradient(x)
        return F.avg_pool2d(torch.as_tensor(np.hypot(gx, gy))[None, None], 5, stride=1)[0, 0].numpy()[8:-8, 8:-8]
    ea, eb = edges(a), edges(b)
    ea, eb = ea - ea.mean(), eb - eb.mean()
    return float((ea * eb).sum() / np.sqrt((ea * ea).sum() * (eb * eb).sum()))


def test_ssl4eo_s1_is_index_aligned_because_its_geotransform_is_off(root, pairs, tmp_path):
    """SSL4EO-S12's S1 and S2 geotransforms disagree by ~4 px; the image content agrees with index alignment."""
    k = next(k for k, r in enumerate(pairs.pairs) if _source(pairs, r) == "ssl4eo")
    pixel = pairs._stacks(k)
    georef = paired(root, ssl4eo_only(tmp_path, align="georef"))._stacks(0)
    with rasterio.open(root / pairs.pairs[k].second.rel / "VH.tif") as f:
        np.testing.assert_array_equal(pixel.image[11], f.read(1))
    b04 = PAIR_S2_BANDS.index("B04")
    # Measured here: 0.41 by index, 0.23 through the geotransforms (edges of B04 against VH).
    by_index = _edge_correlation(pixel.image[b04], pixel.image[11])
    assert by_index > 1.3 * _edge_correlation(georef.image[b04], georef.image[11])
    # Through the geotransforms S1 falls short of the S2 grid's last 2 rows and columns.
    assert not georef.valid[-2:].any() and not georef.valid[:, -2:].any() and georef.valid[:-2, :-2].all()


def test_s1_no_data_is_filled_and_mostly_invalid_windows_dropped(root, tmp_path):
    _mirror(root / "ssl4eo-s12" / "s2a", tmp_path / "ssl4eo-s12" / "s2a")
    _mirror(root / "ssl4eo-s12" / "s1", tmp_path / "ssl4eo-s12" / "s1")
    for vv in (tmp_path / "ssl4eo-s12" / "s1").rglob("VV.tif"):
        with rasterio.open(vv) as f:
            data, profile = f.read(), f.profile
        data[:, :40, :40] = np.nan
        vv.unlink()
        with rasterio.open(vv, "w", **profile) as f:
            f.write(data)
    ds = paired(tmp_path, ssl4eo_only(tmp_path, min_valid=0.9))
    ids = [ds[i]["id"].rsplit("@", 1)[1] for i in range(len(ds))]
    assert "0,0+64" not in ids and "0,32+64" in ids  # 39% versus 8% of the window without S1
    s = ds[ids.index("0,32+64")]
    assert (s["image"][10, :40, :8] == S1_FILL_DB).all() and torch.isfinite(s["image"]).all()


def test_pair_errors_name_the_missing_file(root, tmp_path):
    _mirror(root / "ssl4eo-s12" / "s2a", tmp_path / "a" / "ssl4eo-s12" / "s2a")
    _mirror(root / "ssl4eo-s12" / "s1", tmp_path / "a" / "ssl4eo-s12" / "s1", skip=("VH.tif",))
    with pytest.raises(SourceError, match=r"ssl4eo-s12/s1/0000200/S1A\w+: lacks band\(s\) \['VH'\]"):
        paired(tmp_path / "a", ssl4eo_only(tmp_path))
    def bigearthnet_only(raw):
        raw["products"] = raw["products"][1:]
    _mirror(root / "bigearthnet", tmp_path / "b" / "bigearthnet")
    next((tmp_path / "b" / "bigearthnet" / "s2").glob("*_4_55/*_B8A.tif")).unlink()
    with pytest.raises(SourceError, match=r"_4_55: lacks band\(s\) \['B8A'\]"):
        paired(tmp_path / "b", _variant(tmp_path, "s1s2", bigearthnet_only))
    _mirror(root / "bigearthnet", tmp_path / "c" / "bigearthnet")
    next((tmp_path / "c" / "bigearthnet" / "s1").glob("*/*_labels_metadata.json")).unlink()
    with pytest.raises(SourceError, match=r"_labels_metadata.json: no 'corresponding_s2_patch' .* field 'pair.match.key'"):
        paired(tmp_path / "c", _variant(tmp_path, "s1s2", bigearthnet_only))
