"""The streaming loader (eolab.data.stream) over a corpus packed from real Hydro patches: every
sample exactly once per epoch over 2 processes x 2 workers, a deterministic shuffle, and the same
samples over HTTP, the S3 API (moto's standalone server) and the GCS JSON API (gcp-storage-emulator)
as from local disk."""

import functools
import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

from eolab.data.shards import PackOptions, ShardError, pack
from eolab.data.stream import PackedDataset, ShardBatchSampler, open_corpus

OPTS = PackOptions(patch=32, stride=32, bands=("B02", "B03", "B04"), n=46, shard_size=5)  # 10 shards, the last of 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("corpus")
    pack(("hydro",), out, root=root, opts=OPTS, workers=1, progress=lambda line: None)
    return out


DISTRIBUTED = textwrap.dedent("""
    import json, os, sys
    import torch, torch.distributed as dist
    from torch.utils.data import DataLoader, get_worker_info
    from eolab.data.stream import PackedDataset, open_corpus

    rank, folder, out, drop_last = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    dist.init_process_group("gloo", init_method="file://" + sys.argv[5], rank=rank, world_size=2)

    class Tagged(PackedDataset):  # which worker read which sample, from which shard
        def __getitem__(self, i):
            return super().__getitem__(i)["id"], get_worker_info().id, self.corpus.locate(i)[0]

    data = Tagged(open_corpus(folder))
    sampler = data.batch_sampler(batch_size=4, seed=3, workers=2, drop_last=drop_last)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=2, collate_fn=list)
    epochs = [[item for batch in loader for item in batch] for _ in range(2)]
    json.dump(epochs, open(out, "w"))
""")


@pytest.mark.slow
@pytest.mark.parametrize("drop_last", [False, True])
def test_two_processes_two_workers_see_every_sample_once_per_epoch(tmp_path, corpus, drop_last):
    script = tmp_path / "rank.py"
    script.write_text(DISTRIBUTED)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(corpus), str(tmp_path / f"r{r}.json"),
                               str(int(drop_last)), str(tmp_path / "store")]) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ranks = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    all_ids = {r["id"] for i in range(10) for r in open_corpus(corpus).records(i)}
    assert len(all_ids) == 46
    orders = []
    for epoch in range(2):
        seen = [item[0] for rank in ranks for item in rank[epoch]]
        assert len(seen) == len(set(seen))  # no overlap between ranks and workers
        if drop_last:  # full batches of 2 per rank and slot: 46 // 4 slots = 11 -> 5 batches of 2 = 10 per slot
            assert len(seen) == 40 and set(seen) <= all_ids
        else:
            assert set(seen) == all_ids  # no gap
        orders.append(seen)
        # each (rank, worker) slot reads its own shards: only a slot boundary shard is shared
        readers: dict[int, set] = {}
        for r, rank in enumerate(ranks):
            for _, worker, shard in rank[epoch]:
                readers.setdefault(shard, set()).add((r, worker))
        assert sum(len(v) > 1 for v in readers.values()) <= 3
    assert orders[0] != orders[1]  # a new shuffle each epoch


def test_the_shuffle_is_a_function_of_seed_and_epoch():
    sizes = [5, 7, 3, 9, 4, 6]

    def epoch(seed, e, **kw):
        s = ShardBatchSampler(sizes, 4, seed=seed, workers=2, rank=0, world=1, group=2, **kw)
        s.set_epoch(e)
        return list(s)

    assert epoch(0, 1) == epoch(0, 1)
    assert epoch(0, 1) != epoch(0, 2) and epoch(0, 1) != epoch(1, 1)
    whole = epoch(0, 1)
    for k in range(len(whole)):  # resuming after k batches continues with exactly the rest
        s = ShardBatchSampler(sizes, 4, seed=0, workers=2, rank=0, world=1, group=2)
        s.set_epoch(1)
        s.skip(k)
        assert list(s) == whole[k:]
    flat = [i for b in epoch(0, 1, drop_last=False) for i in b]
    assert sorted(flat) == list(range(sum(sizes)))


def _samples(location, **kw):
    data = PackedDataset(open_corpus(location, **kw))
    return [data[i] for i in range(len(data))]


