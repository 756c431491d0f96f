"""One pre-training run, end to end: the one definition of a run's steps that the notebook,
``python -m eolab launch`` and every sweep (through the notebook) execute.

    run = Pipeline(PretrainConfig(mask_ratio=0.75, ...))   # parameters validated before any work
    run.prepare()               # scene cache, patch index, statistics, EuroSAT
    run.pretrain()              # trains the proxy task, saves the encoder
    run.evaluate()              # linear probe: pre-trained / random init / band stats
    run.embedding_benchmark()   # the benchmark's downstream tasks, when `benchmark` names any
    run.record()                # record.json
    # or all of them in order: run.run_all()

The notebook has one cell per step of ``STEPS`` (it is generated from them, and a test checks it),
so a notebook run and a launched run cannot drift apart. Each step is also a plain function
(``prepare_data``, ``pretrain``, ``evaluate``, ``embedding_benchmark``, ``write_record``).

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
from .config import PretrainConfig
from .data import eurosat
from .data.cache import PatchDataset, build_scene_cache
from .data.downstream import get_task
from .data.pairs import S1_BANDS
from .data.paths import data_root
from .data.pretraining import Sample, pretraining_set
from .data.samplers import BalancedBatchSampler, SceneDiverseBatchSampler
from .data.schema import collate
from .data.stats import Normalization, compute_normalization
from .data.stream import PackedDataset
from .evaluate import band_stats_features, embed, linear_probe
from .evaluate.battery import evaluate as run_battery
from .evaluate.diagnostics import effective_rank, embedding_std, is_collapsed
from .evaluate.leakage import tile_footprints
from .history import ends
from .io import write_json_atomic
from .models.vit import build_encoder, encoder_config
from .progress import RUN_LOG_NAME, log_line, resolve_progress
from .provenance import git_commit
from .run_folder import BENCHMARK_NAME, HISTORY_NAME, RECORD_NAME, SAMPLE_NAME
from .tasks import build_task, parse_objective
from .tracking import log_final, log_params, loggable_params, make_loggers
from .train import KnnProbe, fit

log = logging.getLogger(__name__)


SAMPLE_FILE = SAMPLE_NAME
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


def prepare_data(cfg: PretrainConfig) -> PreparedData:
    """Build (or reuse) the scene cache, choose pre-training patches, compute statistics, load EuroSAT.

    All inputs are opened here, before training, so a bad file fails in seconds, not after an hour.
    """
    root = data_root(cfg.data_root or None)
    labelled = eurosat.load(root, variant=cfg.eurosat)  # its pixels are checked as it is read
    for name in cfg.benchmark_list:  # a bad benchmark input fails now, named, not after training
        if name != "eurosat":  # the same files as `labelled`, just checked
            get_task(name).load(root)
    chosen = pretraining_set(cfg, root)
    dataset, tiles, ids, sources, sample = chosen.dataset, chosen.tiles, chosen.ids, chosen.sources, chosen.sample
    if isinstance(dataset, PackedDataset):  # the packer's exact statistics over every pixel, not a random subset
        norm = Normalization(dataset.bands, dataset.unit, *dataset.normalization_stats(),
                             f"{cfg.dataset}, {len(dataset)} samples (packed statistics)")
    else:
        norm = compute_normalization(dataset, seed=cfg.seed, corpus=f"{cfg.dataset} pre-training set, {len(dataset)} samples")
    manifest = {
        "dataset": cfg.dataset, "sources": sorted(set(sources)), "n_patches": len(dataset),
        "patches_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest(),
        "per_source": pd.Series(sources).value_counts().to_dict(), "n_labelled": len(labelled["label"]),
    }
    if isinstance(dataset, PackedDataset):  # which corpus: its location and the hash of its shards' hashes
        manifest["packed"] = dataset.corpus.provenance()
    if tiles is not None:
        manifest["cache_key"] = dataset.cache.manifest["key"]
        manifest["masked_pixels"] = dataset.cache.manifest.get("masked_pixels", 0)  # bad pixels made no-data
    if sample is not None:
        manifest["sample"] = {**sample.selection.manifest, "file": SAMPLE_FILE}
    validation = None
    if cfg.val_sources:
        cache = build_scene_cache(root, cfg.val_source_list)
        val_tiles = cache.tiles(patch=cfg.img_size, stride=cfg.tile_stride, bands=cfg.band_list)
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
    # how training came about when it did not run in one go: the checkpoint it resumed from, its
    # step, the earlier attempts' training seconds, checkpoints set aside as unloadable ({} otherwise)
    resume: dict = dataclasses.field(default_factory=dict)
    loggers: list = dataclasses.field(default_factory=list)  # Lightning loggers (``logger``), closed by write_record


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
    spec = cfg.encoder_spec(bands)
    encoder = build_encoder(spec.pop("size"), **spec)
    return build_task(cfg.objective, encoder, cfg.task_params(views=_cross_views(cfg)))


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
    knn = _knn_probe(cfg, data)
    progress = resolve_progress(cfg.progress)
    run_log = out / RUN_LOG_NAME if progress != "none" else None
    sampler = None
    if data.tiles is None:
        # series, pairs and packed corpora carry no scene/window index to balance or deal by
        if cfg.batch_sampling != "shuffle":
            log_line(run_log, f"batch_sampling {cfg.batch_sampling!r}: dataset {cfg.dataset!r} has no scene/window "
                              "index, so batches are shuffled")
    elif cfg.batch_sampling == "diverse":
        sampler = SceneDiverseBatchSampler(data.tiles, cfg.batch_size, patch=cfg.img_size, seed=cfg.seed)
    elif cfg.batch_sampling.startswith("balanced"):
        sampler = BalancedBatchSampler(data.tiles, cfg.batch_size, patch=cfg.img_size, seed=cfg.seed,
                                       weighting="sqrt" if cfg.batch_sampling == "balanced_sqrt" else "proportional")
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
                  checkpoint_every=cfg.checkpoint_every or 1, history_path=out / HISTORY_NAME,
                  compile=cfg.torch_compile and cfg.compile_scope, progress=progress, log_path=run_log, loggers=loggers)
    resume = dict(history.attrs.get("resume", {}))
    # training time over all attempts: this one, plus the earlier ones up to the checkpoint resumed from
    train_time = time.perf_counter() - t0 + resume.get("train_time_before_resume_s", 0.0)
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
    spec = cfg.encoder_spec(data.normalization.bands)
    ckpt = out / "encoder.pt"
    if rank0:
        save_encoder(ckpt, encoder, encoder_config(spec.pop("size"), **spec), data.normalization)
    log_line(run_log, f"encoder saved: {ckpt.name}; evaluating")
    return PretrainResult(encoder, history, train_time, ckpt, compute, validation, resume, loggers)


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


def embedding_benchmark(cfg: PretrainConfig, data: PreparedData, run: PretrainResult) -> pd.DataFrame | None:
    """The embedding benchmark (``eolab.evaluate.battery``) on the tasks ``cfg.benchmark`` names, for
    the encoder this run saved, next to its random-init twin and band statistics; None when no task
    is named. Writes ``benchmark.csv`` and ``benchmark.json`` into the run folder, so a sweep's every
    run can end with the same battery."""
    if not cfg.benchmark_list:
        return None
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


def loss_metrics(history: pd.DataFrame) -> dict[str, float]:
    """The loss's mean over the first and the last 10 % of steps and whether it fell (1.0 / 0.0). A
    run of a single optimiser step has no trend: its ends are that step's loss and "fell" is NaN
    (undecided), so the record is still written."""
    trend = ends(history, "loss")
    if trend is None:
        only = float(history["loss"].dropna().iloc[-1]) if "loss" in history and history["loss"].notna().any() else float("nan")
        return {"loss_first10pct": only, "loss_last10pct": only, "loss_fell": float("nan")}
    first, last = trend
    return {"loss_first10pct": first, "loss_last10pct": last, "loss_fell": float(last < first)}


def write_record(cfg: PretrainConfig, data: PreparedData, run: PretrainResult, evaluation: Evaluation,
                 started: float | None = None, benchmark: pd.DataFrame | None = None) -> dict:
    """Write ``record.json`` into the run folder and return it. ``benchmark`` is the embedding
    benchmark's table when that step ran: the record names ``benchmark.csv`` only when the step
    wrote it."""
    scores = evaluation.scores
    h = run.history
    loss = loss_metrics(h)
    summary = scores.groupby("encoder")["accuracy"].agg(["mean", "std"])
    metrics = {f"{enc}_acc_{stat}": float(summary.loc[enc, stat]) for enc in summary.index for stat in ("mean", "std")}
    # Health, and the reconstruction error per band group or date where the objective reports it.
    tracked = ["embedding_std", "effective_rank", "knn_accuracy", *(c for c in h.columns if "recon_" in c)]
    health = {name.replace("/", "_"): ends(h, name) for name in tracked}
    metrics.update({
        **loss,
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
    metrics["collapsed_while_loss_fell"] = float(metrics["collapsed"] and loss["loss_fell"] == 1.0)
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
        "git_commit": git_commit(),
        # a resumed run counts the earlier attempts' training up to the checkpoint it resumed from
        "wall_time_s": (time.perf_counter() - started + run.resume.get("train_time_before_resume_s", 0.0)
                        if started else run.train_time_s),
        "data": data.manifest,
        "normalization": data.normalization.to_dict(),
        "checkpoint": run.checkpoint.name,  # relative to the run folder, so results can move
        # resumed from a training checkpoint, or checkpoints set aside as unloadable: said, with names
        "resume": run.resume or None,
        # named only when the embedding benchmark step wrote it (given here, or found in the run folder)
        "benchmark": BENCHMARK_NAME if benchmark is not None or (
            cfg.benchmark_list and (Path(cfg.output_dir) / BENCHMARK_NAME).is_file()) else None,
        "host": {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                 "world_size": torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"},
    }
    if data.sample is not None:
        data.sample.selection.write(Path(cfg.output_dir) / SAMPLE_FILE)
    write_json_atomic(Path(cfg.output_dir) / RECORD_NAME, record)
    log_final(run.loggers, metrics, step=metrics["train_steps"])
    if resolve_progress(cfg.progress) != "none":
        log_line(Path(cfg.output_dir) / RUN_LOG_NAME, f"record written: {RECORD_NAME}")
    return record


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds per encoder (for display)."""
    return scores.groupby("encoder")["accuracy"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)


