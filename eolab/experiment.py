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
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .checkpoint import save_encoder
from .data import eurosat
from .data.bands import S2_L2A
from .data.cache import PatchDataset, build_scene_cache
from .data.paths import REPO_ROOT, data_root
from .data.scenes import READERS
from .data.stats import Normalization, compute_normalization
from .evaluate import band_stats_features, embed, linear_probe
from .evaluate.diagnostics import effective_rank, embedding_std, is_collapsed
from .history import ends
from .io import write_json_atomic
from .models.vit import POOLS, SIZES, build_encoder, encoder_config
from .tasks.mae import MaskedAutoencoder
from .tasks.masking import MASKS
from .train import fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """The parameters of one pre-training run (the notebook's parameters cell, validated)."""

    data_root: str = ""
    sources: str = "major_tom,hydro,ssl4eo"
    bands: str = "B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12"
    n_pretrain: int = 0
    tile_stride: int = 32
    eurosat: str = "local"
    model_size: str = "vit_micro"
    patch_size: int = 8
    mask_ratio: float = 0.75
    mask: str = "random"
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 4
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    seed: int = 0
    pool: str = "mean_std"
    probe_folds: int = 5
    probe_repeats: int = 5
    accelerator: str = "auto"
    precision: str = "32-true"
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
        checks = [
            ("mask_ratio", 0.0 <= self.mask_ratio < 1.0, "in [0, 1)"),
            ("model_size", self.model_size in SIZES, f"one of {sorted(SIZES)}"),
            ("mask", self.mask in MASKS, f"one of {sorted(MASKS)}"),
            ("sources", all(s in READERS for s in self.source_list), f"comma-separated names from {sorted(READERS)}"),
            ("bands", bool(self.band_list) and all(b in S2_L2A for b in self.band_list),
             f"comma-separated Sentinel-2 L2A band names from {list(S2_L2A)}"),
            ("eurosat", self.eurosat in eurosat.DEFAULT_SPLITS, f"one of {sorted(eurosat.DEFAULT_SPLITS)}"),
            ("pool", self.pool in POOLS, f"one of {POOLS}"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("n_pretrain", self.n_pretrain >= 0, ">= 0 (0 = all patches)"),
            ("patch_size", 64 % self.patch_size == 0, "a divisor of the 64-pixel patch"),
            ("probe_folds", self.probe_folds >= 2, ">= 2"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"parameter {name!r} must be {what}, got {getattr(self, name)!r}")

    @property
    def source_list(self) -> tuple[str, ...]:
        return _names(self.sources)

    @property
    def band_list(self) -> tuple[str, ...]:
        return _names(self.bands)

    @classmethod
    def from_namespace(cls, namespace: dict) -> PretrainConfig:
        """Build from a notebook's globals: picks exactly the config's fields."""
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names of a notebook parameter, blanks dropped."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


@dataclass
class PreparedData:
    pretrain: PatchDataset
    normalization: Normalization
    eurosat: dict
    manifest: dict


def prepare_data(cfg: PretrainConfig) -> PreparedData:
    """Build (or reuse) the scene cache, choose pre-training patches, compute statistics, load EuroSAT.

    All inputs are opened here, before training, so a bad file fails in seconds, not after an hour.
    """
    root = data_root(cfg.data_root or None)
    labelled = eurosat.load(root, variant=cfg.eurosat)
    cache = build_scene_cache(root, cfg.source_list)
    tiles = cache.tiles(patch=64, stride=cfg.tile_stride)
    if cfg.n_pretrain:
        if cfg.n_pretrain > len(tiles):
            raise ValueError(f"parameter 'n_pretrain' = {cfg.n_pretrain} exceeds the {len(tiles)} available patches")
        tiles = tiles.sample(n=cfg.n_pretrain, random_state=cfg.seed).sort_index()
    dataset = PatchDataset(cache, tiles, bands=cfg.band_list)
    norm = compute_normalization(dataset, seed=cfg.seed, corpus=f"scene cache {cache.manifest['key']}, {len(dataset)} patches")
    ids = "\n".join(tiles["id"])
    manifest = {
        "cache_key": cache.manifest["key"], "sources": list(cfg.source_list), "n_patches": len(dataset),
        "patches_sha1": hashlib.sha1(ids.encode()).hexdigest(),
        "per_source": tiles.groupby("source").size().to_dict(), "n_labelled": int(len(labelled["label"])),
    }
    return PreparedData(dataset, norm, labelled, manifest)


@dataclass
class PretrainResult:
    encoder: torch.nn.Module
    history: pd.DataFrame
    train_time_s: float
    checkpoint: Path


def _build_task(cfg: PretrainConfig, bands: tuple[str, ...]) -> MaskedAutoencoder:
    encoder = build_encoder(cfg.model_size, bands, img_size=64, patch_size=cfg.patch_size)
    return MaskedAutoencoder(encoder, mask_ratio=cfg.mask_ratio, mask=cfg.mask, decoder_dim=cfg.decoder_dim,
                             decoder_depth=cfg.decoder_depth, decoder_heads=max(1, cfg.decoder_dim // 32),
                             norm_pix_loss=cfg.norm_pix_loss)


def pretrain(cfg: PretrainConfig, data: PreparedData) -> PretrainResult:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    task = _build_task(cfg, data.normalization.bands)
    t0 = time.perf_counter()
    history = fit(task, data.pretrain, data.normalization, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                  weight_decay=cfg.weight_decay, seed=cfg.seed, accelerator=cfg.accelerator,
                  precision=cfg.precision, history_path=out / "history.csv")
    train_time = time.perf_counter() - t0
    encoder = task.encoder.cpu().eval()
    ckpt = save_encoder(out / "encoder.pt", encoder,
                        encoder_config(cfg.model_size, data.normalization.bands, 64, cfg.patch_size), data.normalization)
    return PretrainResult(encoder, history, train_time, ckpt)


@dataclass
class Evaluation:
    scores: pd.DataFrame  # tidy: encoder, fold, accuracy
    diagnostics: dict[str, float]  # label-free health of each feature set: effective rank, std, collapse


def evaluate(cfg: PretrainConfig, data: PreparedData, run: PretrainResult) -> Evaluation:
    """Linear-probe accuracy per fold for the pre-trained encoder and both baselines, plus
    label-free diagnostics of each feature set (a collapsed encoder is flagged even if it probes well)."""
    labels = data.eurosat["label"].numpy()
    torch.manual_seed(cfg.seed)  # the random-init encoder is the same draw for a given seed
    random_encoder = _build_task(cfg, data.normalization.bands).encoder.eval()
    features = {
        "pretrained": embed(run.encoder, data.normalization, data.eurosat, cfg.pool, where="EuroSAT"),
        "random_init": embed(random_encoder, data.normalization, data.eurosat, cfg.pool, where="EuroSAT"),
        "band_stats": band_stats_features(data.eurosat, data.normalization.bands),
    }
    rows, diagnostics = [], {}
    for name, x in features.items():
        for fold, acc in enumerate(linear_probe(x, labels, cfg.probe_folds, cfg.probe_repeats, cfg.seed)):
            rows.append({"encoder": name, "fold": fold, "accuracy": acc})
        diagnostics[f"{name}_effective_rank"] = effective_rank(x)
        diagnostics[f"{name}_embedding_std"] = embedding_std(x)
        diagnostics[f"{name}_collapsed"] = float(is_collapsed(x))
    return Evaluation(pd.DataFrame(rows), diagnostics)


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
    metrics.update({
        "loss_first10pct": first, "loss_last10pct": last, "loss_fell": float(last < first),
        "train_steps": int(h["step"].max()), "train_time_s": run.train_time_s,
        "train_images_per_s": float(len(h) * cfg.batch_size / run.train_time_s),
        "final_embedding_std": ends(h, "embedding_std")[1],
        **evaluation.diagnostics,
    })
    record = {
        "run_id": Path(cfg.output_dir).resolve().name,
        "task": "mae",
        # output_dir is where this record lies; keeping it out makes records relocatable
        "params": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "output_dir"},
        "metrics": metrics,
        "folds": scores.to_dict(orient="records"),
        "seed": cfg.seed,
        "git_commit": _git_commit(),
        "wall_time_s": time.perf_counter() - started if started else run.train_time_s,
        "data": data.manifest,
        "normalization": data.normalization.to_dict(),
        "checkpoint": run.checkpoint.name,  # relative to the run folder, so results can move
        "host": {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"},
    }
    write_json_atomic(Path(cfg.output_dir) / "record.json", record)
    return record


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over folds per encoder (for display)."""
    return scores.groupby("encoder")["accuracy"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)


