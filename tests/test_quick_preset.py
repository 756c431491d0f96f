"""The quick preset end to end through the runner: a real run, its log, its tracking, a clean notebook."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from eolab.runner.execute import run_ablation
from eolab.runner.spec import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_preset_runs_logs_and_tracks(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = yaml.safe_load((REPO_ROOT / "ablations" / "quick.yaml").read_text())
    spec["base"].update(logger="tensorboard")
    spec.pop("summary")  # the summary notebook has its own tests
    for key in ("notebook",):
        spec[key] = str(REPO_ROOT / spec[key])
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    # "lines" whatever the environment: under CI, "auto" would print finished runs only
    summary = run_ablation(path, results_root=tmp_path / "results", log=lines.append, progress="lines")
    assert summary.ok and len(summary.executed) == 1, summary.failed
    run_dir = summary.results_dir / "runs" / summary.executed[0].run_id
    assert any(line.startswith("start ") and line.endswith(str(run_dir / "run.log")) for line in lines)
    log = (run_dir / "run.log").read_text()
    assert "training: 8 optimiser steps" in log and re.search(r"step 8/8 epoch 1 loss \d\.\d{4} img/s", log)
    assert log.rstrip().endswith("record written: record.json")
    record = json.loads((run_dir / "record.json").read_text())
    assert record["params"]["logger"] == "tensorboard" and record["params"]["progress"] == "auto"
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert len(acc.Scalars("train/loss")) == 8
    probe = acc.Scalars("final/pretrained_acc_mean")[-1].value
    assert probe == pytest.approx(record["metrics"]["pretrained_acc_mean"], abs=1e-6)
    # the runner's kernels write the run log, not a progress bar, into the executed notebook
    notebook = (run_dir / "notebook.ipynb").read_text()
    assert "pre-training (epoch" not in notebook and "it/s]" not in notebook
    shutil.rmtree(run_dir / "tensorboard")
