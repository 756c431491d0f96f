"""Packed-corpus throughput: the packer, the streaming loader, its cost as the corpus grows, remote reads.

    python -m benchmarks.data_throughput [--sources hydro,major_tom] [--sizes 10000,100000] [--batch-size 64]
                                         [--batches 40] [--out data_throughput.json]

What is measured (real patches of the shared data; figures of this machine at this moment):
  pack        patches/s of ``eolab.data.shards.pack`` with 2 writer processes, every valid 64 px
              window of the sources (12 bands), the scene cache already built (tiling, sampling,
              tar writing, hashing and statistics are timed; decoding the GeoTIFFs is the cache's).
  loader      images/s of ``PackedDataset`` + its ``ShardBatchSampler`` through a DataLoader with 0
              and 2 workers and eolab's collate (the first batch, worker start-up, is not timed);
              ``ratio`` = loader / the CPU MAE training step (benchmarks.throughput's eolab MAE at the
              corpus's band count, 64 px, fp32, batch --batch-size) on this machine. The GPU figure is
              an ESTIMATE, not a measurement (no GPU here): the lower of two bounds for one H100 at
              batch 256, (a) the step's analytic FLOPs at 25% of the dense bf16 peak (989 TFLOP/s),
              (b) the step's aten operator count (counted on CPU) x 8 us per CUDA kernel launch,
              since so small a model is launch-bound; a GPU node needs the loader to deliver that.
  scale       packs of N patches (32 px, 4 bands, the sources' windows repeated to N: the manifest
              says ``repeated``): pack seconds (linear: seconds per 10k patches), and in a fresh
              process per N the loader's peak RSS over --batches batches and its time to first batch.
  remote      the same loader (0 workers, cold cache) over HTTP from ``python -m http.server`` and
              over the S3 API from moto's standalone server, both on 127.0.0.1, against local disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (datasheet)
ASSUMED_MFU = 0.25  # a small ViT MAE on one H100: an assumption, stated as one
KERNEL_S = 8e-6  # seconds per CUDA kernel (launch + a tiny kernel): an assumption, stated as one
GPU_BATCH = 256


def log(line: str) -> None:
    print(line, flush=True)


def mae_step_rate(bands: int, batch: int, steps: int = 4) -> tuple[float, float]:
    """(images/s of one CPU fp32 eolab MAE training step, analytic FLOPs per image)."""
    from benchmarks.throughput import MAEShape, analytic_flops, build_eolab

    shape = MAEShape(bands=bands)
    torch.manual_seed(0)
    model, loss_fn = build_eolab(shape)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, bands, 64, 64)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    times.sort()
    return batch / times[len(times) // 2], analytic_flops(shape, 1)


def step_operators(bands: int) -> int:
    """aten operators one eolab MAE training step runs (forward, backward, AdamW): ~ CUDA kernels."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from benchmarks.throughput import MAEShape, build_eolab

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    model, loss_fn = build_eolab(MAEShape(bands=bands))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(8, bands, 64, 64)
    loss_fn(x).backward()
    opt.step()  # the optimiser's state exists now: count a steady-state step
    with Count():
        opt.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        opt.step()
    return Count.n


def h100_estimate(bands: int, flops_per_image: float) -> dict:
    """Images/s one H100 would consume: an ESTIMATE from stated assumptions, not a measurement."""
    flop_bound = ASSUMED_MFU * H100_BF16_PEAK / flops_per_image
    ops = step_operators(bands)
    launch_bound = GPU_BATCH / (ops * KERNEL_S)
    return {"images_per_s": min(flop_bound, launch_bound), "flop_bound": flop_bound, "launch_bound": launch_bound,
            "operators_per_step": ops, "batch": GPU_BATCH, "assumptions": f"{ASSUMED_MFU:.0%} MFU of {H100_BF16_PEAK:.3g} "
            f"FLOP/s bf16; {KERNEL_S * 1e6:.0f} us per kernel"}


