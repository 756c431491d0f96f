"""A run killed with SIGKILL mid-epoch and resumed continues exactly as an uninterrupted run.

Each run is a separate Python process (the kill is a real SIGKILL of that process, sent by itself
at a chosen step, between two checkpoints and in the middle of an epoch). Besides the MAE, the
objectives with an EMA teacher run it too: latent masked modelling (the teacher's weights) and DINO
with iBOT and KoLeo (teacher, centres and the step-dependent teacher temperature).
"""

import json
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import lightning as L
    import torch
    from eolab.data.stats import Normalization
    from eolab.models.vit import build_encoder
    from eolab.tasks import TaskParams, build_task
    from eolab.train import fit

    BANDS = ("B02", "B03", "B04")
    out, kill_at, objective = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}  # further fit() options (compile, precision)

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
    task = build_task(objective, build_encoder("vit_nano", BANDS, img_size=16, patch_size=4),
                      TaskParams(decoder_dim=32, decoder_depth=1, dino_out_dim=64, local_crops=2, ibot_weight=1.0,
                                 koleo_weight=0.1, ema_momentum=0.9))
    fit(task, Images(), norm, batch_size=4, lr=1e-3, max_steps=14, seed=0, augment="eo", health_every=0,
        accelerator="cpu", callbacks=[Kill()], checkpoint_dir=out / "checkpoints", checkpoint_every=4,
        history_path=out / "history.csv", **options)
""")


def _run(script, out, kill_at, objective="mae", options=None):
    extra = [json.dumps(options)] if options else []
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at), objective, *extra], capture_output=True, text=True,
                          timeout=300)


def _whole(tmp_path_factory, objective):
    """The uninterrupted run's history (14 steps, checkpoints every 4)."""
    tmp_path = tmp_path_factory.mktemp(f"whole-{objective}")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    done = _run(script, tmp_path / "whole", kill_at=-1, objective=objective)
    assert done.returncode == 0, done.stderr[-2000:]
    return pd.read_csv(tmp_path / "whole" / "history.csv")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return _whole(tmp_path_factory, "mae")


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mae", "jepa+dino"])  # one run, both teachers
def test_killed_run_resumes_on_the_same_trajectory(tmp_path, tmp_path_factory, whole, objective):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    if objective != "mae":
        whole = _whole(tmp_path_factory, objective)

    killed = _run(script, tmp_path / "killed", kill_at=10, objective=objective)  # 6 batches per epoch: step 10 is mid-epoch 2
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    assert pd.read_csv(tmp_path / "killed" / "history.csv")["step"].max() == 8  # written with the last checkpoint

    resumed = _run(script, tmp_path / "killed", kill_at=-1, objective=objective)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = whole
    b = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 15))
    torch.testing.assert_close(torch.tensor(b["loss"].to_numpy()), torch.tensor(a["loss"].to_numpy()), rtol=1e-5, atol=1e-6)
    if "dino" in objective:  # the step-dependent teacher temperature resumed too
        assert b["dino/teacher_temp"].tolist() == pytest.approx(a["dino/teacher_temp"].tolist())
        assert a["dino/teacher_temp"].iloc[-1] > a["dino/teacher_temp"].iloc[0]


@pytest.mark.slow
def test_killed_compiled_bf16_run_resumes_on_the_same_trajectory(tmp_path):
    """With the whole task compiled (masks drawn from torch's generator inside the compiled graph)
    and bf16 autocast: killed mid-epoch and resumed, the run follows its uninterrupted twin."""
    from eolab.train import compile_unavailable

    if reason := compile_unavailable():
        pytest.skip(reason)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    options = {"compile": "task", "precision": "bf16-mixed"}
    done = _run(script, tmp_path / "whole", kill_at=-1, options=options)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _run(script, tmp_path / "killed", kill_at=10, options=options)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(script, tmp_path / "killed", kill_at=-1, options=options)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (pd.read_csv(tmp_path / name / "history.csv") for name in ("whole", "killed"))
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



