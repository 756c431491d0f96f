"""Encoder, masking and the masked-autoencoder task on tiny tensors."""

import pytest
import torch

from eolab.checkpoint import CheckpointError, load_encoder, save_encoder
from eolab.data.stats import Normalization
from eolab.models.tokenizers import PatchTokenizer
from eolab.models.vit import build_encoder, encoder_config
from eolab.tasks.mae import MaskedAutoencoder
from eolab.tasks.masking import MASKS, block_mask, random_mask
from eolab.train import dihedral_augment

BANDS5 = ("B02", "B03", "B04", "B08", "B11")


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_every_mask_keeps_exactly_the_requested_ratio(name, ratio):
    """The contract every registered masking scheme passes: exact ratio, a partition, seeded."""
    fn = MASKS[name]
    keep, masked = fn(4, 64, ratio, torch.Generator().manual_seed(0))
    assert masked.shape == (4, round(64 * ratio)) and keep.shape == (4, 64 - round(64 * ratio))
    together = torch.cat([keep, masked], 1).sort(1).values
    assert torch.equal(together, torch.arange(64).expand(4, -1))  # a partition of the tokens
    again, _ = fn(4, 64, ratio, torch.Generator().manual_seed(0))
    assert torch.equal(keep, again)


def test_block_mask_hides_whole_blocks():
    _, masked = block_mask(8, 64, 0.5, torch.Generator().manual_seed(0))  # 8x8 grid, 2x2 blocks
    grid = torch.zeros(8, 64).scatter_(1, masked, 1.0).view(8, 4, 2, 4, 2)  # (B, by, y, bx, x)
    per_block = grid.sum((2, 4))  # (B, 4, 4) masked tokens per 2x2 block
    assert ((per_block == 0) | (per_block == 4)).all()  # 32 = 8 whole blocks: none split
    with pytest.raises(ValueError, match="square grid"):
        block_mask(1, 48, 0.5)


def test_random_mask_is_seeded_and_differs_per_sample():
    a, _ = random_mask(2, 16, 0.5, torch.Generator().manual_seed(1))
    b, _ = random_mask(2, 16, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="mask ratio"):
        random_mask(2, 16, 1.0)


def test_patchify_matches_token_grid():
    tok = PatchTokenizer(BANDS5, img_size=16, patch_size=4, dim=8)
    x = torch.arange(2 * 5 * 16 * 16, dtype=torch.float32).reshape(2, 5, 16, 16)
    patches = tok.patchify(x)  # (B, N, C*p*p)
    assert patches.shape == (2, 16, 5 * 4 * 4)
    # token 1 is the second patch of the first row: columns 4..7, rows 0..3, band by band
    expected = x[0, :, 0:4, 4:8].reshape(-1)
    torch.testing.assert_close(patches[0, 1], expected)
    # the matmul embedding equals the strided convolution it stands for, on every token and on kept ones
    x = x / x.max()  # values of normalised bands: float sums in another order stay within 1e-5
    tok.embed_as = "conv"
    conv = tok(x)
    tok.embed_as = "matmul"
    torch.testing.assert_close(tok(x), conv, rtol=1e-4, atol=1e-5)
    keep = torch.tensor([[3, 0, 9], [15, 7, 1]])
    torch.testing.assert_close(tok(x, keep=keep), torch.gather(conv, 1, keep[..., None].expand(-1, -1, 8)),
                               rtol=1e-4, atol=1e-5)


def test_fast_loss_parts_equal_their_plain_definitions():
    from eolab.models.tokenizers import gather_tokens
    from eolab.tasks.common import normalize_patches, patch_mse

    torch.manual_seed(0)
    x, pred = torch.randn(3, 10, 52) * 5 + 2, torch.randn(3, 10, 52)
    index = torch.tensor([[9, 0, 4], [1, 1, 2], [5, 8, 3]])
    assert torch.equal(gather_tokens(x, index), torch.gather(x, 1, index[..., None].expand(-1, -1, 52)))
    plain = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6).sqrt()  # MAE's norm-pix target
    torch.testing.assert_close(normalize_patches(x), plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patch_mse(pred, x), ((pred - x) ** 2).mean(-1))


