"""Embeddings out of the command line, numpy or torch into the normalisation, and a --help that
imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from eolab.__main__ import COMMANDS, Group, main
from eolab.checkpoint import save_encoder
from eolab.data.bands import EUROSAT_FILE_ORDER
from eolab.data.stats import Normalization, NormalizationMismatch
from eolab.evaluate.export import EmbedError, embed_files
from eolab.evaluate.probe import embed
from eolab.models.vit import build_encoder, encoder_config

BANDS = ("B02", "B03", "B04", "B08")


def test_normalization_takes_numpy_and_torch_alike():
    norm = Normalization(BANDS, "reflectance", {"B02": 0.1, "B03": 0.2, "B04": 0.3, "B08": 0.4},
                         dict.fromkeys(BANDS, 0.5))
    rng = np.random.default_rng(0)
    data_bands = ("B08", "B04", "B03", "B02", "B11")  # other order, one extra band: selected by name
    x = rng.random((2, 5, 4, 4), dtype=np.float32)
    out_np = norm(x, data_bands, "reflectance")
    out_torch = norm(torch.from_numpy(x), data_bands, "reflectance")
    assert isinstance(out_np, np.ndarray) and isinstance(out_torch, torch.Tensor)
    np.testing.assert_allclose(out_np, out_torch.numpy())
    np.testing.assert_allclose(out_np[:, 0], (x[:, 3] - 0.1) / 0.5, rtol=1e-6)  # B02 first
    dn = (x * 10000).astype(np.uint16)  # integers become float32, never integer arithmetic
    assert norm(dn, data_bands, "reflectance").dtype == np.float32
    with pytest.raises(TypeError, match="torch.Tensor or a numpy.ndarray"):
        norm([[1.0]], BANDS, "reflectance")
    with pytest.raises(ValueError, match="C = 5 bands"):
        norm(x[:, :4], data_bands, "reflectance")
    with pytest.raises(NormalizationMismatch, match="lacks bands"):
        norm(x[:, :3], data_bands[:3], "reflectance")


def _checkpoint(path, img_size=16):
    torch.manual_seed(0)
    encoder = build_encoder("vit_nano", BANDS, img_size=img_size, patch_size=4).eval()
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.1), dict.fromkeys(BANDS, 0.05))
    save_encoder(path, encoder, encoder_config("vit_nano", BANDS, img_size, 4), norm)
    return encoder, norm


def _geotiff(path, array, crs="EPSG:32632", origin=(500_000.0, 5_000_000.0), res=10.0, descriptions=None):
    count, h, w = array.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=array.dtype, crs=crs,
                       transform=from_origin(*origin, res, res)) as ds:
        ds.write(array)
        if descriptions:
            ds.descriptions = descriptions
    return path


def test_embed_writes_vectors_with_coordinates(tmp_path):
    encoder, norm = _checkpoint(tmp_path / "enc.pt")
    rng = np.random.default_rng(1)
    data = tmp_path / "tiles"
    (data / "a").mkdir(parents=True)
    eurosat_like = rng.integers(0, 3000, (13, 16, 16), dtype=np.uint16)  # 13 unnamed bands: EuroSAT order
    _geotiff(data / "a" / "one.tif", eurosat_like)
    named = rng.integers(0, 3000, (4, 16, 32), dtype=np.uint16)  # two windows side by side, bands named
    _geotiff(data / "two.tif", named, crs="EPSG:32633", origin=(400_000.0, 6_000_000.0),
             descriptions=("B8", "B4", "B3", "B2"))
    out = tmp_path / "emb.nc"
    assert main(["embed", "--checkpoint", str(tmp_path / "enc.pt"), "--data", str(data), "--out", str(out),
                 "--pool", "mean"]) == 0
    ds = xr.open_dataset(out)
    assert ds["embedding"].dims == ("sample", "dim") and ds.sizes["dim"] == 64
    assert list(ds["sample"].values) == ["a/one.tif", "two.tif:0:0", "two.tif:0:16"]
    assert list(ds["col"].values) == [0, 0, 16] and ds.attrs["pool"] == "mean"
    # coordinates: the window centre in the file's CRS, taken to WGS84
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", [400_000.0 + 16 * 10 + 80], [6_000_000.0 - 80])
    assert float(ds["lon"][2]) == pytest.approx(lon[0], abs=1e-6) and float(ds["lat"][2]) == pytest.approx(lat[0], abs=1e-6)
    assert ds["crs"].values[0] == "EPSG:32632"
    # the vectors are the encoder's, on bands picked by name and scaled to reflectance
    order = [EUROSAT_FILE_ORDER.index(b) for b in BANDS]
    first = {"image": torch.from_numpy(eurosat_like[order][None].astype(np.float32) / 10000), "bands": BANDS,
             "unit": "reflectance"}
    np.testing.assert_allclose(ds["embedding"].values[0], embed(encoder, norm, first, "mean")[0], rtol=1e-4, atol=1e-5)
    right = named[[3, 2, 1, 0], :, 16:][None].astype(np.float32) / 10000
    expect = embed(encoder, norm, {"image": torch.from_numpy(right), "bands": BANDS, "unit": "reflectance"}, "mean")
    np.testing.assert_allclose(ds["embedding"].values[2], expect[0], rtol=1e-4, atol=1e-5)
    ds.close()
    zarr_ds = embed_files(tmp_path / "enc.pt", str(data / "*.tif"), tmp_path / "emb.zarr", pool="mean_std")
    assert zarr_ds.sizes == {"sample": 2, "dim": 128} and xr.open_zarr(tmp_path / "emb.zarr").sizes["sample"] == 2


def test_embed_errors_name_the_file_or_option(tmp_path, capsys):
    _checkpoint(tmp_path / "enc.pt")
    _geotiff(tmp_path / "five.tif", np.zeros((5, 16, 16), dtype=np.uint16))
    with pytest.raises(EmbedError, match="five.tif: 5 bands without band names.*--bands"):
        embed_files(tmp_path / "enc.pt", tmp_path / "five.tif")
    (tmp_path / "small").mkdir()
    _geotiff(tmp_path / "small" / "s.tif", np.zeros((4, 8, 8), dtype=np.uint16), descriptions=BANDS)
    with pytest.raises(EmbedError, match="s.tif: 8 x 8 px is smaller than the encoder's 16 x 16"):
        embed_files(tmp_path / "enc.pt", tmp_path / "small")
    assert main(["embed", "--checkpoint", str(tmp_path / "enc.pt"), "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "e.nc")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["embed", "--checkpoint", str(tmp_path / "enc.pt"), "--data", str(tmp_path / "five.tif"),
                 "--bands", "B02,B03,B04,B08,BX", "--out", str(tmp_path / "e.nc")]) == 2
    assert "--bands" in capsys.readouterr().err


def test_embed_real_eurosat_files_lands_where_the_reader_puts_them(root, tmp_path):
    from eolab.data import eurosat

    files = sorted((root / "eurosat-ms" / "test").glob("*/*.tif"))[:3]
    _checkpoint(tmp_path / "enc.pt", img_size=64)
    ds = embed_files(tmp_path / "enc.pt", files[0].parent, pool="mean")
    reader = {s["id"].split("/", 2)[2]: s["lonlat"].tolist()
              for s in (eurosat.read_sample(eurosat.EuroSATFile(p, 0, "test")) for p in sorted(files[0].parent.glob("*.tif")))}
    for sample, lon, lat in zip(ds["sample"].values, ds["lon"].values, ds["lat"].values, strict=True):
        assert [lon, lat] == pytest.approx(reader[sample], abs=1e-4)


def _all_commands():
    for name, command in COMMANDS.items():
        if isinstance(command, Group):
            yield from ([name, action] for action in command.actions)
        else:
            yield [name]


def test_every_command_explains_its_options_without_importing_torch():
    """--help of every command, in a fresh interpreter: it prints its options and never imports torch."""
    commands = [c for c in _all_commands() if c[0] != "bench"]  # benchmark and launch forward: their help too
    script = (
        "import sys\nfrom eolab.__main__ import main\nfor argv in %r:\n"
        "    try:\n        main([*argv, '--help'])\n    except SystemExit:\n        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'papermill', 'xarray') if m in sys.modules))\n"
    ) % ([[]] + commands,)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert out.count("usage: python -m eolab") == len(commands) + 1
    assert "--results-root DIR" in out and "--quiet" in out and "--checkpoint ENC.pt" in out
    assert "RESULTS_ROOT" in out and "REFERENCE_DIR" in out
    for argv in commands:
        assert f"usage: python -m eolab {' '.join(argv)}" in out or (argv == ["launch"] and "usage: python -m eolab.launch" in out)


def test_benchmark_help_defaults_are_the_batterys():
    """The benchmark's --help spells its defaults out (no torch to print it): they must be the battery's."""
    from eolab.cli import benchmark
    from eolab.evaluate import battery

    assert benchmark.DEFAULT_PROTOCOLS.split(",") == list(battery.PROTOCOLS)
    assert benchmark.DEFAULT_SPLITS.split(",") == list(battery.SPLITS)
    assert benchmark.DEFAULT_BASELINES.split(",") == list(battery.BASELINES)
