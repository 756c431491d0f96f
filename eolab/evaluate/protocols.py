"""Probe protocols beyond the random-split linear probe: spatial blocking, k-NN, few-shot.

Neighbouring EO patches share land cover, illumination and acquisition, so a random split puts
near-duplicates of test patches into training and flatters every encoder (spatial autocorrelation).
A spatially blocked split keeps whole grid cells of longitude/latitude out of training; the gap
between the two is a measure of how much a score relies on having seen the place.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .probe import fit_linear_probe


def spatial_blocks(lonlat: np.ndarray, cell_deg: float = 2.0) -> np.ndarray:
    """Group id per sample: the ``cell_deg`` x ``cell_deg`` degree cell of its centre."""
    cells = np.floor(np.asarray(lonlat) / cell_deg).astype(np.int64)  # (N, 2)
    _, groups = np.unique(cells, axis=0, return_inverse=True)
    return groups.ravel()


def spatial_block_probe(
    features: np.ndarray, labels: np.ndarray, lonlat: np.ndarray, folds: int = 5, repeats: int = 5,
    cell_deg: float = 2.0, seed: int = 0,
) -> list[float]:
    """Linear-probe accuracy per fold with whole spatial cells held out (no cell in train and test)."""
    groups = spatial_blocks(lonlat, cell_deg)
    scores = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for train, test in splitter.split(features, labels, groups):
            assert not set(groups[train]) & set(groups[test])  # the property the protocol exists for
            model = fit_linear_probe(features[train], labels[train], seed)
            scores.append(float(model.score(features[test], labels[test])))
    return scores


def knn_probe(features: np.ndarray, labels: np.ndarray, splits, k: int = 5) -> list[float]:
    """k-nearest-neighbour accuracy (cosine on standardised features) on the given (train, test) splits."""
    scores = []
    for train, test in splits:
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(k, metric="cosine"))
        model.fit(features[train], labels[train])
        scores.append(float(model.score(features[test], labels[test])))
    return scores


def few_shot_probe(
    features: np.ndarray, labels: np.ndarray, shots: int, draws: int = 10, seed: int = 0
) -> list[float]:
    """Accuracy with ``shots`` labelled examples per class (repeated random draws), tested on the rest.

    Regularisation cannot be cross-validated on one or two examples per class, so a fixed, fairly
    strong C is used for every feature set alike.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    scores = []
    for _ in range(draws):
        train = np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in classes])
        test = np.setdiff1d(np.arange(len(labels)), train)
        model = fit_linear_probe(features[train], labels[train], seed, c_grid=None)
        scores.append(float(model.score(features[test], labels[test])))
    return scores
