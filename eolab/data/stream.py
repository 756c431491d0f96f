"""Stream a packed corpus (``eolab.data.shards``) from a folder or a URL into training.

    corpus = open_corpus("packed-dir" | "https://host/corpus" | "s3://bucket/corpus")
    data = PackedDataset(corpus)                                  # samples as PatchDataset's
    sampler = data.batch_sampler(batch_size, seed, workers=num_workers)

``open_corpus`` reads the manifest at once, so an unreachable location fails before training,
naming it. Shards are fetched through fsspec into a local cache of bounded size (least recently
used shards are deleted beyond ``cache_bytes``; a local folder is read in place), and every
shard's bytes are checked against the manifest's sha256 when they are read: a mismatch is a
``ShardError`` naming the shard, never a skipped shard. A local file this process has verified is
not hashed again while its (path, size, mtime) stay the same (``_sha256``); a remote shard's cached
copy is hashed on every read, since marking it recently used changes its mtime.

Order (``ShardBatchSampler``): per epoch the shards are permuted by (seed, epoch) and laid end to
end; that sequence of samples is cut into ``slots = processes x max(1, DataLoader workers)`` runs of
floor or ceil(N / slots) samples, so every sample is in exactly one slot (no overlap, no gap) and a
slot touches only its own shards (two slots may share the shard at their boundary). A slot reads
its shards ``group`` at a time and shuffles the samples of each group (by seed, epoch, slot,
group), so memory holds at most ``group`` decoded shards per worker whatever the corpus size.
Rank r's batch j comes from slot r x W + j mod W: the DataLoader hands batch j to worker j mod W,
so each worker reads its own slot's shards. Every slot yields the same number of full batches (the
few samples beyond them wait for another epoch's shuffle, as with ``drop_last``). The order is a
pure function of (seed, epoch, processes, workers): ``skip(k)`` resumes mid-epoch after exactly k
batches, as ``eolab.data.samplers`` does, so ``eolab.train.ResumeState`` resumes a killed run exactly
(with the same number of processes and workers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..io import write_bytes_atomic
from .paths import REPO_ROOT, cache_root
from .shards import MANIFEST, SHARD_FORMAT, ShardError

DEFAULT_CACHE_BYTES = 8 * 2**30  # the local shard cache of a remote corpus; $EOLAB_SHARD_CACHE_BYTES overrides
DEFAULT_GROUP = 4  # shards decoded and shuffled together per slot
_SUBSET = 0x5EB5E7  # seeds a subset's draws apart from the batch order's (same seed, other stream)


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


_VERIFIED: dict[tuple, str] = {}
"""sha256 of the local shard files this process has verified, by (path, size, mtime_ns)."""


def _read_file(path: Path) -> tuple[bytes, tuple | None]:
    """A file's bytes and its identity (path, size, mtime_ns), or None as identity when the file
    changed while it was read (then it is hashed in full, whatever was cached)."""
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        data = f.read()
        after = os.fstat(f.fileno())
    same = before.st_size == after.st_size == len(data) and before.st_mtime_ns == after.st_mtime_ns
    return data, (str(path.resolve()), after.st_size, after.st_mtime_ns) if same else None


def _sha256(data: bytes, identity: tuple | None) -> str:
    """The shard's sha256: hashed, unless this process verified this very file (same path, size and
    mtime) before. A change that keeps a file's size and mtime (bit rot, a rewrite within the same
    mtime) is therefore caught by the next process, not by a later read of this one."""
    known = _VERIFIED.get(identity) if identity is not None else None
    return known if known is not None else hashlib.sha256(data).hexdigest()


_ZERO_BLOCK = bytes(512)


def tar_files(data: bytes) -> Iterator[tuple[str, memoryview]]:
    """(name, bytes) of the regular files in an uncompressed tar, without copying them.

    The shards' tars (POSIX ustar with a pax header per member, as WebDataset's writer makes them)
    are walked header by header, each header's checksum checked; anything this walk does not read
    (other member types, base-256 sizes, a bad checksum) goes through ``tarfile`` (WebDataset's
    reader) instead, which reads every tar or raises.
    """
    files = _walk_tar(data)
    if files is None:
        from webdataset.tariterators import tar_file_iterator

        for item in tar_file_iterator(io.BytesIO(data)):
            yield item["fname"], memoryview(item["data"])
        return
    view = memoryview(data)
    for name, start, size in files:
        yield name, view[start : start + size]


def _walk_tar(data: bytes) -> list[tuple[str, int, int]] | None:
    """(name, offset, size) of the tar's regular files, or None if it holds what ``tar_files`` leaves to tarfile."""
    out, pos, pax = [], 0, {}
    while pos + 512 <= len(data):
        block = data[pos : pos + 512]
        if block == _ZERO_BLOCK:  # end of archive
            return out
        if block[124] & 0x80 or int(block[148:156].strip(b"\0 ") or b"0", 8) != sum(block) - sum(block[148:156]) + 256:
            return None  # a base-256 size or a header whose checksum (field counted as 8 spaces) does not match
        size = int(pax["size"]) if "size" in pax else int(block[124:136].strip(b"\0 ") or b"0", 8)
        kind, start = block[156:157], pos + 512
        pos = start + -(-size // 512) * 512
        if kind == b"x":  # a pax header: its records apply to the next member
            pax = _pax_records(data[start : start + size])
        elif kind in (b"0", b"\0"):
            name = pax.get("path") or _ustar_name(block)
            out.append((name, start, size))
            pax = {}
        elif kind in (b"g", b"5"):  # a global pax header, a directory: nothing to read
            pax = {}
        else:
            return None
    return None  # no end-of-archive marker: let tarfile say what is wrong


def _ustar_name(block: bytes) -> str:
    name = block[0:100].split(b"\0", 1)[0].decode()
    prefix = block[345:500].split(b"\0", 1)[0].decode() if block[257:262] == b"ustar" else ""
    return f"{prefix}/{name}" if prefix else name


def _pax_records(buf: bytes) -> dict[str, str]:
    """A pax extended header's "<length> <key>=<value>\\n" records."""
    records, i = {}, 0
    while i < len(buf):
        space = buf.index(b" ", i)
        length = int(buf[i:space])
        key, _, value = buf[space + 1 : i + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8")
        i += length
    return records


class PackedCorpus:
    """A packed corpus's manifest, plus fetching (through the bounded cache) and checking its shards."""

    def __init__(self, location: str, manifest: dict, storage_options: dict | None = None,
                 cache_dir: Path | None = None, cache_bytes: int | None = None):
        self.location = location.rstrip("/")
        self.manifest = manifest
        self.storage_options = dict(storage_options or {})
        self.remote = _is_url(self.location)
        key = hashlib.sha1(self.location.encode()).hexdigest()[:12]
        self.cache_dir = Path(cache_dir or cache_root() / "shards") / key
        env = os.environ.get("EOLAB_SHARD_CACHE_BYTES")
        self.cache_bytes = int(cache_bytes if cache_bytes is not None else env if env else DEFAULT_CACHE_BYTES)
        self.shards = manifest["shards"]
        self.shard_sizes = np.array([s["n"] for s in self.shards], np.int64)  # every packed sample
        self.sizes = self.shard_sizes  # the samples in use: all, or a subset's per-shard counts (``subset``)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])  # global index of each shard's first sample
        self.chosen: dict | None = None  # the subset: n, seed and the corpus size it was drawn from
        self._positions: OrderedDict[int, np.ndarray] = OrderedDict()  # a few shards' chosen positions

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.manifest["bands"])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def provenance(self) -> dict:
        """What a run's record says about the corpus: location, size, shards and one hash over their hashes
        (and, for a subset, its n, seed and the corpus size it was drawn from)."""
        digest = hashlib.sha256("\n".join(s["sha256"] for s in self.shards).encode()).hexdigest()
        out = {"location": self.location, "n": len(self), "n_shards": len(self.shards), "shards_sha256": digest,
               "repeated": self.manifest.get("repeated", False), "sensors": self.manifest.get("sensors", [])}
        return out | ({"subset": dict(self.chosen)} if self.chosen else {})

    def subset(self, n: int, seed: int, param: str = "n_pretrain") -> PackedCorpus:
        """The same corpus restricted to a uniform random subset of ``n`` samples, a function of ``seed``.

        Drawn shard-locally so that nothing of size N is ever held: the per-shard counts are a
        multivariate hypergeometric draw (the counts a uniform n-subset of the corpus has), and each
        shard's positions a seeded choice within it, made when the shard is reached. Sample indices
        stay contiguous per shard, so ``ShardBatchSampler`` over ``sizes`` keeps its slots, memory
        bound and resume unchanged.
        """
        total = int(self.shard_sizes.sum())
        if not 0 < n <= total:
            raise ValueError(f"parameter {param!r} = {n}, but the packed corpus {self.location} holds {total} patches: "
                             f"choose 1..{total} (0 = all of them)")
        counts = np.random.default_rng([seed, _SUBSET]).multivariate_hypergeometric(self.shard_sizes, n, method="marginals")
        out = PackedCorpus.__new__(PackedCorpus)
        out.__dict__.update(self.__dict__)
        out.sizes = counts.astype(np.int64)
        out.starts = np.concatenate([[0], np.cumsum(out.sizes)])
        out.chosen = {param: n, "seed": seed, "of": total}
        out._positions = OrderedDict()
        return out

    def positions(self, i: int) -> np.ndarray:
        """Positions within shard ``i`` of the samples in use, in shard order (all of them without a subset)."""
        if self.chosen is None:
            return np.arange(self.shard_sizes[i])
        if i not in self._positions:
            rng = np.random.default_rng([self.chosen["seed"], _SUBSET, i])
            self._positions[i] = np.sort(rng.choice(int(self.shard_sizes[i]), int(self.sizes[i]), replace=False))
            while len(self._positions) > 2 * DEFAULT_GROUP:
                self._positions.popitem(last=False)
        return self._positions[i]

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.location, **self.storage_options)[0]

    def url(self, name: str) -> str:
        return f"{self.location}/{name}"

    def _fetch(self, name: str) -> tuple[bytes, tuple | None]:
        """The shard's bytes, read in place (local) or through the local cache (remote), and the
        file's identity (path, size, mtime) when it was read from a local file that did not change
        while it was read (None for bytes just fetched)."""
        if not self.remote:
            try:
                return _read_file(Path(self.location.removeprefix("file://")) / name)
            except OSError as exc:
                raise ShardError(f"shard {self.url(name)} cannot be read: {exc}") from exc
        local = self.cache_dir / name
        try:
            data, identity = _read_file(local)
            os.utime(local)  # recently used: evicted last (a new mtime: hashed once more next time)
            return data, identity
        except FileNotFoundError:
            pass
        try:
            data = self._fs().cat_file(self.url(name))
        except Exception as exc:  # noqa: BLE001 - any transport error, named
            raise ShardError(f"shard {self.url(name)} cannot be fetched: {type(exc).__name__}: {exc}") from exc
        write_bytes_atomic(local, data)  # workers sharing the cache never see half a shard
        self._evict(keep=local)
        return data, None

    def _evict(self, keep: Path) -> None:
        """Delete least recently used cached shards until the cache fits ``cache_bytes``."""
        files = []
        for f in self.cache_dir.glob("*.tar"):
            try:
                st = f.stat()
            except FileNotFoundError:  # another worker evicted it
                continue
            files.append((st.st_mtime, st.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files):
            if total <= self.cache_bytes:
                break
            if f != keep:
                f.unlink(missing_ok=True)
                total -= size

    def read_shard(self, i: int) -> tuple[np.ndarray, list[dict]]:
        """Shard ``i`` decoded: its values (n, C, H, W) as packed (uint16 digital numbers or float32)
        and the patches' records, checked."""
        patches, metas = self.read_patches(i)
        return np.stack(patches), metas

    def read_patches(self, i: int) -> tuple[list[np.ndarray], list[dict]]:
        """Shard ``i``'s patches (C, H, W each) as read-only views into the shard's checked bytes (no
        copy: the views hold the bytes), and their records."""
        entry = self.shards[i]
        data, identity = self._fetch(entry["name"])
        digest = _sha256(data, identity)
        if digest != entry["sha256"] and self.remote:  # a damaged cached copy: fetch it once more
            (self.cache_dir / entry["name"]).unlink(missing_ok=True)
            data, identity = self._fetch(entry["name"])
            digest = _sha256(data, identity)
        if digest != entry["sha256"]:
            raise ShardError(f"shard {self.url(entry['name'])}: sha256 {digest[:16]}... does not match the manifest's "
                             f"{entry['sha256'][:16]}... (corrupted or changed after packing); re-pack or re-fetch it")
        if identity is not None:  # verified: this file, unchanged, need not be hashed again in this process
            _VERIFIED[identity] = digest
        images: dict[str, np.ndarray] = {}
        metas: dict[str, dict] = {}
        header, dtype, shape = b"", None, ()
        for fname, raw in tar_files(data):
            key, _, ext = fname.partition(".")
            if ext == "image.npy":
                if header and raw[: len(header)] == header:  # same dtype and shape as the last: skip parsing the header
                    images[key] = np.frombuffer(raw, dtype, offset=len(header)).reshape(shape)
                    continue
                images[key] = np.load(io.BytesIO(raw))
                f = io.BytesIO(raw)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
                    np.lib.format.read_magic(f))
                if read is not None:
                    shape, fortran, dtype = read(f)
                    header = raw[: f.tell()] if not fortran else b""  # Fortran order always goes through np.load
            elif ext == "meta.json":
                metas[key] = json.loads(bytes(raw))
        keys = sorted(images)
        if len(keys) != entry["n"] or set(keys) != set(metas):
            raise ShardError(f"shard {self.url(entry['name'])}: {len(keys)} patches, the manifest says {entry['n']}")
        return [images[k] for k in keys], [metas[k] for k in keys]

    def records(self, i: int) -> list[dict]:
        """The patch records of shard ``i`` (id, source, scene, lon/lat, footprint, time), from its sidecar."""
        name = self.shards[i]["name"] + ".json"
        try:
            if self.remote:
                text = self._fs().cat_file(self.url(name)).decode()
            else:
                text = (Path(self.location.removeprefix("file://")) / name).read_text()
        except Exception as exc:  # noqa: BLE001 - named, whatever the transport
            raise ShardError(f"shard records {self.url(name)} cannot be read: {type(exc).__name__}: {exc}") from exc
        return json.loads(text)["patches"]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in it) of global sample ``index`` (of the subset in use, if any)."""
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        k = int(index - self.starts[shard])
        return shard, k if self.chosen is None else int(self.positions(shard)[k])


def open_corpus(location: str | Path, storage_options: dict | None = None, cache_dir: Path | None = None,
                cache_bytes: int | None = None) -> PackedCorpus:
    """Open a packed corpus (folder, file:// or any fsspec URL: https://, s3://, gs://); reads its manifest now."""
    location = str(location).rstrip("/")
    try:
        if _is_url(location):
            import fsspec

            fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
            text = fs.cat_file(f"{path}/{MANIFEST}").decode()
        else:
            folder = Path(location.removeprefix("file://")).expanduser()
            if not folder.is_absolute() and not folder.is_dir() and (REPO_ROOT / folder).is_dir():
                # a relative folder means the same from a spec (run from the repository) and from
                # its notebook (run from notebooks/): the current directory first, then the repository
                folder = REPO_ROOT / folder
            location = str(folder)
            text = (folder / MANIFEST).read_text()
    except Exception as exc:  # noqa: BLE001 - unreachable host, missing bucket or folder: all named
        raise ShardError(f"packed corpus {location}: cannot read {MANIFEST}: {type(exc).__name__}: {exc}") from exc
    manifest = json.loads(text)
    if manifest.get("format") != SHARD_FORMAT:
        raise ShardError(f"packed corpus {location}: format {manifest.get('format')!r}, this eolab reads {SHARD_FORMAT}")
    return PackedCorpus(location, manifest, storage_options, cache_dir, cache_bytes)


class PackedDataset(Dataset):
    """Samples of a packed corpus by global index (as ``PatchDataset``'s: image in reflectance x scale).

    Decoded shards are kept in a small LRU (``max_shards``); read in ``batch_sampler()`` order, each
    worker holds at most ``group`` of them.
    """

    def __init__(self, corpus: PackedCorpus, bands: tuple[str, ...] | None = None, max_shards: int = DEFAULT_GROUP + 1):
        self.corpus = corpus
        self.bands = tuple(bands or corpus.bands)
        missing = [b for b in self.bands if b not in corpus.bands]
        if missing:
            raise ValueError(f"bands {missing} are not in the packed corpus {corpus.location} (it has {list(corpus.bands)})")
        self._channels = slice(None) if self.bands == corpus.bands else [corpus.bands.index(b) for b in self.bands]
        self.scale = float(corpus.manifest["scale"])
        self.unit = corpus.manifest["unit"]
        self.max_shards = max_shards
        self._open: OrderedDict[int, tuple[list[np.ndarray], list[dict], np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.corpus)

    def __getstate__(self) -> dict:  # a worker (spawned, or a pickled copy) starts without decoded shards
        return {**self.__dict__, "_open": OrderedDict()}

    def _shard(self, i: int) -> tuple[list[np.ndarray], list[dict], np.ndarray]:
        """Shard ``i``'s patches, records and lon/lat (n, 2) float32, decoded once while it stays open."""
        if i in self._open:
            self._open.move_to_end(i)
        else:
            dn, metas = self.corpus.read_patches(i)
            lonlat = np.array([(m["lon"], m["lat"]) for m in metas], np.float32).reshape(-1, 2)  # (n, 2)
            self._open[i] = dn, metas, lonlat
            while len(self._open) > self.max_shards:
                self._open.popitem(last=False)
        return self._open[i]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of a packed corpus of {len(self)}")
        shard, k = self.corpus.locate(int(index))
        dn, metas, lonlat = self._shard(shard)
        meta = metas[k]
        # one new float32 array (C, H, W): the stored values times the scale (x 1.0 keeps float32 bit for bit)
        image = np.multiply(dn[k][self._channels], np.float32(self.scale), dtype=np.float32)
        sample = {"image": torch.from_numpy(image), "bands": self.bands, "unit": self.unit, "source": meta["source"],
                  "lonlat": torch.from_numpy(lonlat[k].copy()), "id": meta["id"]}
        if meta.get("time"):
            sample["time"] = meta["time"]
        return sample

    def batch_sampler(self, batch_size: int, seed: int = 0, workers: int = 0, drop_last: bool = True) -> ShardBatchSampler:
        return ShardBatchSampler(self.corpus.sizes, batch_size, seed, workers=workers, drop_last=drop_last)

    def normalization_stats(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per-band mean and std of the whole corpus, from the manifest (exact one-pass statistics)."""
        stats = self.corpus.manifest["stats"]
        return {b: stats[b]["mean"] for b in self.bands}, {b: stats[b]["std"] for b in self.bands}



class PackedColumn(Sequence):
    """One field of every sample's record, in index order, without holding them all: ``source``
    from the manifest's shard list, anything else read one shard's sidecar at a time."""

    def __init__(self, corpus: PackedCorpus, field: str):
        self.corpus, self.field = corpus, field

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        shard, k = self.corpus.locate(index if index >= 0 else len(self) + index)
        if self.field == "source":
            return self.corpus.shards[shard]["source"]
        return self.corpus.records(shard)[k][self.field]

    def __iter__(self) -> Iterator:
        for i, entry in enumerate(self.corpus.shards):
            if not self.corpus.sizes[i]:  # no sample of a subset in this shard
                continue
            if self.field == "source":
                yield from [entry["source"]] * int(self.corpus.sizes[i])
            else:
                records = self.corpus.records(i)
                yield from (records[k][self.field] for k in self.corpus.positions(i))


def rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def slot_ranges(sizes: Sequence[int], order: np.ndarray, n_slots: int, slot: int) -> list[tuple[int, int, int]]:
    """(shard, start, stop) runs of slot ``slot`` when the shards, in ``order``, are laid end to end
    and cut into ``n_slots`` parts of floor or ceil(N / n_slots) samples."""
    total = int(np.sum(sizes))
    lo, hi = slot * total // n_slots, (slot + 1) * total // n_slots
    runs, pos = [], 0
    for shard in order:
        n = int(sizes[shard])
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            runs.append((int(shard), a - pos, b - pos))
        pos += n
        if pos >= hi:
            break
    return runs


class ShardBatchSampler(Sampler[list[int]]):
    """Shard-local, deterministic batches of global sample indices (see the module docstring)."""

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int = 0, workers: int = 0, group: int = DEFAULT_GROUP,
                 drop_last: bool = True, rank: int | None = None, world: int | None = None):
        self.sizes = np.asarray(sizes, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.batch_size, self.seed, self.workers, self.group, self.drop_last = batch_size, seed, max(1, workers), group, drop_last
        self._rank, self._world = rank, world
        self.epoch, self._skip = 0, 0

    def _layout(self) -> tuple[int, int, int]:
        rank, world = rank_world() if self._rank is None else (self._rank, self._world)
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by the {world} processes")
        return rank, world, self.batch_size // world

    def slot_batches(self) -> int:
        """Full batches every slot yields per epoch."""
        _, world, share = self._layout()
        return int(self.sizes.sum()) // (world * self.workers) // share

    def __len__(self) -> int:
        # the full epoch even while skipping (as eolab.data.samplers: Lightning counts on from the restored position)
        if self.drop_last:
            return self.workers * self.slot_batches()
        rank, world, share = self._layout()
        order = np.arange(len(self.sizes))
        return sum(-(-sum(b - a for _, a, b in slot_ranges(self.sizes, order, world * self.workers, rank * self.workers + w))
                     // share) for w in range(self.workers))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """Drop the first ``batches`` batches of the next epoch iterated (resuming mid-epoch)."""
        self._skip = batches

    def _slot_stream(self, epoch: int, slot: int, n_slots: int, share: int, skip: int) -> Iterator[list[int]]:
        """Batches of one slot: its runs ``group`` shards at a time, each group shuffled; the first
        ``skip`` batches are dropped without touching the shards they came from."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sizes))
        runs = slot_ranges(self.sizes, order, n_slots, slot)
        limit = self.slot_batches() * share if self.drop_last else sum(b - a for _, a, b in runs)
        begin, pos, pending = skip * share, 0, []  # pos: where the next group starts in the slot's stream
        for g in range(0, len(runs), self.group):
            chunk = runs[g : g + self.group]
            size = sum(b - a for _, a, b in chunk)
            if pos + size <= begin:  # a whole group already trained on: not even shuffled
                pos += size
                continue
            if pos >= limit:
                break
            idx = np.concatenate([np.arange(self.starts[s] + a, self.starts[s] + b) for s, a, b in chunk])
            idx = idx[np.random.default_rng([self.seed, epoch, slot, g]).permutation(len(idx))]
            pending.extend(int(i) for i in idx[max(0, begin - pos) : min(size, limit - pos)])
            pos += size
            while len(pending) >= share:
                yield pending[:share]
                pending = pending[share:]
        if pending and not self.drop_last:
            yield pending

    def __iter__(self) -> Iterator[list[int]]:
        rank, world, share = self._layout()
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        self.epoch += 1  # a fresh order next epoch even when nobody calls set_epoch
        n_slots, w = world * self.workers, self.workers
        # rank batch j = slot (rank*W + j % W)'s batch j // W; skip k: slot w drops ceil((k - w) / W)
        streams = [self._slot_stream(epoch, rank * w + v, n_slots, share, max(0, -(-(skip - v) // w))) for v in range(w)]
        active = list(range(w))
        start = skip % w  # the batch after the skipped ones belongs to this worker's slot
        active = active[start:] + active[:start]
        while active:
            for v in list(active):
                batch = next(streams[v], None)
                if batch is None:
                    active.remove(v)
                else:
                    yield batch
