"""Which streaming format eolab packs into: LitData, WebDataset or zarr, measured on real patches.

    python -m benchmarks.shard_formats [--n 2000]

Each format writes the same real 64x64 patches (Hydro and Major-TOM scenes of the shared data, uint16,
all twelve bands) through its own library, then reads them all back sequentially. Printed: pack rate
and read rate (patches/s) and the bytes on disk. Resume support is a property of the library, stated
in docs/data.md, not measured here. A quick measurement on a shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def real_patches(n: int) -> np.ndarray:
    from eolab.data.cache import build_scene_cache

    out = []
    for source in ("hydro", "major_tom"):
        cache = build_scene_cache(None, (source,))
        tiles = cache.tiles(patch=64, stride=32)
        for scene, row, col in tiles[["scene", "row", "col"]].itertuples(index=False):
            out.append(np.asarray(cache.array(scene)[:, row : row + 64, col : col + 64]))
            if len(out) == n:
                return np.stack(out)
    reps = -(-n // len(out))  # fewer real windows than asked: repeat them
    return np.stack((out * reps)[:n])


def webdataset(patches: np.ndarray, folder: Path) -> tuple[float, float]:
    import webdataset as wds
    from webdataset.tariterators import tar_file_iterator

    t0 = time.perf_counter()
    with wds.ShardWriter(str(folder / "shard-%05d.tar"), maxcount=1000, verbose=0) as sink:
        for i, p in enumerate(patches):
            buf = io.BytesIO()
            np.save(buf, p)
            sink.write({"__key__": f"{i:08d}", "image.npy": buf.getvalue(), "meta.json": json.dumps({"i": i}).encode()})
    pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for shard in sorted(folder.glob("*.tar")):
        with open(shard, "rb") as f:
            for item in tar_file_iterator(f):
                if item["fname"].endswith(".npy"):
                    np.load(io.BytesIO(item["data"]))
                    n += 1
    return pack, time.perf_counter() - t0


def litdata(patches: np.ndarray, folder: Path) -> tuple[float, float]:
    from litdata import StreamingDataset
    from litdata.streaming.writer import BinaryWriter

    t0 = time.perf_counter()
    writer = BinaryWriter(str(folder), chunk_size=1000)
    for i, p in enumerate(patches):
        writer[i] = {"image": p, "i": i}
    writer.done()
    writer.merge()
    pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = StreamingDataset(str(folder))
    for i in range(len(ds)):
        ds[i]["image"]
    return pack, time.perf_counter() - t0


def zarr_(patches: np.ndarray, folder: Path) -> tuple[float, float]:
    import zarr

    t0 = time.perf_counter()
    arr = zarr.create_array(str(folder / "patches.zarr"), shape=patches.shape, dtype=patches.dtype,
                            chunks=(1000, *patches.shape[1:]))
    for start in range(0, len(patches), 1000):  # one chunk (= one shard) at a time, as a packer would
        arr[start : start + 1000] = patches[start : start + 1000]
    pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    arr = zarr.open_array(str(folder / "patches.zarr"), mode="r")
    for start in range(0, len(patches), 1000):
        np.asarray(arr[start : start + 1000])
    return pack, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    patches = real_patches(args.n)
    print(f"{len(patches)} real patches {patches.shape[1:]} {patches.dtype}")
    for name, fn in (("webdataset", webdataset), ("litdata", litdata), ("zarr", zarr_)):
        folder = Path(tempfile.mkdtemp(prefix=f"fmt-{name}-"))
        try:
            pack, read = fn(patches, folder)
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            print(f"{name:11s} pack {len(patches) / pack:8.0f} patches/s   read {len(patches) / read:8.0f} patches/s   "
                  f"{size / 2**20:6.1f} MiB")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
