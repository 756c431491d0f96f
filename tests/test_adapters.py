"""Other people's encoders (eolab.evaluate.adapters): torchgeo weights, timm models, precomputed
embeddings and random twins, on tiny synthetic tasks with random weights and locally written weight
files (no download)."""

import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from eolab.cli.benchmark import main
from eolab.data.bands import S2_L1C
from eolab.data.downstream import Task
from eolab.evaluate.adapters import (
    AdapterError,
    DOFAEncoder,
    EmbeddingsEncoder,
    MissingEmbeddings,
    ModuleEncoder,
    dofa_encoder,
    random_twin,
    spec_encoder,
    timm_encoder,
    torchgeo_encoder,
    transform_normalisation,
    write_embeddings,
)
from eolab.evaluate.battery import Settings, evaluate, resolve_encoders
from eolab.evaluate.encoders import FunctionEncoder, NotApplicable, Plan

MOCO = "ResNet18_Weights.SENTINEL2_ALL_MOCO"
SETTINGS = Settings(folds=3, repeats=1, shots=(1,), draws=2, subsamples=4)


def _s2_task(order=S2_L1C, size=16, n=24, name="s2toy") -> Task:
    """``n`` images of the 13 Sentinel-2 bands stored in ``order`` (the values of each band are the
    same whatever the order), 3 classes, at 6 places 10 m apart."""

    def load(root):
        rng = np.random.default_rng(0)
        target = np.arange(n) % 3
        by_band = {b: rng.normal(0.1 + 0.01 * i, 0.02, (n, 1, size, size)).astype(np.float32) for i, b in enumerate(S2_L1C)}
        by_band["B04"] += target[:, None, None, None].astype(np.float32) * 0.05
        image = torch.from_numpy(np.stack([by_band[b] for b in order], 2))  # (N, 1, C, H, W)
        lonlat = np.c_[10 + np.arange(n) * 1e-3, np.full(n, 45.0)]
        return {"image": image, "bands": tuple(order), "units": ("reflectance",) * 13, "modality": ("s2",) * 13,
                "target": target, "id": [f"s/{i}" for i in range(n)], "lonlat": lonlat, "group": np.arange(n) // 4,
                "time": None, "doy": None, "is_test": None, "classes": ("a", "b", "c")}

    return Task(name, "classification", tuple(order), ("reflectance",) * 13, ("s2",) * 13, num_dates=1, size=size,
                gsd_m=10.0, dated=False, loader=load)


def _features(enc, task):
    batch = task.load()
    plan = enc.plan(task)
    assert isinstance(plan, Plan), plan
    return enc.features(task, batch, plan)


# ----------------------------------------------------------------------------------------------
# torchgeo


def test_torchgeo_bands_unit_and_normalisation_come_from_the_weights():
    from torchgeo.models import ResNet18_Weights

    enc = torchgeo_encoder(MOCO, weights_file="random")
    meta = ResNet18_Weights.SENTINEL2_ALL_MOCO.meta
    assert len(enc.bands) == meta["in_chans"] == 13
    assert enc.bands[8] == "B8A" and meta["bands"][8] == "B8a"  # torchgeo's spelling, resolved in the Sentinel-2 card
    assert enc.band_wavelengths[8] == pytest.approx(864.7)
    assert enc.unit == "reflectance" and enc.normalisation()["scale"] == 10000.0  # SSL4EO-S12 stores reflectance x 1e4
    assert enc.normalisation()["std"] == [10000.0] * 13  # the weights' own Normalize
    assert enc.img_size is None and enc.native_size == 224 and enc.skipped_transforms == ("Resize", "CenterCrop")
    s1 = torchgeo_encoder("ResNet50_Weights.SENTINEL1_ALL_MOCO", weights_file="random")
    assert s1.bands == ("VV", "VH") and s1.unit == "dB"
    assert s1.normalisation()["mean"] == pytest.approx([-12.59, -20.26])


