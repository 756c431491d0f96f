import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from eolab.evaluate.probe import linear_probe
from eolab.evaluate.protocols import (
    few_shot_probe,
    knn_probe,
    spatial_block_probe,
    spatial_blocks,
)


@pytest.fixture
def clustered():
    """Two classes at 20 places; features = class signal + a per-place offset."""
    rng = np.random.default_rng(0)
    lonlat = np.repeat(rng.uniform(0, 40, size=(20, 2)), 6, axis=0)  # 20 places x 6 samples
    labels = np.repeat(np.arange(20) % 2, 6)
    place = np.repeat(rng.normal(size=(20, 4)), 6, axis=0)
    x = np.c_[labels[:, None] * 1.0 + rng.normal(scale=0.5, size=(120, 1)), place]
    return x, labels, lonlat


def test_spatial_blocks_group_by_cell():
    groups = spatial_blocks(np.array([[0.1, 0.1], [0.9, 1.9], [2.1, 0.1], [0.5, 0.5]]), cell_deg=2.0)
    assert groups[0] == groups[1] == groups[3] != groups[2]


def test_spatial_blocking_exposes_place_memorisation():
    """Features that only identify the place (labels constant per place, unrelated to the features
    across places): a random split rewards memorising places, the blocked split does not."""
    rng = np.random.default_rng(0)
    n_places, per_place = 24, 6
    lonlat = np.repeat(rng.uniform(0, 40, size=(n_places, 2)), per_place, axis=0)
    labels = np.repeat(rng.permutation(np.arange(n_places) % 2), per_place)
    x = np.repeat(rng.normal(size=(n_places, 32)), per_place, axis=0) + rng.normal(scale=0.05, size=(144, 32))
    random_split = linear_probe(x, labels, folds=4, repeats=1)
    blocked = spatial_block_probe(x, labels, lonlat, folds=4, repeats=2, cell_deg=0.01)
    assert len(blocked) == 8 and all(0 <= s <= 1 for s in blocked)
    assert np.mean(random_split) > 0.9 and np.mean(blocked) < 0.75


def test_knn_and_few_shot_run_on_the_same_features(clustered):
    x, y, _ = clustered
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(x, y))
    assert len(knn_probe(x, y, splits)) == 3
    few = few_shot_probe(x, y, shots=5, draws=4)
    assert len(few) == 4 and np.mean(few) > 0.6
