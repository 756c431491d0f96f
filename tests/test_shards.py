"""The packer (eolab.data.shards) on real patches of the shared data: exact statistics, resume after
a SIGKILL without redoing finished shards, new sources beside old shards, checksums named on read."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from eolab.data.shards import PackOptions, ShardError, band_statistics, integer_sums, merge_sums, pack
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
