"""Declarative data sources (eolab.data.sources) on the real shared data, and their errors on small
files that rasterio writes here."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from eolab.config import ParameterError, PretrainConfig
from eolab.data.bands import S2_L2A
from eolab.data.cache import PatchDataset, build_scene_cache
from eolab.data.inputs import missing_inputs
from eolab.data.paths import data_root
from eolab.data.sources import NoScenesError, SourceError, builtin_sources, check_source, load_source, read_source

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "data" / "builtin_scenes_reference.json").read_text())
"""Scenes, tiles and patch statistics of main's hard-coded readers at 31faaf5, before they became source files."""


@pytest.fixture(scope="module")
def root() -> Path:
    return data_root()


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", ["major_tom", "hydro", "ssl4eo"])
def test_builtin_sources_give_the_old_readers_scenes_bit_for_bit(root, name):
    assert name in builtin_sources()
    got = list(read_source(load_source(name), root, S2_L2A))
    ref = REFERENCE[name]
    assert [s.id for s in got] == [r["id"] for r in ref]
    for scene, r in zip(got, ref, strict=True):
        assert (_digest(scene.dn), _digest(scene.valid)) == (r["dn_sha256"], r["valid_sha256"]), scene.id
        assert (str(scene.dn.dtype), list(scene.dn.shape), scene.source, list(scene.bands)) == \
            (r["dtype"], r["shape"], r["source"], r["bands"])
        assert (scene.crs, list(scene.transform), scene.time, scene.level) == (r["crs"], r["transform"], r["time"], r["level"])
        assert (scene.notes, scene.pixels) == (r["notes"], r["pixels"])


def test_builtin_cache_tiles_patches_and_statistics_are_unchanged(root, tmp_path):
    ref = REFERENCE["_cache"]
    cache = build_scene_cache(root, tuple(ref["sources"]), cache_dir=tmp_path)
    tiles = cache.tiles(patch=ref["patch"], stride=ref["stride"])
    assert len(tiles) == ref["n_tiles"]
    assert hashlib.sha256(tiles.to_csv(index=False).encode()).hexdigest() == ref["tiles_csv_sha256"]
    ds = PatchDataset(cache, tiles, patch=ref["patch"])
    h, total, squares, n = hashlib.sha256(), np.zeros(len(ds.bands)), np.zeros(len(ds.bands)), 0
    for i in range(0, len(ds), ref["every"]):
        image = ds[i]["image"].numpy()
        h.update(image.tobytes())
        total += image.astype(np.float64).sum((1, 2))
        squares += (image.astype(np.float64) ** 2).sum((1, 2))
        n += image[0].size
    assert h.hexdigest() == ref["patches_sha256"]
    mean = total / n
    assert dict(zip(ds.bands, mean.tolist(), strict=True)) == ref["band_mean"]
    assert dict(zip(ds.bands, np.sqrt(squares / n - mean**2).tolist(), strict=True)) == ref["band_std"]


@pytest.mark.parametrize("path, n_scenes, shape", [("sources/terramesh_s2l2a.yaml", 5, (12, 224, 224)),
                                                   ("sources/bigearthnet_s2.yaml", 11, (12, 120, 120))])
def test_new_folders_read_from_card_and_source_file_only(root, tmp_path, path, n_scenes, shape):
    cache = build_scene_cache(root, (path,), cache_dir=tmp_path)
    assert len(cache.scenes) == n_scenes and all(tuple(s["shape"]) == shape for s in cache.scenes)
    tiles = cache.tiles(patch=64, stride=32)
    sample = PatchDataset(cache, tiles, patch=64, bands=("B02", "B03", "B04", "B08"))[0]
    assert sample["unit"] == "reflectance" and sample["bands"] == ("B02", "B03", "B04", "B08")
    # real surface reflectance: mostly between 0 and 0.6, near infrared brighter than red over land on average
    image = sample["image"].numpy()
    assert 0 < np.median(image) < 0.6 and image.shape == (4, 64, 64)
    assert (tiles["source"] == load_source(path).name).all() and tiles["lat"].between(-90, 90).all()


def test_bigearthnet_bands_resampled_to_the_10m_grid(root):
    spec = load_source("sources/bigearthnet_s2.yaml")
    scene = next(read_source(spec, root, ("B01", "B02", "B05")))
    with rasterio.open(next((root / scene.id).glob("*_B01.tif"))) as ds:
        assert ds.shape == (20, 20)  # 60 m native
    assert scene.dn.shape == (3, 120, 120) and scene.time == "2017-06-17" and scene.transform[0] == 10.0


