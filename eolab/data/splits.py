"""Groups for blocked splits: samples in one group are held out together."""

from __future__ import annotations

import numpy as np


def spatial_blocks(lonlat: np.ndarray, cell_deg: float = 2.0) -> np.ndarray:
    """Group id per sample: the ``cell_deg`` x ``cell_deg`` degree cell of its centre."""
    cells = np.floor(np.asarray(lonlat) / cell_deg).astype(np.int64)  # (N, 2)
    _, groups = np.unique(cells, axis=0, return_inverse=True)
    return groups.ravel()
