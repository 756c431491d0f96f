"""Compute accounting: the FLOP counter against the textbook rule, and the scaling-law parameter count."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from eolab.compute import CPU_ATTENTION_FLOPS, analytic_training_flops, non_embedding_params, training_flops
from eolab.models.vit import SIZES, build_encoder
from eolab.tasks import TaskParams, build_task

BANDS = ("B02", "B03", "B04", "B08")


def _task(objective: str, size: str = "vit_nano", **params):
    torch.manual_seed(0)
    encoder = build_encoder(size, BANDS, img_size=32, patch_size=8)
    return build_task(objective, encoder, TaskParams(decoder_dim=32, decoder_depth=1, **params))


# The tasks with a teacher run part of their step without gradients: the rule counts that part as a
# forward pass, so it must agree with the counter for them as well (target encoder and predictor in).
@pytest.mark.parametrize("objective", ["mae", "simclr", "denoise", "moco", "jepa", "dino", "mae_teacher"])
def test_counted_flops_match_the_6nd_rule_with_attention(objective):
    # The rule reads only shapes; the counter reads the ops the step runs. Before CPU attention was
    # registered with the counter, they differed by the attention FLOPs (5-12%).
    task = _task(objective)
    batch = {"image": torch.randn(4, len(BANDS), 32, 32), "bands": BANDS, "unit": "reflectance"}
    counted, analytic = training_flops(task, batch), analytic_training_flops(task, batch)
    assert counted == pytest.approx(analytic, rel=0.05)


def test_teacher_and_predictor_are_counted():
    """A latent masked modelling step counts the target encoder's forward pass over every token
    (exactly a no-grad pass of the encoder on the whole input) and the predictor's forward and
    backward; DINO with iBOT costs more than without (the mask-token pass and the patch head)."""
    batch = {"image": torch.randn(4, len(BANDS), 32, 32), "bands": BANDS, "unit": "reflectance"}
    task = _task("jepa")
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter, torch.no_grad():
        task.teacher["encoder"](batch["image"])
    target_pass = counter.get_total_flops()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        task(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
    parts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    assert parts["LatentMaskedModelling.teacher.copies.encoder"] == target_pass > 0
    assert parts["LatentMaskedModelling.predictor"] > 0
    student = parts["LatentMaskedModelling.encoder"] + parts["LatentMaskedModelling.predictor"]
    assert training_flops(task, batch) == parts["Global"] >= student + target_pass
    plain, ibot = training_flops(_task("dino"), batch), training_flops(_task("dino", ibot_weight=1.0), batch)
    assert ibot > plain


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
