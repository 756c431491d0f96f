"""The training entry point's parts: scene-diverse batches, compute counting, the in-loop k-NN
probe, health logging, FLOP budgets and run configuration checks (tiny models, real data where
the data matter)."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from eolab.compute import training_flops
from eolab.config import PretrainConfig
from eolab.data.samplers import SceneDiverseBatchSampler
from eolab.data.stats import Normalization, NormalizationMismatch
from eolab.evaluate.probe import embed
from eolab.models.vit import build_encoder
from eolab.tasks import TaskParams, build_task
from eolab.train import KnnProbe, fit

BANDS = ("B02", "B03", "B04", "B08")
SMALL = TaskParams(decoder_dim=32, decoder_depth=1, proj_dim=16)


def _tiles(scenes=(256, 5, 5), side=16, step=32):
    rows = []
    for s, n in enumerate(scenes):
        for k in range(n):
            rows.append({"scene": s, "row": (k // side) * step, "col": (k % side) * step})
    return pd.DataFrame(rows)


def _overlapping_pairs(tiles, batch, patch=64):
    t = tiles.iloc[batch]
    s, r, c = (t[k].to_numpy() for k in ("scene", "row", "col"))
    close = (s[:, None] == s[None]) & (np.abs(r[:, None] - r[None]) < patch) & (np.abs(c[:, None] - c[None]) < patch)
    return int((close.sum() - len(batch)) // 2)


def test_scene_diverse_batches_mix_scenes_and_avoid_overlap():
    tiles = _tiles()  # one big scene tiled at half-patch stride (windows overlap their neighbours), two small
    sampler = SceneDiverseBatchSampler(tiles, batch_size=8, patch=64, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(tiles) // 8 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == len(batches) * 8  # no sample twice in an epoch
    assert tiles.iloc[batches[0]]["scene"].nunique() == 3  # the first batch draws from every scene
    overlapping = [_overlapping_pairs(tiles, b) for b in batches]
    assert sum(o > 0 for o in overlapping) <= len(batches) // 10  # only at the very end of the epoch
    # Plain shuffling, for comparison, puts overlapping windows together in most batches.
    order = np.random.default_rng(0).permutation(len(tiles))
    shuffled = [_overlapping_pairs(tiles, order[i : i + 8]) for i in range(0, len(batches) * 8, 8)]
    assert sum(o > 0 for o in shuffled) > 5 * max(1, sum(o > 0 for o in overlapping))
    assert batches == list(SceneDiverseBatchSampler(tiles, 8, 64, seed=0))  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch


class _Linear(nn.Module):
    """A task that is one linear map, to check the FLOP counter against the textbook count."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(32, 16, bias=False)

    def forward(self, batch, generator=None):
        return {"loss": self.encoder(batch["image"]).pow(2).mean()}


def test_training_flops_count_forward_and_backward():
    task = _Linear()
    flops = training_flops(task, {"image": torch.randn(8, 32)})
    # forward 2*B*I*O; backward: gradient w.r.t. the weight only (the input needs none) 2*B*I*O
    assert flops == 2 * (2 * 8 * 32 * 16)
    assert task.encoder.weight.grad is None  # the count leaves no gradients behind


def test_flops_follow_the_objectives_cost():
    def flops(objective, **kw):
        torch.manual_seed(0)
        enc = build_encoder("vit_nano", BANDS, img_size=16, patch_size=4)
        task = build_task(objective, enc, TaskParams(**{**SMALL.__dict__, **kw}))
        return training_flops(task, {"image": torch.randn(4, 4, 16, 16)})

    assert flops("mae", mask_ratio=0.9) < flops("mae", mask_ratio=0.5)  # fewer visible tokens encoded
    assert flops("simclr") > flops("mae")  # two full views versus a quarter of the tokens
    assert flops("moco") > flops("simclr")  # plus the momentum encoder's forward passes


