"""Readers, cache and normalisation on the real shared data."""

import shutil

import numpy as np
import pytest
import torch

from eolab.data import eurosat
from eolab.data.bands import EUROSAT_FILE_ORDER, S2_L1C, S2_L2A, canonical_band_name
from eolab.data.cache import PatchDataset, build_scene_cache
from eolab.data.paths import data_root
from eolab.data.raster import RasterError, read_raster
from eolab.data.schema import collate, validate
from eolab.data.stats import Normalization, NormalizationMismatch, compute_normalization


def test_band_names_are_canonicalised():
    assert canonical_band_name("B2") == "B02"
    assert canonical_band_name("b8a") == "B8A"
    with pytest.raises(KeyError, match="B13"):
        canonical_band_name("B13")


def test_eurosat_reads_all_labelled_patches_with_band_order_and_lonlat(root):
    data = eurosat.load(root)
    assert data["image"].shape == (273, 13, 64, 64)
    assert data["bands"] == S2_L1C and data["bands"][8] == "B8A"  # B8A moved next to B08
    assert sorted(set(data["split"])) == ["extra", "test", "train"]
    assert len(set(data["label"].tolist())) == 10
    lon, lat = data["lonlat"][:, 0], data["lonlat"][:, 1]
    assert (lon > -25).all() and (lon < 45).all() and (lat > 34).all() and (lat < 72).all()  # Europe


def test_eurosat_b8a_comes_from_the_last_file_band(root):
    f = eurosat.list_files(root, splits=("train",))[0]
    raw, _ = read_raster(f.path)
    sample = eurosat.read_sample(f)
    b8a_file = raw[EUROSAT_FILE_ORDER.index("B8A")] / 10_000
    np.testing.assert_allclose(sample["image"][S2_L1C.index("B8A")].numpy(), b8a_file, rtol=1e-6)
    validate(sample, where=str(f.path))


def test_missing_data_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        data_root(tmp_path / "does-not-exist")


def test_truncated_geotiff_is_named(root, tmp_path):
    src = next((root / "eurosat-ms" / "train" / "Forest").glob("*.tif"))
    broken = tmp_path / "eurosat-ms" / "train" / "Forest" / "broken.tif"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(src.read_bytes()[:3000])
    with pytest.raises(RasterError, match="broken.tif"):
        eurosat.load(tmp_path, splits=("train",))


def test_wrong_band_count_is_named(root, tmp_path):
    src = next((root / "hydro").glob("*.tif"))  # 12 bands, EuroSAT needs 13
    target = tmp_path / "eurosat-ms" / "train" / "Forest" / "twelve.tif"
    target.parent.mkdir(parents=True)
    shutil.copy(src, target)
    with pytest.raises(RasterError, match=r"twelve.tif: expected 13 bands, found 12"):
        eurosat.load(tmp_path, splits=("train",))


@pytest.fixture(scope="module")
def cache(root, tmp_path_factory):
    return build_scene_cache(root, ("hydro", "ssl4eo"), cache_dir=tmp_path_factory.mktemp("scenes"))


def test_scene_cache_has_l2a_bands_and_explicit_notes(cache):
    assert cache.bands == S2_L2A and "B10" not in cache.bands
    l1c = [s for s in cache.scenes if s["level"] == "L1C"]
    assert l1c and all(any("dropped band B10" in n for n in s["notes"]) for s in l1c)
    assert cache.array(0).dtype == np.uint16


def test_scene_cache_is_reused_not_rebuilt(root, cache):
    again = build_scene_cache(root, ("hydro", "ssl4eo"), cache_dir=cache.path.parent)
    assert again.path == cache.path
    assert len(list(cache.path.parent.iterdir())) == 1  # no leftover temporary build folders


def test_patches_follow_the_schema_and_batch(cache):
    tiles = cache.tiles(patch=64, stride=64)
    assert tiles["valid_frac"].min() >= 0.95
    ds = PatchDataset(cache, tiles)
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 12, 64, 64) and batch["bands"] == S2_L2A
    assert 0 <= float(batch["image"].median()) < 1.5  # reflectance, offset removed


