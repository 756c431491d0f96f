"""The embedding benchmark: any encoder, every task, every protocol, one tidy table.

    table = evaluate("results/.../encoder.pt")                       # + random-init and band-stats baselines
    table = evaluate(FunctionEncoder(fn, bands=..., unit="reflectance"), tasks=["eurosat"], baselines=())

    python -m eolab.evaluate.battery --checkpoint results/.../encoder.pt --output results/benchmark
    python -m eolab.evaluate.battery --checkpoint results/.../encoder.pt --timing

Tasks (``eolab.data.downstream``) declare their inputs; an encoder that cannot read a task gets a
not-applicable row with the reason (``eolab.evaluate.encoders``). Embeddings are cached as labelled
arrays (``eolab.evaluate.store``), so a second call reuses them. Protocols, all on the same folds
for every encoder of a task (differences are paired):

    linear       linear probe (logistic regression with C by inner CV; ridge with alpha by LOO CV)
    knn          k-nearest neighbours (cosine)
    few_shot     1, 5, 10 labels per class, repeated draws (classification tasks)
    robustness   the linear probe of the documented split (else the random folds) applied to test
                 samples with bands or a modality missing (``DROPS``), without refitting
    diagnostics  label-free: effective rank (RankMe) of every task's embeddings; alignment,
                 uniformity and k-NN consistency between two augmented views (image tasks)
    leakage      fraction of samples whose footprint overlaps the encoder's pre-training data

Splits: ``random`` (repeated k-fold), ``blocked`` (spatial blocks held out, see each task) and
``official`` (the task's documented train/test split). Intervals: bootstrap of the mean over folds
(optimistic: folds share training data), over draws (few-shot), over test samples (one documented
split), or percentiles over subsamples (diagnostics); the ``ci_method`` column says which.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from .. import intervals as _intervals
from ..data.downstream import SAMPLE_KEYS, Task, get_task, task_names
from ..data.paths import data_root as resolve_data_root
from ..intervals import bootstrap_ci
from ..io import write_json_atomic, write_text_atomic
from ..models import tokenizers as _tokenizers
from ..models import vit as _vit
from ..provenance import git_commit
from ..run_folder import BENCHMARK_NAME
from ..tasks.augment import AUGMENTATIONS
from . import adapters as _adapters
from . import diagnostics as _diagnostics
from . import encoders as _encoders
from . import leakage as _leakage
from . import probe as _probe
from . import protocols as P
from .diagnostics import alignment, effective_rank, knn_consistency, uniformity
from .encoders import (
    TEMPORAL_POOLINGS,
    BandStats,
    BenchEncoder,
    EolabEncoder,
    FlatSeries,
    NotApplicable,
    Plan,
    SeriesSummary,
    pool_dates,
)
from .leakage import overlaps, pretraining_footprints
from .store import EmbeddingKey, EmbeddingStore, code_version

log = logging.getLogger(__name__)

PROTOCOLS = ("linear", "knn", "few_shot", "robustness", "diagnostics", "leakage")
SPLITS = ("random", "blocked", "official")
BASELINES = ("random_init", "band_stats")
"""The default controls; ``TEMPORAL_BASELINES`` may be asked for as well."""
TEMPORAL_BASELINES = ("flat_series", "series_summary")
DROPS: dict[str, tuple[str, ...]] = {"no_swir": ("B11", "B12"), "no_s1": ("VV", "VH")}
"""Robustness scenarios: bands missing at test time (a scenario applies when the encoder reads some,
not all, of its bands)."""
EMBED_VERSION = code_version(_encoders, _adapters, _probe, _vit, _tokenizers)
"""Part of every cached embedding's key: editing the adapters or the model code recomputes them."""
CODE_VERSION = code_version(sys.modules[__name__], P, _diagnostics, _leakage, _encoders, _adapters, _probe, _intervals)
"""Part of every cached result's key: editing the probes, adapters or this module recomputes them."""
COLUMNS = ("task", "encoder", "protocol", "split", "pool", "block", "temporal_pooling", "variant", "adapter", "metric",
           "value", "ci_low", "ci_high", "ci_method", "n", "fold_values", "n_samples", "not_applicable", "smoke", "note")
