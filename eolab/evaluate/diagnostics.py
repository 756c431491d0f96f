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
