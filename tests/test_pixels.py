"""Bad pixels are found where data are read: corrupted copies of real shared files (NaN, infinite,
all-zero, constant and out-of-range bands) are masked and counted in the cache manifest, or refused
with an error naming the file and the band (EuroSAT, which has no no-data)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eolab.data import eurosat
from eolab.data.bands import EUROSAT_FILE_ORDER, S2_L2A
from eolab.data.cache import build_scene_cache
from eolab.data.raster import RasterError, check_pixels
from eolab.data.scenes import HYDRO_FILE_ORDER
from eolab.runner.spec import REPO_ROOT

SHARED = (REPO_ROOT / ".." / "shared" / "data").resolve()
RUN_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")  # the default run's bands


def rewrite(path: Path, edit, dtype: str | None = None) -> None:
    """Rewrite a GeoTIFF in place with ``edit(array)`` applied (as ``dtype``, e.g. float32 for NaN)."""
    with rasterio.open(path) as src:
        array, profile = src.read(), src.profile
    array = array.astype(dtype or array.dtype)
    edit(array)
    profile.update(dtype=array.dtype.name)
    profile.pop("nodata", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def test_check_pixels_counts_each_kind_of_bad_value() -> None:
    stack = np.full((3, 20, 20), 1000.0, dtype=np.float32)
    stack[0] += np.arange(400, dtype=np.float32).reshape(20, 20)
    stack[1, :2] = np.nan
    stack[1, 2, :5] = np.inf
    stack[1, 3] += np.arange(20)
    stack[2] = 7.0 + np.arange(400).reshape(20, 20) % 3
    stack[2, 5, :3] = 70000.0  # above 65534 (65535 is saturated)
    check = check_pixels(stack, ("B02", "B03", "B04"))
    assert check.nonfinite == {"B03": 45} and check.out_of_range == {"B04": 3}
    assert check.masked == 48 and not check.bad_bands
    stack[0] = 0.0
    stack[2] = 1234.0
    check = check_pixels(stack, ("B02", "B03", "B04"))
    assert check.bad_bands == {"B02": "zero on every pixel (no data in this band)", "B04": "constant (1234) on every pixel"}
    # a flat 60 m band over 20 x 20 px (about 11 native pixels) is possible: not called constant
    assert "B09" not in check_pixels(np.stack([stack[2]]), ("B09",)).bad_bands


@pytest.fixture(scope="module")
def corrupted_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of both Major-TOM products and three Hydro patches, each corrupted in one way."""
    root = tmp_path_factory.mktemp("data")
    products = sorted((SHARED / "major-tom" / "S2L2A").glob("*/*/*"))
    copies = []
    for product in products:
        target = root / product.relative_to(SHARED)
        shutil.copytree(product, target)
        copies.append(target)
    rewrite(copies[0] / "B04.tif", lambda a: a.fill(np.nan), "float32")  # the case: a NaN band

    def block(a: np.ndarray) -> None:
        a[0, 100:200, 100:200] = np.nan  # 10,000 NaN pixels
        a[0, 300:310, 300:310] = np.inf  # 100 infinite ones

    rewrite(copies[1] / "B08.tif", block, "float32")
    rewrite(copies[1] / "B02.tif", lambda a: a.__setitem__((0, slice(500, 520), slice(500, 520)), 65535))  # saturated
    (root / "hydro").mkdir()
    for name, band, edit in (("patch_0.tif", "B05", lambda b: b.fill(0)), ("patch_1.tif", "B11", lambda b: b.fill(4321)),
                             ("patch_10000.tif", None, None)):
        shutil.copy(SHARED / "hydro" / name, root / "hydro" / name)
        if band:
            rewrite(root / "hydro" / name, lambda a, band=band, edit=edit: edit(a[HYDRO_FILE_ORDER.index(band)]))
    return root


