"""Latent masked modelling, DINO and the MAE with a teacher: what the shared contract test does not
check. Every token layout with every masking scheme, every latent loss, teachers that move only at
an optimiser step (by the documented schedule), iBOT and KoLeo terms, and the once-per-step call
with gradient accumulation."""

import pytest
import torch
from test_task_contract import LAYOUTS

from eolab.models.vit import build_encoder
from eolab.tasks import MASKS, TaskParams, build_task
from eolab.tasks.distill import token_windows
from eolab.tasks.latent import LATENT_LOSSES, EMATeacher


def _batch(bands, num_dates, b=4, size=16):
    g = torch.Generator().manual_seed(0)
    if num_dates == 1:
        return {"image": torch.randn(b, len(bands), size, size, generator=g)}
    return {"image": torch.randn(b, num_dates, len(bands), size, size, generator=g),
            "doy": torch.randint(1, 366, (b, num_dates), generator=g).sort(1).values}


SMALL = TaskParams(decoder_dim=32, decoder_depth=1, dino_out_dim=32, local_crops=2)


def _task(objective, layout=LAYOUTS[1], **params):
    _, bands, tokenizer, groups, dates = layout
    torch.manual_seed(0)
    encoder = build_encoder("vit_nano", bands, img_size=16, patch_size=4, tokenizer=tokenizer, groups=groups, num_dates=dates)
    return build_task(objective, encoder, TaskParams(**{**SMALL.__dict__, **params})), layout


def _teacher_params(task):
    return torch.cat([p.detach().flatten() for p in task.teacher.parameters()])


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
def test_jepa_on_every_layout_and_masking_scheme(layout, mask):
    task, _ = _task("jepa", layout, mask=mask, mask_ratio=0.5)
    out = task(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["target_std"] > 0
    out["loss"].backward()
    assert task.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.teacher.parameters()), "no gradient into the target encoder"


@pytest.mark.parametrize("loss", LATENT_LOSSES)
def test_every_latent_loss_trains(loss):
    task, layout = _task("jepa", latent_loss=loss)
    out = task(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and task.predictor.pred.weight.grad.abs().sum() > 0


def test_jepa_patch_discrimination_is_chance_level_for_uninformative_predictions():
    """InfoNCE over M hidden tokens: log(M) when a prediction favours no token (equal similarity to
    all: here the zero vector), near 0 when each prediction is its own target."""
    from eolab.tasks.latent import latent_loss

    target = torch.randn(8, 12, 16)
    assert latent_loss(torch.zeros(8, 12, 16), target, "patch_disc").item() == pytest.approx(torch.log(torch.tensor(12.0)).item(), rel=1e-4)
    assert latent_loss(target, target, "patch_disc", temperature=0.01) < 0.1


@pytest.mark.parametrize("objective", ["jepa", "dino", "mae_teacher"])
def test_teacher_moves_only_at_an_optimiser_step_by_its_schedule(objective):
    task, layout = _task(objective, ema_momentum=0.9)
    before = _teacher_params(task)
    task(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))["loss"].backward()
    assert torch.equal(_teacher_params(task), before), "forward must not update the teacher"
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(0.1)
    student = {n: p.detach().clone() for n, p in task.encoder.named_parameters()}
    task.after_optimizer_step(1, 10)
    m = task.teacher.momentum_at(1, 10)
    assert 0.9 < m < 1.0
    teacher_encoder = dict(task.teacher["encoder"].named_parameters())
    name = "blocks.0.attn.qkv.weight"
    expected = m * (student[name] - 0.1) + (1 - m) * student[name]  # teacher started as the student's copy
    torch.testing.assert_close(teacher_encoder[name], expected)
    assert task.teacher.momentum_at(10, 10) == pytest.approx(1.0)


def test_frozen_target_never_moves():
    task, layout = _task("jepa", target_encoder="frozen")
    before = _teacher_params(task)
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(0.1)
    task.after_optimizer_step(5, 10)
    assert torch.equal(_teacher_params(task), before)


def test_ema_teacher_refuses_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        EMATeacher({"m": torch.nn.Linear(2, 2)}, momentum=1.5)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
def test_dino_with_ibot_and_koleo_on_every_layout(layout):
    task, _ = _task("dino", layout, ibot_weight=1.0, koleo_weight=0.1, mask="block" if layout[2] == "patch" else "random",
                    mask_ratio=0.5)
    out = task(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))
    assert {"dino", "ibot", "koleo", "teacher_entropy", "teacher_temp"} <= set(out)
    expected = out["dino"] + out["ibot"] + 0.1 * out["koleo"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    assert task.mask_token.grad.abs().sum() > 0, "iBOT's mask token is trained"


def test_dino_teacher_temperature_warms_up_with_the_step():
    task, _ = _task("dino", teacher_temp=0.07)
    assert task.teacher_temperature() == pytest.approx(0.04)  # before the first step
    task.after_optimizer_step(15, 100)  # half-way through the 30% warm-up
    assert task.teacher_temperature() == pytest.approx(0.055)
    task.after_optimizer_step(60, 100)
    assert task.teacher_temperature() == pytest.approx(0.07)
    assert int(task.state_dict()["steps_done"]) == 60  # in the checkpoint, so a resumed run agrees


def test_local_crops_are_square_windows_in_every_group():
    keep = token_windows(5, grid=8, side=3, groups=2, generator=torch.Generator().manual_seed(0), device="cpu")
    assert keep.shape == (5, 18)
    for sample in keep:
        first, second = sample[:9], sample[9:]
        assert torch.equal(second, first + 64)  # the same ground in the second group
        rows, cols = first // 8, first % 8
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2 and len(set(first.tolist())) == 9
    with pytest.raises(ValueError, match="does not fit"):
        token_windows(1, grid=4, side=5, groups=1, generator=None, device="cpu")


def test_mae_teacher_is_reconstruction_plus_weighted_distillation():
    task, layout = _task("mae_teacher", distill_weight=0.5)
    out = task(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["loss"].detach(), out["recon"] + 0.5 * out["distill"])
    # the reconstruction part is the plain MAE's, on the same masks
    mae, _ = _task("mae")
    plain = mae(_batch(layout[1], layout[4]), generator=torch.Generator().manual_seed(0))["loss"]
    torch.testing.assert_close(out["recon"], plain.detach())


def test_combined_passes_the_step_to_every_teacher():
    task, layout = _task("jepa+mae_teacher")
    before = [_teacher_params(p) for p in task.parts.values()]
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(0.1)
    task.after_optimizer_step(1, 10)
    assert all(not torch.equal(_teacher_params(p), b) for p, b in zip(task.parts.values(), before, strict=True))


def test_teacher_update_runs_once_per_optimiser_step_under_accumulation(tmp_path):
    """fit() with accumulate=2 over 8 batches: 4 optimiser steps, so 4 calls, with steps 1..4."""
    from eolab.data.stats import Normalization
    from eolab.train import fit

    bands = ("B02", "B03", "B04")

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"image": torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)), "bands": bands,
                    "unit": "reflectance", "source": "t"}

    torch.manual_seed(0)
    task = build_task("jepa", build_encoder("vit_nano", bands, img_size=16, patch_size=4), SMALL)
    calls = []
    update = task.after_optimizer_step
    task.after_optimizer_step = lambda step, total: (calls.append((step, total)), update(step, total))
    norm = Normalization(bands, "reflectance", dict.fromkeys(bands, 0.5), dict.fromkeys(bands, 0.3))
    fit(task, Images(), norm, batch_size=2, lr=1e-3, epochs=1, accumulate=2, health_every=0, accelerator="cpu")
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