def test_chained_normalize_steps_compose_into_one():
    from torchgeo.models import ResNet18_Weights

    transforms = ResNet18_Weights.SENTINEL2_RGB_SECO.transforms  # three Normalize steps after resizing
    mean, std, skipped = transform_normalisation(transforms, 3)
    x = torch.rand(2, 3, 4, 4) * 255
    expected = x.clone()
    for t in transforms:
        if hasattr(t, "mean"):
            expected = t(expected)
    composed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(composed, expected, rtol=1e-4, atol=1e-4)
    assert skipped == ["Resize", "CenterCrop"]


def test_weights_whose_inputs_are_unknown_are_refused_by_name():
    with pytest.raises(AdapterError, match="SATLAS.*unit= and input_scale="):
        torchgeo_encoder("ResNet50_Weights.SENTINEL2_SI_MS_SATLAS", weights_file="random")
    with pytest.raises(AdapterError, match="LANDSAT_TM_TOA_MOCO.*not Sentinel-2"):
        torchgeo_encoder("ResNet18_Weights.LANDSAT_TM_TOA_MOCO", weights_file="random")
    with pytest.raises(AdapterError, match="unknown torchgeo weights 'Nope.X'"):
        torchgeo_encoder("Nope.X", weights_file="random")


def test_a_local_weights_file_loads_and_changes_the_features(tmp_path):
    task = _s2_task()
    random = torchgeo_encoder(MOCO, weights_file="random", seed=0)
    other = torchgeo_encoder(MOCO, weights_file="random", seed=1).module.state_dict()
    other["fc.weight"], other["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # a head the features do not use
    path = tmp_path / "moco.pth"
    torch.save(other, path)
    loaded = torchgeo_encoder(MOCO, weights_file=path)
    assert torch.equal(loaded.module.conv1.weight, other["conv1.weight"])
    assert loaded.source == str(path) and loaded.fingerprint() != random.fingerprint()
    assert not np.allclose(_features(loaded, task), _features(random, task))
    torch.save({"state_dict": other}, tmp_path / "ckpt.pth")  # a training checkpoint is unwrapped
    assert np.allclose(_features(torchgeo_encoder(MOCO, weights_file=tmp_path / "ckpt.pth"), task), _features(loaded, task))
    s1 = torchgeo_encoder("ResNet50_Weights.SENTINEL1_ALL_MOCO", weights_file="random").module.state_dict()
    torch.save(s1, tmp_path / "s1.pth")
    with pytest.raises(AdapterError, match="s1.pth.*do not fit"):
        torchgeo_encoder(MOCO, weights_file=tmp_path / "s1.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        torchgeo_encoder(MOCO, weights_file=tmp_path / "absent.pth")


def test_band_order_in_the_task_does_not_matter():
    enc = torchgeo_encoder(MOCO, weights_file="random")
    shuffled = tuple(np.random.default_rng(1).permutation(S2_L1C))
    assert shuffled != S2_L1C
    a, b = _features(enc, _s2_task()), _features(enc, _s2_task(shuffled, name="shuffled"))
    assert np.allclose(a, b, atol=1e-5)


def test_declared_normalisation_is_applied():
    enc = torchgeo_encoder(MOCO, weights_file="random")
    x = torch.rand(2, 13, 16, 16) * 0.3
    with torch.no_grad():
        enc.module.eval()
        assert torch.allclose(enc.fn(x), enc.module(x * 10000 / 10000))
        s1 = torchgeo_encoder("ResNet50_Weights.SENTINEL1_ALL_MOCO", weights_file="random")
        s1.module.eval()
        db = torch.randn(2, 2, 16, 16) * 5 - 15
        mean, std = torch.tensor([-12.59, -20.26]).view(1, 2, 1, 1), torch.tensor([5.26, 5.91]).view(1, 2, 1, 1)
        assert torch.allclose(s1.fn(db), s1.module((db - mean) / std), atol=1e-5)


def test_vit_weights_read_at_the_task_size_with_resampled_position_embeddings(tmp_path):
    name = "ViTSmall16_Weights.SENTINEL2_ALL_DINO"
    full = torchgeo_encoder(name, weights_file="random")
    assert full.img_size == 224
    assert isinstance(full.plan(_s2_task()), NotApplicable)  # 16 px images are never resized to 224
    torch.save(full.module.state_dict(), tmp_path / "dino.pth")  # 14 x 14 position embeddings
    small = torchgeo_encoder(name, weights_file=tmp_path / "dino.pth", img_size=16)
    assert small.img_size == 16 and small.module.pos_embed.shape[1] == 1 + 1
    assert torch.equal(small.module.patch_embed.proj.weight, full.module.patch_embed.proj.weight)
    assert _features(small, _s2_task()).shape == (24, 384)


# ----------------------------------------------------------------------------------------------
# timm


def test_timm_encoder_declares_bands_unit_and_normalisation(tmp_path):
    from eolab.data.bands import BANDS

    rgb = [BANDS[b] for b in ("B04", "B03", "B02")]
    enc = timm_encoder("resnet18", rgb, "reflectance", mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5], input_scale=2.0)
    assert enc.bands == ("B04", "B03", "B02") and enc.img_size is None
    x = torch.rand(2, 3, 16, 16)
    m, s = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), torch.tensor(0.5)
    with torch.no_grad():
        enc.module.eval()
        assert torch.allclose(enc.fn(x), enc.module((2 * x - m) / s))
    plan = enc.plan(_s2_task())
    assert plan.bands == ("B04", "B03", "B02")
    torch.save(timm_encoder("resnet18", rgb, "reflectance", seed=5).module.state_dict(), tmp_path / "r18.pth")
    loaded = timm_encoder("resnet18", rgb, "reflectance", pretrained=tmp_path / "r18.pth")
    assert loaded.source.endswith("r18.pth") and not np.allclose(_features(loaded, _s2_task()), _features(enc, _s2_task()))
    vit = timm_encoder("vit_tiny_patch16_224", rgb, "reflectance", img_size=32)
    assert vit.img_size == 32 and isinstance(vit.plan(_s2_task()), NotApplicable)
    with pytest.raises(AdapterError, match="2 values for 3 bands"):
        timm_encoder("resnet18", rgb, "reflectance", mean=[0.1, 0.2])