def _same(a, b):
    assert [s["id"] for s in a] == [s["id"] for s in b]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_returns_the_samples_of_local_disk(tmp_path, corpus):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(corpus))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _same(_samples(url, cache_dir=tmp_path / "cache"), _samples(corpus))
        cached = list((tmp_path / "cache").rglob("*.tar"))
        assert len(cached) == 10  # the local cache holds them now
        # a bounded cache: at most cache_bytes of shards stay on disk
        one = cached[0].stat().st_size
        _samples(url, cache_dir=tmp_path / "small", cache_bytes=3 * one)
        assert len(list((tmp_path / "small").rglob("*.tar"))) <= 3
        # a damaged cached copy is fetched again; a damaged served shard is an error naming its URL
        cached[0].write_bytes(b"damaged")
        _same(_samples(url, cache_dir=tmp_path / "cache"), _samples(corpus))
        name = json.loads((corpus / "manifest.json").read_text())["shards"][0]["name"]
        served = corpus / name
        good = served.read_bytes()
        try:
            served.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
            with pytest.raises(ShardError, match=f"shard {url}/{name}: sha256"):
                PackedDataset(open_corpus(url, cache_dir=tmp_path / "fresh"))[0]
        finally:
            served.write_bytes(good)
    finally:
        server.shutdown()


def test_an_unreachable_url_is_named_before_training():
    from eolab.config import ParameterError, PretrainConfig

    url = f"http://127.0.0.1:{_free_port()}/corpus"
    with pytest.raises(ShardError, match=f"packed corpus {url}: cannot read manifest.json"):
        open_corpus(url)
    with pytest.raises(ParameterError, match=f"^parameter 'dataset': packed corpus {url}: cannot read"):
        PretrainConfig(dataset=f"packed:{url}")


def test_s3_api_returns_the_samples_of_local_disk(tmp_path, corpus):
    pytest.importorskip("moto")
    import s3fs

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        _wait_for_port(port, server, "moto server")
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="eolab-test")
        fs = s3fs.S3FileSystem(**options)
        fs.put(str(corpus) + "/", "eolab-test/corpus/", recursive=True)
        _same(_samples("s3://eolab-test/corpus", storage_options=options, cache_dir=tmp_path / "cache"), _samples(corpus))
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:  # servers start listening in a second or two
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.05)


def test_gcs_api_returns_the_samples_of_local_disk(tmp_path, corpus):
    pytest.importorskip("gcp_storage_emulator")
    gcsfs = pytest.importorskip("gcsfs")
    import fsspec
    from gcsfs.core import GCSFileSystem

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
                               str(port), "--in-memory", "--default-bucket", "eolab-test"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # gcsfs's default class first asks the gRPC Storage Control API for the bucket type (zonal,
    # hierarchical), which the emulator does not serve (a 60 s timeout per bucket, then the JSON API);
    # the JSON API class is what remains, so gs:// goes straight to it here
    default = fsspec.get_filesystem_class("gs")
    fsspec.register_implementation("gs", GCSFileSystem, clobber=True)
    try:
        _wait_for_port(port, server, "gcp-storage-emulator")
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "token": "anon", "project": "eolab-test"}
        fs = GCSFileSystem(**options)
        fs.put(str(corpus) + "/", "eolab-test/corpus/", recursive=True)
        url = "gs://eolab-test/corpus"
        _same(_samples(url, storage_options=options, cache_dir=tmp_path / "cache"), _samples(corpus))
        assert len(list((tmp_path / "cache").rglob("*.tar"))) == 10  # fetched through gcsfs into the cache
        assert isinstance(open_corpus(url, storage_options=options)._fs(), gcsfs.core.GCSFileSystem)
    finally:
        fsspec.register_implementation("gs", default, clobber=True)
        server.terminate()
        server.wait(timeout=30)


def test_packed_dataset_parameter_selects_the_corpus(corpus):
    from eolab.config import ParameterError, PretrainConfig
    from eolab.data.pretraining import pretraining_set

    cfg = PretrainConfig(dataset=f"packed:{corpus}", bands="B02,B04", img_size=32)
    chosen = pretraining_set(cfg, None)
    assert len(chosen.dataset) == len(chosen.ids) == 46 and chosen.tiles is None
    assert chosen.dataset[3]["bands"] == ("B02", "B04") and chosen.dataset[3]["id"] == chosen.ids[3]
    assert set(chosen.sources) == {"hydro"}
    prov = chosen.dataset.corpus.provenance()  # what the run's record says about the corpus
    assert prov["n"] == 46 and prov["n_shards"] == 10 and len(prov["shards_sha256"]) == 64 and not prov["repeated"]
    with pytest.raises(ParameterError, match="(?s)parameter 'n_pretrain'.*parameter 'bands'"):
        PretrainConfig(dataset=f"packed:{corpus}", bands="B02,B11", img_size=32, n_pretrain=1000)
    mean, std = chosen.dataset.normalization_stats()
    assert set(mean) == {"B02", "B04"} and all(v > 0 for v in std.values())
    assert np.isfinite(list(mean.values())).all()


