"""A run whose kernel is SIGKILLed mid-training and re-run by `python -m eolab ablate` ends exactly
as the uninterrupted run: the whole history (every step, once) and the same record, except the
wall-clock fields, which count both attempts.

The kernel is held at a chosen step after a checkpoint (a `sitecustomize` on the kernel's
PYTHONPATH parks it there and says so in a file), found among the `ablate` process's children by
its command line, and SIGKILLed from outside: a real kill of a real kernel, at a known step, without
racing a fast machine.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STEPS, CHECKPOINT_EVERY, HOLD_AT = 16, 5, 7  # 128 patches / batch 8, one epoch; held after the step-5 checkpoint

SPEC = f"""\
name: resume
notebook: notebooks/pretrain.ipynb
base:
  epochs: 1
  n_pretrain: 128
  batch_size: 8
  model_size: vit_nano
  decoder_dim: 32
  decoder_depth: 1
  probe_folds: 2
  probe_repeats: 1
  probe_baselines: false
  checkpoint_every: {CHECKPOINT_EVERY}
  knn_every: 0
  benchmark: ""
  accelerator: cpu
grid:
  mask_ratio: [0.75]
seeds: [0]
"""

# Parks the kernel once History has recorded step HOLD_AT (after the checkpoint at step 5), and
# writes the marker file; only in a process where EOLAB_TEST_HOLD is set and eolab.train is imported.
SITECUSTOMIZE = textwrap.dedent("""
    import os, sys, threading, time

    def _patch():
        while "eolab.train" not in sys.modules or not hasattr(sys.modules["eolab.train"], "History"):
            time.sleep(0.05)
        History = sys.modules["eolab.train"].History
        original = History.on_train_batch_end
        step, marker = int(os.environ["EOLAB_TEST_HOLD_STEP"]), os.environ["EOLAB_TEST_HOLD"]

        def held(self, trainer, *args, **kwargs):
            original(self, trainer, *args, **kwargs)
            if trainer.global_step == step:
                open(marker, "w").write(str(os.getpid()))
                while True:
                    time.sleep(1)

        History.on_train_batch_end = held

    if os.environ.get("EOLAB_TEST_HOLD"):
        threading.Thread(target=_patch, daemon=True).start()
""")

WALL_CLOCK = {"train_time_s", "train_images_per_s", "cpu_hours", "gpu_hours"}


def _ablate(spec: Path, results: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "eolab", "ablate", str(spec), "--results-root", str(results)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kernel_of(process: subprocess.Popen) -> psutil.Process:
    kernels = [p for p in psutil.Process(process.pid).children(recursive=True)
               if any("ipykernel" in part for part in p.cmdline())]
    assert len(kernels) == 1, [p.cmdline() for p in kernels]
    return kernels[0]


def _run_dir(results: Path) -> Path:
    (run_dir,) = (results / "resume" / "runs").iterdir()
    return run_dir


def test_kernel_killed_mid_training_resumes_through_ablate(tmp_path):
    spec = tmp_path / "resume.yaml"
    spec.write_text(SPEC)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))

    whole = _ablate(spec, tmp_path / "whole", env)
    out, _ = whole.communicate(timeout=900)
    assert whole.returncode == 0, out[-3000:]

    marker = tmp_path / "held"
    held_env = dict(env, PYTHONPATH=os.pathsep.join((str(hooks), env["PYTHONPATH"])),
                    EOLAB_TEST_HOLD=str(marker), EOLAB_TEST_HOLD_STEP=str(HOLD_AT))
    first = _ablate(spec, tmp_path / "killed", held_env)
    deadline = time.monotonic() + 900  # a generous bound on reaching the step, not a timing assertion
    while not marker.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:] if first.poll() is not None else "never held"
        time.sleep(0.2)
    run_dir = _run_dir(tmp_path / "killed")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    kernel = _kernel_of(first)
    assert kernel.pid == int(marker.read_text())
    kernel.send_signal(signal.SIGKILL)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1, out[-3000:]  # the run failed: its kernel died
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "DeadKernel" in status["error"], status["error"]
    assert pd.read_csv(run_dir / "history.csv")["step"].max() == CHECKPOINT_EVERY  # written with the checkpoint

    again = _ablate(spec, tmp_path / "killed", env)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]

    a = json.loads((_run_dir(tmp_path / "whole") / "record.json").read_text())
    b = json.loads((run_dir / "record.json").read_text())
    assert a["resume"] is None
    assert b["resume"]["resumed_from"] == "last.ckpt" and b["resume"]["resumed_at_step"] == CHECKPOINT_EVERY
    assert b["resume"]["train_time_before_resume_s"] > 0 and b["resume"]["set_aside"] == []

    ha, hb = pd.read_csv(_run_dir(tmp_path / "whole") / "history.csv"), pd.read_csv(run_dir / "history.csv")
    assert hb["step"].tolist() == ha["step"].tolist() == list(range(1, STEPS + 1))  # 16 of 16 rows, each once
    pd.testing.assert_frame_equal(hb.drop(columns="time_s"), ha.drop(columns="time_s"), rtol=1e-5, atol=1e-6)
    assert hb["time_s"].is_monotonic_increasing  # training seconds over both attempts

    _assert_same_folds(a["folds"], b["folds"])
    same = {k: v for k, v in a["metrics"].items() if k not in WALL_CLOCK}
    assert {k: b["metrics"][k] for k in same} == pytest.approx(same, rel=1e-5, abs=1e-6)
    assert set(b["metrics"]) == set(a["metrics"])
    # wall-clock fields count both attempts: the first one's training up to its checkpoint is in
    assert b["metrics"]["train_time_s"] > b["resume"]["train_time_before_resume_s"]
    assert b["metrics"]["train_images_per_s"] == pytest.approx(STEPS * 8 / b["metrics"]["train_time_s"])

    runs = pd.read_csv(tmp_path / "killed" / "resume" / "runs.csv")
    assert runs["status"].tolist() == ["done"] and len(pd.read_csv(tmp_path / "killed" / "resume" / "table.csv")) == 2


def _assert_same_folds(a: list[dict], b: list[dict]) -> None:
    assert [(f["encoder"], f["fold"]) for f in a] == [(f["encoder"], f["fold"]) for f in b]
    assert [f["accuracy"] for f in b] == pytest.approx([f["accuracy"] for f in a], abs=1e-9)