@pytest.mark.parametrize("target_grad", [False, True])
def test_fused_losses_equal_mse_loss_in_value_and_gradients(target_grad):
    from eolab.tasks.common import PixelHead

    torch.manual_seed(0)
    # The head that scores itself: 28 rows of 30 pixels, reduced in chunks of 4369 rows (one chunk)
    # and, with a wider head, of fewer rows than there are (several chunks, the last one short).
    for pixels in (30, 10000):
        head, feats = PixelHead(5, pixels), torch.randn(4, 7, 5, requires_grad=True)
        goal = torch.randn(4, 7, pixels, requires_grad=target_grad)
        loss, reference = head(feats, goal), torch.nn.functional.mse_loss(head(feats), goal)
        torch.testing.assert_close(loss, reference)
        inputs = [feats, head.weight, head.bias] + ([goal] if target_grad else [])
        for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(reference, inputs), strict=True):
            torch.testing.assert_close(got, want)
    # A head without bias takes the plain form: the same value and gradients.
    plain_head = PixelHead(5, 30, bias=False)
    plain_goal = torch.randn(4, 7, 30, requires_grad=target_grad)
    loss, reference = plain_head(feats, plain_goal), torch.nn.functional.mse_loss(plain_head(feats), plain_goal)
    torch.testing.assert_close(loss, reference)
    inputs = [feats, plain_head.weight] + ([plain_goal] if target_grad else [])
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(reference, inputs), strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"features \(4, 7, 5\) through a head to 10000 pixels do not match"):
        head(feats, goal[:, :6])


def test_fused_loss_gathers_and_standardises_its_target_as_the_plain_form():
    from eolab.models.tokenizers import gather_tokens
    from eolab.tasks.common import PixelHead, normalize_patches

    torch.manual_seed(0)
    # Pixels of 9 tokens per sample, 7 of them scored (one repeated), in one chunk and in several.
    patches, rows = torch.randn(4, 9, 30) * 3 + 1, torch.tensor([[0, 8, 3, 3, 1, 2, 5]] * 3 + [[7, 6, 5, 4, 3, 2, 1]])
    for pixels in (30, 10000):
        head, feats = PixelHead(5, pixels), torch.randn(4, 7, 5, requires_grad=True)
        source = patches if pixels == 30 else torch.randn(4, 9, pixels)
        for normalize in (False, True):
            goal = gather_tokens(source, rows)
            goal = normalize_patches(goal) if normalize else goal
            loss = head(feats, source, rows=rows, normalize=normalize)
            reference = torch.nn.functional.mse_loss(head(feats), goal)
            torch.testing.assert_close(loss, reference)
            assert torch.equal(loss, head(feats, goal))  # the same chunks' values as a gathered target's
            inputs = [feats, head.weight, head.bias]
            for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(reference, inputs), strict=True):
                torch.testing.assert_close(got, want)
    # A target that needs its gradient takes the plain form, which gives it one.
    wanted = patches.clone().requires_grad_()
    loss = PixelHead(5, 30)(feats, wanted, rows=rows, normalize=True)
    assert torch.autograd.grad(loss, wanted)[0].abs().sum() > 0
    with pytest.raises(ValueError, match=r"do not match target \(4, 9, 30\) at rows \(4, 6\)"):
        PixelHead(5, 30)(feats, patches, rows=rows[:, :6])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("patch", [2, 4, 5, 8])
def test_patchify_reads_wide_elements_with_the_same_values(dtype, patch):
    from eolab.models.tokenizers import patchify

    def plain(image, p):  # (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p), value by value
        b, c, h, w = image.shape
        return image.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // p**2, c * p * p)

    torch.manual_seed(0)
    image = torch.randn(2, 3, 4 * patch, 4 * patch + 1).to(dtype)
    for x in (image[..., 1:].contiguous(), image[..., 1:], image[..., :-1].clone().requires_grad_()):
        assert torch.equal(patchify(x, patch), plain(x, patch))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_decoder_block_at_selected_rows_equals_the_full_block(qk_norm):
    from eolab.models.tokenizers import gather_tokens
    from eolab.tasks.common import DecoderBlock

    torch.manual_seed(0)
    block = DecoderBlock(16, 2, 4.0, qkv_bias=not qk_norm, qk_norm=qk_norm).eval()
    x = torch.randn(3, 9, 16)
    rows = torch.tensor([[0, 4, 8], [2, 2, 5], [7, 1, 3]])
    for fused in (True, False):
        block.attn.fused_attn = fused
        torch.testing.assert_close(block(x, rows=rows), gather_tokens(block(x), rows), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="without attention masks"):
        block(x, is_causal=True, rows=rows)