def test_a_db_source_caches_float_decibels(root, tmp_path):
    cache = build_scene_cache(root, ("sources/ssl4eo_s1.yaml",), bands=("VV", "VH"), cache_dir=tmp_path)
    assert cache.manifest["unit"] == "db" and cache.manifest["scale"] == 1.0
    arr = np.asarray(cache.array(0))
    assert arr.dtype == np.float32 and -40 < np.median(arr[0]) < 5  # VV backscatter of land, in dB
    sample = PatchDataset(cache, cache.tiles(patch=64, stride=64), patch=64)[0]
    assert sample["unit"] == "db" and sample["bands"] == ("VV", "VH")


# ------------------------------------------------------------------------------ stac, xarray, torchgeo


def _scene_of(root, source: str, product: str, bands=S2_L2A):
    return [s for s in read_source(load_source(source), root, bands) if s.source == product]


def test_stac_item_collection_assets_map_to_bands_by_the_card(root, tmp_path):
    import pystac

    reference = _scene_of(root, "ssl4eo", "ssl4eo_s2a")[0]
    folder = root / reference.id
    item = pystac.Item("date0", geometry=None, bbox=None, datetime=__import__("datetime").datetime(2020, 6, 4), properties={})
    for f in sorted(folder.glob("B*.tif")):
        item.add_asset(f.stem, pystac.Asset(str(f), media_type=pystac.MediaType.COG))  # asset keys 'B2', 'B8A', ...
    pystac.ItemCollection([item]).save_object(dest_href=str(tmp_path / "items.json"))
    src = tmp_path / "stac.yaml"
    src.write_text(yaml.safe_dump({"name": "my_stac", "kind": "stac", "card": "sentinel2_l2a",
                                   "catalog": str(tmp_path / "items.json"), "grid": {"band": "B02"}}))
    (scene,) = read_source(load_source(str(src)), root, S2_L2A)
    assert scene.id.endswith("items.json#date0") and scene.time == "2020-06-04" and scene.source == "my_stac"
    assert np.array_equal(scene.dn, reference.dn) and np.array_equal(scene.valid, reference.valid)


def test_xarray_cube_with_and_without_time(root, tmp_path):
    import xarray as xr

    reference = _scene_of(root, "hydro", "hydro")[0]
    with rasterio.open(root / reference.id) as ds:
        raw, t = ds.read(), ds.transform
        crs = ds.crs.to_string()
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    x = t.c + t.a * (np.arange(raw.shape[2]) + 0.5)
    y = t.f + t.e * (np.arange(raw.shape[1]) + 0.5)
    cube = xr.DataArray(np.stack([raw, raw]), dims=("time", "band", "y", "x"),
                        coords={"time": np.array(["2021-05-01", "2021-06-01"], dtype="datetime64[ns]"), "band": names,
                                "y": y, "x": x}, name="dn")
    cube.to_dataset().to_netcdf(tmp_path / "cube.nc")
    spec = {"name": "cube", "kind": "xarray", "card": "sentinel2_l2a", "path": str(tmp_path / "cube.nc"), "variable": "dn",
            "dims": {"time": "time"}, "crs": crs, "offset": {"infer": "darkest"}}
    (tmp_path / "cube.yaml").write_text(yaml.safe_dump(spec))
    scenes = list(read_source(load_source(str(tmp_path / "cube.yaml")), root, S2_L2A))
    assert [s.time for s in scenes] == ["2021-05-01", "2021-06-01"]
    assert np.array_equal(scenes[1].dn, reference.dn) and scenes[1].transform == reference.transform
    (tmp_path / "cube.yaml").write_text(yaml.safe_dump({**spec, "dims": {}}))
    with pytest.raises(SourceError, match=r"cube.nc: dimension\(s\) \['time'\] are not declared in .*cube.yaml field 'dims'"):
        list(read_source(load_source(str(tmp_path / "cube.yaml")), root, S2_L2A))
    cube.isel(time=0).drop_vars("time").to_dataset().to_zarr(tmp_path / "cube.zarr")
    spec.update(path=str(tmp_path / "cube.zarr"), dims={})
    (tmp_path / "cube.yaml").write_text(yaml.safe_dump(spec))
    (one,) = read_source(load_source(str(tmp_path / "cube.yaml")), root, ("B04", "B03"))
    assert one.time is None and np.array_equal(one.dn, reference.dn[[3, 2]])