# ----------------------------------------------------------------------------------------------
# random twins


def test_random_twin_differs_and_is_deterministic_per_seed():
    vit = timm_encoder("vit_tiny_patch16_224", S2_L1C, "reflectance", img_size=16, mean=0.1, std=0.05)
    t0, t0b, t1 = random_twin(vit, 0), random_twin(vit, 0), random_twin(vit, 1)
    state = lambda e: e.module.state_dict()  # noqa: E731
    assert all(torch.equal(v, state(t0b)[k]) for k, v in state(t0).items())
    assert not torch.equal(state(t0)["blocks.0.attn.qkv.weight"], state(vit)["blocks.0.attn.qkv.weight"])
    assert not torch.equal(state(t0)["pos_embed"], state(vit)["pos_embed"])
    assert not torch.equal(state(t0)["blocks.0.attn.qkv.weight"], state(t1)["blocks.0.attn.qkv.weight"])
    assert t0.normalisation() == vit.normalisation() and t0.bands == vit.bands and t0.img_size == 16
    assert "pos_embed" in t0.twin_note and "cls_token" in t0.twin_note  # held by a module without reset_parameters
    assert t0.fingerprint() == t0b.fingerprint() != t1.fingerprint() != vit.fingerprint()
    r18 = torchgeo_encoder(MOCO, weights_file="random")
    twin = random_twin(r18)
    assert not torch.equal(twin.module.bn1.running_var, torch.zeros(64))  # BatchNorm statistics reset too
    assert not np.allclose(_features(twin, _s2_task()), _features(r18, _s2_task()))
    plain = FunctionEncoder(torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.LazyLinear(4)), ("B02",), "reflectance")
    with pytest.raises(TypeError, match="torch module"):
        random_twin(FunctionEncoder(lambda x: x.mean((-2, -1)), ("B02",), "reflectance"))
    assert random_twin(plain, 3).name == "random_init"