"""``fold_values``: the metric of every fold (or draw) the row's mean is over, in fold order, joined
by ';' ('' for a single test metric): the folds of one seed are the same for every encoder, so
reports can pair two encoders fold by fold, and pool folds over pre-training seeds. ``note``: what the row's numbers rest on beyond the protocol (fewer folds than asked, labels
remapped, no-data filled, samples without coordinates). ``temporal_pooling``: how a single-date
encoder's per-date embeddings of a series were pooled (``TEMPORAL_POOLINGS``; '' where it does not
apply); a pooling other than the mean is also appended to ``pool`` ("mean+concat"), so that reports
grouping by (encoder, pool, block) keep the poolings apart."""
PROBE_ONLY = ("knn", "few_shot", "diagnostics")
"""Protocols that read fixed features: not applicable to the learned temporal probe (``probe``)."""


@dataclass(frozen=True)
class Settings:
    """Protocol parameters (recorded with every table)."""

    folds: int = 5
    repeats: int = 2
    shots: tuple[int, ...] = (1, 5, 10)
    draws: int = 10
    k: int = 5  # neighbours of the k-NN probe
    drops: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DROPS))
    augment: str = "crop"  # augmentation set of the two diagnostic views (geometric: valid on raw bands)
    diagnostics_k: int = 10  # neighbours of the k-NN consistency
    subsamples: int = 20  # diagnostics interval: 80 % subsamples
    leakage_margin_m: float = 0.0
    seed: int = 0
    temporal_pooling: tuple[str, ...] = ("mean",)  # an axis: how per-date embeddings of a series are pooled


# ----------------------------------------------------------------------------------------------
# Encoders


def resolve_encoders(encoder, baselines: Sequence[str] = BASELINES, name: str | None = None,
                     seed: int = 0) -> list[BenchEncoder]:
    """The encoders to benchmark: ``encoder`` (a checkpoint path, an ``EolabEncoder`` or other
    ``BenchEncoder``, or a list of them) followed by the requested baselines, derived from the
    first eolab encoder (else the first torch-module-backed one): ``random_init`` (same architecture, seeded) and ``band_stats`` (restricted
    to its bands), and on request the temporal ``flat_series`` and ``series_summary`` (time series only)."""
    items = list(encoder) if isinstance(encoder, list | tuple) else [encoder]
    encoders = []
    for item in items:
        if isinstance(item, str | Path):
            encoders.append(EolabEncoder.from_checkpoint(item, name=name if len(items) == 1 else None))
        elif isinstance(item, BenchEncoder):
            encoders.append(item)
        else:
            raise TypeError(f"cannot benchmark {type(item).__name__}: pass a checkpoint path, an EolabEncoder, or "
                            "wrap a function or module as FunctionEncoder(fn, bands=..., unit=...) to declare its inputs")
    first = next((e for e in encoders if isinstance(e, EolabEncoder)), None)
    # without an eolab encoder, the first one backed by a torch module (timm, torchgeo, ...) is copied
    first = first or next((e for e in encoders if _adapters.module_backed(e)), None)
    for b in baselines:
        if b == "random_init":
            if first is None:
                raise ValueError("the random_init baseline needs an eolab encoder or a torch-module encoder to copy "
                                 "the architecture of (precomputed embeddings and plain functions have none)")
            encoders.append(first.random_init(seed) if isinstance(first, EolabEncoder) else _adapters.random_twin(first, seed))
        elif b == "band_stats":
            encoders.append(BandStats(first.bands if first else None))
        elif b == "flat_series":
            encoders.append(FlatSeries(first.bands if first else None))
        elif b == "series_summary":
            encoders.append(SeriesSummary(first.bands if first else None))
        else:
            raise ValueError(f"unknown baseline {b!r}; choose from {BASELINES + TEMPORAL_BASELINES}")
    return encoders


def _axes(enc: BenchEncoder, plan: Plan, pools: Sequence[str], blocks: Sequence[int]) -> list[tuple[str, int, str, str]]:
    """(pool, block, pool label, block label) combinations: pooling and depth apply to ViTs only, and
    pooling not to dense (per-pixel) features."""
    if not enc.has_axes:
        return [("mean", -1, "", "")]
    pools = ["patch"] if plan.spatial == "tiles" else pools
    return [(p, b, p, f"{b % enc.depth + 1}/{enc.depth}") for p in pools for b in blocks]


# ----------------------------------------------------------------------------------------------
# One task within a call


