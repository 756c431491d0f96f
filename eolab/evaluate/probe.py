"""Frozen-embedding evaluation: features, baselines and a cross-validated linear probe.

Protocol: repeated stratified k-fold over all labelled patches; in each outer fold a logistic
regression on standardised features, its inverse regularisation C chosen by an inner stratified
3-fold search on the training part only (a fixed C favours whichever feature set it happens to suit).
Every feature set (pre-trained encoder, random-init encoder, band statistics) goes through the same
folds, so per-fold differences are paired.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from ..data.cache import PatchDataset, SceneCache
from ..data.stats import Normalization

C_GRID = (0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def embed(encoder: nn.Module, normalization: Normalization, data: dict, pool: str = "mean",
          batch_size: int = 128, where: str = "evaluation data", block: int = -1, size: int | None = None,
          cells: int = 0) -> np.ndarray:
    """Embeddings (N, D) of ``data['image']`` through a frozen encoder, with checked normalisation.

    When the data lack some of the encoder's bands and those bands form whole token groups (e.g. the
    Sentinel-1 group of an S1+S2 encoder on Sentinel-2-only data), the encoder embeds the other
    groups' tokens only: a modality missing at test time, handled explicitly rather than zero-filled
    into tokens it would read.

    ``block`` picks the block whose tokens are pooled (default: the last, after the final norm);
    ``pool="tokens"`` returns the patch tokens (N, K, D) unpooled (for dense probes). A time-series
    encoder gets ``data['doy']`` (N, T). ``size`` broadcasts images of 1 x 1 px (a pixel's spectrum)
    to constant ``size`` x ``size`` images, one chunk at a time (so N images are never expanded at once);
    with ``cells`` > 0 only the central ``cells`` x ``cells`` patches of each group (or date) are
    encoded: every patch of a constant image carries the same content, so the other positions add
    cost, not information (the encoder reads a subset of tokens as it does under MAE masking).
    """
    encoder.eval()
    device = next(encoder.parameters()).device
    x, keep = _inputs(encoder, normalization, data, where)
    if cells:
        keep = _central_cells(encoder.tokenizer, keep, cells)
    doy = data.get("doy")
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size].to(device)
        if size is not None:
            chunk = chunk.expand(*chunk.shape[:-2], size, size)  # (B, [T,] C, 1, 1) -> (B, [T,] C, size, size)
        k = None if keep is None else keep.to(device).expand(len(chunk), -1)
        context = {} if doy is None else {"doy": torch.as_tensor(doy[i : i + batch_size]).to(device)}
        if pool == "tokens":
            out.append(encoder.tokens(chunk, keep=k, block=block, **context)[:, 1:].float().cpu())  # (B, K, D)
        else:
            out.append(encoder.embed(chunk, pool=pool, keep=k, block=block, **context).float().cpu())
    return torch.cat(out).numpy()


def _central_cells(tok: nn.Module, keep: torch.Tensor | None, cells: int) -> torch.Tensor:
    """The token indices of ``keep`` (None: all) that lie in the central ``cells`` x ``cells`` block
    of the spatial grid, in every group (tokens are group-major: index = group * grid**2 + cell)."""
    grid = tok.grid
    lo = (grid - cells) // 2
    rows = torch.arange(lo, lo + cells)
    central = (rows[:, None] * grid + rows[None, :]).flatten()  # (cells**2,) cell indices
    base = torch.arange(tok.num_tokens)[None] if keep is None else keep  # (1, K)
    return base[:, torch.isin(base[0] % grid**2, central)]


def _inputs(encoder: nn.Module, normalization: Normalization, data: dict, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised inputs for ``encoder`` and the token indices to keep (None: all)."""
    absent = [b for b in normalization.bands if b not in data["bands"]]
    tok = encoder.tokenizer
    groups = getattr(tok, "group_bands", ())
    if not absent or not groups or any(set(g) & set(absent) and not set(g) <= set(absent) for g in groups):
        return normalization(data["image"], data["bands"], data["unit"], where=where), None  # raises on absent bands
    present = tuple(b for b in normalization.bands if b not in absent)
    # A multi-modal normalisation's unit names its parts ("reflectance+dB"); the data may carry one.
    unit = data["unit"] if data["unit"] in normalization.unit.split("+") else normalization.unit
    part = Normalization(present, unit, normalization.mean, normalization.std, normalization.corpus)
    x_present = part(data["image"], data["bands"], data["unit"], where=where)  # (N, C_present, H, W)
    x = x_present.new_zeros(x_present.shape[0], len(normalization.bands), *x_present.shape[2:])
    x[:, [normalization.bands.index(b) for b in present]] = x_present  # absent channels: never read
    cells = tok.grid**2
    kept_groups = [i for i, g in enumerate(groups) if not set(g) & set(absent)]
    keep = torch.cat([torch.arange(i * cells, (i + 1) * cells) for i in kept_groups])[None]  # (1, K)
    return x, keep


def band_stats_features(data: dict, bands: tuple[str, ...]) -> np.ndarray:
    """Per-band mean and standard deviation of each image (2 x len(bands) features): the baseline
    that any learned embedding has to beat, restricted to the encoder's bands for a fair comparison."""
    idx = [list(data["bands"]).index(b) for b in bands]
    x = data["image"][:, idx].flatten(2)  # (N, C, H*W)
    return torch.cat([x.mean(-1), x.std(-1)], dim=1).numpy()


def fit_linear_probe(x: np.ndarray, y: np.ndarray, seed: int = 0, c_grid: tuple[float, ...] | None = C_GRID):
    """Standardise, then logistic regression; C chosen by inner stratified 3-fold CV on (x, y) only,
    or fixed at 0.1 when ``c_grid`` is None (too few samples per class to cross-validate)."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, tol=1e-3, C=0.1))
    model = pipe if c_grid is None else GridSearchCV(
        pipe, {"logisticregression__C": c_grid}, cv=StratifiedKFold(3, shuffle=True, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def linear_probe(features: np.ndarray, labels: np.ndarray, folds: int = 5, repeats: int = 5, seed: int = 0) -> list[float]:
    """Accuracy of each outer fold (folds x repeats values) of a nested-CV logistic-regression probe."""
    labels = np.asarray(labels)
    outer = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    scores = []
    # Small matrices: one BLAS thread is faster than several, and far faster on shared cores.
    with threadpool_limits(1, user_api="blas"):
        for train, test in outer.split(features, labels):
            model = fit_linear_probe(features[train], labels[train], seed)
            scores.append(float(model.score(features[test], labels[test])))
    return scores


def encoder_features(encoder, normalization, cache: SceneCache, tiles: pd.DataFrame, patch: int,
                     chunk: int = 2048, batch_size: int = 128) -> np.ndarray:
    """Embeddings (n, D) of every pool window through a frozen encoder, for ``select(..., features=)``.

    Windows are read and embedded ``chunk`` at a time (``embed`` on a stacked chunk), so memory stays at one chunk of images whatever the pool size. Cost is one forward pass
    per window: minutes on CPU for a 100k pool, against seconds for the spectral statistics.
    """
    ds = PatchDataset(cache, tiles, patch=patch, bands=tuple(b for b in normalization.bands if b in cache.bands))
    out = []
    for s in range(0, len(ds), chunk):
        images = torch.stack([ds[i]["image"] for i in range(s, min(s + chunk, len(ds)))])  # (chunk, C, H, W)
        data = {"image": images, "bands": ds.bands, "unit": "reflectance"}
        out.append(embed(encoder, normalization, data, batch_size=batch_size, where="sampling pool"))
    return np.concatenate(out).astype(np.float32)