def test_random_init_baseline_for_a_non_eolab_encoder(tmp_path):
    enc = torchgeo_encoder(MOCO, weights_file="random")
    encoders = resolve_encoders([enc], ("random_init", "band_stats"))
    assert [e.name for e in encoders] == [enc.name, "random_init", "band_stats"]
    assert isinstance(encoders[1], ModuleEncoder) and encoders[2].restrict == enc.bands
    emb = _write(tmp_path / "e.parquet", _s2_task().load(), np.ones((24, 2)))
    with pytest.raises(ValueError, match="torch-module encoder"):
        resolve_encoders([EmbeddingsEncoder(emb)], ("random_init",))


# ----------------------------------------------------------------------------------------------
# precomputed embeddings


def _write(path, batch, vectors, ids=True):
    return write_embeddings(path, batch["id"] if ids else [f"x{i}" for i in range(len(batch["id"]))],
                            batch["lonlat"], vectors)


def test_embeddings_join_by_id_by_lonlat_and_report_missing_samples(tmp_path):
    task = _s2_task()
    batch = task.load()
    vectors = np.random.default_rng(0).normal(size=(24, 5)).astype(np.float32)
    order = np.random.default_rng(1).permutation(24)  # the file's rows in another order
    by_id = write_embeddings(tmp_path / "e.parquet", [batch["id"][i] for i in order], batch["lonlat"][order], vectors[order])
    assert np.array_equal(_features(EmbeddingsEncoder(by_id), task), vectors)
    # emb_0..emb_D columns, no ids: nearest lon/lat within the tolerance (samples are ~79 m apart)
    wide = pd.DataFrame({"lon": batch["lonlat"][order, 0] + 1e-5, "lat": batch["lonlat"][order, 1],
                         **{f"emb_{d}": vectors[order, d] for d in range(5)}})
    wide.to_parquet(tmp_path / "wide.parquet")
    enc = EmbeddingsEncoder(tmp_path / "wide.parquet", tolerance_m=5)
    assert np.array_equal(_features(enc, task), vectors)
    with pytest.raises(MissingEmbeddings, match=r"24 of 24 samples .* \(within 0.1 m by lon/lat\)"):
        _features(EmbeddingsEncoder(tmp_path / "wide.parquet", tolerance_m=0.1), task)
    partial = write_embeddings(tmp_path / "p.parquet", batch["id"][:20], batch["lonlat"][:20], vectors[:20])
    with pytest.raises(MissingEmbeddings, match="4 of 24 samples of s2toy have no embedding in p.parquet"):
        _features(EmbeddingsEncoder(partial), task)
    assert EmbeddingsEncoder(by_id).fingerprint() != EmbeddingsEncoder(partial).fingerprint()


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_embeddings_from_xarray_stores(tmp_path, suffix):
    task = _s2_task()
    batch = task.load()
    vectors = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    ds = xr.Dataset({"embedding": (("sample", "dim"), vectors[::-1])},
                    coords={"id": ("sample", list(batch["id"])[::-1]), "lon": ("sample", batch["lonlat"][::-1, 0]),
                            "lat": ("sample", batch["lonlat"][::-1, 1])})
    path = tmp_path / f"emb{suffix}"
    ds.to_zarr(path) if suffix == ".zarr" else ds.to_netcdf(path)
    assert np.array_equal(_features(EmbeddingsEncoder(path), task), vectors)