def test_torchgeo_raster_dataset_by_class_name(root, tmp_path):
    reference = _scene_of(root, "sources/terramesh_s2l2a.yaml", "terramesh_s2l2a")[0]
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "one.tif").symlink_to(root / reference.id)
    spec = {"name": "tg", "kind": "torchgeo", "card": "sentinel2_l2a", "dataset": "RasterDataset",
            "args": {"paths": str(tmp_path / "tiles")}, "bands": list(S2_L2A), "offset": {"infer": "darkest"}}
    (tmp_path / "tg.yaml").write_text(yaml.safe_dump(spec))
    (scene,) = read_source(load_source(str(tmp_path / "tg.yaml")), root, S2_L2A)
    assert np.array_equal(scene.dn, reference.dn) and scene.transform == reference.transform and scene.crs == reference.crs


# ---------------------------------------------------------------------------- errors before work starts


def _tif(path: Path, count: int, crs: str = "EPSG:32633", descriptions=None, size: int = 64, res: float = 10.0,
         value: int = 1200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = (value + rng.integers(0, 500, (count, size, size))).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=count, dtype="uint16", crs=crs,
                       transform=from_origin(500000, 5000000, res, res)) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or []):
            ds.set_band_description(i + 1, d)
    return path


def _source(tmp_path: Path, **fields) -> Path:
    path = tmp_path / f"{fields.get('name', 'mine')}.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "kind": "geotiff", "card": "sentinel2_l2a", **fields}))
    return path


