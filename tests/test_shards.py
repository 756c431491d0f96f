"""The packer (eolab.data.shards) on real patches of the shared data: exact statistics (uint16 and
float32), resume after a SIGKILL without redoing finished shards, new sources beside old shards,
checksums named on read."""

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from eolab.data.cache import build_scene_cache
from eolab.data.paths import REPO_ROOT
from eolab.data.shards import PackOptions, ShardError, band_statistics, float_sums, integer_sums, merge_sums, pack
from eolab.data.stream import PackedDataset, open_corpus

OPTS = PackOptions(patch=32, stride=32, bands=("B02", "B03", "B04", "B08"), sampling="uniform", n=40, shard_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("corpus")
    pack(("hydro",), out, root=root, opts=OPTS, workers=2, progress=lambda line: None)
    return out


def _all_dn(folder):
    c = open_corpus(folder)
    return np.concatenate([c.read_shard(i)[0] for i in range(len(c.shards))])


def test_one_pass_statistics_equal_the_two_pass_result(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["n"] == 40 and len(manifest["shards"]) == 5 and manifest["bands"] == list(OPTS.bands)
    dn = _all_dn(corpus)
    assert dn.shape == (40, 4, 32, 32) and dn.dtype == np.uint16
    for c, band in enumerate(OPTS.bands):
        x = dn[:, c].astype(np.float64).ravel()
        mean = x.mean()  # numpy two-pass: mean, then the mean squared deviation from it
        std = np.sqrt(((x - mean) ** 2).mean())
        got = manifest["stats"][band]
        assert got["count"] == x.size
        np.testing.assert_allclose(got["mean"], mean * 1e-4, rtol=1e-12)
        np.testing.assert_allclose(got["std"], std * 1e-4, rtol=1e-12)
        # the exact two-pass value over integers: n^2 var = sum (n x - S)^2 / n
        xi = [int(v) for v in dn[:, c].ravel()]
        n, s = len(xi), sum(xi)
        var_exact = sum((n * v - s) ** 2 for v in xi) / n**3
        assert got["sum_dn"] == s and np.isclose(got["std"], var_exact**0.5 * 1e-4, rtol=1e-15)


def test_merged_shard_sums_are_the_sums_of_all_pixels():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 65536, size=(k, 2, 4, 4), dtype=np.uint16) for k in (3, 5, 1)]
    whole = integer_sums(np.concatenate(parts))
    assert merge_sums([integer_sums(p) for p in parts]) == whole
    stats = band_statistics(whole, ("a", "b"), 1.0)
    x = np.concatenate(parts)[:, 1].astype(np.float64)
    np.testing.assert_allclose([stats["b"]["mean"], stats["b"]["std"]], [x.mean(), x.std()], rtol=1e-12)


@pytest.mark.slow
def test_killed_pack_resumes_without_redoing_finished_shards(tmp_path, root, corpus):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "eolab", "data", "pack", "hydro", "--out", str(out), "--patch", "32", "--stride", "32",
           "--bands", "B02,B03,B04,B08", "--n", "40", "--shard-size", "2", "--workers", "1", "--data-root", str(root)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.tar.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the packer and its writer process, mid-pack
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")
                if (out / f"{p.name}.json").exists()}
    assert len(finished) >= 3
    assert not (out / "manifest.json").exists() or len(finished) == 20  # written only when every shard is

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(finished)} already packed" in again.stdout
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    assert not list(out.glob(".*.tmp"))  # a half-written shard of the killed run is never left as a shard
    np.testing.assert_array_equal(_all_dn(out), _all_dn(corpus))  # the same patches as an uninterrupted pack