def test_embeddings_round_trip_gives_the_same_scores(tmp_path):
    """An encoder's own embeddings, written to Parquet and read back as an encoder, score exactly as it does."""
    task = _s2_task()
    enc = torchgeo_encoder(MOCO, weights_file="random")
    path = _write(tmp_path / "moco.parquet", task.load(), _features(enc, task))
    kwargs = dict(tasks=[task], baselines=(), protocols=("linear", "knn"), splits=("random",), settings=SETTINGS,
                  cache_dir=tmp_path / "cache", pretraining=None)
    a = evaluate(enc, **kwargs)
    b = evaluate(EmbeddingsEncoder(path, name="moco_file"), **kwargs)
    assert len(a) and (a["not_applicable"] == "").all()
    assert np.array_equal(a["value"].to_numpy(), b["value"].to_numpy())


# ----------------------------------------------------------------------------------------------
# specs and the command line


def test_specs_and_encoder_files(tmp_path):
    assert spec_encoder(f"torchgeo:{MOCO}@random").source == "random (seed 0)"
    (tmp_path / "r18.yaml").write_text("kind: timm\nmodel: resnet18\ncard: sentinel2_l1c\nbands: [B4, B3, B2]\n"
                                       "unit: reflectance\nmean: 0.1\nstd: 0.05\nname: rgb18\n")
    enc = spec_encoder(str(tmp_path / "r18.yaml"))
    assert enc.name == "rgb18" and enc.bands == ("B04", "B03", "B02") and enc.band_wavelengths[0] == pytest.approx(664.6)
    torch.save(torchgeo_encoder(MOCO, weights_file="random", seed=2).module.state_dict(), tmp_path / "w.pth")
    (tmp_path / "tg.yaml").write_text(f"kind: torchgeo\nweights: {MOCO}\nweights_file: w.pth\n")
    assert spec_encoder(str(tmp_path / "tg.yaml")).source == str(tmp_path / "w.pth")  # relative to the YAML file
    emb = _write(tmp_path / "e.parquet", _s2_task().load(), np.ones((24, 2)))
    assert isinstance(spec_encoder(f"embeddings:{emb}"), EmbeddingsEncoder)
    (tmp_path / "bad.yaml").write_text("kind: timm\nmodel: resnet18\nunit: reflectance\nbandz: [B02]\n")
    for spec, message in [("timm:resnet18", "encoder YAML"), ("resnet18", "expected torchgeo:"),
                          (str(tmp_path / "bad.yaml"), "unknown field.*bandz"),
                          (f"torchgeo:{MOCO}@{tmp_path / 'no.pth'}", "no.pth does not exist"),
                          ("embeddings:missing.parquet", "missing.parquet does not exist")]:
        with pytest.raises(AdapterError, match=f"encoder '.*{spec.split('/')[-1][:8]}.*'.*{message}"):
            spec_encoder(spec)


def test_command_line_encoder_specs(tmp_path, capsys):
    assert main(["--encoder", "torchgeo:Nope.X", "--tasks", "eurosat"]) == 2
    assert "error: encoder 'torchgeo:Nope.X'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--tasks", "eurosat"])
    assert exc.value.code == 2 and "--checkpoint or --encoder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# DOFA: wavelength-conditioned, any band set

LANDSAT = (("SR_B2", 482.0), ("SR_B3", 561.5), ("SR_B4", 654.5), ("SR_B5", 865.0), ("SR_B6", 1608.5))
HYPER = (("hs_031", 551.0), ("hs_032", 556.0), ("hs_090", 845.0))


