"""Encoder checkpoints that carry their normalisation provenance, loaded without unpickling.

A checkpoint is a plain dict of tensors, strings and numbers: the encoder config (to rebuild it),
its weights, and the ``Normalization`` (unit, band order, per-band statistics) it was trained with.
``torch.load(weights_only=True)`` refuses arbitrary pickled objects, so a checkpoint from elsewhere
cannot execute code on load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data.stats import Normalization
from .models.vit import ViTEncoder, build_encoder

FORMAT = "eolab-encoder-v1"


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, truncated, or not an eolab encoder checkpoint."""


def save_encoder(path: str | Path, encoder: ViTEncoder, config: dict, normalization: Normalization) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": config, "normalization": normalization.to_dict(),
                "state_dict": encoder.state_dict()}, tmp)
    tmp.replace(path)  # atomic: a killed save never leaves a half-written checkpoint behind
    return path


def load_encoder(path: str | Path, map_location: str = "cpu") -> tuple[ViTEncoder, Normalization, dict]:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an eolab encoder checkpoint (expected format {FORMAT!r})")
    cfg = ckpt["config"]
    try:
        encoder = build_encoder(cfg["size"], tuple(cfg["bands"]), cfg["img_size"], cfg["patch_size"],
                                cfg.get("tokenizer", "patch"), tuple(tuple(g) for g in cfg.get("groups", ())),
                                cfg.get("num_dates", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its encoder config {cfg} cannot be rebuilt: {exc}") from exc
    try:
        encoder.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the config {cfg}: {exc}") from exc
    return encoder, Normalization.from_dict(ckpt["normalization"]), cfg