STEPS = ("prepare", "pretrain", "evaluate", "embedding_benchmark", "record")
"""A run's steps, in order. Under srun, every rank runs the training steps; the rest are rank 0's."""
TRAINING_STEPS = ("prepare", "pretrain")


class Pipeline:
    """One run: its config, the steps of ``STEPS`` as methods (each returns what a notebook cell
    shows), and what each step produced, for the next step and for the notebook's plots."""

    def __init__(self, cfg: PretrainConfig, callbacks: list | tuple = (), started: float | None = None):
        self.cfg = cfg
        self.callbacks = list(callbacks)  # Lightning callbacks, e.g. an Optuna trial's reporter
        self.started = time.perf_counter() if started is None else started
        self.data: PreparedData | None = None
        self.result: PretrainResult | None = None
        self.evaluation: Evaluation | None = None
        self.benchmark_table: pd.DataFrame | None = None
        self.record_dict: dict | None = None

    @classmethod
    def from_namespace(cls, namespace: dict, callbacks: list | tuple = ()) -> Pipeline:
        """The run a notebook's parameters (its globals) describe; every parameter is validated here."""
        return cls(PretrainConfig.from_namespace(namespace), callbacks)

    def prepare(self) -> dict:
        self.data = prepare_data(self.cfg)
        return self.data.manifest

    def pretrain(self) -> dict:
        self.result = pretrain(self.cfg, self._need(self.data, "prepare"), callbacks=self.callbacks)
        return self.result.compute

    def evaluate(self) -> Evaluation:
        self.evaluation = evaluate(self.cfg, self._need(self.data, "prepare"), self._need(self.result, "pretrain"))
        return self.evaluation

    def embedding_benchmark(self) -> pd.DataFrame | None:
        """None unless ``benchmark`` names downstream tasks."""
        self.benchmark_table = embedding_benchmark(self.cfg, self._need(self.data, "prepare"),
                                                   self._need(self.result, "pretrain"))
        return self.benchmark_table

    def record(self) -> dict:
        self.record_dict = write_record(self.cfg, self._need(self.data, "prepare"), self._need(self.result, "pretrain"),
                                        self._need(self.evaluation, "evaluate"), self.started, self.benchmark_table)
        return self.record_dict

    def run_all(self, steps: tuple[str, ...] = STEPS) -> dict | None:
        """Every step in order (or the given ones); the record when the record step ran."""
        for step in steps:
            getattr(self, step)()
        return self.record_dict

    @staticmethod
    def _need(value, step: str):
        if value is None:
            raise RuntimeError(f"step {step!r} has not run yet; the steps are {STEPS}, in that order")
        return value