@pytest.fixture(scope="module")
def corrupted_cache(corrupted_root: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_scene_cache(corrupted_root, ("major_tom", "hydro"), cache_dir=tmp_path_factory.mktemp("cache"))


def test_scene_cache_masks_counts_and_reports_bad_pixels(corrupted_cache, caplog: pytest.LogCaptureFixture) -> None:
    by_id = {sc["id"]: sc for sc in corrupted_cache.scenes}
    nan_band, blocks, zero, constant, clean = (
        next(sc for i, sc in by_id.items() if key in i)
        for key in ("0U_199R", "199U_1099R", "patch_0.tif", "patch_1.tif", "patch_10000.tif")
    )
    # a NaN band: no data in that band (stored as 0, never 65535), named in the manifest
    assert nan_band["pixels"]["bad_bands"] == {"B04": "NaN or infinite on every pixel"}
    i = corrupted_cache.scenes.index(nan_band)
    assert corrupted_cache.array(i)[S2_L2A.index("B04")].max() == 0
    # NaN / inf / saturated blocks: exactly those pixels masked and counted
    assert blocks["pixels"]["nonfinite_pixels"] == {"B08": 10_100}
    assert blocks["pixels"]["out_of_range_pixels"] == {"B02": 400}
    assert blocks["pixels"]["masked_pixels"] == 10_500
    j = corrupted_cache.scenes.index(blocks)
    assert not corrupted_cache.valid(j)[100:200, 100:200].any() and corrupted_cache.valid(j)[0:100, 0:100].all()
    # an all-zero and a constant band
    assert zero["pixels"]["bad_bands"] == {"B05": "zero on every pixel (no data in this band)"}
    assert constant["pixels"]["bad_bands"] == {"B11": "constant (4321) on every pixel"}
    assert clean["pixels"]["masked_pixels"] == 0 and not clean["pixels"]["bad_bands"]
    assert corrupted_cache.manifest["masked_pixels"] == 10_500
    assert len(corrupted_cache.manifest["bad_bands"]) == 3
    # a run reading a bad band leaves its scene out; one that does not keeps it
    with caplog.at_level(logging.WARNING):
        tiles = corrupted_cache.tiles(64, 32, bands=RUN_BANDS)
    assert set(tiles["scene"]) == {j, corrupted_cache.scenes.index(clean)}
    assert "left out" in caplog.text
    assert corrupted_cache.scenes.index(nan_band) in set(corrupted_cache.tiles(64, 32, bands=("B02", "B03"))["scene"])


def test_eurosat_refuses_bad_pixels_naming_file_and_band(tmp_path: Path) -> None:
    files = sorted((SHARED / "eurosat-ms" / "train" / "Forest").glob("*.tif"))[:4]
    target = tmp_path / "eurosat-ms" / "train" / "Forest"
    target.mkdir(parents=True)
    for f in files:
        shutil.copy(f, target / f.name)
    assert len(eurosat.load(tmp_path)["label"]) == 4  # the real files pass
    b04 = EUROSAT_FILE_ORDER.index("B04")
    cases = [
        (lambda a: a[b04].fill(np.nan), "float32", "band B04: NaN or infinite on every pixel"),
        (lambda a: a[b04, :8, :8].__setitem__(Ellipsis, np.inf), "float32", "band B04: 64 of 4096 pixels NaN or infinite"),
        (lambda a: a[EUROSAT_FILE_ORDER.index("B8A")].fill(0), None, "band B8A: zero on every pixel"),
        (lambda a: a[EUROSAT_FILE_ORDER.index("B03")].fill(999), None, "band B03: constant (999) on every pixel"),
        (lambda a: a[b04, 0, :10].__setitem__(Ellipsis, 0), None, "band B04: 10 of 4096 pixels outside the valid range [1, 65534]"),
    ]
    bad = target / files[0].name
    for edit, dtype, message in cases:
        shutil.copy(files[0], bad)
        rewrite(bad, edit, dtype)
        with pytest.raises(RasterError) as info:
            eurosat.load(tmp_path)
        assert str(bad) in str(info.value) and message in str(info.value), str(info.value)


def test_benchmark_task_with_nan_input_fills_and_names_sample_and_band(tmp_path: Path) -> None:
    from eolab.data.downstream import PRESTO_BANDS, get_task

    folder = tmp_path / "presto" / "algae_blooms" / "npy"
    shutil.copytree(SHARED / "presto" / "algae_blooms" / "npy", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    task = get_task("presto_algae")
    assert task.load(tmp_path)["image"].shape[0] == 1122  # the real file passes
    x = np.load(folder / "s1_s2_era5_srtm.npy")
    x = x.astype(np.float32)
    x[7, :, 3] = np.nan  # one sample's fourth channel, every month
    np.save(folder / "s1_s2_era5_srtm.npy", x)
    uid = np.load(folder / "uid.npy")[7]
    batch = task.load(tmp_path)  # no-data is filled before any embedding, and said, naming a sample and band
    assert np.isfinite(batch["image"].numpy()).all()
    assert any(f"12 no-data input values (0.0%) filled with the band mean, e.g. in sample presto/algae_blooms/{uid} "
               f"band {PRESTO_BANDS[3]}" in note for note in batch["notes"]), batch["notes"]
