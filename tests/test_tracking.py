"""Tracking: a run's parameters, per-step loss and health, and final metrics in Lightning's loggers
(CSV, TensorBoard read back from its event files, MLflow on a real local tracking server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

from eolab.config import PretrainConfig
from eolab.data.stats import Normalization
from eolab.models.vit import build_encoder
from eolab.tasks import TaskParams, build_task
from eolab.tracking import (
    has_secret,
    log_final,
    log_params,
    make_loggers,
    redact_uri,
    run_names,
)
from eolab.train import fit

BANDS = ("B02", "B03", "B04", "B08")
SMALL = TaskParams(decoder_dim=32, decoder_depth=1)
SECRET = "s3cr3t-pw"
FINAL = {"pretrained_acc_mean": 0.61, "train_steps": 6, "collapsed": 0.0, "not_a_number": float("nan")}


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(4, 16, 16, generator=g), "bands": BANDS, "unit": "reflectance", "source": "test"}


def _tracked_run(run_dir: Path, logger: str, tracking_uri: str = "") -> pd.DataFrame:
    """What ``experiment.pretrain`` and ``write_record`` do with a run's loggers, on a tiny MAE."""
    cfg = PretrainConfig(logger=logger, tracking_uri=tracking_uri, mask_ratio=0.6, output_dir=str(run_dir))
    loggers = make_loggers(cfg.logger, cfg.tracking_uri, run_dir)
    log_params(loggers, {"mask_ratio": cfg.mask_ratio, "tracking_uri": cfg.tracking_uri, "output_dir": str(run_dir)})
    torch.manual_seed(0)
    norm = Normalization(BANDS, "reflectance", dict.fromkeys(BANDS, 0.5), dict.fromkeys(BANDS, 0.3))
    task = build_task("mae", build_encoder("vit_nano", BANDS, img_size=16, patch_size=4), SMALL)
    history = fit(task, _Images(), norm, batch_size=8, lr=1e-3, epochs=2, health_every=2, accelerator="cpu",
                  loggers=loggers)
    log_final(loggers, FINAL, step=int(history["step"].max()))
    return history


