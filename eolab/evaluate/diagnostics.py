"""Label-free health checks of embeddings.

A proxy task can drive its loss down while the encoder collapses to (nearly) constant embeddings;
a linear probe on a tiny labelled set may not show it clearly. These numbers do, without labels.
"""

from __future__ import annotations

import numpy as np


def effective_rank(features: np.ndarray, eps: float = 1e-12) -> float:
    """RankMe (Garrido et al., 2023): exp of the entropy of the normalised singular values of the
    centred (N, D) embedding matrix. 1 for collapsed embeddings, up to min(N, D) for isotropic ones."""
    x = features - features.mean(0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / (s.sum() + eps) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_std(features: np.ndarray) -> float:
    """Mean over dimensions of the per-dimension standard deviation across samples."""
    return float(features.std(0).mean())


def is_collapsed(features: np.ndarray, min_rank: float = 2.0, min_std: float = 1e-4) -> bool:
    """Collapsed: a handful of directions at most, or (nearly) constant embeddings."""
    return effective_rank(features) < min_rank or embedding_std(features) < min_std


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(view1: np.ndarray, view2: np.ndarray, alpha: float = 2.0) -> float:
    """Alignment (Wang & Isola, 2020): mean ||f(x) - f(x')||^alpha of the L2-normalised embeddings of
    two augmented views of the same samples (row i of each). 0 when views embed identically; lower
    is better, but only together with uniformity (a constant encoder is perfectly aligned)."""
    return float((np.linalg.norm(_unit(view1) - _unit(view2), axis=1) ** alpha).mean())


def uniformity(features: np.ndarray, t: float = 2.0) -> float:
    """Uniformity (Wang & Isola, 2020): log of the mean Gaussian potential exp(-t ||f(x) - f(y)||^2)
    over all pairs of L2-normalised embeddings. 0 for collapsed embeddings, more negative when they
    spread over the sphere."""
    z = _unit(features)
    sq = np.clip(2 - 2 * z @ z.T, 0, None)  # squared distances of unit vectors, (N, N)
    pairs = np.triu_indices(len(z), k=1)
    return float(np.log(np.exp(-t * sq[pairs]).mean()))


def knn_consistency(view1: np.ndarray, view2: np.ndarray, k: int = 10) -> float:
    """Mean fraction of a sample's k nearest neighbours (cosine, itself excluded) that are the same
    in two augmented views: 1 when the neighbourhood structure ignores the augmentation, about k/N
    when the two views' neighbourhoods are unrelated."""
    def neighbours(x: np.ndarray) -> np.ndarray:
        z = _unit(x)
        sim = z @ z.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1)[:, :k]  # (N, k)

    a, b = neighbours(view1), neighbours(view2)
    return float(np.mean([len(set(ra) & set(rb)) / k for ra, rb in zip(a, b, strict=True)]))
