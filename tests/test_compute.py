"""Compute accounting: the FLOP counter against the textbook rule, and the scaling-law parameter count."""

import pytest
import torch

from eolab.compute import analytic_training_flops, non_embedding_params, training_flops
from eolab.models.vit import SIZES, build_encoder
from eolab.tasks import TaskParams, build_task

BANDS = ("B02", "B03", "B04", "B08")


def _task(objective: str, size: str = "vit_nano"):
    torch.manual_seed(0)
    encoder = build_encoder(size, BANDS, img_size=32, patch_size=8)
    return build_task(objective, encoder, TaskParams(decoder_dim=32, decoder_depth=1))


@pytest.mark.parametrize("objective", ["mae", "simclr", "denoise"])
def test_counted_flops_match_the_6nd_rule_with_attention(objective):
    # The rule reads only shapes; the counter reads the ops the step runs. Before CPU attention was
    # registered with the counter, they differed by the attention FLOPs (5-12%).
    task = _task(objective)
    batch = {"image": torch.randn(4, len(BANDS), 32, 32), "bands": BANDS, "unit": "reflectance"}
    counted, analytic = training_flops(task, batch), analytic_training_flops(task, batch)
    assert counted == pytest.approx(analytic, rel=0.05)


def test_attention_is_counted():
    # Same linear layers, four times the tokens: the attention share must grow (quadratic in tokens).
    flops = {}
    for img in (16, 32):
        torch.manual_seed(0)
        task = build_task("simclr", build_encoder("vit_nano", BANDS, img_size=img, patch_size=4), TaskParams())
        batch = {"image": torch.randn(2, len(BANDS), img, img), "bands": BANDS, "unit": "reflectance"}
        flops[img] = training_flops(task, batch)
    assert flops[32] > 4 * flops[16]


def test_non_embedding_params_are_the_transformer_blocks():
    task = _task("mae", "vit_micro")
    counts = non_embedding_params(task)
    cfg = SIZES["vit_micro"]
    # 12 d^2 per block (QKV 3d^2, projection d^2, MLP 8d^2) plus biases and the two norms
    per_block = 12 * cfg.dim**2 + 3 * cfg.dim + cfg.dim + 4 * cfg.dim + cfg.dim + 4 * cfg.dim
    assert counts["encoder_params_nonembed"] == cfg.depth * per_block
    assert counts["task_params_nonembed"] > counts["encoder_params_nonembed"]  # the decoder's blocks
