"""The balanced batch sampler: every batch mixes the scenes in proportion (or square-root
proportion) to their size for the whole epoch, without overlapping windows, and resumes exactly."""

import numpy as np
import pandas as pd
import pytest

from eolab.data.samplers import BalancedBatchSampler, SceneDiverseBatchSampler

PATCH, STRIDE = 64, 32


def _tiles(sides=(24, 12, 8, 6)) -> pd.DataFrame:
    """Scenes of side x side windows at stride 32 of 64-pixel patches (neighbours overlap by half):
    576, 144, 64 and 36 windows."""
    rows = [(f"scene{s}", r * STRIDE, c * STRIDE) for s, side in enumerate(sides) for r in range(side) for c in range(side)]
    return pd.DataFrame(rows, columns=["scene", "row", "col"])


def _counts(tiles, batches):
    scenes = sorted(set(tiles["scene"]))
    return np.array([[sum(tiles["scene"].iloc[i] == s for i in b) for s in scenes] for b in batches])


def _overlapping_pairs(tiles, batch):
    t = tiles.iloc[batch]
    pairs = 0
    for i in range(len(t)):
        for j in range(i + 1, len(t)):
            a, b = t.iloc[i], t.iloc[j]
            pairs += a.scene == b.scene and abs(a.row - b.row) < PATCH and abs(a.col - b.col) < PATCH
    return pairs


@pytest.mark.parametrize("weighting", ["proportional", "sqrt"])
def test_every_batch_has_each_scenes_share_and_no_overlaps(weighting):
    tiles = _tiles()
    sampler = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=3, weighting=weighting)
    batches = sampler.epoch_batches(0)
    assert len(batches) == len(tiles) // 32 and all(len(b) == 32 for b in batches)
    sizes = tiles["scene"].value_counts().sort_index().to_numpy().astype(float)
    weight = sizes if weighting == "proportional" else np.sqrt(sizes)
    share = 32 * weight / weight.sum()  # windows of each scene per batch
    counts = _counts(tiles, batches)
    # every batch, first to last: each scene's count is its share rounded down or up
    assert (np.abs(counts - share) < 1).all(), counts
    # and the running count never drifts more than one window from the running target
    drift = counts.cumsum(0) - np.arange(1, len(batches) + 1)[:, None] * share
    assert (np.abs(drift) <= 1 + 1e-9).all()
    assert sampler.overlap_fills == 0
    assert all(_overlapping_pairs(tiles, b) == 0 for b in batches)


def test_proportional_sees_every_window_once_per_epoch():
    tiles = _tiles()
    batches = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=0).epoch_batches(0)
    seen = [i for b in batches for i in b]
    # 820 windows, 25 batches of 32 = 800: each window at most once, up to 20 left for a later epoch
    assert len(set(seen)) == len(seen) == 800


def test_sqrt_repeats_small_scenes_and_samples_part_of_large_ones():
    tiles = _tiles()
    batches = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=0, weighting="sqrt").epoch_batches(0)
    per_scene = _counts(tiles, batches).sum(0)
    sizes = tiles["scene"].value_counts().sort_index().to_numpy()
    assert per_scene[0] < sizes[0] and per_scene[-1] > sizes[-1]


def test_the_old_round_robin_ends_epochs_on_the_largest_scene_and_balanced_does_not():
    """The failure the balanced sampler fixes: dealing round-robin, the last batches of an epoch
    come from the largest scene alone."""
    tiles = _tiles()
    largest = 0
    old = _counts(tiles, SceneDiverseBatchSampler(tiles, 32, patch=PATCH, seed=0).epoch_batches(0))
    new = _counts(tiles, BalancedBatchSampler(tiles, 32, patch=PATCH, seed=0).epoch_batches(0))
    assert old[-1, largest] == 32
    assert new[-1, largest] < 32 and (new[-1] > 0).all()


def test_deterministic_in_seed_and_epoch_and_resumes_exactly():
    tiles = _tiles()
    a = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=5)
    b = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=5)
    assert a.epoch_batches(1) == b.epoch_batches(1)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != BalancedBatchSampler(tiles, 32, patch=PATCH, seed=6).epoch_batches(0)
    whole = list(a)  # epoch 0
    assert whole == a.epoch_batches(0) and len(a) == len(whole)
    resumed = BalancedBatchSampler(tiles, 32, patch=PATCH, seed=5)
    resumed.set_epoch(0)
    resumed.skip(7)
    assert list(resumed) == whole[7:]
    assert list(resumed) == a.epoch_batches(1)  # the next epoch in full


def test_a_scene_too_small_for_its_share_is_counted_not_hidden():
    # two windows, but a square-root share of three per batch: repeats are unavoidable and counted
    tiles = pd.DataFrame([("big", 0, c * STRIDE) for c in range(40)] + [("tiny", 0, c * STRIDE) for c in range(2)],
                         columns=["scene", "row", "col"])
    sampler = BalancedBatchSampler(tiles, 16, patch=PATCH, seed=0, weighting="sqrt")
    batches = sampler.epoch_batches(0)
    assert all(len(b) == 16 for b in batches) and sampler.overlap_fills > 0


def test_bad_input_is_named():
    tiles = _tiles()
    with pytest.raises(ValueError, match="weighting"):
        BalancedBatchSampler(tiles, 32, weighting="log")
    with pytest.raises(ValueError, match=r"\['col'\]"):
        BalancedBatchSampler(tiles.drop(columns="col"), 32)
    with pytest.raises(ValueError, match="batch_size 9999"):
        BalancedBatchSampler(tiles, 9999)


def test_config_makes_balanced_sampling_the_default():
    from eolab.config import ParameterError, PretrainConfig

    assert PretrainConfig(batch_sampling="balanced_sqrt").batch_sampling == "balanced_sqrt"
    assert PretrainConfig().batch_sampling == "balanced"  # measured in results/sampler_seeds
    # the default must not make a dataset without scene tiles invalid: those are shuffled
    assert PretrainConfig(dataset="slovenia", tokenizer="temporal", bands="NDVI").batch_sampling == "balanced"
    with pytest.raises(ParameterError, match="batch_sampling"):
        PretrainConfig(batch_sampling="square")