def test_a_glob_that_matches_nothing_names_the_file_and_field(tmp_path):
    src = _source(tmp_path, scenes="no-such-folder/*.tif", bands={"order": ["B02"]})
    with pytest.raises(NoScenesError, match=rf"{src}: field 'scenes': '.*no-such-folder/\*.tif' matches nothing"):
        check_source(load_source(str(src)), tmp_path, ("B02",))
    with pytest.raises(FileNotFoundError, match="no scenes of source 'mine'"):
        build_scene_cache(tmp_path, (str(src),), bands=("B02",), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    problems = missing_inputs(str(tmp_path), "scenes", (str(src),))
    assert any("no-such-folder/*.tif" in p for p in problems)


def test_band_count_or_names_that_contradict_the_card(tmp_path):
    _tif(tmp_path / "data" / "a.tif", 3)
    src = _source(tmp_path, scenes="data/*.tif", bands={"order": ["B02", "B03", "B04", "B08"]})
    with pytest.raises(SourceError, match=r"a.tif: has 3 bands, but .*mine.yaml field 'bands.order' names 4"):
        check_source(load_source(str(src)), tmp_path, ("B02",))
    src = _source(tmp_path, scenes="data/*.tif", bands={"order": ["B02", "B03", "SR_B5"]})
    with pytest.raises(SourceError, match=r"mine.yaml: field 'bands.order': unknown band name 'SR_B5' for sensor 'sentinel2'"):
        check_source(load_source(str(src)), tmp_path, ("B02",))
    _tif(tmp_path / "named" / "b.tif", 3, descriptions=["B04", "B02", "NDVI"])
    src = _source(tmp_path, scenes="named/*.tif", bands={"descriptions": True})
    with pytest.raises(SourceError, match=r"b.tif: band descriptions \['B04', 'B02', 'NDVI'\] contradict card"):
        check_source(load_source(str(src)), tmp_path, ("B02",))


def test_band_descriptions_name_the_bands(tmp_path):
    _tif(tmp_path / "named" / "b.tif", 3, descriptions=["B04", "B02", "B03"])
    src = _source(tmp_path, scenes="named/*.tif", bands={"descriptions": True}, offset={"dn": 0})
    (scene,) = read_source(load_source(str(src)), tmp_path, ("B02", "B03", "B04"))
    with rasterio.open(tmp_path / "named" / "b.tif") as ds:
        raw = ds.read()
    assert np.array_equal(scene.dn, raw[[1, 2, 0]]) and scene.notes == ["radiometric offset 0 removed"]


def test_a_band_the_run_needs_that_the_source_lacks(tmp_path):
    _tif(tmp_path / "data" / "a.tif", 3)
    src = _source(tmp_path, scenes="data/*.tif", bands={"order": ["B02", "B03", "B04"]})
    with pytest.raises(SourceError, match=r"a.tif: lacks band\(s\) \['B08'\] that the run needs .*field 'bands'"):
        check_source(load_source(str(src)), tmp_path, ("B02", "B08"))
    with pytest.raises(SourceError, match=r"mine.yaml: the run needs band\(s\) \['B10'\] that source 'mine' lacks: its card"):
        check_source(load_source(str(src)), tmp_path, ("B02", "B10"))
    folder = tmp_path / "perband" / "scene1"
    _tif(folder / "B02.tif", 1)
    _tif(folder / "B03.tif", 1)
    src = _source(tmp_path, scenes="perband/*", bands={"file": "{band}.tif"})
    with pytest.raises(SourceError, match=r"perband/scene1: lacks band\(s\) \['B04'\] .*field 'bands.file'"):
        check_source(load_source(str(src)), tmp_path, ("B02", "B03", "B04"))


def test_mixed_crs_in_one_scene_needs_a_target_grid(tmp_path):
    folder = tmp_path / "perband" / "scene1"
    _tif(folder / "B02.tif", 1, crs="EPSG:32633")
    _tif(folder / "B05.tif", 1, crs="EPSG:32634", size=32, res=20.0)
    src = _source(tmp_path, scenes="perband/*", bands={"file": "{band}.tif"})
    with pytest.raises(SourceError, match=r"scene1: files of one scene are in different CRSs .* set field 'grid' to"):
        check_source(load_source(str(src)), tmp_path, ("B02", "B05"))
    src = _source(tmp_path, scenes="perband/*", bands={"file": "{band}.tif"}, offset={"dn": 0},
                  grid={"crs": "EPSG:32633", "resolution_m": 10, "band": "B02"})
    (scene,) = read_source(load_source(str(src)), tmp_path, ("B02", "B05"))
    assert scene.crs == "EPSG:32633" and scene.transform[0] == 10.0 and scene.dn.shape[0] == 2


def test_a_card_with_an_unknown_unit_names_the_card(tmp_path):
    card = yaml.safe_load((ROOT / "eolab" / "data" / "sensors" / "sentinel2_l2a.yaml").read_text())
    card["unit"] = "furlongs"
    (tmp_path / "bad_card.yaml").write_text(yaml.safe_dump(card))
    src = _source(tmp_path, card="bad_card.yaml", scenes="*.tif", bands={"order": ["B02"]})  # relative to the source file
    with pytest.raises(SourceError, match=r"mine.yaml: field 'card': .*bad_card.yaml: field 'unit': unknown unit 'furlongs'"):
        load_source(str(src))


def test_bad_source_fields_are_named(tmp_path):
    with pytest.raises(SourceError, match=r"field 'kind' must be one of geotiff, stac, xarray, torchgeo, eopatch, got 'hdf'"):
        load_source(str(_source(tmp_path, kind="hdf")))
    with pytest.raises(SourceError, match=r"unknown field\(s\) \['scene'\] for kind 'geotiff'"):
        load_source(str(_source(tmp_path, scene="x/*.tif")))
    with pytest.raises(SourceError, match=r"unknown pre-training source 'major-tom'; built-in sources: hydro, major_tom"):
        load_source("major-tom")


def test_the_sources_parameter_accepts_source_files_and_names_a_bad_one(tmp_path):
    cfg = PretrainConfig(sources="hydro,sources/terramesh_s2l2a.yaml")
    assert cfg.source_list == ("hydro", "sources/terramesh_s2l2a.yaml")
    bad = _source(tmp_path, kind="geotiff", bands={"order": ["B02"]})  # no 'scenes'
    with pytest.raises(ParameterError, match=rf"parameter 'sources' must be .*{bad}: missing field 'scenes'"):
        PretrainConfig(sources=f"hydro,{bad}")
    with pytest.raises(ParameterError, match=r"source file nope.yaml does not exist"):
        PretrainConfig(sources="nope.yaml")


def test_scenes_by_fsspec_url(root, tmp_path):
    """A glob given as a URL is listed through fsspec and opened through GDAL (file:// here; s3://, gs://,
    https:// go the same way)."""
    reference = _scene_of(root, "sources/bigearthnet_s2.yaml", "bigearthnet_s2", ("B02", "B05"))[0]
    src = _source(tmp_path, scenes=f"file://{root}/bigearthnet/s2/*", bands={"file": "*_{band}.tif"},
                  grid={"band": "B02"}, offset={"dn": 0})
    scenes = list(read_source(load_source(str(src)), root, ("B02", "B05")))
    assert scenes[0].id == f"file://{root / reference.id}" and np.array_equal(scenes[0].dn, reference.dn)


def test_landsat_digital_numbers_convert_through_the_card(tmp_path):
    """Collection 2 Level-2: reflectance = DN * 2.75e-5 - 0.2, cached as reflectance x 10000."""
    _tif(tmp_path / "ls" / "scene.tif", 2, value=10000)
    src = _source(tmp_path, card="landsat89_oli", scenes="ls/*.tif", bands={"order": ["SR_B4", "SR_B5"]})
    (scene,) = read_source(load_source(str(src)), tmp_path, ("B4", "B5"))
    with rasterio.open(tmp_path / "ls" / "scene.tif") as ds:
        raw = ds.read().astype(np.float64)
    assert scene.sensor == "landsat89" and scene.bands == ("B4", "B5") and scene.dn.dtype == np.uint16
    assert np.array_equal(scene.dn, np.rint((raw * 2.75e-5 - 0.2) / 1e-4).astype(np.uint16))
    with pytest.raises(SourceError, match=r"convert to different units \['kelvin', 'reflectance'\]"):
        _tif(tmp_path / "ls2" / "scene.tif", 2, value=10000)
        src = _source(tmp_path, card="landsat89_oli", scenes="ls2/*.tif", bands={"order": ["B4", "B10"]})
        list(read_source(load_source(str(src)), tmp_path, ("B4", "B10")))


def test_quality_band_flags_and_card_nodata_make_pixels_invalid(tmp_path):
    folder = tmp_path / "s2" / "scene1"
    _tif(folder / "B02.tif", 1)
    _tif(folder / "B03.tif", 1)
    scl = np.full((1, 64, 64), 4, dtype=np.uint16)  # vegetation
    scl[0, :10] = 9  # cloud, high probability
    with rasterio.open(folder / "SCL.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10)) as ds:
        ds.write(scl)
    src = _source(tmp_path, scenes="s2/*", bands={"file": "{band}.tif"}, quality=True, offset={"dn": 0})
    (scene,) = read_source(load_source(str(src)), tmp_path, ("B02", "B03"))
    assert not scene.valid[:10].any() and scene.valid[10:].all()
    hls = tmp_path / "hls" / "t.tif"
    _tif(hls, 2)
    with rasterio.open(hls) as ds:
        data = ds.read().astype(np.int32)
    data[:, 0, :5] = -9999
    with rasterio.open(hls, "w", driver="GTiff", width=64, height=64, count=2, dtype="int16", crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 30, 30)) as ds:
        ds.write(data.astype(np.int16))
    src = _source(tmp_path, name="hls", card="hls_s30", scenes="hls/*.tif", bands={"order": ["B04", "B8A"]})
    (scene,) = read_source(load_source(str(src)), tmp_path, ("B04", "B8A"))
    assert not scene.valid[0, :5].any() and scene.valid[1:].all() and scene.pixels["masked_pixels"] == 0


def test_sources_of_different_units_are_refused_before_decoding(root, tmp_path):
    card = yaml.safe_load((ROOT / "eolab" / "data" / "sensors" / "sentinel2_l2a.yaml").read_text())
    card.update(name="s2_in_db", unit="db", to="db", scale=1.0)
    (tmp_path / "s2_in_db.yaml").write_text(yaml.safe_dump(card))
    src = _source(tmp_path, name="other", card="s2_in_db.yaml", scenes="hydro/*.tif",
                  bands={"order": list(load_source("hydro").products[0].fields["bands"]["order"])})
    with pytest.raises(ValueError, match=r"different units, and one cache holds one unit: .*hydro.yaml \(hydro\)"):
        build_scene_cache(root, ("hydro", str(src)), bands=("B02",), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_bands_parameter_follows_the_sources_cards() -> None:
    """The notebook's `bands` are checked against what the chosen sources have, not Sentinel-2 names only."""
    from eolab.config import ParameterError, PretrainConfig

    s1 = "sources/ssl4eo_s1.yaml"
    assert PretrainConfig.from_params({"sources": s1, "bands": "VV,VH"}).band_list == ("VV", "VH")
    with pytest.raises(ParameterError, match=r"parameter 'bands'.*ssl4eo_s1\.yaml.*'VV', 'VH'"):
        PretrainConfig.from_params({"sources": s1})  # the default bands are Sentinel-2's
    with pytest.raises(ParameterError, match="parameter 'bands'"):
        PretrainConfig.from_params({"sources": f"hydro,{s1}", "bands": "VV"})  # hydro has no VV


def test_a_one_file_per_band_source_says_which_of_its_cards_bands_its_folders_hold(tmp_path):
    """The Sentinel-1 card has VV, VH, HH and HV; SSL4EO-S12's folders hold VV and VH only, which the
    source declares (bands.names), so packing or training on it without --bands reads those two."""
    from eolab.data.sources import source_bands

    assert source_bands(str(ROOT / "sources" / "ssl4eo_s1.yaml")) == ("VV", "VH")
    spec = yaml.safe_load((ROOT / "sources" / "ssl4eo_s1.yaml").read_text())
    spec["bands"]["names"] = ["VV", "B04"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SourceError, match=r"bad\.yaml.*'bands'.*B04.*sentinel1"):
        source_bands(str(tmp_path / "bad.yaml"))
