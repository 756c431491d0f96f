"""The contract every registered proxy task and masking scheme passes, on tiny tensors.

Adding a task to ``TASKS`` or a scheme to ``MASKS`` enrols it here automatically: a finite scalar
loss, gradients that reach the encoder (tokeniser and transformer), any number of bands, groups and
dates, and the same result twice under the same seed.
"""

import pytest
import torch

from eolab.models.vit import build_encoder
from eolab.tasks import MASKS, TASKS, TaskParams, build_task
from eolab.tasks.augment import AUGMENTATIONS, Augment

SMALL = TaskParams(decoder_dim=32, decoder_depth=1, proj_dim=16, mask_ratio=0.75)
ONE = ("B04",)
FIVE = ("B02", "B03", "B04", "B08", "B11")
S1S2 = ("B02", "B03", "B04", "B08", "VV", "VH")

# (name, bands, tokenizer, groups, num_dates): every token layout a task must handle.
LAYOUTS = [
    ("patch-1band", ONE, "patch", (), 1),
    ("patch-5bands", FIVE, "patch", (), 1),
    ("spectral-groups", FIVE, "groups", (("B02", "B03", "B04"), ("B08",), ("B11",)), 1),
    ("s1s2-modalities", S1S2, "groups", (("B02", "B03", "B04", "B08"), ("VV", "VH")), 1),
    ("time-series-3", FIVE, "temporal", (), 3),
    ("time-series-1band", ONE, "temporal", (), 2),
]
OBJECTIVES = sorted(TASKS) + ["mae+simclr", "mae+denoise"]


def _batch(bands, num_dates, b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    if num_dates == 1:
        return {"image": torch.randn(b, len(bands), size, size, generator=g)}
    image = torch.randn(b, num_dates, len(bands), size, size, generator=g)
    return {"image": image, "doy": torch.randint(1, 366, (b, num_dates), generator=g).sort(1).values}


def _task(objective, layout, seed=0):
    _, bands, tokenizer, groups, dates = layout
    torch.manual_seed(seed)
    encoder = build_encoder("vit_nano", bands, img_size=16, patch_size=4, tokenizer=tokenizer, groups=groups, num_dates=dates)
    params = SMALL
    if objective == "cross_view" and tokenizer == "groups":
        params = TaskParams(**{**SMALL.__dict__, "views": (tuple(range(len(groups) - 1)), (len(groups) - 1,))})
    return build_task(objective, encoder, params), encoder


def _applicable(objective, layout):
    # Cross-view contrast needs two or more groups (modalities or dates) to contrast.
    return not ("cross_view" in objective and layout[2] == "patch")


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_task_contract(objective, layout):
    if not _applicable(objective, layout):
        with pytest.raises(ValueError, match="at least two groups"):
            _task(objective, layout)
        return
    task, encoder = _task(objective, layout)
    task.train()
    batch = _batch(layout[1], layout[4])
    out = task(batch, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, dict) and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert all(v.ndim == 0 for v in out.values()), "tasks report scalars only"
    out["loss"].backward()
    for part in (encoder.tokenizer, encoder.blocks[-1]):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reaches {type(part).__name__}"

    # Determinism: the same seeds give the same loss from a freshly built task.
    task2, _ = _task(objective, layout)
    task2.train()
    again = task2(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(1))["loss"]
    assert again.item() == pytest.approx(out["loss"].item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_mask_contract(name, groups, ratio):
    """Exact ratio, a partition of the tokens, sorted indices, seeded — for any number of groups."""
    n = 64 * groups
    keep, masked = MASKS[name](4, n, ratio, torch.Generator().manual_seed(0), groups=groups)
    n_mask = round(n * ratio)
    assert masked.shape == (4, n_mask) and keep.shape == (4, n - n_mask)
    assert torch.equal(torch.cat([keep, masked], 1).sort(1).values, torch.arange(n).expand(4, -1))
    assert torch.equal(keep, keep.sort(1).values)
    again, _ = MASKS[name](4, n, ratio, torch.Generator().manual_seed(0), groups=groups)
    assert torch.equal(keep, again)


def _per_group(masked, groups, cells):
    return torch.zeros(masked.shape[0], groups * cells).scatter_(1, masked, 1.0).view(-1, groups, cells)


def test_group_schemes_differ_as_documented():
    g = torch.Generator().manual_seed(0)
    _, m = MASKS["group_consistent"](8, 3 * 16, 0.75, g, groups=3)
    hidden = _per_group(m, 3, 16)
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and torch.equal(hidden[:, 1], hidden[:, 2])  # whole tubes
    _, m = MASKS["group_independent"](8, 3 * 16, 0.75, g, groups=3)
    hidden = _per_group(m, 3, 16)
    assert (hidden.sum(-1) == 12).all() and not torch.equal(hidden[:, 0], hidden[:, 1])  # own cells, same count
    _, m = MASKS["group_drop"](8, 4 * 16, 0.5, g, groups=4)
    per_group = _per_group(m, 4, 16).sum(-1)
    assert ((per_group == 0) | (per_group == 16)).all() and (per_group.sum(-1) == 32).all()  # two whole groups


def test_block_mask_hides_whole_blocks_in_every_group():
    _, masked = MASKS["block"](8, 2 * 64, 0.5, torch.Generator().manual_seed(0), groups=2)  # 8x8 grid, 2x2 blocks
    grid = _per_group(masked, 2, 64).view(8, 2, 4, 2, 4, 2)  # (B, G, by, y, bx, x)
    per_block = grid.sum((3, 5))
    assert ((per_block == 0) | (per_block == 4)).all()
    assert (grid.sum((2, 3, 4, 5)) == 32).all()  # each group loses the same number of tokens


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("shape", [(3, 5, 16, 16), (3, 2, 4, 16, 16)])
def test_augmentations_keep_shape_and_are_seeded(name, shape):
    x = torch.randn(shape)
    aug = Augment(name)
    a, b = aug(x, torch.Generator().manual_seed(0)), aug(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and torch.isfinite(a).all()


def test_dihedral_matches_rot90_and_flip():
    from eolab.tasks.augment import dihedral

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = dihedral(x, torch.Generator().manual_seed(5))
    candidates = [torch.rot90(v, k, (-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    for i in range(2):
        assert any(torch.equal(out[i], c[i]) for c in candidates)
