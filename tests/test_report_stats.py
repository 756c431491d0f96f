"""Comparisons between ablation arms: paired by seed and fold, bootstrap intervals, seed noise."""

import numpy as np
import pandas as pd

from eolab.reports.runs import AblationResults, bootstrap_ci, compare_arms


def _results(effect, seed_shift):
    """Two arms (a, b) x three seeds x 10 folds; b = a + effect; each seed moves both arms alike."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        fold_noise = rng.normal(0, 0.05, 10)  # shared by both arms: which patches a fold tests
        for arm, shift in (("a", 0.0), ("b", effect)):
            for fold in range(10):
                acc = 0.7 + shift + seed_shift * seed + fold_noise[fold] + rng.normal(0, 0.002)
                rows.append({"run_id": f"{arm}-{seed}", "arm": arm, "seed": seed, "encoder": "pretrained",
                             "fold": fold, "accuracy": acc})
    table = pd.DataFrame(rows)
    return AblationResults(results_dir=None, spec={"grid": {"arm": ["a", "b"]}}, table=table,
                           runs=pd.DataFrame(), histories=pd.DataFrame())


def test_bootstrap_interval_covers_the_mean():
    values = np.random.default_rng(1).normal(0.3, 0.1, 200)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi and hi - lo < 0.05
    assert np.isnan(bootstrap_ci(np.array([1.0]))[0])


def test_pairing_by_fold_sees_a_small_effect_through_fold_noise():
    out = compare_arms(_results(effect=0.02, seed_shift=0.0), reference="a-0")
    assert len(out) == 3 and set(out["versus"]) == {"a-0", "a-1", "a-2"}  # each b paired with a of its seed
    assert np.allclose(out["difference"], 0.02, atol=0.003)
    assert out["interval_excludes_0"].all()  # fold noise (0.05) cancels in the paired difference


def test_seed_noise_decides_whether_a_difference_is_real():
    small = compare_arms(_results(effect=0.01, seed_shift=0.03), reference="a-0")
    assert (small["seed_sd"] > 0.02).all() and not small["exceeds_seed_noise"].any()
    large = compare_arms(_results(effect=0.2, seed_shift=0.03), reference="a-0")
    assert large["exceeds_seed_noise"].all()


def test_one_seed_per_arm_gives_no_seed_noise_and_no_warning():
    import warnings

    one_seed = _results(effect=0.02, seed_shift=0.0)
    one_seed.table = one_seed.table[one_seed.table["seed"] == 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's All-NaN RuntimeWarning used to reach the summary pages
        out = compare_arms(one_seed, reference="a-0")
    assert len(out) == 1 and np.isnan(out["seed_sd"].iloc[0]) and out["exceeds_seed_noise"].iloc[0] is None
