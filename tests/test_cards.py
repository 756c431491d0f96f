"""Sensor cards (eolab.data.cards) and band identity across sensors (eolab.data.bands)."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

from eolab.data import cards
from eolab.data.bands import BANDS, S2_L1C, S2_L2A, Band, canonical_band_name
from eolab.data.cards import CardError, load_card, match_bands

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("sentinel2_l1c", "sentinel2_l2a", "sentinel1_grd", "landsat89_oli", "landsat7_etm", "hls_s30", "hls_l30")


def test_every_shipped_card_loads_with_wavelengths_bandwidths_and_gsd():
    assert set(SHIPPED) <= set(cards.card_names())
    for name in SHIPPED:
        card = load_card(name)
        assert card.name == name and card.unit in cards.UNITS and card.to in cards.UNITS
        assert card.bands and all(b.gsd_m > 0 and b.wavelength_nm and b.wavelength_nm > 0 for b in card.bands)
        optical = [b for b in card.bands if b.wavelength_nm < 1e5]
        assert all(b.bandwidth_nm and 0 < b.bandwidth_nm < 2500 for b in optical), name
        assert len(set(card.band_names)) == len(card.band_names)
    l2a = load_card("sentinel2_l2a")
    assert "B10" not in l2a.band_names and l2a.band_names == S2_L2A and load_card("sentinel2_l1c").band_names == S2_L1C
    assert l2a.band("B8A").wavelength_nm == 864.7 and l2a.band("B12").bandwidth_nm == 175 and l2a.band("B01").gsd_m == 60
    oli = load_card("landsat89_oli")
    assert (oli.scale, oli.offset) == (2.75e-5, -0.2)
    assert (oli.band("ST_B10").to, oli.band("B10").offset) == ("kelvin", 149.0)
    assert load_card("hls_s30").nodata == -9999 and load_card("sentinel1_grd").to == "db"


def test_processing_baseline_offset_of_sentinel2():
    card = load_card("sentinel2_l2a")
    assert card.baseline_offset("N0400") == -1000 and card.baseline_offset("05.09") == -1000
    assert card.baseline_offset("02.14") == 0 and card.baseline_offset("N9999") == 0 and card.baseline_offset(None) == 0
    assert load_card("landsat89_oli").baseline_offset("N0400") == 0  # no such offset on Landsat


def test_names_resolve_within_one_sensor_only():
    assert canonical_band_name("B2") == "B02" and canonical_band_name("b8a") == "B8A" and canonical_band_name("blue") == "B02"
    # Landsat's B5 is near infrared at 865 nm; Sentinel-2's B05 is red edge at 704 nm: never the same band
    assert canonical_band_name("B5", "landsat89") == "B5" and canonical_band_name("SR_B5", "landsat89_oli") == "B5"
    assert load_card("landsat89_oli").band("B5").wavelength_nm == 865
    with pytest.raises(KeyError, match="sentinel2"):
        canonical_band_name("SR_B5")
    with pytest.raises(KeyError, match="landsat89"):
        canonical_band_name("B8A", "landsat89")
    with pytest.raises(KeyError, match="B13"):
        canonical_band_name("B13")
    assert canonical_band_name("vv", "sentinel1") == "VV"
    with pytest.raises(KeyError):
        canonical_band_name("VV")  # a Sentinel-1 polarisation is not a Sentinel-2 band
    with pytest.raises(CardError, match="unknown sensor 'modis'"):
        canonical_band_name("B01", "modis")


def test_band_carries_sensor_and_bandwidth_and_old_fields():
    b = BANDS["B02"]
    assert (b.name, b.wavelength_nm, b.resolution_m, b.sensor, b.bandwidth_nm) == ("B02", 492.4, 10, "sentinel2", 66)
    assert BANDS["VV"].sensor == "sentinel1" and BANDS["B09"].resolution_m == 60
    assert Band("X", 500.0, 10).sensor == "sentinel2"  # the old three-field construction still works


def test_match_bands_by_nearest_wavelength_within_tolerance():
    m = match_bands("landsat89_oli", "sentinel2_l2a", tolerance_nm=20)
    assert m.mapping == {"B01": "B1", "B02": "B2", "B03": "B3", "B04": "B4", "B8A": "B5", "B11": "B6", "B12": "B7"}
    assert m.unmatched_target == ["B05", "B06", "B07", "B08", "B09"] and m.unmatched_source == ["B10"]
    # a wider tolerance lets B08 (832.8 nm) reach Landsat's NIR, but B8A (864.7 nm) is nearer and keeps it
    wide = match_bands("landsat89_oli", "sentinel2_l2a", tolerance_nm=40)
    assert wide.mapping["B8A"] == "B5" and "B08" not in wide.mapping
    same = match_bands("hls_s30", "sentinel2_l1c")
    assert same.mapping == {b: b for b in S2_L1C} and not same.unmatched_source


def test_quality_flags_classes_and_bits():
    scl = load_card("sentinel2_l2a").quality
    assert scl.band == "SCL" and scl.usable(np.array([0, 3, 4, 6, 8, 9, 10, 11])).tolist() == \
        [False, False, True, True, False, False, False, True]
    qa = load_card("landsat89_oli").quality
    clear, cloud, shadow, water = 1 << 6, 1 << 3, 1 << 4, (1 << 7) | (1 << 6)
    assert qa.usable(np.array([clear, cloud, shadow, water, 1])).tolist() == [True, False, False, True, False]


def _card(tmp_path: Path, **changes) -> Path:
    text = load_card("sentinel2_l2a").path.read_text()
    path = tmp_path / "my_sensor.yaml"
    import yaml

    raw = yaml.safe_load(text)
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_user_card_is_a_yaml_path(tmp_path):
    path = _card(tmp_path, name="my_sensor", sensor="my_sensor")
    card = load_card(str(path))
    assert card.sensor == "my_sensor" and card.path == path.resolve()
    assert canonical_band_name("b2", str(path)) == "B02"


def test_unknown_unit_names_the_card_file_and_field(tmp_path):
    path = _card(tmp_path, unit="percent")
    with pytest.raises(CardError, match=rf"{path.name}: field 'unit': unknown unit 'percent'; known units: reflectance"):
        load_card(str(path))
    path = _card(tmp_path, to="brightness")
    with pytest.raises(CardError, match=r"my_sensor.yaml: field 'to': unknown unit 'brightness'"):
        load_card(str(path))


def test_bad_card_fields_are_named(tmp_path):
    with pytest.raises(CardError, match=r"field 'bands' lists no band"):
        load_card(str(_card(tmp_path, bands=[])))
    with pytest.raises(CardError, match=r"bands\[0\]: missing field 'gsd_m'"):
        load_card(str(_card(tmp_path, bands=[{"name": "B01", "wavelength_nm": 443}])))
    with pytest.raises(CardError, match=r"spelling 'B02' names both B01 and B02"):
        load_card(str(_card(tmp_path, bands=[{"name": "B01", "gsd_m": 60, "aliases": ["B2"]}, {"name": "B02", "gsd_m": 10}])))
    with pytest.raises(CardError, match=r"unknown field\(s\) \['colour'\]"):
        load_card(str(_card(tmp_path, colour="red")))
    with pytest.raises(CardError, match="unknown sensor card 'nope'"):
        load_card("nope")


def test_setuptools_ships_the_cards_and_source_files():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["eolab.data"]
    pkg = ROOT / "eolab" / "data"
    shipped = {p for pattern in data for p in pkg.glob(pattern)}
    yamls = set(pkg.glob("sensors/*.yaml")) | set(pkg.glob("sources/*.yaml"))
    assert yamls and yamls == shipped