def _wl_task(bands, size=16, n=12, name="wltoy", extra=()) -> Task:
    """``n`` images of ``bands`` ((name, wavelength nm) pairs, reflectance) plus ``extra`` bands
    without a wavelength (name, unit), 3 classes."""
    names = tuple(b for b, _ in bands) + tuple(b for b, _ in extra)
    units = ("reflectance",) * len(bands) + tuple(u for _, u in extra)
    wavelengths = tuple(w for _, w in bands) + (None,) * len(extra)

    def load(root):
        target = np.arange(n) % 3
        # each band's values drawn from its name: the same data whatever order the bands are stored in
        image = np.stack([np.random.default_rng(zlib.crc32(b.encode())).normal(0.15, 0.05, (n, 1, size, size))
                          for b in names], 2).astype(np.float32)  # (N, 1, C, H, W)
        image += target[:, None, None, None, None] * 0.05
        return {"image": torch.from_numpy(image), "bands": names, "units": units, "modality": ("",) * len(names),
                "target": target, "id": [f"w/{i}" for i in range(n)], "lonlat": np.c_[np.arange(n) * 1e-3, np.zeros(n)],
                "group": np.arange(n) // 4, "time": None, "doy": None, "is_test": None, "classes": ("a", "b", "c")}

    return Task(name, "classification", names, units, ("",) * len(names), num_dates=1, size=size, gsd_m=30.0,
                dated=False, loader=load, wavelengths=wavelengths)


def _tiny_dofa(seed=0, **kwargs):
    """A 1-block DOFA (torchgeo's class, 224 px grid, patch 16) so that the tests run in seconds."""
    from torchgeo.models.dofa import DOFA

    torch.manual_seed(seed)
    model = DOFA(embed_dim=32, depth=1, num_heads=2, num_classes=0)
    with torch.no_grad():
        model.pos_embed.normal_(0, 0.5)  # a position table that matters
    return DOFAEncoder(model, name="tiny_dofa", **kwargs)


@pytest.fixture(scope="module")
def dofa_base():
    return dofa_encoder("DOFABase16_Weights.DOFA_MAE", weights_file="random")


def test_dofa_reads_every_band_with_a_wavelength_whatever_its_name():
    enc = _tiny_dofa()
    landsat = _wl_task(LANDSAT, extra=(("VV", "dB"), ("NDVI", "index")))
    plan = enc.plan(landsat)
    assert plan.bands == tuple(b for b, _ in LANDSAT)  # no band matched by name; radar and index left out
    assert plan.encoder_bands == ("482nm", "561.5nm", "654.5nm", "865nm", "1608.5nm")
    assert "SR_B5 0.865" in plan.adapter and "left out: VV (no wavelength), NDVI (no wavelength)" in plan.adapter
    assert _features(enc, landsat).shape == (12, 32)
    hyper = _wl_task(HYPER, name="hyper")
    assert enc.plan(hyper).bands == ("hs_031", "hs_032", "hs_090") and _features(enc, hyper).shape == (12, 32)
    none = enc.plan(_wl_task((), extra=(("VV", "dB"), ("VH", "dB"))))
    assert isinstance(none, NotApplicable) and "none (bands: VV (no wavelength), VH (no wavelength))" in none.reason
    assert isinstance(enc.plan(_s2_task(size=8)), NotApplicable)  # smaller than a patch: never resampled


def test_dofa_is_given_the_wavelengths_not_the_band_order():
    enc = _tiny_dofa()
    a = _features(enc, _wl_task(LANDSAT))
    b = _features(enc, _wl_task(LANDSAT[::-1], name="reversed"))  # channels reordered with their wavelengths
    assert np.allclose(a, b, atol=1e-4)
    shifted = tuple((n, w + 100) for n, w in LANDSAT)  # the same values declared at other wavelengths
    assert not np.allclose(a, _features(enc, _wl_task(shifted, name="shifted")), atol=1e-3)


def test_dofa_position_embeddings_follow_the_task_grid():
    from timm.layers import resample_abs_pos_embed
    from torchgeo.models.dofa import DOFA

    enc = _tiny_dofa()
    model, reader = enc.module.eval(), enc.fn.module
    wl = (0.48, 0.56, 0.65)
    reader.wavelengths_um = wl
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(reader(x), model.forward_features(x, list(wl)), atol=1e-5)  # torchgeo's own path at 224
        small = DOFA(img_size=64, embed_dim=32, depth=1, num_heads=2, num_classes=0).eval()
        state = {**model.state_dict(), "pos_embed": resample_abs_pos_embed(model.pos_embed, [4, 4], num_prefix_tokens=1)}
        small.load_state_dict(state)
        x = x[..., :64, :64]
        assert torch.allclose(reader(x), small.forward_features(x, list(wl)), atol=1e-5)  # 4 x 4 grid at 64 px
    plan = enc.plan(_s2_task(size=64))
    assert plan.spatial == "as_is" and "interpolated from 14x14 to 4x4 patches" in plan.adapter
    pixel = enc.plan(_wl_task(HYPER, size=1, name="pixels"))
    assert pixel.spatial == "broadcast" and "constant 48 px image (3x3 patches" in pixel.adapter
    assert _features(enc, _wl_task(HYPER, size=1, name="pixels")).shape == (12, 32)


def test_dofa_weights_file_random_and_normalisation(dofa_base, tmp_path):
    task = _wl_task(LANDSAT)
    assert dofa_base.source == "random (seed 0)" and len(dofa_base.module.blocks) == 12
    assert dofa_base.normalisation() == {"scale": 1.0, "mean": [pytest.approx(0.15)], "std": [pytest.approx(0.1)]}
    other = dofa_encoder(weights_file="random", seed=1).module.state_dict()
    torch.save(other, tmp_path / "dofa.pth")
    loaded = dofa_encoder(weights_file=tmp_path / "dofa.pth")
    assert torch.equal(loaded.module.patch_embed.fclayer.w1.weight, other["patch_embed.fclayer.w1.weight"])
    assert loaded.fingerprint() != dofa_base.fingerprint() and loaded.source == str(tmp_path / "dofa.pth")
    assert not np.allclose(_features(loaded, task), _features(dofa_base, task))
    x = torch.rand(2, 5, 16, 16)
    tiny = _tiny_dofa(mean=0.1, std=0.2, scale=2.0)
    tiny.fn.module.wavelengths_um = (0.48, 0.56, 0.65, 0.86, 1.6)
    with torch.no_grad():
        tiny.fn.eval()
        assert torch.allclose(tiny.fn(x), tiny.fn.module((2 * x - 0.1) / 0.2))
    with pytest.raises(AdapterError, match="not DOFA weights"):
        dofa_encoder(MOCO, weights_file="random")
    with pytest.raises(AdapterError, match="one number"):
        _tiny_dofa(mean=[0.1, 0.2])
    twin = random_twin(_tiny_dofa())
    assert isinstance(twin, DOFAEncoder) and _features(twin, task).shape == (12, 32)


def test_dofa_through_the_battery(tmp_path):
    """Rows of a DOFA on a band set no other adapter reads, its wavelengths in the adapter column
    (and its embeddings stored, metadata included)."""
    task = _wl_task(HYPER, n=24, name="hyper")
    rows = evaluate(_tiny_dofa(), tasks=[task], baselines=(), protocols=("linear",), splits=("random",),
                    settings=SETTINGS, cache_dir=tmp_path / "cache", pretraining=None)
    assert len(rows) and (rows["not_applicable"] == "").all()
    assert rows["adapter"].str.contains("hs_031 0.551, hs_032 0.556, hs_090 0.845").all()


def test_dofa_specs(tmp_path):
    assert spec_encoder("dofa:DOFABase16_Weights.DOFA_MAE@random").source == "random (seed 0)"
    (tmp_path / "d.yaml").write_text("kind: dofa\nweights_file: random\npixel_size: 32\nmean: 0.1\nname: mine\n")
    enc = spec_encoder(str(tmp_path / "d.yaml"))
    assert enc.name == "mine" and enc.pixel_size == 32 and enc.normalisation()["mean"] == [pytest.approx(0.1)]
    with pytest.raises(AdapterError, match="DOFA reads any band set: dofa_encoder"):
        spec_encoder("torchgeo:DOFABase16_Weights.DOFA_MAE@random")
    with pytest.raises(AdapterError, match="encoder 'dofa:Nope.X@random'.*unknown torchgeo weights"):
        spec_encoder("dofa:Nope.X@random")
