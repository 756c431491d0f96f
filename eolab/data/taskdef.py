"""What a benchmark task is, independent of any data set: the ``Task`` declaration, the batch a
loader returns (``make_batch``), the checks and normalisation every batch goes through, and the
content hash that keys every cache. The built-in tasks are in ``eolab.data.downstream``, task files
in ``eolab.data.taskfile``; the batch contract is in ``downstream``'s docstring.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import inspect
import json
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io import write_bytes_atomic
from ..text import file_safe
from .paths import cache_root, data_root

log = logging.getLogger(__name__)

KINDS = ("classification", "multilabel", "regression", "segmentation")
SAMPLE_KEYS = ("image", "target", "id", "lonlat", "group", "time", "doy", "is_test", "pixel")
"""Batch entries with one item per sample (``image``: except for segmentation, whose samples are pixels)."""
TASK_VERSION = 1  # bump when a loader changes what it returns, so cached embeddings are not reused
_CODE = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:10]  # and edited checks, too


@dataclass(frozen=True)
class Task:
    """A labelled benchmark task and the inputs it provides (see the module docstring)."""

    name: str
    kind: str
    bands: tuple[str, ...]
    units: tuple[str, ...]  # one per band
    modality: tuple[str, ...]  # one per band: "s2", "s1", "era5", "srtm", "index"
    num_dates: int  # time steps per sample
    size: int  # pixels per side of a sample (1: a pixel time series); segmentation: of its scene
    gsd_m: float  # ground sampling distance of a pixel, metres
    dated: bool  # the time steps carry days of year (what a temporal encoder needs)
    loader: Callable[[Path], dict] = field(repr=False, compare=False)
    files: tuple[str, ...] = ()  # globs under the data root that the task reads (for the cache key)
    split: str = ""  # the blocked and the documented split, in words
    smoke: bool = False  # too few samples for a figure: a check that the path runs
    wavelengths: tuple[float | None, ...] = ()  # centre wavelength (nm) per band, where declared
    bandwidths: tuple[float | None, ...] = ()  # bandwidth (nm) per band, where declared
    source: str = ""  # the task file it was read from, if any
    conversions: tuple[tuple[tuple[str, float, float], ...], ...] = ()
    """Per band (or empty): affine conversions (unit, scale, offset) from the band's unit to another,
    ``value_in_unit = value * scale + offset``, as a sensor card declares them (e.g. digital numbers
    to reflectance); the benchmark applies one when an encoder reads that unit."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not len(self.bands) == len(self.units) == len(self.modality):
            raise ValueError(f"task {self.name}: bands, units and modality must have one entry per band")
        for name in ("wavelengths", "bandwidths", "conversions"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.bands):
                raise ValueError(f"task {self.name}: {name} must have one entry per band")

    def unit_of(self, bands) -> str:
        """The unit string of ``bands`` as eolab writes it: units in order of first appearance,
        joined by '+' ("reflectance", "reflectance+dB")."""
        units = [self.units[self.bands.index(b)] for b in bands]
        return "+".join(dict.fromkeys(units))

    def load(self, root: str | Path | None = None, key: str | None = None) -> dict:
        """The loader's batch, checked against the declaration and normalised (``normalise_batch``:
        labels made contiguous, no-data filled and counted, missing coordinates and groups made explicit).

        The loader's output of a task keyed by its files (see ``fingerprint``) is kept in
        ``<EOLAB_CACHE>/tasks``, so a later load in any process reads it back instead of decoding the
        files again: a pre-training run checks its benchmark tasks before training and scores them
        after it, and every encoder of a sweep is benchmarked on the same tasks. ``key``: the task's
        fingerprint, where the caller has it already."""
        root = data_root(root)
        batch = self._loaded(root, key)
        _check_batch(self, batch)
        return normalise_batch(self, batch)

    def _loaded(self, root: Path, key: str | None) -> dict:
        if not self.files or loader_identity(self.loader) is None:  # keyed by its content: nothing to look up
            return self.loader(root)
        path = cache_root() / TASK_CACHE / f"{file_safe(self.name)}-{key or self.fingerprint(root)}.pkl"
        if path.is_file():
            try:
                with path.open("rb") as handle:
                    return pickle.load(handle)
            except Exception as exc:  # a damaged entry is read again from the files, never trusted
                log.warning("task %s: cached batch %s unreadable (%s: %s); reading the files", self.name, path,
                            type(exc).__name__, exc)
        batch = self.loader(root)
        try:
            write_bytes_atomic(path, pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:  # the cache is an optimisation
            log.warning("task %s: batch not cached (%s: %s)", self.name, type(exc).__name__, exc)
        return batch

    def fingerprint(self, root: str | Path | None = None, batch: Callable[[], dict] | None = None) -> str:
        """Hash of the task definition and of its content: a changed input or label set gives a new
        key, so embeddings and results cached for the old one are never reused.

        A task that declares the ``files`` its loader reads, with a loader whose identity can be
        hashed (a module-level function: its module's source; a ``functools.partial`` of one: also
        its arguments), is keyed by those files (content of files under ``HASH_CONTENT_BYTES``, size
        and modification time of larger ones) - cheap, no image is read. Any other task (a lambda, a
        closure, no ``files``) is keyed by the loaded batch itself: images, targets, ids,
        coordinates, groups and split (``batch``: a function returning it, so a caller that needs the
        batch anyway loads it once)."""
        root = data_root(root)
        h = hashlib.sha1(json.dumps([TASK_VERSION, _CODE, self.name, self.kind, self.bands, self.units,
                                     self.modality, self.num_dates, self.size, self.gsd_m, self.dated,
                                     # what a wavelength-matched or -conditioned encoder reads, and the unit conversions
                                     self.wavelengths, self.bandwidths, self.conversions]).encode())
        identity = loader_identity(self.loader)
        if self.files and identity is not None:
            h.update(identity.encode())
            h.update(files_digest(self.files, root, self.name).encode())
        else:
            h.update(batch_digest(batch() if batch is not None else self.load(root)).encode())
        return h.hexdigest()[:16]


TASK_CACHE = "tasks"
"""Folder under ``cache_root()`` of the loaded batches of file-keyed tasks (``Task.load``)."""


HASH_CONTENT_BYTES = 8 << 20
"""Input files up to this size are keyed by their content, larger ones by size and modification time."""


def resolve_files(patterns: tuple[str, ...], root: Path, task: str) -> list[Path]:
    """Every file the ``patterns`` match: relative globs under ``root``, absolute ones as they are
    (``**`` recurses). A pattern that matches no file is an error naming it."""
    out = []
    for pattern in patterns:
        full = os.path.join(str(root), os.path.expanduser(pattern))  # an absolute pattern stays absolute
        matches = sorted(Path(f) for f in glob.glob(full, recursive=True) if os.path.isfile(f))
        if not matches:
            raise FileNotFoundError(f"task {task}: files pattern {pattern!r} matches no file (looked for {full})")
        out += matches
    return out


def files_digest(patterns: tuple[str, ...], root: Path, task: str) -> str:
    h = hashlib.sha1()
    for f in resolve_files(patterns, root, task):
        st = f.stat()
        h.update(f"{f}:{st.st_size}".encode())
        if st.st_size <= HASH_CONTENT_BYTES:
            h.update(hashlib.sha1(f.read_bytes()).digest())
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def loader_identity(loader) -> str | None:
    """A hash of what a loader is, or None when it cannot be told from its code (a lambda or a
    closure may capture data: such a task is keyed by its loaded content instead)."""
    if isinstance(loader, functools.partial):
        inner = loader_identity(loader.func)
        if inner is None:
            return None
        try:
            args = pickle.dumps((loader.args, sorted(loader.keywords.items())))
        except Exception:  # unpicklable arguments: say nothing rather than guess
            return None
        return hashlib.sha1(inner.encode() + args).hexdigest()
    code = getattr(loader, "__code__", None)
    module = inspect.getmodule(loader)
    if code is None or code.co_freevars or module is None or getattr(loader, "__name__", "") == "<lambda>":
        return None
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    return hashlib.sha1(f"{module.__name__}.{loader.__qualname__}\n{source}".encode()).hexdigest()


def batch_digest(batch: dict) -> str:
    """Hash of a loaded batch: every per-sample array, the bands and the class names."""
    h = hashlib.sha1()
    for key in (*SAMPLE_KEYS, "bands", "classes", "valid"):
        value = batch.get(key)
        h.update(key.encode())
        if value is None:
            continue
        if torch.is_tensor(value):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.dtype != object:
            h.update(str((value.dtype, value.shape)).encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(json.dumps([str(v) for v in value]).encode())
    return h.hexdigest()


def _check_batch(task: Task, batch: dict) -> None:
    """The loader returned what the task declares (shape, bands, one entry per sample)."""
    image = batch["image"]
    if image.ndim != 5 or image.shape[1] != task.num_dates or image.shape[2] != len(task.bands):
        raise ValueError(f"task {task.name}: image {tuple(image.shape)} disagrees with its declaration "
                         f"(N, {task.num_dates}, {len(task.bands)}, H, W)")
    if tuple(batch["bands"]) != task.bands:
        raise ValueError(f"task {task.name}: loader bands {batch['bands']} differ from the declared {task.bands}")
    n = len(batch["target"])
    for key in ("id", "lonlat", "group"):
        if batch.get(key) is not None and len(batch[key]) != n:
            raise ValueError(f"task {task.name}: {key} has {len(batch[key])} entries for {n} samples")
    if task.kind != "segmentation" and image.shape[0] != n:
        raise ValueError(f"task {task.name}: {image.shape[0]} images for {n} targets")
    target = np.asarray(batch["target"])
    if target.dtype.kind == "f" and not np.isfinite(target).all():
        raise ValueError(f"task {task.name}: {int((~np.isfinite(target)).sum())} missing (NaN) targets; "
                         "drop those samples in the loader or the task file")


def normalise_batch(task: Task, batch: dict) -> dict:
    """The conditions a benchmark must survive, made explicit and recorded in ``notes``:

    - labels that are not 0..K-1 (any values, or class names with classes absent) are mapped to
      contiguous classes named by ``classes`` (or by the values themselves);
    - NaN or infinite input values (no data) are filled with the band's mean over the task and
      counted (a band with no finite value at all is an error naming it);
    - missing coordinates become NaN (leakage and coordinate blocks do not apply), missing groups -1.
    """
    batch = dict(batch)
    notes = list(batch.get("notes") or ())
    n = len(batch["target"])
    if batch.get("lonlat") is None:
        batch["lonlat"] = np.full((n, 2), np.nan)
    batch["lonlat"] = np.asarray(batch["lonlat"], dtype=np.float64).reshape(n, 2)
    if batch.get("group") is None:
        batch["group"] = np.full(n, -1, dtype=np.int64)
    batch["group"] = np.asarray(batch["group"], dtype=np.int64)
    missing = int((~np.isfinite(batch["lonlat"]).all(1)).sum())
    if missing:
        notes.append(f"{missing} of {n} samples without coordinates")
    if task.kind in ("classification", "segmentation"):
        batch["target"], batch["classes"], note = contiguous_labels(batch["target"], batch.get("classes"))
        if note:
            notes.append(note)
    image = batch["image"]
    values = image if torch.is_tensor(image) else torch.as_tensor(np.asarray(image))
    values = values.float()  # float32 as every encoder expects, whatever the loader produced (float64, integers)
    batch["image"] = values
    bad = ~torch.isfinite(values)
    if bad.any():
        values = values.clone()
        for c, band in enumerate(task.bands):
            channel = values[:, :, c]  # (N, T, H, W)
            ok = torch.isfinite(channel)
            if not ok.any():
                raise ValueError(f"task {task.name}: band {band} has no finite value (all no-data)")
            channel[~ok] = channel[ok].mean()
        count = int(bad.sum())
        first = torch.nonzero(bad.flatten(3).any(-1))[0]  # (sample, step, band) of the first gap, for the reader
        where = batch["id"][int(first[0])] if task.kind != "segmentation" else f"scene {int(first[0])}"
        notes.append(f"{count} no-data input values ({count / bad.numel():.1%}) filled with the band mean, "
                     f"e.g. in sample {where} band {task.bands[int(first[2])]}")
        log.warning("task %s: %s", task.name, notes[-1])
        batch["image"] = values
    suspect = unit_mismatch(task.name, task.bands, task.units, batch["image"])
    if suspect:
        notes.append(suspect)
        log.warning("%s", suspect)
    batch["notes"] = tuple(notes)
    return batch


REFLECTANCE_MEDIAN_MAX = 1.5
"""A band declared as reflectance whose median exceeds this holds digital numbers, most likely (and
one declared as digital numbers whose values all lie below it holds reflectance already)."""


def unit_mismatch(task: str, bands, units, image: torch.Tensor, after: str = "") -> str:
    """A warning, naming the task and the bands, when bands declared as reflectance hold values of
    another scale (e.g. digital numbers, 10,000 x reflectance: an encoder would read them 10,000 x
    off without a word), or bands declared as digital numbers hold reflectance-like fractions;
    ``after``: the conversion the values went through (for the message). '' when none looks off."""
    big, small = [], []
    for c, (band, unit) in enumerate(zip(bands, units, strict=True)):
        if unit not in ("reflectance", "dn"):
            continue
        values = image[:, :, c]
        sample = values.flatten()[:: max(1, values.numel() // 100_000)]  # a strided sample: enough for a median
        sample = sample[torch.isfinite(sample)]
        if not len(sample):
            continue
        median = float(sample.median())
        if unit == "reflectance" and median > REFLECTANCE_MEDIAN_MAX:
            big.append(f"{band} (median {median:.4g})")
        elif unit == "dn" and float(sample.abs().max()) <= REFLECTANCE_MEDIAN_MAX and median != 0:
            small.append(f"{band} (median {median:.4g})")
    out = []
    if big:
        out.append(f"task {task}: bands declared as reflectance{after} hold larger values: {', '.join(big[:4])}"
                   + (" ..." if len(big) > 4 else "") + "; digital numbers? declare the unit, or a scale (e.g. 0.0001) "
                   "in the task file, or its sensor card")
    if small:
        out.append(f"task {task}: bands declared as digital numbers hold reflectance-like values: {', '.join(small[:4])}"
                   + (" ..." if len(small) > 4 else "") + "; already scaled? declare unit: reflectance (and no scale)")
    return "; ".join(out)


def contiguous_labels(target, classes=None) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Class labels as 0..K-1 and their K names, and a note when they were remapped.

    ``target`` may hold any values (integers, strings); integer values that index ``classes`` take
    their names from it, other values name themselves. Classes without samples are dropped."""
    target = np.asarray(target)
    values, index = np.unique(target, return_inverse=True)
    classes = tuple(classes) if classes is not None else None
    if target.dtype.kind in "iu" and classes is not None and values.min() >= 0 and values.max() < len(classes):
        names = tuple(str(classes[int(v)]) for v in values)
    else:
        names = tuple(str(v) for v in values)
    if target.dtype.kind in "iu" and np.array_equal(values, np.arange(len(values))) and \
            (classes is None or len(classes) == len(values)):
        return target.astype(np.int64), classes or names, ""
    dropped = [] if classes is None else [c for c in classes if c not in names]
    note = f"labels {_short([str(v) for v in values])} mapped to classes 0..{len(values) - 1}"
    if dropped:
        note += f"; classes without samples dropped: {_short(dropped)}"
    return index.reshape(target.shape).astype(np.int64), names, note


def _short(items: list[str], k: int = 6) -> str:
    return "[" + ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "") + "]"


def make_batch(task_bands, units, modality, image, target, ids, lonlat, group, **extra) -> dict:
    """A loader's return value (see the module docstring); ``lonlat`` and ``group`` may be None
    (no coordinates, no blocks: the checks that need them say so)."""
    return {"image": image, "bands": tuple(task_bands), "units": tuple(units), "modality": tuple(modality),
            "target": np.asarray(target), "id": list(ids),
            "lonlat": None if lonlat is None else np.asarray(lonlat, dtype=np.float64),
            "group": None if group is None else np.asarray(group, dtype=np.int64), "time": None, "doy": None,
            "is_test": None, **extra}