def test_a_new_source_adds_shards_and_keeps_the_old_ones(tmp_path, root):
    out = tmp_path / "grow"
    opts = PackOptions(patch=32, stride=32, bands=("B02", "B03", "B04"), n=10, shard_size=5)
    first = pack(("hydro",), out, root=root, opts=opts, workers=1, progress=lambda line: None)
    before = {s["name"]: (out / s["name"]).stat().st_mtime_ns for s in first["shards"]}
    lines = []
    grown = pack(("ssl4eo",), out, root=root, opts=opts, workers=1, progress=lines.append)
    assert "0 already packed, 2 to write" in lines[0]
    assert [p["source"] for p in grown["parts"]] == ["hydro", "ssl4eo"] and grown["n"] == 20
    assert {s["name"]: (out / s["name"]).stat().st_mtime_ns for s in grown["shards"] if s["source"] == "hydro"} == before
    # the corpus statistics are the exact merge of the two parts'
    hydro, ssl = grown["parts"][0]["stats"]["B03"], grown["parts"][1]["stats"]["B03"]
    assert grown["stats"]["B03"]["sum_dn"] == hydro["sum_dn"] + ssl["sum_dn"]
    with pytest.raises(ValueError, match="has bands"):  # one corpus, one band order
        pack(("major_tom",), out, root=root, opts=PackOptions(patch=32, stride=32, bands=("B04",), n=5), workers=1,
             progress=lambda line: None)