class TaskRun:
    """A task's samples and folds for one benchmark call (the images are read only when needed)."""

    def __init__(self, task: Task, root: Path, store: EmbeddingStore, settings: Settings):
        self.task, self.root, self.store, self.settings = task, root, store, settings
        self._batch: dict | None = None
        self.fingerprint = task.fingerprint(root, self.batch)
        self.samples = store.samples(task.name, self.fingerprint, self.batch)

    def batch(self) -> dict:
        if self._batch is None:
            t0 = time.perf_counter()
            self._batch = self.task.load(self.root, key=getattr(self, "fingerprint", None))  # unset while a content-keyed task is fingerprinted
            log.info("%s: loaded in %.1f s", self.task.name, time.perf_counter() - t0)
        return self._batch

    @property
    def n(self) -> int:
        return len(self.samples["target"])

    @property
    def notes(self) -> tuple[str, ...]:
        """What the loaded task needed (labels remapped, no-data filled, coordinates missing)."""
        return tuple(self.samples.get("notes") or ())

    @cached_property
    def problem(self) -> str:
        """Why no probe can run on this task at all (one class, a constant target), or ''."""
        y, kind = self.samples["target"], self.task.kind
        if self.n < 2:
            return f"{self.task.name} has {self.n} sample(s)"
        if kind in P.CLASSIFICATION and len(np.unique(y)) < 2:
            names = self.samples.get("classes") or ()
            return f"{self.task.name} has a single class ({names[0] if names else y[0]}): nothing to tell apart"
        if kind == "regression" and np.nanstd(np.asarray(y, dtype=float)) == 0:
            return f"{self.task.name} has a constant target: nothing to regress"
        return ""

    @cached_property
    def folds(self) -> dict[str, list[P.Fold] | str]:
        """Folds of every split, shared by all encoders; a string says why a split does not exist."""
        s, y, kind = self.settings, self.samples["target"], self.task.kind
        out: dict[str, list[P.Fold] | str] = {}
        for split, make in (("random", lambda: P.random_splits(y, kind, s.folds, s.repeats, s.seed)),
                            ("blocked", lambda: P.blocked_splits(y, self.samples["group"], kind, s.folds, s.repeats, s.seed)),
                            ("official", lambda: P.official_split(self.samples["is_test"])
                             or f"{self.task.name} has no documented train/test split")):
            try:
                out[split] = make()
            except ValueError as exc:
                out[split] = str(exc)
        return out

    @cached_property
    def fold_notes(self) -> dict[str, str]:
        """Per split, a note when it has fewer folds than asked (a rare class, few blocks or samples)."""
        s, y, kind = self.settings, self.samples["target"], self.task.kind
        notes = {}
        for split in ("random", "blocked"):
            folds = self.folds[split]
            if not isinstance(folds, list):
                continue
            k = sum(f.repeat == 0 for f in folds)
            if k < s.folds:
                if split == "blocked":
                    why = f"{len(np.unique(self.samples['group']))} spatial blocks"
                elif kind in P.CLASSIFICATION:
                    why = f"the smallest class has {int(np.bincount(y).min())} samples"
                else:
                    why = f"{len(y)} samples"
                notes[split] = f"{k}-fold instead of {s.folds}-fold: {why}"
        return notes

    def robustness_split(self, splits: Sequence[str]) -> str | None:
        """The split whose probe is tested with bands missing: the documented one where the task has
        one (only its test samples are re-embedded), else the first other requested split that exists."""
        usable = [s for s in ("official", "random", "blocked") if s in splits and isinstance(self.folds[s], list)]
        return usable[0] if usable else None

    def subset(self, rows: np.ndarray) -> dict:
        """The batch restricted to samples ``rows`` (a segmentation task keeps its whole scenes)."""
        batch = self.batch()
        out = dict(batch)
        for key in SAMPLE_KEYS:
            value = batch.get(key)
            if value is None or (key == "image" and self.task.kind == "segmentation"):
                continue
            if isinstance(value, torch.Tensor):
                out[key] = value[torch.as_tensor(rows)]
            else:
                out[key] = value[rows] if isinstance(value, np.ndarray) else [value[i] for i in rows]
        return out

    def features(self, enc: BenchEncoder, plan: Plan, pool: str, block: int, block_label: str, variant: str = "",
                 rows: np.ndarray | None = None, drop: tuple[str, ...] = (),
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, temporal: str = "mean") -> np.ndarray:
        """Embeddings of the samples (``rows`` of them), from the store or computed and stored.

        A per-date plan stores the embeddings of every step once, (N, T x D), whatever the temporal
        pooling; ``temporal`` pools them on the way out (``pool_dates``)."""
        per_date = plan.per_date
        if per_date:
            variant += "|per-date"
        if plan.encoder_bands:  # bands matched by wavelength: which task band fed which encoder band is part of the key
            variant += "|" + ",".join(f"{e}<-{t}" for e, t in zip(plan.encoder_bands, plan.bands, strict=True))
        if plan.conversions:  # values converted to the encoder's unit: the conversion is part of the key
            variant += "|units:" + ",".join(f"{c.band}:{c.describe()}" for c in plan.conversions)
        key = EmbeddingKey(enc.fingerprint(), self.task.name, self.fingerprint, pool if enc.has_axes else "-",
                           block_label.replace("/", "of") or "-", variant, EMBED_VERSION)

        def batch() -> dict:
            b = self.batch() if rows is None else self.subset(rows)
            return b if transform is None else {**b, "image": transform(b["image"])}

        def samples() -> dict:
            s = self.samples
            if rows is None:
                return s
            return {"id": [s["id"][i] for i in rows], "lonlat": s["lonlat"][rows],
                    "time": None if s["time"] is None else [s["time"][i] for i in rows]}

        compute = (lambda: enc.features(self.task, batch(), plan, pool, block, drop, per_date=True)) if per_date else \
            (lambda: enc.features(self.task, batch(), plan, pool, block, drop))
        ds = self.store.get(key, samples, compute, {**enc.describe(), "bands_read": list(plan.bands), "adapter": plan.adapter})
        x = ds["embedding"].values
        return pool_dates(x, self.task.num_dates, temporal) if per_date else x