def test_mae_fused_loss_matches_the_plain_head_and_loss():
    from eolab.tasks import common

    torch.manual_seed(0)
    enc = build_encoder("vit_nano", BANDS5, img_size=16, patch_size=4)
    task = MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=2, decoder_heads=2)
    batch = {"image": torch.randn(3, 5, 16, 16)}
    fused = task(batch, generator=torch.Generator().manual_seed(1))["loss"]
    params = list(task.parameters())
    fused_grads = torch.autograd.grad(fused, params, allow_unused=True)
    # The same step by the plain definitions: every block over every token, the head, mse_loss.
    keep, masked = task.mask_fn(3, enc.tokenizer.num_tokens, task.mask_ratio, torch.Generator().manual_seed(1),
                                "cpu", groups=1)
    latent = task.encoder(batch["image"], keep=keep)
    x = task.decoder.embed(latent)
    full = task.mask_token.expand(3, 16, -1).clone()
    full.scatter_(1, keep[..., None].expand(-1, -1, 32), x[:, 1:])
    x = torch.cat([x[:, :1], full + task.decoder.position()], dim=1)
    for block in task.decoder.blocks:
        x = block(x)
    pred = task.decoder.pred(task.decoder.norm(common.gather_tokens(x[:, 1:], masked)))
    target = common.normalize_patches(common.gather_tokens(enc.tokenizer.patchify(batch["image"]), masked))
    plain = torch.nn.functional.mse_loss(pred, target)
    torch.testing.assert_close(fused, plain)
    for got, want in zip(fused_grads, torch.autograd.grad(plain, params, allow_unused=True), strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("bands", [("B04",), BANDS5, tuple(f"B{i:02d}" for i in range(1, 10))])
def test_mae_loss_is_finite_and_reaches_the_encoder(bands, mask):
    torch.manual_seed(0)
    enc = build_encoder("vit_nano", bands, img_size=16, patch_size=4)
    task = MaskedAutoencoder(enc, mask_ratio=0.75, mask=mask, decoder_dim=32, decoder_depth=1, decoder_heads=1)
    out = task({"image": torch.randn(3, len(bands), 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grad = enc.tokenizer.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_mae_is_deterministic_under_a_seed():
    def loss():
        torch.manual_seed(0)
        enc = build_encoder("vit_nano", BANDS5, img_size=16, patch_size=4)
        task = MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=1, decoder_heads=1)
        return task({"image": torch.ones(2, 5, 16, 16)}, generator=torch.Generator().manual_seed(3))["loss"]
    assert loss().item() == loss().item()


def test_encoder_on_visible_tokens_only():
    enc = build_encoder("vit_nano", BANDS5, img_size=16, patch_size=4)
    keep, _ = random_mask(2, 16, 0.75)
    assert enc(torch.randn(2, 5, 16, 16), keep=keep).shape == (2, 1 + 4, 64)
    x = torch.randn(2, 5, 16, 16)
    assert enc.embed(x).shape == (2, 64) and enc.embed(x, pool="cls").shape == (2, 64)
    stats = enc.embed(x, pool="mean_std")
    assert stats.shape == (2, 128)
    torch.testing.assert_close(stats[:, :64], enc.embed(x))
    with pytest.raises(ValueError, match="pool"):
        enc.embed(x, pool="max")


def test_dihedral_augment_preserves_per_band_values():
    x = torch.randn(8, 3, 6, 6)
    y = dihedral_augment(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.flatten(2).sort(-1).values, y.flatten(2).sort(-1).values)


def test_checkpoint_round_trip_carries_normalization(tmp_path):
    enc = build_encoder("vit_nano", BANDS5, img_size=16, patch_size=4)
    norm = Normalization(BANDS5, "reflectance", {b: 0.1 for b in BANDS5}, {b: 0.05 for b in BANDS5}, "test")
    path = save_encoder(tmp_path / "enc.pt", enc, encoder_config("vit_nano", BANDS5, 16, 4), norm)
    enc2, norm2, cfg = load_encoder(path)
    assert norm2 == norm and cfg["bands"] == list(BANDS5)
    x = torch.randn(1, 5, 16, 16)
    torch.testing.assert_close(enc.eval()(x), enc2.eval()(x))


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_encoder(bad)


def test_probe_command_names_a_corrupt_checkpoint(tmp_path, capsys):
    from eolab.__main__ import main

    bad = tmp_path / "encoder.pt"
    bad.write_bytes(b"\x00" * 10)
    assert main(["probe", str(bad)]) == 2
    assert "encoder.pt" in capsys.readouterr().err


def test_mae_runs_under_bf16_autocast():
    """Mixed precision mixes bf16 activations with fp32 parameters (a GPU run found this)."""
    enc = build_encoder("vit_nano", BANDS5, img_size=16, patch_size=4)
    task = MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=1, decoder_heads=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task({"image": torch.randn(2, 5, 16, 16)})
    assert torch.isfinite(out["loss"].float())