def test_collate_refuses_mixed_band_orders():
    a = {"image": torch.zeros(2, 4, 4), "bands": ("B02", "B03"), "unit": "reflectance", "source": "x"}
    b = {**a, "bands": ("B03", "B02")}
    with pytest.raises(ValueError, match="different bands"):
        collate([a, b])


def test_normalization_selects_bands_by_name_and_refuses_mismatches(cache):
    ds = PatchDataset(cache, cache.tiles(64, 64))
    norm = compute_normalization(ds, max_samples=20)
    assert set(norm.mean) == set(S2_L2A)
    x = torch.rand(1, 13, 8, 8)  # L1C order, with B10
    out = norm(x, S2_L1C, "reflectance")
    assert out.shape[1] == 12
    b8a = S2_L1C.index("B8A")
    expected = (x[0, b8a] - norm.mean["B8A"]) / norm.std["B8A"]
    torch.testing.assert_close(out[0, S2_L2A.index("B8A")], expected)
    with pytest.raises(NormalizationMismatch, match="unit 'dn'"):
        norm(x, S2_L1C, "dn")
    with pytest.raises(NormalizationMismatch, match=r"lacks bands \['B01'\]"):
        norm(x[:, 1:], S2_L1C[1:], "reflectance")
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_data_preflight_command_names_a_missing_root(tmp_path, capsys):
    from eolab.__main__ import main

    assert main(["data", "--data-root", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_torchgeo_variant_reads_torchgeo_layout_with_the_same_labels(root, tmp_path):
    """torchgeo's EuroSAT (the full-dataset path) on a torchgeo-style folder built from the local files:
    no download happens because the split files and image folder exist, as after a real download."""
    from torchgeo.datasets import EuroSAT

    tg = tmp_path / "eurosat-torchgeo"
    local = eurosat.list_files(root, splits=("train", "test"))
    for f in local:
        target = tg / EuroSAT.base_dir / f.path.parent.name / f.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f.path)
    for split, name in EuroSAT.split_filenames.items():
        wanted = {"train": "train", "val": "test", "test": "test"}[split]  # reuse local test files for val
        (tg / name).write_text("".join(f.path.name.replace(".tif", ".jpg") + "\n" for f in local if f.split == wanted))
    data = eurosat.load(tmp_path, variant="torchgeo")
    by_id = {i.split("/", 1)[1]: int(y) for i, y in zip(data["id"], data["label"], strict=True)}
    expected = {f"{f.path.parent.name}/{f.path.name}": f.label for f in local}
    assert by_id == expected
    assert sorted(set(data["split"])) == ["test", "train", "val"]
    assert data["image"].shape[1:] == (13, 64, 64) and data["lonlat"].shape == (len(data["id"]), 2)


def test_stack_images_equals_torch_stack_and_keeps_what_numpy_cannot_hold():
    from eolab.data.schema import stack_images

    images = [torch.randn(3, 4, 4) for _ in range(5)]
    assert torch.equal(stack_images(images), torch.stack(images)) and stack_images(images).dtype == torch.float32
    assert stack_images(images).data_ptr() % 64 == 0  # torch's alignment: kernels sum in the same order as on torch.stack's
    dn = [torch.randint(0, 10000, (2, 3, 3), dtype=torch.int16) for _ in range(3)]
    assert torch.equal(stack_images(dn), torch.stack(dn)) and stack_images(dn).dtype == torch.int16
    bf16 = [x.bfloat16() for x in images]  # numpy has no bfloat16: torch.stack
    assert torch.equal(stack_images(bf16), torch.stack(bf16)) and stack_images(bf16).dtype == torch.bfloat16
    grads = [x.clone().requires_grad_() for x in images]
    assert stack_images(grads).requires_grad
