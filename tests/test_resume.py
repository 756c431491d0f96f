"""A run killed with SIGKILL mid-epoch and resumed continues exactly as an uninterrupted run.

Each run is a separate Python process (the kill is a real SIGKILL of that process, sent by itself
at a chosen step, between two checkpoints and in the middle of an epoch).
"""

import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import lightning as L
    import torch
    from eolab.data.stats import Normalization
    from eolab.models.vit import build_encoder
    from eolab.tasks import TaskParams, build_task
    from eolab.train import fit

    BANDS = ("B02", "B03", "B04")
    out, kill_at = Path(sys.argv[1]), int(sys.argv[2])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 24
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(3, 16, 16, generator=g), "bands": BANDS, "unit": "reflectance", "source": "t"}

    class Kill(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4),
                      TaskParams(decoder_dim=32, decoder_depth=1))
    fit(task, Images(), norm, batch_size=4, lr=1e-3, max_steps=14, seed=0, augment="eo", health_every=0,
        accelerator="cpu", callbacks=[Kill()], checkpoint_dir=out / "checkpoints", checkpoint_every=4,
        history_path=out / "history.csv")
""")


def _run(script, out, kill_at):
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_killed_run_resumes_on_the_same_trajectory(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    whole = _run(script, tmp_path / "whole", kill_at=-1)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _run(script, tmp_path / "killed", kill_at=10)  # 6 batches per epoch: step 10 is mid-epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    assert pd.read_csv(tmp_path / "killed" / "history.csv")["step"].max() == 8  # written with the last checkpoint

    resumed = _run(script, tmp_path / "killed", kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = pd.read_csv(tmp_path / "whole" / "history.csv")
    b = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 15))
    torch.testing.assert_close(torch.tensor(b["loss"].to_numpy()), torch.tensor(a["loss"].to_numpy()), rtol=1e-5, atol=1e-6)


def test_checkpoints_load_weights_only(tmp_path):
    """Lightning checkpoints written by `fit` hold tensors and plain containers only."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = _run(script, tmp_path / "run", kill_at=-1)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12 and "state_dict" in ckpt  # the last multiple of checkpoint_every