def test_n_pretrain_trains_on_a_seeded_subset_of_a_packed_corpus(corpus):
    from eolab.config import ParameterError, PretrainConfig
    from eolab.data.pretraining import pretraining_set

    def chosen(n, seed):
        cfg = PretrainConfig(dataset=f"packed:{corpus}", bands="B02,B03,B04", img_size=32, n_pretrain=n,
                             sampling="uniform", seed=seed)
        return pretraining_set(cfg, None)

    full = PackedDataset(open_corpus(corpus))
    by_id = {full[i]["id"]: full[i] for i in range(len(full))}
    sub = chosen(20, seed=5)
    data = sub.dataset
    ids = list(sub.ids)
    assert len(data) == 20 and len(set(ids)) == 20 and set(ids) <= set(by_id)
    assert [data[i]["id"] for i in range(20)] == ids and sorted(sub.sources) == ["hydro"] * 20
    for i in (0, 7, 19):  # the subset's samples are the corpus's, pixel for pixel
        torch.testing.assert_close(data[i]["image"], by_id[ids[i]]["image"], rtol=0, atol=0)
    assert list(chosen(20, seed=5).ids) == ids and list(chosen(20, seed=6).ids) != ids  # a function of the seed
    assert set(chosen(46, seed=5).ids) == set(by_id)  # n = the corpus: all of it
    assert data.corpus.provenance()["subset"] == {"n_pretrain": 20, "seed": 5, "of": 46}
    assert len(data.corpus._positions) <= 8  # a few shards' positions held, never the whole subset's

    # 2 processes x 2 workers: slots disjoint, together the whole subset (drop_last=False), resumable
    seen = []
    for rank in range(2):
        sampler = ShardBatchSampler(data.corpus.sizes, 4, seed=1, workers=2, rank=rank, world=2, group=2,
                                    drop_last=False)
        batches = list(sampler)
        seen += [i for b in batches for i in b]
        for k in range(len(batches)):
            again = ShardBatchSampler(data.corpus.sizes, 4, seed=1, workers=2, rank=rank, world=2, group=2,
                                      drop_last=False)
            again.skip(k)
            assert list(again) == batches[k:]
    assert sorted(seen) == list(range(20))

    with pytest.raises(ParameterError, match=rf"parameter 'n_pretrain' must be at most the 46 patches of the packed "
                                             rf"corpus {corpus} \(0 = all of them\), got 47"):
        PretrainConfig(dataset=f"packed:{corpus}", bands="B02", img_size=32, n_pretrain=47, sampling="uniform")
    with pytest.raises(ValueError, match=f"parameter 'n_pretrain' = 47, but the packed corpus {corpus} holds 46"):
        open_corpus(corpus).subset(47, seed=0)
    with pytest.raises(ParameterError, match="parameter 'sampling' must be 'uniform' on a packed corpus"):
        PretrainConfig(dataset=f"packed:{corpus}", bands="B02", img_size=32, n_pretrain=10, sampling="kcenter")


def test_shard_tars_are_read_as_tarfile_reads_them(tmp_path, corpus):
    import io
    import tarfile

    from webdataset.tariterators import tar_file_iterator

    from eolab.data.stream import tar_files

    def by_tarfile(data):
        return [(item["fname"], bytes(item["data"])) for item in tar_file_iterator(io.BytesIO(data))]

    shard = json.loads((corpus / "manifest.json").read_text())["shards"][0]["name"]
    data = (corpus / shard).read_bytes()
    assert [(n, bytes(b)) for n, b in tar_files(data)] == by_tarfile(data)  # the packer's own tars, walked
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):  # other writers' tars
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for name, payload in ((f"{'d' * 60}/{'n' * 60}.image.npy", b"x" * 700), ("000001.meta.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        assert [(n, bytes(b)) for n, b in tar_files(buf.getvalue())] == by_tarfile(buf.getvalue()), fmt


def test_a_local_shard_is_hashed_once_per_process_while_unchanged(tmp_path, corpus, monkeypatch):
    import hashlib
    import shutil

    import eolab.data.stream as stream

    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    hashed = []
    real = hashlib.sha256
    monkeypatch.setattr(stream.hashlib, "sha256", lambda data=b"": hashed.append(len(data)) or real(data))
    c = open_corpus(copy)
    name = c.shards[0]["name"]
    first = c.read_shard(0)[0]
    np.testing.assert_array_equal(open_corpus(copy).read_shard(0)[0], first)
    assert len([n for n in hashed if n > 0]) == 1  # the same file (path, size, mtime): verified once
    data = bytearray((copy / name).read_bytes())
    data[5000] ^= 0xFF  # same size, a new mtime
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"shard .*{name}: sha256"):
        open_corpus(copy).read_shard(0)