# ----------------------------------------------------------------------------------------------
# Rows


@dataclass
class RowContext:
    task: Task
    encoder: str
    pool: str
    block: str
    adapter: str
    n_samples: int
    notes: tuple[str, ...] = ()
    split_notes: dict[str, str] = field(default_factory=dict)
    temporal: str = ""  # the temporal pooling of a per-date plan, '' where none applies

    def row(self, protocol: str, split: str, metric: str, value: float, ci=(np.nan, np.nan), ci_method: str = "",
            n: int = 0, variant: str = "", not_applicable: str = "", note: str = "",
            fold_values: Sequence[float] = ()) -> dict:
        note = "; ".join(x for x in (*self.notes, self.split_notes.get(split, ""), note) if x)
        return {"task": self.task.name, "encoder": self.encoder, "protocol": protocol, "split": split,
                "pool": self.pool, "block": self.block, "temporal_pooling": self.temporal, "variant": variant,
                "adapter": self.adapter, "metric": metric,
                "value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "ci_method": ci_method,
                "n": int(n), "fold_values": ";".join(format(float(v), ".17g") for v in fold_values),
                "n_samples": self.n_samples, "not_applicable": not_applicable, "smoke": self.task.smoke,
                "note": note}


def _summary_rows(ctx: RowContext, protocol: str, split: str, y: np.ndarray, results: list[P.FoldResult],
                  variant_key: str | None = None, variant: str = "", over: str = "folds") -> list[dict]:
    """Rows of one probe: mean over folds (or draws) with a bootstrap interval, or, for a single
    documented split, the test metric with a bootstrap interval over its test samples."""
    kind = ctx.task.kind
    if split == "official":
        r = results[0]
        pred, score = (r.pred, r.score) if variant_key is None else r.variants[variant_key]
        values = P.metrics(kind, y[r.fold.test], pred, score)
        cis = P.bootstrap_test_ci(kind, y, r, variant_key)
        return [ctx.row(protocol, split, m, v, cis[m], "bootstrap over test samples", len(r.fold.test), variant)
                for m, v in values.items()]
    pooled = kind == "multilabel"  # folds of a handful of samples: metrics over pooled out-of-fold predictions
    per_fold = P.fold_metrics(kind, y, results, variant_key, pooled)
    method = f"bootstrap over {'repeats (pooled folds)' if pooled else over}"
    return [ctx.row(protocol, split, m, np.nanmean(v := [f[m] for f in per_fold]), bootstrap_ci(v), method, len(v), variant,
                    fold_values=v)
            for m in P.METRICS[kind]]


def _not_applicable(ctx: RowContext, protocols: Iterable[str], reason: str, split: str = "") -> list[dict]:
    return [ctx.row(p, split, "", np.nan, not_applicable=reason) for p in protocols]


# ----------------------------------------------------------------------------------------------
# Protocols on one feature set