@pytest.mark.parametrize("uri, redacted", [
    ("http://user:pw@host:5000/x", "http://user:***@host:5000/x"),
    ("https://host/api?password=pw&x=1", "https://host/api?password=***&x=1"),
    ("https://host/api?token=abc", "https://host/api?token=***"),
    ("postgresql://me:pw@db/mlflow", "postgresql://me:***@db/mlflow"),
    ("http://user@host:5000", "http://user@host:5000"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("runs/tensorboard", "runs/tensorboard"),
])
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted and has_secret(uri) == (uri != redacted)


def test_config_validates_and_never_shows_the_password(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="parameter 'logger' must be one of"):
        PretrainConfig(logger="wandb")
    with pytest.raises(ValueError, match="parameter 'tracking_uri'"):
        PretrainConfig(logger="mlflow")
    with pytest.raises(ValueError, match="parameter 'progress'"):
        PretrainConfig(progress="loud")
    cfg = PretrainConfig(logger="mlflow", tracking_uri=f"http://me:{SECRET}@host:5000")
    assert SECRET not in repr(cfg) and "http://me:***@host:5000" in repr(cfg)
    assert "output_dir='.'" in repr(cfg)


def test_runs_are_grouped_by_ablation(tmp_path):
    assert run_names(tmp_path / "mask_ratio" / "runs" / "mask_ratio=0.75-seed=0-abc") == ("mask_ratio", "mask_ratio=0.75-seed=0-abc")
    assert run_names(tmp_path / "scratch") == ("eolab", "scratch")


def test_csv_logger_has_every_step_and_the_final_metrics(tmp_path):
    run_dir = tmp_path / "abl" / "runs" / "r1"
    history = _tracked_run(run_dir, "csv")
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    steps = metrics.dropna(subset=["train/loss"])
    assert len(steps) == len(history) == 6
    assert steps["train/loss"].to_numpy() == pytest.approx(history["loss"].to_numpy(), abs=1e-5)
    assert metrics["health/effective_rank"].notna().sum() == 3  # every 2nd step
    assert metrics["final/pretrained_acc_mean"].dropna().tolist() == [0.61]
    assert "final/not_a_number" not in metrics.columns
    assert "mask_ratio: 0.6" in (run_dir / "csv" / "hparams.yaml").read_text()


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "abl" / "runs" / "r1"
    history = _tracked_run(run_dir, "tensorboard", tracking_uri="")
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(6))  # Lightning logs at the step before the update
    assert [e.value for e in loss] == pytest.approx(history["loss"].tolist(), abs=1e-5)
    assert len(acc.Scalars("health/effective_rank")) == 3
    assert acc.Scalars("final/pretrained_acc_mean")[-1].value == pytest.approx(0.61)
    assert "mask_ratio: 0.6" in (run_dir / "tensorboard" / "hparams.yaml").read_text()
    # a shared log folder: <tracking_uri>/<ablation>/<run id>, so `tensorboard --logdir` groups runs
    shared = tmp_path / "tb"
    _tracked_run(tmp_path / "abl" / "runs" / "r2", "tensorboard", tracking_uri=str(shared))
    assert list((shared / "abl" / "r2").glob("events.out.tfevents.*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (SQLite backend) on 127.0.0.1; yields its URI."""
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_exe)] if mlflow_exe.exists() else [shutil.which("mlflow") or "mlflow"]
    port = _free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [*command, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # the first start migrates the SQLite schema: allow a slow shared machine
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health")
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def test_mlflow_run_on_a_real_tracking_server(tmp_path, mlflow_server, capsys):
    from mlflow.tracking import MlflowClient

    host = mlflow_server.removeprefix("http://")
    uri = f"http://eolab:{SECRET}@{host}"  # credentials in the URI: used, never logged
    run_dir = tmp_path / "mask_ratio" / "runs" / "mask_ratio=0.6-seed=0-abc"
    history = _tracked_run(run_dir, "mlflow", tracking_uri=uri)

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("mask_ratio")  # the ablation's name
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "mask_ratio=0.6-seed=0-abc" and run.info.status == "FINISHED"
    assert run.data.tags["eolab.ablation"] == "mask_ratio"
    assert run.data.params["mask_ratio"] == "0.6"
    assert run.data.params["tracking_uri"] == f"http://eolab:***@{host}"
    assert "output_dir" not in run.data.params
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.value for m in sorted(loss, key=lambda m: m.step)] == pytest.approx(history["loss"].tolist(), abs=1e-5)
    assert len(client.get_metric_history(run.info.run_id, "health/embedding_std")) == 3
    assert run.data.metrics["final/pretrained_acc_mean"] == pytest.approx(0.61)
    everything = str(run.data.params) + str(run.data.tags) + str(run.data.metrics)
    captured = capsys.readouterr()
    assert SECRET not in everything and SECRET not in captured.out + captured.err


def test_a_spec_with_a_tracking_password_is_refused(tmp_path):
    from eolab.runner.execute import run_ablation
    from eolab.runner.spec import REPO_ROOT, SpecError

    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\nnotebook: {REPO_ROOT / 'notebooks' / 'pretrain.ipynb'}\n"
                    f"base: {{logger: mlflow, tracking_uri: 'http://me:{SECRET}@host:5000'}}\n"
                    "grid: {mask_ratio: [0.5]}\nseeds: [0]\n")
    with pytest.raises(SpecError, match=r"`tracking_uri` http://me:\*\*\*@host:5000 carries credentials") as exc:
        run_ablation(spec, results_root=tmp_path / "results", log=lambda _: None)
    assert SECRET not in str(exc.value) and not (tmp_path / "results" / "s" / "spec.json").exists()