def test_patch_records_and_manifest(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    side = json.loads((corpus / f"{manifest['shards'][0]['name']}.json").read_text())
    rec = side["patches"][0]
    assert {"id", "source", "scene", "row", "col", "lon", "lat", "time", "footprint"} <= set(rec)
    west, south, east, north = rec["footprint"]
    assert west < rec["lon"] < east and south < rec["lat"] < north
    assert manifest["unit"] == "reflectance" and manifest["sensors"] == ["sentinel2 L2A"]
    assert manifest["parts"][0]["sampling"]["budget"] == 40  # the sampler chose the windows
    sample = PackedDataset(open_corpus(corpus))[0]
    assert sample["id"] == rec["id"] and tuple(sample["bands"]) == OPTS.bands and sample["image"].shape == (4, 32, 32)


def test_a_corrupted_shard_is_an_error_naming_it(tmp_path, corpus):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    name = json.loads((copy / "manifest.json").read_text())["shards"][2]["name"]
    data = bytearray((copy / name).read_bytes())
    data[5000] ^= 0xFF  # one flipped byte inside a patch
    (copy / name).write_bytes(bytes(data))
    data_ = PackedDataset(open_corpus(copy))
    data_[0]  # other shards read fine
    with pytest.raises(ShardError, match=f"shard .*{name}: sha256"):
        data_[2 * 8]


def _awkward_floats(seed: int) -> np.ndarray:
    """float32 patches (4, 2, 6, 6): negative and positive values over 60 decades, subnormals, zeros,
    the largest float32, and no data (NaN, infinities)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 2, 6, 6)) * 10.0 ** rng.uniform(-30, 30, size=(4, 2, 6, 6))
    x = x.astype(np.float32)
    x[0, 0, 0, :6] = [1e-45, -1e-45, 3e-39, -0.0, 0.0, np.finfo(np.float32).max]  # subnormals, zeros, max
    x[1, 1, 2, 2], x[2, 0, 1, 1], x[3, 1, 0, 0] = np.nan, np.inf, -np.inf
    return x


def _exact(values: np.ndarray) -> tuple[int, Fraction, Fraction]:
    """Count, mean and population variance of the finite values, as exact fractions (the reference)."""
    v = [Fraction(float(t)) for t in values.ravel() if np.isfinite(t)]
    n = len(v)
    mean = sum(v) / n
    return n, mean, sum((t - mean) ** 2 for t in v) / n  # two-pass, exact


def test_float_statistics_are_exact():
    x = _awkward_floats(0)
    valid = np.ones((4, 6, 6), bool)
    valid[2, 3, :] = False  # pixels the scene cache marks as no data
    sums = float_sums(x, valid)
    stats = band_statistics(sums, ("VV", "VH"), 1.0)
    for c, band in enumerate(("VV", "VH")):
        kept = np.where(valid, x[:, c], np.nan)
        n, mean, var = _exact(kept)
        assert stats[band]["count"] == n and stats[band]["nodata"] == x[:, c].size - n
        assert sums["sum"][c] == sum(Fraction(float(t)) for t in kept.ravel() if np.isfinite(t)) * 2**172
        assert stats[band]["mean"] == float(mean)  # the exact value rounded once
        assert stats[band]["std"] == float(var) ** 0.5
    assert band_statistics(float_sums(x), ("VV", "VH"), 1.0)["VV"]["nodata"] == 1  # the infinity; NaN in VH
    with pytest.raises(TypeError, match="float32"):
        float_sums(x.astype(np.float64))


def test_merged_float_sums_equal_one_pass():
    x = np.concatenate([_awkward_floats(1), _awkward_floats(2)])
    whole = float_sums(x)
    assert merge_sums([float_sums(x[:3]), float_sums(x[3:5]), float_sums(x[5:])]) == whole
    with pytest.raises(ShardError, match="fixed-point exponents"):  # float and integer sums do not mix
        merge_sums([whole, integer_sums(np.zeros((1, 2, 2, 2), np.uint16))])


S1 = str(REPO_ROOT / "sources" / "ssl4eo_s1.yaml")  # SSL4EO-S12 Sentinel-1 GRD, float32 dB


def test_sentinel1_db_corpus_packs_exactly(tmp_path, root):
    out = tmp_path / "s1"
    opts = PackOptions(patch=32, stride=32, bands=("VV", "VH"), shard_size=40)  # 128 windows: 4 shards
    manifest = pack((S1,), out, root=root, opts=opts, workers=2, progress=lambda line: None)
    assert (manifest["dtype"], manifest["unit"], manifest["scale"], manifest["sensors"]) == \
        ("float32", "db", 1.0, ["sentinel1 GRD"])
    corpus = open_corpus(out)
    cache = build_scene_cache(root, (S1,), bands=("VV", "VH"))
    values = []
    for i in range(len(corpus.shards)):
        x, records = corpus.read_shard(i)
        assert x.dtype == np.float32
        for patch, rec in zip(x, records, strict=True):  # bit-identical to the cache's float32 window
            window = cache.array(rec["scene_index"])[:, rec["row"] : rec["row"] + 32, rec["col"] : rec["col"] + 32]
            assert patch.tobytes() == np.ascontiguousarray(window).tobytes()
        values.append(x)
    x = np.concatenate(values).astype(np.float64)  # (128, 2, 32, 32)
    assert manifest["n"] == 128
    for c, band in enumerate(("VV", "VH")):
        v = x[:, c].ravel()
        mean = v.mean()  # numpy two-pass in float64
        std = np.sqrt(((v - mean) ** 2).mean())
        got = manifest["stats"][band]
        assert got["count"] == v.size and got["nodata"] == 0 and -40 < mean < 0  # dB backscatter
        np.testing.assert_allclose([got["mean"], got["std"]], [mean, std], rtol=1e-12)
    sample = PackedDataset(corpus)[5]
    assert sample["unit"] == "db" and sample["image"].dtype == torch.float32
    np.testing.assert_array_equal(sample["image"].numpy(), values[0][5])  # scale 1: the stored values as they are

    # a resumed pack (one shard lost its sidecar, the manifest is gone) merges to the same statistics
    (out / "manifest.json").unlink()
    (out / f"{manifest['shards'][1]['name']}.json").unlink()
    lines = []
    again = pack((S1,), out, root=root, opts=opts, workers=1, progress=lines.append)
    assert "3 already packed, 1 to write" in lines[0]
    assert again["stats"] == manifest["stats"]
    with pytest.raises(ValueError, match=r"has bands \['B02', 'B03'\] \(reflectance, uint16, 32 px\).*\(db, float32"):
        pack(("hydro",), out, root=root, opts=PackOptions(patch=32, stride=32, bands=("B02", "B03"), n=5), workers=1,
             progress=lambda line: None)
