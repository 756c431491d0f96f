"""One pre-training run, end to end: the entry point that notebooks and sweeps both call.

    cfg = PretrainConfig(mask_ratio=0.75, ...)   # validated before any work starts
    data = prepare_data(cfg)                     # scene cache, patch index, statistics, EuroSAT
    run = pretrain(cfg, data)                    # trains the proxy task, saves the encoder
    evaluation = evaluate(cfg, data, run)        # linear probe: pre-trained / random init / band stats
    record = write_record(cfg, data, run, evaluation)

Results leave the run as files in ``cfg.output_dir``: ``record.json`` (parameters, metrics, folds,
seed, git commit, wall time, data manifest), ``history.csv`` (loss per step) and ``encoder.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from .checkpoint import save_encoder
from .compute import (
    analytic_training_flops,
    non_embedding_params,
    parameter_count,
    training_flops,
)
from .data import eurosat
from .data.bands import S2_L2A
from .data.cache import PatchDataset, build_scene_cache
from .data.pairs import S1_BANDS, PairedS1S2
from .data.paths import REPO_ROOT, data_root
from .data.samplers import SceneDiverseBatchSampler
from .data.sampling import Pool, Selection, parse_spec, pool_reference, select
from .data.scenes import READERS
from .data.schema import collate
from .data.stats import Normalization, compute_normalization
from .data.timeseries import SloveniaSeries, SSL4EOSeries
from .evaluate import band_stats_features, embed, linear_probe
from .evaluate.diagnostics import effective_rank, embedding_std, is_collapsed
from .history import ends
from .io import write_json_atomic
from .models.vit import POOLS, SIZES, TOKENIZERS, build_encoder, encoder_config
from .progress import PROGRESS_MODES, RUN_LOG_NAME, log_line, resolve_progress
from .tasks import AUGMENTATIONS, MASKS, TaskParams, build_task, parse_objective
from .tracking import LOGGERS, log_final, log_params, loggable_params, make_loggers, redact_uri
from .train import KnnProbe, fit

DATASET_BANDS: dict[str, tuple[str, ...]] = {
    "scenes": S2_L2A,  # Major-TOM, Hydro, SSL4EO-S12 scenes through the packed cache
    "s1s2": S2_L2A + S1_BANDS,  # co-registered Sentinel-2 + Sentinel-1 windows (SSL4EO-S12, BigEarthNet)
    "slovenia": ("NDVI",),  # 68-date NDVI series over Slovenia (eo-learn)
    "ssl4eo_series": S2_L2A,  # two seasons of one SSL4EO-S12 location
}
"""Pre-training datasets by name, with the bands each can provide."""
TIME_SERIES = ("slovenia", "ssl4eo_series")
STRATEGIES = ("auto", "ddp", "ddp_notebook", "ddp_spawn", "fsdp", "deepspeed")
"""Lightning strategies a run may name (multi-GPU training is Lightning's). Inside a Jupyter kernel
(a notebook run by the ablation runner) Lightning can launch processes only by forking:
``ddp_notebook``; ``ddp`` and ``fsdp`` re-run a script, so they suit scripts launched by srun."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """The parameters of one pre-training run (the notebook's parameters cell, validated)."""

    data_root: str = ""
    dataset: str = "scenes"
    sources: str = "major_tom,hydro,ssl4eo"
    val_sources: str = ""
    bands: str = "B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12"
    n_pretrain: int = 0
    sampling: str = "pandas_uniform"
    tile_stride: int = 32
    img_size: int = 64
    num_dates: int = 4
    batch_sampling: str = "diverse"
    eurosat: str = "local"
    model_size: str = "vit_micro"
    patch_size: int = 8
    tokenizer: str = "patch"
    band_groups: str = "B02,B03,B04,B08|B05,B06,B07,B8A|B11,B12"
    objective: str = "mae"
    objective_weights: str = ""
    mask_ratio: float = 0.75
    mask: str = "random"
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 4
    view_augment: str = "eo"
    temperature: float = 0.2
    denoise_target: str = "eps"
    augment: str = "dihedral"
    epochs: int = 20
    train_tflops: float = 0.0
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    seed: int = 0
    knn_every: int = 100
    pool: str = "mean_std"
    probe_folds: int = 5
    probe_repeats: int = 5
    probe_baselines: bool = True
    benchmark: str = ""
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate: int = 1
    torch_compile: bool = False
    num_workers: int = 0
    checkpoint_every: int = 200
    progress: str = "auto"
    logger: str = "none"
    tracking_uri: str = ""
    output_dir: str = "."

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, expected = getattr(self, f.name), {"int": int, "float": float, "bool": bool, "str": str}[f.type]
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                ok = True
            if not ok:
                raise TypeError(f"parameter {f.name!r} must be {f.type}, got {value!r} ({type(value).__name__})")
        try:
            parse_objective(self.objective)
        except ValueError as exc:
            raise ValueError(f"parameter 'objective': {exc}") from None
        parse_spec(self.sampling, param="sampling")  # its errors name the parameter
        dataset_bands = DATASET_BANDS.get(self.dataset, ())
        checks = [
            ("dataset", self.dataset in DATASET_BANDS, f"one of {sorted(DATASET_BANDS)}"),
            ("mask_ratio", 0.0 <= self.mask_ratio < 1.0, "in [0, 1)"),
            ("model_size", self.model_size in SIZES, f"one of {sorted(SIZES)}"),
            ("mask", self.mask in MASKS, f"one of {sorted(MASKS)}"),
            ("tokenizer", self.tokenizer in TOKENIZERS, f"one of {TOKENIZERS}"),
            ("tokenizer", self.tokenizer != "temporal" or self.dataset in TIME_SERIES,
             f"'temporal' only for the time-series datasets {TIME_SERIES}"),
            ("tokenizer", self.dataset not in TIME_SERIES or self.tokenizer == "temporal",
             f"'temporal' for the time-series datasets {TIME_SERIES}"),
            ("band_groups", self.tokenizer != "groups" or sorted(b for g in self.group_list for b in g) == sorted(self.band_list),
             f"groups (bands by comma, groups by '|') that partition the bands {self.band_list}"),
            ("objective_weights", not self.objective_weights or len(self.weight_list) == len(parse_objective(self.objective)),
             f"one comma-separated weight per part of the objective {self.objective!r}"),
            ("view_augment", self.view_augment in AUGMENTATIONS, f"one of {sorted(AUGMENTATIONS)}"),
            ("augment", self.augment in AUGMENTATIONS, f"one of {sorted(AUGMENTATIONS)}"),
            ("batch_sampling", self.batch_sampling in ("diverse", "shuffle"), "'diverse' or 'shuffle'"),
            ("denoise_target", self.denoise_target in ("eps", "x0"), "'eps' or 'x0'"),
            ("temperature", self.temperature > 0, "> 0"),
            ("train_tflops", self.train_tflops >= 0, ">= 0 (0 = train for `epochs`)"),
            ("knn_every", self.knn_every >= 0, ">= 0 (0 = no in-loop k-NN probe)"),
            ("num_dates", self.num_dates >= 1, ">= 1"),
            ("devices", self.devices == "auto" or self.devices.isdigit() or self.devices == "-1", "'auto', -1 or a count"),
            ("strategy", self.strategy in STRATEGIES, f"one of {STRATEGIES}"),
            ("accumulate", self.accumulate >= 1, ">= 1"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0 (0 = no checkpoints, no resume)"),
            ("progress", self.progress in PROGRESS_MODES, f"one of {PROGRESS_MODES}"),
            ("logger", self.logger in LOGGERS, f"one of {LOGGERS}"),
            ("tracking_uri", self.logger != "mlflow" or bool(self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")),
             "the MLflow tracking server's URI when logger is 'mlflow' (or set $MLFLOW_TRACKING_URI)"),
            ("img_size", self.img_size % self.patch_size == 0, f"a multiple of patch_size {self.patch_size}"),
            ("sources", all(s in READERS for s in self.source_list), f"comma-separated names from {sorted(READERS)}"),
            ("val_sources", all(s in READERS for s in self.val_source_list), f"empty or comma-separated names from {sorted(READERS)}"),
            ("val_sources", not set(self.val_source_list) & set(self.source_list),
             f"sources held out of pre-training, none of them in sources {self.sources!r}"),
            ("val_sources", not self.val_sources or self.dataset == "scenes", "empty unless dataset is 'scenes'"),
            ("bands", bool(self.band_list) and all(b in dataset_bands for b in self.band_list),
             f"comma-separated band names of dataset {self.dataset!r}: from {list(dataset_bands)}"),
            ("eurosat", self.eurosat in eurosat.DEFAULT_SPLITS, f"one of {sorted(eurosat.DEFAULT_SPLITS)}"),
            ("pool", self.pool in POOLS, f"one of {POOLS}"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("n_pretrain", self.n_pretrain >= 0, ">= 0 (0 = all patches)"),
            ("sampling", self.sampling == "pandas_uniform" or self.n_pretrain > 0,
             "left at its default unless n_pretrain (the budget it samples) is set"),
            ("probe_folds", self.probe_folds >= 2, ">= 2"),
            ("benchmark", all(t in _benchmark_tasks() for t in self.benchmark_list),
             f"empty, 'all' or comma-separated task names from {list(_benchmark_tasks())}"),
        ]
        for name, ok, what in checks:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"parameter {name!r} must be {what}, got {redact_uri(value) if name == 'tracking_uri' else value!r}")

    def __repr__(self) -> str:  # the notebook shows the config: never a tracking password
        values = ", ".join(f"{k}={v!r}" for k, v in loggable_params(dataclasses.asdict(self) | {"output_dir": None}).items())
        return f"PretrainConfig({values}, output_dir={self.output_dir!r})"

    @property
    def source_list(self) -> tuple[str, ...]:
        return _names(self.sources)

    @property
    def val_source_list(self) -> tuple[str, ...]:
        return _names(self.val_sources)

    @property
    def band_list(self) -> tuple[str, ...]:
        return _names(self.bands)

    @property
    def group_list(self) -> tuple[tuple[str, ...], ...]:
        return tuple(_names(g) for g in self.band_groups.split("|") if _names(g))

    @property
    def benchmark_list(self) -> tuple[str, ...]:
        return tuple(_benchmark_tasks()) if self.benchmark.strip() == "all" else _names(self.benchmark)

    @property
    def weight_list(self) -> tuple[float, ...]:
        return tuple(float(w) for w in _names(self.objective_weights))

    @classmethod
    def from_namespace(cls, namespace: dict) -> PretrainConfig:
        """Build from a notebook's globals: picks exactly the config's fields."""
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})


def _benchmark_tasks() -> dict:
    """The benchmark's task registry, imported only when a run names tasks."""
    from .evaluate.tasks import TASKS

    return TASKS


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names of a notebook parameter, blanks dropped."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


SAMPLE_FILE = "sample.json"
"""The run folder's list of pre-training patch ids (with sampler and hash), when ``n_pretrain`` drew them."""


@dataclass
class PreparedData:
    pretrain: Dataset
    normalization: Normalization
    eurosat: dict
    manifest: dict
    tiles: pd.DataFrame | None = None  # window index (scene, row, col) when the data are scene tiles
    validation: Dataset | None = None  # held-out scenes (``val_sources``): the proxy task's loss on unseen places
    sample: Sample | None = None  # the subset drawn by ``sampling`` (n_pretrain), with its representativeness


@dataclass
class Sample:
    """Which patches a sampler chose (ids and manifest) and how representative they are of the pool."""

    selection: Selection
    representativeness: dict[str, float]


def _pretrain_dataset(cfg: PretrainConfig, root: Path) -> tuple[Dataset, pd.DataFrame | None, list[str], list[str], Sample | None]:
    """The unlabelled pre-training set of ``cfg.dataset``: (dataset, tiles or None, sample ids,
    sources, the subset sample when ``n_pretrain`` drew one)."""
    if cfg.dataset == "scenes":
        cache = build_scene_cache(root, cfg.source_list)
        tiles = cache.tiles(patch=cfg.img_size, stride=cfg.tile_stride)
        sample = None
        if cfg.n_pretrain:
            pool = Pool(tiles, cache, patch=cfg.img_size)
            selection = select(cfg.sampling, pool, cfg.n_pretrain, seed=cfg.seed, param="sampling", budget_param="n_pretrain")
            # How representative the draw is of everything it was drawn from, beside what it learns.
            sample = Sample(selection, pool_reference(pool, seed=cfg.seed).measure(selection.indices))
            tiles = tiles.iloc[selection.indices].reset_index(drop=True)
        dataset = PatchDataset(cache, tiles, patch=cfg.img_size, bands=cfg.band_list)
        return dataset, tiles, list(tiles["id"]), list(tiles["source"]), sample
    if cfg.dataset == "s1s2":
        s2 = tuple(b for b in cfg.band_list if b not in S1_BANDS)
        if tuple(cfg.band_list) != s2 + S1_BANDS:
            raise ValueError(f"parameter 'bands' for dataset 's1s2' must list Sentinel-2 bands, then {','.join(S1_BANDS)}")
        dataset = PairedS1S2(root, patch=cfg.img_size, stride=cfg.tile_stride, s2_bands=s2)
    elif cfg.dataset == "slovenia":
        dataset = SloveniaSeries(root, patch=cfg.img_size, stride=cfg.tile_stride, num_dates=cfg.num_dates, seed=cfg.seed)
    else:  # ssl4eo_series: two seasons of one SSL4EO-S12 location
        dataset = SSL4EOSeries(root, bands=cfg.band_list, patch=cfg.img_size, stride=cfg.tile_stride)
    if cfg.n_pretrain:
        raise ValueError(f"parameter 'n_pretrain' applies to dataset 'scenes' only, not {cfg.dataset!r}")
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    sources = [cfg.dataset] * len(dataset)
    return dataset, None, ids, sources, None


def pretraining_samples(cfg: PretrainConfig) -> tuple[Dataset, pd.DataFrame | None, list[str]]:
    """The pre-training samples a run with ``cfg`` draws: (dataset, tile index or None, ids). What a
    leakage check compares evaluation samples with, rebuilt from a record's parameters."""
    dataset, tiles, ids, _, _ = _pretrain_dataset(cfg, data_root(cfg.data_root or None))
    return dataset, tiles, ids


def prepare_data(cfg: PretrainConfig) -> PreparedData:
    """Build (or reuse) the scene cache, choose pre-training patches, compute statistics, load EuroSAT.

    All inputs are opened here, before training, so a bad file fails in seconds, not after an hour.
    """
    root = data_root(cfg.data_root or None)
    labelled = eurosat.load(root, variant=cfg.eurosat)
    dataset, tiles, ids, sources, sample = _pretrain_dataset(cfg, root)
    norm = compute_normalization(dataset, seed=cfg.seed, corpus=f"{cfg.dataset} pre-training set, {len(dataset)} samples")
    manifest = {
        "dataset": cfg.dataset, "sources": sorted(set(sources)), "n_patches": len(dataset),
        "patches_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
        "per_source": pd.Series(sources).value_counts().to_dict(), "n_labelled": len(labelled["label"]),
    }
    if tiles is not None:
        manifest["cache_key"] = dataset.cache.manifest["key"]
    if sample is not None:
        manifest["sample"] = {**sample.selection.manifest, "file": SAMPLE_FILE}
    validation = None
    if cfg.val_sources:
        cache = build_scene_cache(root, cfg.val_source_list)
        val_tiles = cache.tiles(patch=cfg.img_size, stride=cfg.tile_stride)
        validation = PatchDataset(cache, val_tiles, patch=cfg.img_size, bands=cfg.band_list)
        manifest["validation"] = {"sources": list(cfg.val_source_list), "n_patches": len(validation),
                                  "patches_sha1": hashlib.sha1("\n".join(val_tiles["id"]).encode()).hexdigest()}
    return PreparedData(dataset, norm, labelled, manifest, tiles, validation, sample)


@dataclass
class PretrainResult:
    encoder: torch.nn.Module
    history: pd.DataFrame
    train_time_s: float
    checkpoint: Path
    compute: dict  # FLOPs per step, steps, total training FLOPs, parameters
    validation: dict = dataclasses.field(default_factory=dict)  # val_loss etc. on held-out scenes (val_sources)
    loggers: list = dataclasses.field(default_factory=list)  # Lightning loggers (``logger``), closed by write_record


def _encoder_spec(cfg: PretrainConfig, bands: tuple[str, ...]) -> dict:
    """Arguments of ``build_encoder`` / ``encoder_config`` for this run."""
    groups = cfg.group_list if cfg.tokenizer == "groups" else ()
    return {"size": cfg.model_size, "bands": bands, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
            "tokenizer": cfg.tokenizer, "groups": groups, "num_dates": cfg.num_dates if cfg.tokenizer == "temporal" else 1}


def _cross_views(cfg: PretrainConfig) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Cross-view contrast: Sentinel-2 groups vs Sentinel-1 groups for band groups; two random dates
    (None) for a time series."""
    if cfg.tokenizer != "groups":
        return None
    sar = tuple(i for i, g in enumerate(cfg.group_list) if all(b in S1_BANDS for b in g))
    optical = tuple(i for i in range(len(cfg.group_list)) if i not in sar)
    if "cross_view" in parse_objective(cfg.objective) and not (sar and optical):
        raise ValueError("parameter 'objective': cross_view with band groups needs Sentinel-1 and Sentinel-2 groups "
                         f"(band_groups {cfg.band_groups!r})")
    return optical, sar


def _build_task(cfg: PretrainConfig, bands: tuple[str, ...]) -> torch.nn.Module:
    spec = _encoder_spec(cfg, bands)
    encoder = build_encoder(spec.pop("size"), **spec)
    params = TaskParams(mask_ratio=cfg.mask_ratio, mask=cfg.mask, norm_pix_loss=cfg.norm_pix_loss,
                        decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth, view_augment=cfg.view_augment,
                        temperature=cfg.temperature, denoise_target=cfg.denoise_target, views=_cross_views(cfg),
                        weights=cfg.weight_list)
    return build_task(cfg.objective, encoder, params)


def _sample_batch(cfg: PretrainConfig, data: PreparedData) -> dict:
    """One normalised training batch (for counting the FLOPs of a step)."""
    batch = collate([data.pretrain[i] for i in range(min(cfg.batch_size, len(data.pretrain)))])
    return {**batch, "image": data.normalization(batch["image"], batch["bands"], batch["unit"], where="pre-training data")}


def _knn_probe(cfg: PretrainConfig, data: PreparedData) -> KnnProbe | None:
    """The in-loop k-NN probe on EuroSAT's own train/test split, where the encoder can read EuroSAT."""
    if not cfg.knn_every or cfg.tokenizer == "temporal" or not set(data.normalization.bands) <= set(data.eurosat["bands"]):
        return None
    train = torch.tensor([s == "train" for s in data.eurosat["split"]])

    def part(rows: torch.Tensor) -> dict:
        return {"image": data.eurosat["image"][rows], "label": data.eurosat["label"][rows],
                "bands": data.eurosat["bands"], "unit": data.eurosat["unit"]}

    return KnnProbe(part(train), part(~train), data.normalization, every=cfg.knn_every)


@torch.no_grad()
def held_out_loss(task: torch.nn.Module, dataset: Dataset, normalization: Normalization, batch_size: int,
                  seed: int = 0) -> dict[str, float]:
    """The proxy task's losses on ``dataset`` (places never trained on), averaged over samples.

    Masks and noise come from one seeded generator and there is no augmentation, so every run of a
    study is scored on exactly the same problems: differences are the encoder's, not the draw's.
    The training loss cannot serve here: it rewards memorising a small pre-training set.
    """
    was_training = task.training
    task.eval()
    device = next(task.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    totals: dict[str, float] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        image = normalization(batch["image"], batch["bands"], batch["unit"], where="validation data").to(device)
        out = task({**batch, "image": image}, generator=generator)
        for name, value in out.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(image)
    task.train(was_training)
    return {name: total / len(dataset) for name, total in totals.items()}


def pretrain(cfg: PretrainConfig, data: PreparedData, callbacks: list | tuple = ()) -> PretrainResult:
    """Train the proxy task; ``callbacks`` (Lightning) e.g. report intermediate values to Optuna."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    task = _build_task(cfg, data.normalization.bands)
    # One optimiser step is `accumulate` batches of `batch_size` (history counts optimiser steps).
    batch = _sample_batch(cfg, data)
    flops_per_step = training_flops(task, batch, seed=cfg.seed) * cfg.accumulate
    # the analytic rule (6 x parameters x tokens + attention) beside the count: a check a reader can redo
    analytic_flops_per_step = analytic_training_flops(task, batch, seed=cfg.seed) * cfg.accumulate
    steps_per_epoch = math.ceil(len(data.pretrain) // cfg.batch_size / cfg.accumulate)  # optimiser steps
    # A FLOP budget makes objectives of different cost per step comparable at equal compute.
    max_steps = math.ceil(cfg.train_tflops * 1e12 / flops_per_step) if cfg.train_tflops else 0
    sampler = None
    if cfg.batch_sampling == "diverse" and data.tiles is not None:
        sampler = SceneDiverseBatchSampler(data.tiles, cfg.batch_size, patch=cfg.img_size, seed=cfg.seed)
    knn = _knn_probe(cfg, data)
    progress = resolve_progress(cfg.progress)
    run_log = out / RUN_LOG_NAME if progress != "none" else None
    log_line(run_log, f"data: {len(data.pretrain)} pre-training samples; {len(data.eurosat['label'])} labelled EuroSAT patches")
    loggers = make_loggers(cfg.logger, cfg.tracking_uri, out)
    log_params(loggers, dataclasses.asdict(cfg))
    t0 = time.perf_counter()
    checkpoints = out / "checkpoints"
    history = fit(task, data.pretrain, data.normalization, epochs=cfg.epochs, max_steps=max_steps,
                  batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                  augment=cfg.augment, batch_sampler=sampler, callbacks=[*callbacks, *([knn] if knn else [])],
                  accelerator=cfg.accelerator, devices=int(cfg.devices) if cfg.devices != "auto" else "auto",
                  strategy=cfg.strategy, precision=cfg.precision, accumulate=cfg.accumulate,
                  num_workers=cfg.num_workers, checkpoint_dir=checkpoints if cfg.checkpoint_every else None,
                  checkpoint_every=cfg.checkpoint_every or 1, history_path=out / "history.csv",
                  compile=cfg.torch_compile, progress=progress, log_path=run_log, loggers=loggers)
    train_time = time.perf_counter() - t0
    # Under srun every task runs this function; the run folder is rank 0's to write.
    rank0 = not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0
    if rank0:  # training checkpoints exist to resume a killed run; once it finished, the encoder is the product
        shutil.rmtree(checkpoints, ignore_errors=True)
    steps = int(history["step"].max()) if len(history) else 0
    compute = {"flops_per_step": flops_per_step, "train_steps": steps, "train_flops": flops_per_step * steps,
               "samples_seen": steps * cfg.batch_size * cfg.accumulate,
               "steps_per_epoch": steps_per_epoch, "encoder_params": parameter_count(task.encoder),
               "task_params": parameter_count(task), **non_embedding_params(task),
               "analytic_flops_per_step": analytic_flops_per_step}
    validation = {}
    if data.validation is not None:
        validation = {f"val_{k}": v for k, v in held_out_loss(task, data.validation, data.normalization,
                                                               cfg.batch_size, cfg.seed).items()}
    encoder = task.encoder.cpu().eval()
    spec = _encoder_spec(cfg, data.normalization.bands)
    ckpt = out / "encoder.pt"
    if rank0:
        save_encoder(ckpt, encoder, encoder_config(spec.pop("size"), **spec), data.normalization)
    log_line(run_log, f"encoder saved: {ckpt.name}; evaluating")
    return PretrainResult(encoder, history, train_time, ckpt, compute, validation, loggers)


@dataclass
class Evaluation:
    scores: pd.DataFrame  # tidy: encoder, fold, accuracy (empty when not applicable)
    diagnostics: dict[str, float]  # label-free health of each feature set: effective rank, std, collapse
    not_applicable: str = ""  # why the EuroSAT probe could not run for this encoder, if it could not


def evaluate(cfg: PretrainConfig, data: PreparedData, run: PretrainResult) -> Evaluation:
    """Linear-probe accuracy per fold for the pre-trained encoder and both baselines, plus
    label-free diagnostics of each feature set (a collapsed encoder is flagged even if it probes well).

    An encoder that cannot read EuroSAT (a time-series encoder, or one needing Sentinel-1 bands) gets
    a not-applicable result with the reason, never a probe on wrong inputs. An S1+S2 group encoder is
    probed on its Sentinel-2 tokens only (Sentinel-1 missing at test time).
    """
    bands = data.normalization.bands
    empty = pd.DataFrame(columns=["encoder", "fold", "accuracy"])
    if cfg.tokenizer == "temporal":
        return Evaluation(empty, {}, "EuroSAT probe not applicable: the encoder reads time series of "
                                     f"{list(bands)}, EuroSAT has single-date Sentinel-2 images")
    missing = [b for b in bands if b not in data.eurosat["bands"]]
    eval_bands = tuple(b for b in bands if b not in missing)
    if missing and (cfg.tokenizer != "groups" or any(set(g) & set(missing) and not set(g) <= set(missing) for g in cfg.group_list)):
        return Evaluation(empty, {}, f"EuroSAT probe not applicable: EuroSAT lacks bands {missing} "
                                     "and they do not form whole token groups that could be left out")
    labels = data.eurosat["label"].numpy()
    features = {"pretrained": embed(run.encoder, data.normalization, data.eurosat, cfg.pool, where="EuroSAT")}
    if cfg.probe_baselines:  # the same for every run of one architecture: a sweep may compute them once
        torch.manual_seed(cfg.seed)  # the random-init encoder is the same draw for a given seed
        random_encoder = _build_task(cfg, bands).encoder.eval()
        features["random_init"] = embed(random_encoder, data.normalization, data.eurosat, cfg.pool, where="EuroSAT")
        features["band_stats"] = band_stats_features(data.eurosat, eval_bands)
    rows, diagnostics = [], {}
    for name, x in features.items():
        for fold, acc in enumerate(linear_probe(x, labels, cfg.probe_folds, cfg.probe_repeats, cfg.seed)):
            rows.append({"encoder": name, "fold": fold, "accuracy": acc})
        diagnostics[f"{name}_effective_rank"] = effective_rank(x)
        diagnostics[f"{name}_embedding_std"] = embedding_std(x)
        diagnostics[f"{name}_collapsed"] = float(is_collapsed(x))
    return Evaluation(pd.DataFrame(rows), diagnostics)


def benchmark(cfg: PretrainConfig, data: PreparedData, run: PretrainResult) -> pd.DataFrame | None:
    """The embedding benchmark (``eolab.evaluate.battery``) on the tasks ``cfg.benchmark`` names, for
    the encoder this run saved, next to its random-init twin and band statistics; None when no task
    is named. Writes ``benchmark.csv`` and ``benchmark.json`` into the run folder, so a sweep's every
    run can end with the same battery."""
    if not cfg.benchmark_list:
        return None
    from .evaluate.battery import evaluate as run_battery
    from .evaluate.leakage import tile_footprints

    # for the leakage check: where (and when) the pre-training windows lie
    footprints = tile_footprints(data.tiles, cfg.img_size) if data.tiles is not None else None
    return run_battery(run.checkpoint, tasks=cfg.benchmark_list, data_root=cfg.data_root or None,
                       output_dir=cfg.output_dir, name="pretrained",
                       pretraining={"pretrained": footprints} if footprints is not None else None)


def _cost(cfg: PretrainConfig, run: PretrainResult) -> dict[str, float]:
    """CPU hours of this process so far (training, evaluation, everything in the kernel) and GPU
    hours of training (devices x training time; 0 on a CPU run)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    gpus = 0
    if torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda"):
        gpus = torch.cuda.device_count() if cfg.devices in ("auto", "-1") else int(cfg.devices)
    return {"cpu_hours": (usage.ru_utime + usage.ru_stime) / 3600, "gpu_hours": gpus * run.train_time_s / 3600}


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_record(cfg: PretrainConfig, data: PreparedData, run: PretrainResult, evaluation: Evaluation,
                 started: float | None = None) -> dict:
    """Write ``record.json`` into the run folder and return it."""
    scores = evaluation.scores
    h = run.history
    first, last = ends(h, "loss")
    summary = scores.groupby("encoder")["accuracy"].agg(["mean", "std"])
    metrics = {f"{enc}_acc_{stat}": float(summary.loc[enc, stat]) for enc in summary.index for stat in ("mean", "std")}
    # Health, and the reconstruction error per band group or date where the objective reports it.
    tracked = ["embedding_std", "effective_rank", "knn_accuracy", *(c for c in h.columns if "recon_" in c)]
    health = {name.replace("/", "_"): ends(h, name) for name in tracked}
    metrics.update({
        "loss_first10pct": first, "loss_last10pct": last, "loss_fell": float(last < first),
        "train_steps": int(h["step"].max()), "train_time_s": run.train_time_s,
        "train_images_per_s": float(len(h) * cfg.batch_size * cfg.accumulate / run.train_time_s),  # a row per optimiser step
        **{f"final_{name}": v[1] for name, v in health.items() if v},
        **{k: float(v) for k, v in run.compute.items()},
        **run.validation,
        **_cost(cfg, run),
        **evaluation.diagnostics,
        **({f"sample_{k}": float(v) for k, v in data.sample.representativeness.items()} if data.sample else {}),
    })
    # Collapse while the loss falls is the silent failure of self-supervised runs: flag it.
    collapsed_batch = health["effective_rank"] is not None and health["effective_rank"][1] < 2.0
    metrics["collapsed"] = float(collapsed_batch or bool(evaluation.diagnostics.get("pretrained_collapsed", 0.0)))
    metrics["collapsed_while_loss_fell"] = float(metrics["collapsed"] and last < first)
    record = {
        "run_id": Path(cfg.output_dir).resolve().name,
        "task": cfg.objective,
        "evaluation": {"not_applicable": evaluation.not_applicable} if evaluation.not_applicable else {},
        # output_dir is where this record lies; keeping it out makes records relocatable
        # and a tracking URI is kept without its password
        "params": loggable_params(dataclasses.asdict(cfg)),
        "metrics": metrics,
        "folds": scores.to_dict(orient="records"),
        "seed": cfg.seed,
        "git_commit": _git_commit(),
        "wall_time_s": time.perf_counter() - started if started else run.train_time_s,
        "data": data.manifest,
        "normalization": data.normalization.to_dict(),
        "checkpoint": run.checkpoint.name,  # relative to the run folder, so results can move
        "benchmark": "benchmark.csv" if cfg.benchmark_list else None,
        "host": {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                 "world_size": torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"},
    }
    if data.sample is not None:
        data.sample.selection.write(Path(cfg.output_dir) / SAMPLE_FILE)
    write_json_atomic(Path(cfg.output_dir) / "record.json", record)
    log_final(run.loggers, metrics, step=metrics["train_steps"])
    if resolve_progress(cfg.progress) != "none":
        log_line(Path(cfg.output_dir) / RUN_LOG_NAME, "record written: record.json")
    return record


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds per encoder (for display)."""
    return scores.groupby("encoder")["accuracy"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)