class _Oracle(nn.Module):
    """An 'encoder' whose embedding is the image's first pixel: enough to classify its own labels."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def embed(self, x, pool="mean"):
        return x[:, :, 0, 0] + 0 * self.w


def _labelled(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % classes
    image = torch.randn(n, 3, 4, 4, generator=g) * 0.1
    image[torch.arange(n), label, 0, 0] += 3.0  # the class is the band that is bright in one pixel
    return {"image": image, "label": label, "bands": ("B02", "B03", "B04"), "unit": "reflectance"}


def test_knn_probe_reads_the_embedding():
    three = ("B02", "B03", "B04")
    norm = Normalization(three, "reflectance", dict.fromkeys(three, 0.0), dict.fromkeys(three, 1.0))
    probe = KnnProbe(_labelled(60, 3, 0), _labelled(30, 3, 1), norm, k=5)
    assert probe.accuracy(_Oracle()) == 1.0
    shuffled = _labelled(30, 3, 1)
    shuffled["label"] = shuffled["label"][torch.randperm(30, generator=torch.Generator().manual_seed(0))]
    assert KnnProbe(_labelled(60, 3, 0), shuffled, norm, k=5).accuracy(_Oracle()) < 0.7


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(4, 16, 16, generator=g), "bands": BANDS, "unit": "reflectance", "source": "test"}


def test_fit_runs_a_step_budget_and_logs_health(tmp_path):
    torch.manual_seed(0)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("simclr", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), SMALL)
    history = fit(task, _Images(), norm, batch_size=8, lr=1e-3, max_steps=5, health_every=2,
                  accelerator="cpu", history_path=tmp_path / "history.csv")
    assert len(history) == 5 and history["step"].tolist() == [1, 2, 3, 4, 5]  # 5 steps, not 1 epoch (3)
    health = history.dropna(subset=["effective_rank"])
    assert health["step"].tolist() == [1, 3, 5]  # computed at global steps 0, 2, 4 (before each update)
    assert (health["effective_rank"] >= 1).all() and (health["embedding_std"] > 0).all()
    assert (tmp_path / "history.csv").exists() and np.isfinite(history["loss"]).all()


def test_s1s2_encoder_on_optical_only_data_uses_its_optical_tokens():
    bands = ("B02", "B03", "VV", "VH")
    torch.manual_seed(0)
    enc = build_encoder("vit_nano", bands, img_size=16, patch_size=4, tokenizer="groups",
                        groups=(("B02", "B03"), ("VV", "VH"))).eval()
    norm = Normalization(bands, "reflectance+dB", {"B02": 0.1, "B03": 0.1, "VV": -10.0, "VH": -15.0},
                         {"B02": 0.05, "B03": 0.05, "VV": 3.0, "VH": 3.0})
    optical = {"image": torch.rand(3, 2, 16, 16) * 0.3, "bands": ("B02", "B03"), "unit": "reflectance"}
    got = embed(enc, norm, optical, pool="mean")
    x = torch.zeros(3, 4, 16, 16)
    x[:, :2] = (optical["image"] - 0.1) / 0.05
    expected = enc.embed(x, pool="mean", keep=torch.arange(16).expand(3, -1))  # the first group's 16 tokens
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    patch_enc = build_encoder("vit_nano", bands, img_size=16, patch_size=4)  # cannot leave bands out
    with pytest.raises(NormalizationMismatch, match="unit"):
        embed(patch_enc, norm, optical)


@pytest.mark.parametrize(("params", "message"), [
    ({"objective": "mae+clip"}, "unknown: \\['clip'\\]"),
    ({"objective": "mae+simclr", "objective_weights": "1"}, "objective_weights"),
    ({"tokenizer": "groups", "band_groups": "B02,B03|B04"}, "band_groups"),
    ({"tokenizer": "temporal"}, "tokenizer"),
    ({"dataset": "slovenia", "bands": "B02", "tokenizer": "temporal"}, "bands"),
    ({"mask": "tube"}, "mask"),
    ({"view_augment": "colour_jitter"}, "view_augment"),
    ({"img_size": 60}, "img_size"),
])
def test_config_names_the_bad_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**params)


def _mae_fit(batch_size, accumulate, seed=0, **kw):
    """A tiny MAE trained without augmentation or health probes: its only random draws are the masks."""
    torch.manual_seed(seed)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), SMALL)
    history = fit(task, _Images(), norm, batch_size=batch_size, accumulate=accumulate, lr=2e-3, seed=seed,
                  augment="none", health_every=0, accelerator="cpu", **kw)
    return task, history


def test_gradient_accumulation_follows_the_large_batch_trajectory(tmp_path):
    """accumulate=2 with batches of 4 takes the steps that batches of 8 take.

    Why exactly (up to float rounding): the seeded shuffle is one permutation per epoch cut into
    batches, so two consecutive batches of 4 are one batch of 8; the MAE's masks are drawn row by
    row from torch's global generator (rand(8, N) is rand(4, N) twice) and its loss is a mean over
    samples that all hide the same number of tokens, so the mean of the two half-batch losses (each
    scaled by 1/2 by Lightning) has the full batch's gradient. No augmentation, dropout or batch
    statistics. A contrastive loss would not match: its negatives are the other samples of a batch.
    """
    big, h1 = _mae_fit(8, 1, epochs=2)
    small, h2 = _mae_fit(4, 2, epochs=2, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=2)
    assert h1["step"].tolist() == h2["step"].tolist() == [1, 2, 3, 4, 5, 6]  # one row per optimiser step
    torch.testing.assert_close(torch.tensor(h2["loss"].to_numpy()), torch.tensor(h1["loss"].to_numpy()),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h2["lr"], h1["lr"], rtol=1e-12)  # the schedule counts optimiser steps
    for (name, a), b in zip(big.state_dict().items(), small.state_dict().values(), strict=True):
        if name.endswith("attn.qkv.bias"):
            # The key bias gets an exactly zero gradient (softmax ignores a shift shared by all keys),
            # so what AdamW does with it is rounding noise divided by its own size: leave it out.
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["eolab_batches_done"] == 12  # checkpoint_every in optimiser steps
    _, h3 = _mae_fit(4, 2, max_steps=4)
    assert h3["step"].tolist() == [1, 2, 3, 4]  # max_steps counts optimiser steps (8 batches of 4)


def test_a_seed_fixes_the_run():
    """Same seed: the same losses and weights, bit for bit; another seed: another run."""
    a, ha = _mae_fit(8, 1, seed=0, max_steps=3)
    b, hb = _mae_fit(8, 1, seed=0, max_steps=3)
    _, hc = _mae_fit(8, 1, seed=1, max_steps=3)
    assert ha["loss"].tolist() == hb["loss"].tolist()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert ha["loss"].tolist() != hc["loss"].tolist()


@pytest.mark.slow
def test_compiled_fit_matches_eager_and_keeps_checkpoint_keys():
    """fit(compile=True) compiles the transformer blocks in place: same losses, same parameter names."""
    from eolab.train import compile_unavailable

    if reason := compile_unavailable():
        pytest.skip(reason)
    eager, h_eager = _mae_fit(8, 1, max_steps=3)
    compiled, h_compiled = _mae_fit(8, 1, max_steps=3, compile=True)
    assert compiled.encoder.blocks[0]._compiled_call_impl is not None  # it did run compiled
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints load either way
    torch.testing.assert_close(torch.tensor(h_compiled["loss"].to_numpy()), torch.tensor(h_eager["loss"].to_numpy()),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compiled_task_keeps_seeds_masks_and_checkpoint_keys():
    """fit(compile="task") compiles the task's whole forward (masking included): the masks still come
    from torch's global generator (inductor's fallback_random), so the losses follow the eager run
    and a seed fixes the run; parameter names are those of an eager run."""
    from eolab.train import compile_unavailable

    if reason := compile_unavailable():
        pytest.skip(reason)
    eager, h_eager = _mae_fit(8, 1, max_steps=3)
    compiled, h_compiled = _mae_fit(8, 1, max_steps=3, compile="task")
    again, h_again = _mae_fit(8, 1, max_steps=3, compile="task")
    assert compiled._compiled_call_impl is not None  # the whole task ran compiled
    assert list(compiled.state_dict()) == list(eager.state_dict())
    torch.testing.assert_close(torch.tensor(h_compiled["loss"].to_numpy()), torch.tensor(h_eager["loss"].to_numpy()),
                               rtol=1e-4, atol=1e-6)
    assert h_again["loss"].tolist() == h_compiled["loss"].tolist()


@pytest.mark.slow
def test_bench_compile_adds_a_compiled_row(tmp_path):
    """`python -m benchmarks.throughput --compile` times the compiled blocks next to eager (or warns and skips)."""
    import csv

    from benchmarks.throughput import main as bench_main
    from eolab.train import compile_unavailable

    out = tmp_path / "bench.csv"
    assert bench_main(["--quick", "--device", "cpu", "--threads", "1", "--models", "eolab", "--precisions", "fp32",
                       "--loader-workers", "", "--compile", "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader(out.open()) if r["section"] == "train"]
    if compile_unavailable():  # eager only, with a warning
        assert [r["compiled"] for r in rows] == ["False"]
        return
    assert [r["compiled"] for r in rows] == ["False", "True"]
    assert float(rows[1]["images_per_s"]) > 0 and float(rows[1]["compile_speedup"]) > 0 and float(rows[1]["compile_s"]) > 0
