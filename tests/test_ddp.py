"""Two-process DDP on CPU (gloo) trains like one process with the same global batch.

Lightning launches the DDP processes by re-running the script, so the training runs in a
script file executed as a subprocess. Each process takes half of every global batch from eolab's
batch sampler; gradients are averaged, so the trajectory matches single-process training up to
the random masks (each process draws its own) and float reduction order.
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
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", history_path=out / "history.csv")
    if task.encoder.blocks[0].attn.qkv.weight.device.type == "cpu":
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        torch.save(task.encoder.state_dict(), out / f"encoder-rank{rank}.pt")
""")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    for name, devices in (("single", 1), ("ddp", 2)):
        (tmp_path / name).mkdir()
        done = subprocess.run([sys.executable, str(script), str(tmp_path / name), str(devices)],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    single = pd.read_csv(tmp_path / "single" / "history.csv")
    ddp = pd.read_csv(tmp_path / "ddp" / "history.csv")
    assert single["step"].tolist() == ddp["step"].tolist() == list(range(1, 21))  # same global batches: 4 x 5
    a, b = torch.tensor(single["loss"].to_numpy()), torch.tensor(ddp["loss"].to_numpy())
    assert a[-5:].mean() < 0.8 * a[:5].mean() and b[-5:].mean() < 0.8 * b[:5].mean()  # both learn
    assert ((a - b).abs() / a).max() < 0.1  # step by step within 10% (masks differ per process)
    assert abs(a[-5:].mean() - b[-5:].mean()) / a[-5:].mean() < 0.03
    # DDP keeps the processes' weights identical
    w0 = torch.load(tmp_path / "ddp" / "encoder-rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "ddp" / "encoder-rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
