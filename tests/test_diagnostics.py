import numpy as np

from eolab.evaluate.diagnostics import effective_rank, embedding_std, is_collapsed


def test_effective_rank_separates_isotropic_from_collapsed():
    rng = np.random.default_rng(0)
    isotropic = rng.normal(size=(500, 16))
    one_direction = rng.normal(size=(500, 1)) * rng.normal(size=(1, 16))
    assert effective_rank(isotropic) > 14
    assert effective_rank(one_direction) < 1.5
    assert is_collapsed(one_direction) and not is_collapsed(isotropic)


def test_constant_embeddings_are_collapsed():
    const = np.ones((50, 8))
    assert embedding_std(const) == 0.0 and is_collapsed(const)