def _drops_for(plan: Plan, drops: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Scenarios that remove some, not all, of the bands this encoder reads on this task."""
    return {n: b for n, b in drops.items() if set(b) & set(plan.bands) and not set(plan.bands) <= set(b)}


def _probe_rows(run: TaskRun, ctx: RowContext, x: np.ndarray, variants: dict[str, np.ndarray],
                protocols: Sequence[str], splits: Sequence[str]) -> list[dict]:
    s, y, kind = run.settings, run.samples["target"], run.task.kind
    rows = []
    learned = ctx.temporal == "probe"  # the temporal probe stands in for the linear probe; fixed-feature protocols do not apply
    if learned:
        reason = (f"temporal_pooling 'probe' is a learned head of the linear protocol; {', '.join(PROBE_ONLY)} read "
                  "fixed features (see temporal_pooling mean or concat)")
        rows += _not_applicable(ctx, [p for p in PROBE_ONLY if p in protocols and p != "diagnostics"], reason)
        protocols = [p for p in protocols if p not in PROBE_ONLY]
        if kind not in P.CLASSIFICATION and kind != "regression":
            return rows + _not_applicable(ctx, [p for p in ("linear", "robustness") if p in protocols],
                                          f"the temporal probe supports classification and regression, not {kind}")

    def linear(yt):
        if learned:
            return P.TemporalProbe(kind, run.task.num_dates, s.seed)
        return P.linear_model(kind, s.seed, y_train=yt)

    for split in splits:
        folds = run.folds[split]
        if isinstance(folds, str):
            rows += _not_applicable(ctx, [p for p in ("linear", "knn") if p in protocols], folds, split)
            continue
        robust = variants if split == run.robustness_split(splits) else {}
        if "linear" in protocols or robust:
            results = P.run_probe(linear, x, y, folds, robust)
            if "linear" in protocols:
                rows += _summary_rows(ctx, "linear", split, y, results)
            for name in robust:
                rows += _summary_rows(ctx, "robustness", split, y, results, name, name)
        if "knn" in protocols:
            rows += _summary_rows(ctx, "knn", split, y, P.run_probe(lambda yt: P.knn_model(kind, s.k, len(yt)), x, y, folds))
    if "few_shot" in protocols:
        if kind not in P.CLASSIFICATION:
            return rows + _not_applicable(ctx, ["few_shot"], f"few-shot needs classes; {run.task.name} is {kind}")
        for shots in s.shots:
            try:
                folds = P.few_shot_splits(y, shots, s.draws, s.seed)
            except ValueError as exc:
                rows.append(ctx.row("few_shot", "few_shot", "", np.nan, variant=f"shots={shots}", not_applicable=str(exc)))
                continue
            results = P.run_probe(lambda yt: P.linear_model(kind, s.seed, fixed_c=P.FEW_SHOT_C), x, y, folds)
            rows += _summary_rows(ctx, "few_shot", "few_shot", y, results, variant=f"shots={shots}", over="draws")
    return rows


def _subsample_row(ctx: RowContext, metric: str, fn: Callable[[np.ndarray], float], n: int, settings: Settings) -> dict:
    """A label-free statistic: mean and percentile interval over random 80 % subsamples of the samples
    (the same subsamples for every encoder; rank and neighbour statistics depend on the sample count,
    so value and interval are both taken at 80 %)."""
    rng = np.random.default_rng(settings.seed)
    size = max(2, int(0.8 * n))
    with threadpool_limits(1, user_api="blas"):  # small matrices: one BLAS thread is faster on shared cores
        values = [fn(rng.choice(n, size, replace=False)) for _ in range(settings.subsamples)]
    return ctx.row("diagnostics", "", metric, np.mean(values), tuple(np.percentile(values, [2.5, 97.5])),
                   f"percentile over {settings.subsamples} subsamples (80%)", size)


def _views_apply(task: Task) -> bool:
    """Augmented views (flips, rotations, crops) make sense for single-date EO images."""
    return task.size > 1 and task.kind != "segmentation" and set(task.modality) <= {"s2", "s1"}


def _diagnostic_rows(run: TaskRun, ctx: RowContext, enc: BenchEncoder, plan: Plan, axes, x: np.ndarray) -> list[dict]:
    s = run.settings
    rows = [_subsample_row(ctx, "effective_rank", lambda i: effective_rank(x[i]), len(x), s)]
    if not _views_apply(run.task) or not getattr(enc, "reads_images", True):  # precomputed embeddings see no views
        return rows
    transforms = AUGMENTATIONS[s.augment]

    def view(seed: int) -> np.ndarray:
        def transform(image: torch.Tensor) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed)
            for t in transforms:
                image = t(image, g)
            return image

        return run.features(enc, plan, *axes, variant=f"view:{s.augment}:{seed}", transform=transform,
                            temporal=ctx.temporal or "mean")

    v1, v2 = view(s.seed + 1), view(s.seed + 2)
    k = min(s.diagnostics_k, int(0.8 * len(x)) - 2)  # neighbours within an 80 % subsample
    rows.append(_subsample_row(ctx, "alignment", lambda i: alignment(v1[i], v2[i]), len(x), s))
    rows.append(_subsample_row(ctx, "uniformity", lambda i: uniformity(v1[i]), len(x), s))
    rows.append(_subsample_row(ctx, "knn_consistency", lambda i: knn_consistency(v1[i], v2[i], k), len(x), s))
    return rows


def _leakage_rows(run: TaskRun, ctx: RowContext, footprints: pd.DataFrame | str) -> list[dict]:
    if not isinstance(footprints, pd.DataFrame):
        return _not_applicable(ctx, ["leakage"], footprints)
    size_m = run.task.gsd_m * (1 if run.task.kind == "segmentation" else run.task.size)
    located = np.isfinite(run.samples["lonlat"]).all(1)
    if not located.any():
        return _not_applicable(ctx, ["leakage"], f"{run.task.name} gives no sample coordinates: leakage cannot be checked")
    table = leakage_table(run, footprints)
    rows = [ctx.row("leakage", "all", "overlap_fraction", table["overlaps"].mean(), ci_method="census of every sample",
                    n=len(table), variant=f"footprint {size_m:.0f} m")]
    same = table["same_date"]
    if same.notna().any():
        rows.append(ctx.row("leakage", "all", "same_date_fraction", same.mean(), ci_method="census of every sample",
                            n=int(same.notna().sum()), variant=f"footprint {size_m:.0f} m"))
    return rows


def leakage_table(run: TaskRun, footprints: pd.DataFrame, margin_m: float | None = None) -> pd.DataFrame:
    """Per sample of a task with coordinates: id, distance to the nearest pre-training footprint,
    overlap, same date (samples without coordinates are left out: the check does not apply to them)."""
    size_m = run.task.gsd_m * (1 if run.task.kind == "segmentation" else run.task.size)
    margin = run.settings.leakage_margin_m if margin_m is None else margin_m
    located = np.flatnonzero(np.isfinite(run.samples["lonlat"]).all(1))
    times = run.samples["time"]
    table = overlaps(run.samples["lonlat"][located], None if times is None else [times[i] for i in located], size_m,
                     footprints, margin)
    return table.assign(id=[run.samples["id"][i] for i in located])


class Footprints:
    """An encoder's pre-training footprints: given per encoder name (a dict of DataFrames), one
    DataFrame, ``"auto"`` (rebuilt from the ``record.json`` beside its checkpoint) or None. They are
    rebuilt only when a leakage row is computed; ``key`` identifies them for the result cache."""

    def __init__(self, enc: BenchEncoder, pretraining):
        self.enc, self.pretraining = enc, pretraining
        self.record = None
        if isinstance(pretraining, str) and pretraining == "auto" and getattr(enc, "checkpoint", ""):
            self.record = Path(enc.checkpoint).parent / "record.json"

    @cached_property
    def key(self) -> str:
        if self.record is not None and self.record.is_file():
            return "record:" + hashlib.sha1(self.record.read_bytes()).hexdigest()
        value = self.value
        if isinstance(value, pd.DataFrame):
            return "frame:" + str(int(pd.util.hash_pandas_object(value, index=False).sum()))
        return value

    @cached_property
    def value(self) -> pd.DataFrame | str:
        """The footprints, or why there are none."""
        name, pre = self.enc.name, self.pretraining
        if isinstance(pre, dict):
            return pre.get(name, f"no pre-training footprints given for {name}")
        if isinstance(pre, pd.DataFrame):
            return pre
        if self.record is None:
            return f"{name} has no recorded pre-training data"
        if not self.record.is_file():
            return f"no record.json beside {self.enc.checkpoint}: pre-training data unknown"
        try:
            return pretraining_footprints(self.record)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the check is auxiliary: say why, run the rest
            return f"pre-training footprints could not be rebuilt from {self.record}: {type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------------
# The benchmark


def evaluate(encoder, tasks: Sequence[str | Task] | None = None, protocols: Sequence[str] = PROTOCOLS, *,
             baselines: Sequence[str] = BASELINES, splits: Sequence[str] = SPLITS, pools: Sequence[str] = ("mean",),
             blocks: Sequence[int] = (-1,), data_root: str | Path | None = None, cache_dir: str | Path | None = None,
             pretraining="auto", output_dir: str | Path | None = None, settings: Settings | None = None,
             name: str | None = None, reuse_results: bool = True) -> pd.DataFrame:
    """Benchmark ``encoder`` (and ``baselines``) on ``tasks`` (default: all) -> one tidy table.

    Columns: ``COLUMNS``. ``pools`` and ``blocks`` are axes of ViT encoders (block -1: the last,
    -2: the one before, ...). ``pretraining``: "auto" (footprints from the record beside a
    checkpoint), a DataFrame (lon, lat, dates, size_m) or a dict encoder name -> DataFrame, or None.
    ``output_dir``: where ``benchmark.csv`` and ``benchmark.json`` (parameters, encoders, seed, git
    commit, wall time, cache use) are written. With ``reuse_results`` the rows of an (encoder, task)
    already evaluated with the same settings and the same code are read back from the cache (set it
    False to refit every probe on the cached embeddings). A corrupt checkpoint raises
    ``CheckpointError`` naming the file before any work starts.
    """
    t_start = time.perf_counter()
    settings = settings or Settings()
    unknown = [p for p in protocols if p not in PROTOCOLS] + [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown protocol(s)/split(s) {unknown}; protocols: {PROTOCOLS}, splits: {SPLITS}")
    pooling = [t for t in settings.temporal_pooling if t not in TEMPORAL_POOLINGS]
    if pooling or not settings.temporal_pooling:
        raise ValueError(f"temporal_pooling: unknown value(s) {pooling or '(none given)'}; choose from {TEMPORAL_POOLINGS}")
    root = resolve_data_root(data_root)
    encoders = resolve_encoders(encoder, baselines, name, settings.seed)
    store = EmbeddingStore(Path(cache_dir)) if cache_dir else EmbeddingStore()
    footprints = {e.name: Footprints(e, pretraining) for e in encoders}
    rows, timing = [], {}
    # Every task is resolved before any work: an unknown name or a bad task file fails now, named.
    for task in [get_task(t) for t in (tasks or task_names())]:
        try:
            run = TaskRun(task, root, store, settings)
        except Exception as exc:  # one task's data must not abort the call: a row per encoder says why
            log.exception("%s: could not be loaded", task.name)
            rows += [row for enc in encoders for row in _error_rows(task, enc, protocols, "task could not be loaded", exc)]
            continue
        for enc in encoders:
            t0 = time.perf_counter()

            def compute(run=run, enc=enc) -> list[dict]:
                return _encoder_rows(run, enc, protocols, splits, pools, blocks, footprints[enc.name])

            try:
                if reuse_results:
                    key = {"task": run.fingerprint, "protocols": list(protocols), "splits": list(splits),
                           "pools": list(pools), "blocks": list(blocks), "settings": asdict(settings), "name": enc.name,
                           "footprints": footprints[enc.name].key if "leakage" in protocols else "",
                           "code": CODE_VERSION}
                    rows += store.rows(enc.fingerprint(), task.name, key, compute)
                else:
                    rows += compute()
            except Exception as exc:  # an error is a row (never cached), and the other encoders and tasks run
                log.exception("%s / %s failed", task.name, enc.name)
                rows += _error_rows(task, enc, protocols, "failed", exc, run.n)
            timing[f"{task.name}/{enc.name}"] = round(time.perf_counter() - t0, 2)
            log.info("%s / %s: %.1f s", task.name, enc.name, timing[f"{task.name}/{enc.name}"])
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs.update(wall_time_s=time.perf_counter() - t_start, timing=timing, seed=settings.seed,
                       cache={"hits": store.hits, "misses": store.misses, "result_hits": store.result_hits,
                              "root": str(store.root)})
    if output_dir:
        write_outputs(table, Path(output_dir), encoders, settings, protocols=list(protocols), splits=list(splits),
                      pools=list(pools), blocks=list(blocks))
    return table


def _error_rows(task: Task, enc: BenchEncoder, protocols, what: str, exc: Exception, n: int = 0) -> list[dict]:
    """Rows saying that a task (or an encoder on it) raised, with the error, one per protocol."""
    reason = f"error: {task.name} {what}: {type(exc).__name__}: {exc}"
    return _not_applicable(RowContext(task, enc.name, "", "", "", n), protocols, reason)


def _robustness_features(run: TaskRun, ctx: RowContext, enc: BenchEncoder, plan: Plan, axes, splits,
                         rows: list[dict]) -> dict[str, np.ndarray]:
    """Features with each applicable scenario's bands missing, for the test samples of the robustness
    split (NaN elsewhere: only test samples are ever predicted with missing bands). Appends a
    not-applicable row when no scenario applies."""
    drops = _drops_for(plan, run.settings.drops)
    split = run.robustness_split(splits)
    if not drops or split is None:
        reason = (f"no scenario in {sorted(run.settings.drops)} removes some but not all of the bands {enc.name} reads"
                  if not drops else "no requested split to test robustness on")
        rows += _not_applicable(ctx, ["robustness"], reason)
        return {}
    test = np.unique(np.concatenate([f.test for f in run.folds[split]]))
    variants = {}
    for name, bands in drops.items():
        part = run.features(enc, plan, *axes, variant=f"drop:{','.join(bands)}:{split}", rows=test, drop=bands,
                            temporal=ctx.temporal or "mean")
        variants[name] = np.full((run.n, part.shape[1]), np.nan, dtype=part.dtype)
        variants[name][test] = part
    return variants


def _encoder_rows(run: TaskRun, enc: BenchEncoder, protocols, splits, pools, blocks,
                  footprints: Footprints) -> list[dict]:
    plan = enc.plan(run.task)
    ctx = RowContext(run.task, enc.name, "", "", "", run.n, run.notes)
    if isinstance(plan, NotApplicable):
        return _not_applicable(ctx, protocols, plan.reason)
    if run.problem:
        return _not_applicable(ctx, protocols, run.problem)
    if plan.encoder_bands:
        log.info("%s / %s: %s", run.task.name, enc.name, plan.adapter)
    rows = []
    if "leakage" in protocols:
        rows += _leakage_rows(run, RowContext(run.task, enc.name, "", "", plan.adapter, run.n, run.notes), footprints.value)
    temporals = list(run.settings.temporal_pooling) if plan.per_date else [""]
    for (pool, block, pool_label, block_label), temporal in itertools.product(_axes(enc, plan, pools, blocks), temporals):
        label = pool_label if temporal in ("", "mean") else f"{pool_label}+{temporal}" if pool_label else temporal
        ctx = RowContext(run.task, enc.name, label, block_label, plan.adapter_with(temporal, run.task.num_dates), run.n,
                         run.notes, run.fold_notes, temporal)
        axes = (pool, block, block_label)
        x = run.features(enc, plan, *axes, temporal=temporal or "mean")
        variants = _robustness_features(run, ctx, enc, plan, axes, splits, rows) if "robustness" in protocols else {}
        rows += _probe_rows(run, ctx, x, variants, protocols, splits)
        if "diagnostics" in protocols and temporal != "probe":
            rows += _diagnostic_rows(run, ctx, enc, plan, axes, x)
        elif "diagnostics" in protocols:
            rows += _not_applicable(ctx, ["diagnostics"], "temporal_pooling 'probe' learns its pooling per fold: the "
                                    "label-free diagnostics read fixed features (see temporal_pooling mean or concat)")
    return rows


# ----------------------------------------------------------------------------------------------
# Outputs


def write_outputs(table: pd.DataFrame, output_dir: Path, encoders: list[BenchEncoder], settings: Settings,
                  **params) -> dict:
    """``benchmark.csv`` (the tidy table) and ``benchmark.json`` (what produced it) in ``output_dir``."""

    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / BENCHMARK_NAME, table.to_csv(index=False))
    record = {"params": {**params, "settings": asdict(settings)}, "seed": settings.seed,
              "encoders": [e.describe() for e in encoders], "git_commit": git_commit(),
              "wall_time_s": table.attrs.get("wall_time_s"), "timing_s": table.attrs.get("timing"),
              "cache": table.attrs.get("cache"), "rows": len(table),
              "not_applicable": table.loc[table["not_applicable"] != "", ["task", "encoder", "not_applicable"]]
              .drop_duplicates().to_dict(orient="records")}
    write_json_atomic(output_dir / "benchmark.json", record)
    return record
