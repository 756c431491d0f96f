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
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data.stats import Normalization

C_GRID = (0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def embed(encoder: nn.Module, normalization: Normalization, data: dict, pool: str = "mean",
          batch_size: int = 128, where: str = "evaluation data") -> np.ndarray:
    """Embeddings (N, D) of ``data['image']`` through a frozen encoder, with checked normalisation."""
    encoder.eval()
    device = next(encoder.parameters()).device
    x = normalization(data["image"], data["bands"], data["unit"], where=where)
    out = [encoder.embed(x[i : i + batch_size].to(device), pool=pool).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


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
    for train, test in outer.split(features, labels):
        model = fit_linear_probe(features[train], labels[train], seed)
        scores.append(float(model.score(features[test], labels[test])))
    return scores