def test_unloadable_checkpoint_is_set_aside_for_the_previous_good_one(tmp_path):
    """A truncated last.ckpt (a kill or a full disk while it was written) is renamed and named;
    the run continues from the newest checkpoint that loads, or from scratch when none does."""
    from eolab.train import CORRUPT_SUFFIX, loadable_checkpoint

    good = tmp_path / "stepstep=8.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 8}, good)
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 12}, tmp_path / "last.ckpt")
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(data[: len(data) // 2])

    with pytest.warns(UserWarning, match="last.ckpt does not load"):
        path, set_aside = loadable_checkpoint(tmp_path)
    assert path == good
    assert [s["file"] for s in set_aside] == ["last.ckpt"] and set_aside[0]["error"]
    assert set_aside[0]["set_aside_as"].startswith("last.ckpt" + CORRUPT_SUFFIX)
    assert not (tmp_path / "last.ckpt").exists() and (tmp_path / set_aside[0]["set_aside_as"]).is_file()

    good.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="stepstep=8.ckpt does not load"):
        path, set_aside = loadable_checkpoint(tmp_path)
    assert path is None and [s["file"] for s in set_aside] == ["stepstep=8.ckpt"]  # from scratch
    assert sorted(p.name.split(CORRUPT_SUFFIX)[0] for p in tmp_path.iterdir()) == ["last.ckpt", "stepstep=8.ckpt"]


@pytest.mark.slow
def test_truncated_last_checkpoint_resumes_from_the_previous_one(tmp_path, whole):
    """Killed at step 10 (checkpoint at 8), last.ckpt truncated: the re-run sets it aside, resumes
    from the step-8 checkpoint beside it and ends on the uninterrupted trajectory, every step once."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    killed = _run(script, tmp_path / "killed", kill_at=10)
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])

    resumed = _run(script, tmp_path / "killed", kill_at=-1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "last.ckpt does not load" in resumed.stderr and "set aside as last.ckpt.corrupt-" in resumed.stderr
    b = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert b["step"].tolist() == whole["step"].tolist() == list(range(1, 15))
    torch.testing.assert_close(torch.tensor(b["loss"].to_numpy()), torch.tensor(whole["loss"].to_numpy()), rtol=1e-5, atol=1e-6)


# The same run on a packed corpus of real Hydro patches (eolab.data.stream), read by 2 DataLoader
# workers: 24 patches in 5 shards, 2 slots of 12, 6 batches of 4 per epoch, as above.
PACKED_SCRIPT = SCRIPT.replace(
    "torch.manual_seed(0)\n",
    "from eolab.data.stream import PackedDataset, open_corpus\n"
    "Images = lambda: PackedDataset(open_corpus(sys.argv[5]))\n"
    "torch.manual_seed(0)\n",
).replace("health_every=0,", "health_every=0, num_workers=2,")


def _run_packed(script, out, kill_at, corpus):
    # argv: out, kill_at, objective, fit() options (none), the corpus
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at), "mae", "{}", str(corpus)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_killed_run_on_a_packed_corpus_resumes_on_the_same_trajectory(tmp_path, root):
    from eolab.data.shards import PackOptions, pack

    assert "num_workers=2" in PACKED_SCRIPT and "PackedDataset" in PACKED_SCRIPT
    corpus = tmp_path / "corpus"
    pack(("hydro",), corpus, root=root, opts=PackOptions(patch=16, stride=16, bands=("B02", "B03", "B04"), n=24, shard_size=5),
         workers=1, progress=lambda line: None)
    script = tmp_path / "train.py"
    script.write_text(PACKED_SCRIPT)
    done = _run_packed(script, tmp_path / "whole", -1, corpus)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _run_packed(script, tmp_path / "killed", 10, corpus)  # mid-epoch 2, checkpoint at 8
    assert killed.returncode == -signal.SIGKILL
    resumed = _run_packed(script, tmp_path / "killed", -1, corpus)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = pd.read_csv(tmp_path / "whole" / "history.csv")
    b = pd.read_csv(tmp_path / "killed" / "history.csv")
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 15))
    torch.testing.assert_close(torch.tensor(b["loss"].to_numpy()), torch.tensor(a["loss"].to_numpy()), rtol=1e-5, atol=1e-6)
