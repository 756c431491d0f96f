"""Progress while runs execute: the run log and Lightning's bar of one run, the ablation's live line."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from eolab.data.stats import Normalization
from eolab.models.vit import build_encoder
from eolab.progress import RUN_LOG_NAME, resolve_progress
from eolab.runner.progress import AblationProgress, last_line
from eolab.runner.store import RunStore
from eolab.runner.types import RunOutcome
from eolab.tasks import TaskParams, build_task
from eolab.train import fit
from eolab.train_progress import StepProgressBar

BANDS = ("B02", "B03", "B04", "B08")
SMALL = TaskParams(decoder_dim=32, decoder_depth=1)
STEP_LINE = re.compile(r"step (\d+)/(\d+) epoch \d+ loss (\d+\.\d+) img/s (\d+\.\d) eta (\d+:\d\d:\d\d)")


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(4, 16, 16, generator=g), "bands": BANDS, "unit": "reflectance", "source": "test"}


def _fit(tmp_path, progress, **kw):
    torch.manual_seed(0)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), SMALL)
    return fit(task, _Images(), norm, batch_size=8, lr=1e-3, epochs=2, health_every=0, accelerator="cpu",
               progress=progress, log_path=tmp_path / RUN_LOG_NAME, **kw)


def test_run_log_has_step_of_total_loss_rate_and_eta(tmp_path):
    history = _fit(tmp_path, "log")
    lines = (tmp_path / RUN_LOG_NAME).read_text().splitlines()
    assert lines[0].endswith("training: 6 optimiser steps")  # 24 images / 8 per batch x 2 epochs
    steps = [STEP_LINE.search(line) for line in lines if " step " in line]
    assert all(steps) and steps[0].group(1, 2) == ("1", "6") and steps[-1].group(1, 2) == ("6", "6")
    assert float(steps[-1].group(3)) == pytest.approx(history["loss"].iloc[-1], abs=1e-4)
    assert float(steps[-1].group(4)) > 0 and steps[-1].group(5) == "0:00:00"
    assert lines[-1].split(" ", 1)[1].startswith("training done: 6 steps")
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 ", line) for line in lines)


def test_progress_bar_counts_steps_of_the_whole_run(tmp_path, capsys):
    _fit(tmp_path, "bar")
    out = capsys.readouterr().out
    assert "pre-training" in out and "6/6" in out  # steps over both epochs, not batches of one
    assert re.search(r"loss=\d+\.\d{4}", out) and re.search(r"img/s=\d+\.\d", out)
    assert (tmp_path / RUN_LOG_NAME).is_file()  # the bar does not replace the run log


def test_no_progress_writes_nothing(tmp_path, capsys):
    _fit(tmp_path, "none")
    assert not (tmp_path / RUN_LOG_NAME).exists() and "pre-training" not in capsys.readouterr().out


def test_auto_progress_follows_runner_ci_and_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("EOLAB_PROGRESS", "log")
    assert resolve_progress("auto") == "log" and resolve_progress("bar") == "bar"
    monkeypatch.delenv("EOLAB_PROGRESS")
    monkeypatch.setenv("CI", "true")
    assert resolve_progress("auto") == "log"
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal, and pytest is no Jupyter kernel
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert resolve_progress("auto") == "log"
    with pytest.raises(ValueError, match="parameter 'progress'"):
        resolve_progress("verbose")


def _running(store: RunStore, run_id: str, log: str | None) -> Path:
    store.mark_running(run_id, {"x": 1})
    if log is not None:
        (store.run_dir(run_id) / RUN_LOG_NAME).write_text(log)
    return store.run_dir(run_id)


def test_ablation_progress_shows_starts_logs_and_counts(tmp_path):
    store = RunStore(tmp_path / "abl")
    ids = ["a", "b", "c"]
    lines: list[str] = []
    progress = AblationProgress("abl", {i: store.run_dir(i) for i in ids}, log=lines.append, mode="lines")
    assert progress.status_text().startswith("0/3 done | 0 running | 0 failed | 3 left") and progress.eta_s() is None
    run_dir = _running(store, "a", "2026-12-01T22:01:31+00:00 training: 8 optimiser steps\n"
                                   "2026-12-01T22:01:42+00:00 step 3/8 epoch 0 loss 1.0815 img/s 8.8 eta 0:00:36\n")
    progress.poll()
    progress.poll()  # a run starts once
    assert lines == [f"start  a  progress: {run_dir / RUN_LOG_NAME}"]
    text = progress.status_text()
    assert "0/3 done | 1 running | 0 failed | 2 left" in text
    assert "a: step 3/8 epoch 0 loss 1.0815 img/s 8.8 eta 0:00:36" in text
    progress.on_finished(RunOutcome("a", "done", None, 10.0))
    progress.on_finished(RunOutcome("b", "failed", "ValueError: x", 20.0))
    assert lines[1].startswith("[1/3] done   a (10.0s) | failed 0")
    assert lines[2].startswith("[2/3] failed b (20.0s) | failed 1")
    assert progress.eta_s() == pytest.approx(15.0)  # one run left, 15 s per run
    assert progress.status_text().startswith("2/3 done | 0 running | 1 failed | 1 left")


def test_a_run_left_running_by_an_earlier_batch_is_not_shown_as_started(tmp_path):
    store = RunStore(tmp_path / "abl")
    _running(store, "old", None)
    status = json.loads((store.run_dir("old") / "status.json").read_text())
    status["started_at"] = "2020-01-01T00:00:00+00:00"  # killed long ago, never marked finished
    (store.run_dir("old") / "status.json").write_text(json.dumps(status))
    lines: list[str] = []
    progress = AblationProgress("abl", {"old": store.run_dir("old")}, log=lines.append, mode="lines")
    progress.poll()
    assert lines == [] and progress.running == {}


def test_quiet_mode_prints_finished_runs_only(tmp_path):
    store = RunStore(tmp_path / "abl")
    lines: list[str] = []
    progress = AblationProgress("abl", {"a": store.run_dir("a")}, log=lines.append, mode="quiet")
    _running(store, "a", None)
    progress.poll()
    progress.on_finished(RunOutcome("a", "done", None, 1.0))
    assert len(lines) == 1 and lines[0].startswith("[1/1] done")


def test_bar_mode_redraws_a_line_while_a_run_executes(tmp_path):
    store = RunStore(tmp_path / "abl")
    out = io.StringIO()
    with redirect_stdout(out):
        progress = AblationProgress("abl", {"a": store.run_dir("a")}, mode="bar", interval=0.05)
        with progress:
            _running(store, "a", "2026-12-01T22:01:42+00:00 step 3/8 epoch 0 loss 1.0815 img/s 8.8 eta 0:00:36\n")
            for _ in range(200):  # wait (at most 10 s) until the watcher has seen the start
                if progress.running:
                    break
                time.sleep(0.05)
            progress.poll()
            assert "a" in progress.running
            progress.on_finished(RunOutcome("a", "done", None, 1.0))
    text = out.getvalue()
    assert "abl:   0%|" in text and "0/1 runs, 1 running | 0 failed | 0 left" in text and "step 3/8" in text
    assert "start  a  progress:" in text and "[1/1] done" in text and "abl: 100%|" in text and "1/1 runs" in text


def test_last_line_reads_the_tail_without_timestamp(tmp_path):
    path = tmp_path / "run.log"
    assert last_line(path) == ""
    path.write_text("x\n" * 5000 + "2026-12-01T22:01:42+00:00 record written: record.json\n\n")
    assert last_line(path) == "record written: record.json"


def test_step_progress_bar_is_lightnings_progress_bar():
    from lightning.pytorch.callbacks.progress import ProgressBar

    assert isinstance(StepProgressBar(), ProgressBar)


@pytest.mark.slow
def test_in_a_jupyter_kernel_the_bar_is_a_widget(tmp_path):
    """A notebook (as in JupyterLab) with progress "auto": Lightning's bar as a tqdm widget, with the
    step count of the whole run and the loss; no run log is lost."""
    import nbformat
    from nbclient import NotebookClient

    from eolab.runner.notebook import eolab_importable

    code = f'''
import os
os.environ.pop("EOLAB_PROGRESS", None)
os.environ.pop("CI", None)  # as in JupyterLab: CI itself would choose the log
import torch
from eolab.data.stats import Normalization
from eolab.models.vit import build_encoder
from eolab.progress import resolve_progress
from eolab.tasks import TaskParams, build_task
from eolab.train import fit
BANDS = {BANDS!r}
class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 24
    def __getitem__(self, i):
        return {{"image": torch.rand(4, 16, 16), "bands": BANDS, "unit": "reflectance", "source": "t"}}
norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), TaskParams(decoder_dim=32, decoder_depth=1))
mode = resolve_progress("auto")
h = fit(task, Images(), norm, batch_size=8, lr=1e-3, epochs=2, health_every=0, accelerator="cpu",
        progress=mode, log_path={str(tmp_path / RUN_LOG_NAME)!r})
print("MODE", mode, len(h))
'''
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    with eolab_importable():  # the kernel imports this worktree's eolab
        os.environ.pop("EOLAB_PROGRESS", None)  # as in JupyterLab, not under the runner
        NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "MODE bar 6" in text
    widgets = [o for o in outputs if o.output_type == "display_data" and "application/vnd.jupyter.widget-view+json" in o.data]
    assert widgets, outputs
    state = json.dumps(nb.metadata.get("widgets", {}))
    assert "6/6" in state and "loss=" in state and "img/s=" in state
    assert "step 6/6" in (tmp_path / RUN_LOG_NAME).read_text()