def loader_rate(location: str, batch: int, workers: int, batches: int, **kw) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) of the packed loader."""
    from torch.utils.data import DataLoader

    from eolab.data.schema import collate
    from eolab.data.stream import PackedDataset, open_corpus

    t0 = time.perf_counter()
    data = PackedDataset(open_corpus(location, **kw))
    loader = DataLoader(data, batch_sampler=data.batch_sampler(batch, seed=0, workers=workers), num_workers=workers,
                        collate_fn=collate)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    images, start = 0, time.perf_counter()
    for _, b in zip(range(batches), it, strict=False):
        images += b["image"].shape[0]
    elapsed = time.perf_counter() - start
    del it
    return images / elapsed, first


CHILD = """
import json, sys, time
from benchmarks.data_throughput import loader_rate, peak_rss_mib
rate, first = loader_rate(sys.argv[1], int(sys.argv[2]), 0, int(sys.argv[3]))
print(json.dumps({"images_per_s": rate, "first_batch_s": first, "max_rss_mib": peak_rss_mib()}))
"""


def peak_rss_mib() -> float:
    """This process's own peak resident memory (VmHWM of /proc/self/status). Not getrusage's
    ru_maxrss: Linux carries that over from the parent across fork and exec, so a child started by
    a benchmark that has just packed a million patches reported the packer's memory as its own
    (1489 MiB at 1M against 671 MiB at 10k, for a loader whose own peak is the same at both)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the rusage figure (bytes on macOS)
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def fresh_process_loader(location: str, batch: int, batches: int, repeats: int = 3) -> dict:
    """The loader in ``repeats`` fresh processes: the median of each figure (a shared machine's load moves them)."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", CHILD, location, str(batch), str(batches)], capture_output=True,
                              text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def remote(corpus: Path, batch: int, batches: int, work: Path) -> dict:
    import boto3
    import s3fs

    out = {}
    local, _ = loader_rate(str(corpus), batch, 0, batches)
    out["local"] = local
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(corpus)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        out["http"], _ = loader_rate(f"http://127.0.0.1:{port}", batch, 0, batches, cache_dir=work / "http-cache")
    finally:
        server.terminate()
        server.wait()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="bench")
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        s3fs.S3FileSystem(**options).put(str(corpus) + "/", "bench/corpus/", recursive=True)
        out["s3"], _ = loader_rate("s3://bench/corpus", batch, 0, batches, storage_options=options,
                                   cache_dir=work / "s3-cache")
    finally:
        server.terminate()
        server.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    from eolab.data.cache import build_scene_cache
    from eolab.data.shards import PackOptions, pack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="hydro,major_tom")
    p.add_argument("--sizes", default="10000,100000", help="corpus sizes of the scale test (e.g. 10000,1000000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=40, help="batches timed per loader measurement")
    p.add_argument("--parts", default="pack,loader,remote,scale", help="which measurements (default: all)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, deleted)")
    p.add_argument("--out", default=None, help="write the figures as JSON")
    args = p.parse_args(argv)
    sources = tuple(args.sources.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="eolab-data-bench-"))
    result: dict = {"machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"}
    try:
        for s in sources:  # the scene cache is not what the packer's rate measures
            build_scene_cache(None, (s,))
        quiet = lambda line: None  # noqa: E731
        parts = set(args.parts.split(","))
        if parts & {"pack", "loader", "remote"}:
            t0 = time.perf_counter()
            manifest = pack(sources, work / "corpus", opts=PackOptions(), workers=2, progress=quiet)
            pack_s = time.perf_counter() - t0
            result["pack"] = {"patches": manifest["n"], "seconds": pack_s, "patches_per_s": manifest["n"] / pack_s, "workers": 2}
            log(f"pack: {manifest['n']} patches (64 px, {len(manifest['bands'])} bands) in {pack_s:.1f} s with 2 processes "
                f"= {manifest['n'] / pack_s:.0f} patches/s")

            step, flops = mae_step_rate(len(manifest["bands"]), args.batch_size)
            est = h100_estimate(len(manifest["bands"]), flops)
            gpu = est["images_per_s"]
            result["mae_step"] = {"cpu_images_per_s": step, "flops_per_image": flops, "h100_estimate": est}
            log(f"CPU MAE step (eolab MAE, {len(manifest['bands'])} bands, 64 px, fp32, batch {args.batch_size}): {step:.0f} images/s; "
                f"H100 ESTIMATE at batch {GPU_BATCH}: {gpu:.0f} images/s (the lower of {est['flop_bound']:.0f} at {ASSUMED_MFU:.0%} "
                f"MFU, {flops / 1e9:.2f} GFLOP/image, and {est['launch_bound']:.0f} at {est['operators_per_step']} operators x "
                f"{KERNEL_S * 1e6:.0f} us per step)")
            result["loader"] = {}
            for workers in (0, 2):
                rate, first = loader_rate(str(work / "corpus"), args.batch_size, workers, args.batches)
                result["loader"][workers] = {"images_per_s": rate, "first_batch_s": first, "ratio_to_cpu_step": rate / step,
                                             "ratio_to_h100_estimate": rate / gpu}
                log(f"loader, local shards, {workers} workers: {rate:.0f} images/s = {rate / step:.1f}x the CPU step, "
                    f"{rate / gpu:.2f}x the H100 estimate (first batch {first:.2f} s)")

            if "remote" in parts:
                result["remote"] = remote(work / "corpus", args.batch_size, args.batches, work)
                r = result["remote"]
                log(f"remote, 0 workers, cold cache: local {r['local']:.0f}, HTTP {r['http']:.0f} "
                    f"({r['http'] / r['local']:.2f}x), S3 API (moto) {r['s3']:.0f} ({r['s3'] / r['local']:.2f}x) images/s")
            shutil.rmtree(work / "corpus")

        result["scale"] = {}
        small = PackOptions(patch=32, stride=32, bands=("B02", "B03", "B04", "B08"), shard_size=1024)
        windows = sum(len(build_scene_cache(None, (s,)).tiles(patch=32, stride=32, bands=small.bands)) for s in sources)
        for size in (int(v) for v in args.sizes.split(",")) if "scale" in parts else ():
            folder = work / f"scale-{size}"
            reps = -(-size // windows)
            t0 = time.perf_counter()
            m = pack(sources, folder, opts=PackOptions(**{**small.__dict__, "repeat": reps}), workers=2, progress=quiet)
            seconds = time.perf_counter() - t0
            child = fresh_process_loader(str(folder), args.batch_size, args.batches)
            disk = sum(f.stat().st_size for f in folder.iterdir())
            result["scale"][size] = {"patches": m["n"], "repeat": reps, "repeated": m["repeated"], "pack_s": seconds,
                                     "pack_s_per_10k": seconds / m["n"] * 1e4, "disk_mib": disk / 2**20, **child}
            log(f"scale {m['n']} patches ({windows} real windows x {reps}, manifest repeated={m['repeated']}): pack "
                f"{seconds:.1f} s ({seconds / m['n'] * 1e4:.2f} s per 10k), {disk / 2**20:.0f} MiB; loader peak RSS "
                f"{child['max_rss_mib']:.0f} MiB, first batch {child['first_batch_s']:.2f} s, {child['images_per_s']:.0f} images/s")
            shutil.rmtree(folder)
        sizes = list(result["scale"].values())
        if len(sizes) > 1:
            a, b = sizes[0], sizes[-1]
            log(f"scale {a['patches']} -> {b['patches']}: RSS x{b['max_rss_mib'] / a['max_rss_mib']:.2f}, "
                f"first batch x{b['first_batch_s'] / a['first_batch_s']:.2f}, pack s per 10k x{b['pack_s_per_10k'] / a['pack_s_per_10k']:.2f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
