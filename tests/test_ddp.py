"""Two-process DDP and FSDP on CPU (gloo) train like one process with the same global batch.

Lightning launches the DDP processes by re-running the script, so the training runs in a
script file executed as a subprocess. Each process takes half of every global batch from eolab's
batch sampler; gradients are averaged, so the trajectory matches single-process training up to
the random masks (each process draws its own) and float reduction order. FSDP (sharded parameters,
gradients and optimiser state) sees exactly the data and masks DDP sees, so it matches DDP closely.
"""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from eolab.data.stats import Normalization
    from eolab.models.vit import build_encoder
    from eolab.tasks import TaskParams, build_task
    from eolab.train import fit

    BANDS = ("B02", "B03", "B04")
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    strategy = sys.argv[3] if len(sys.argv) > 3 else ("ddp" if devices > 1 else "auto")

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 64
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(3, 16, 16, generator=g), "bands": BANDS, "unit": "reflectance", "source": "t"}

    torch.manual_seed(0)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4),
                      TaskParams(decoder_dim=32, decoder_depth=1, mask_ratio=0.5))
    fit(task, Images(), norm, batch_size=16, lr=2e-3, epochs=5, seed=0, augment="none", health_every=0,
        accelerator="cpu", devices=devices, strategy=strategy, history_path=out / "history.csv",
        checkpoint_dir=out / "checkpoints", checkpoint_every=10)
    if task.encoder.blocks[0].attn.qkv.weight.device.type == "cpu":
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        torch.save(task.encoder.state_dict(), out / f"encoder-rank{rank}.pt")
""")


def _train(tmp_path, name, devices, strategy=None):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    (tmp_path / name).mkdir()
    args = [sys.executable, str(script), str(tmp_path / name), str(devices), *([strategy] if strategy else [])]
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(tmp_path / name / "history.csv")


def _weights(folder, rank):
    return torch.load(folder / f"encoder-rank{rank}.pt", weights_only=True)


def _without_key_bias(name, w):
    """The key bias's gradient is exactly zero (softmax ignores a shift shared by all keys): AdamW
    turns its rounding noise into full-size steps, so it is compared nowhere."""
    if name.endswith("attn.qkv.bias"):
        d = w.shape[0] // 3
        return torch.cat([w[:d], w[2 * d :]])
    return w


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    single = _train(tmp_path, "single", 1)
    ddp = _train(tmp_path, "ddp", 2)
    assert single["step"].tolist() == ddp["step"].tolist() == list(range(1, 21))  # same global batches: 4 x 5
    a, b = torch.tensor(single["loss"].to_numpy()), torch.tensor(ddp["loss"].to_numpy())
    assert a[-5:].mean() < 0.8 * a[:5].mean() and b[-5:].mean() < 0.8 * b[:5].mean()  # both learn
    assert ((a - b).abs() / a).max() < 0.1  # step by step within 10% (masks differ per process)
    assert abs(a[-5:].mean() - b[-5:].mean()) / a[-5:].mean() < 0.03
    # DDP keeps the processes' weights identical
    w0, w1 = _weights(tmp_path / "ddp", 0), _weights(tmp_path / "ddp", 1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.slow
def test_two_process_fsdp_matches_ddp_and_one_process(tmp_path):
    """strategy="fsdp" on CPU: FSDP2 (fully_shard) over gloo, through eolab.train.FSDPStrategy."""
    single = _train(tmp_path, "single", 1)
    ddp = _train(tmp_path, "ddp", 2, "ddp")
    fsdp = _train(tmp_path, "fsdp", 2, "fsdp")
    assert fsdp["step"].tolist() == single["step"].tolist() == list(range(1, 21))
    a, b, c = (torch.tensor(h["loss"].to_numpy()) for h in (single, ddp, fsdp))
    assert c[-5:].mean() < 0.8 * c[:5].mean()  # it learns
    torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-6)  # same data, same masks as DDP: the same steps
    assert ((a - c).abs() / a).max() < 0.1  # and one process's trajectory, up to the masks
    f0, f1, d0 = _weights(tmp_path / "fsdp", 0), _weights(tmp_path / "fsdp", 1), _weights(tmp_path / "ddp", 0)
    assert list(f0) == list(d0)  # the gathered weights have the plain module's names (checkpoints interchangeable)
    assert all(torch.equal(f0[k], f1[k]) for k in f0)  # every rank holds the full trained weights
    for k in f0:
        torch.testing.assert_close(_without_key_bias(k, f0[k]), _without_key_bias(k, d0[k]), rtol=1e-3, atol=1e-4, msg=k)
    # FSDP's checkpoint is one file assembled on rank 0, with a DDP checkpoint's keys and the full weights
    fc, dc = (torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True) for n in ("fsdp", "ddp"))
    assert fc["global_step"] == dc["global_step"] == 20 and list(fc["state_dict"]) == list(dc["state_dict"])
    assert all(torch.equal(fc["state_dict"][f"task.encoder.{k}"], f0[k]) for k in f0)
