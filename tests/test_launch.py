"""The script entry point (`python -m eolab.launch`) that srun starts once per task.

Fast: parameter files, unknown names, the per-rank scratch folder. Slow: a real two-process DDP
run on CPU through the script, where only rank 0 writes the run's files.
"""

import json
import subprocess
import sys

import pytest

from eolab.launch import (
    SCRATCH_PREFIX,
    for_rank,
    global_rank,
    load_params,
    main,
    make_config,
)

TINY = {
    "n_pretrain": 64, "model_size": "vit_nano", "decoder_dim": 32, "decoder_depth": 1, "epochs": 1, "batch_size": 16,
    "bands": "B02,B03,B04,B08", "knn_every": 0, "probe_folds": 2, "probe_repeats": 1, "checkpoint_every": 2,
    "batch_sampling": "shuffle",
}


def test_params_from_json_and_yaml(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"epochs": 3, "model_size": "vit_nano"}))
    (tmp_path / "p.yaml").write_text("epochs: 3\nmodel_size: vit_nano\n")
    assert load_params(tmp_path / "p.json") == load_params(tmp_path / "p.yaml") == {"epochs": 3, "model_size": "vit_nano"}
    cfg = make_config(load_params(tmp_path / "p.yaml"), output_dir=str(tmp_path / "run"))
    assert cfg.epochs == 3 and cfg.output_dir == str(tmp_path / "run")


def test_unknown_or_invalid_parameters_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown parameters \\['epoch'\\]"):
        make_config({"epoch": 3})
    (tmp_path / "bad.yaml").write_text("strategy: horovod\n")
    assert main([str(tmp_path / "bad.yaml")]) == 2
    assert "parameter 'strategy'" in capsys.readouterr().err


def test_rank_from_the_launcher(monkeypatch):
    for name in ("RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert global_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert global_rank() == 0  # a one-task step (or a batch script) is rank 0
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert global_rank() == 3
    monkeypatch.setenv("RANK", "2")
    assert global_rank() == 2


def test_other_ranks_train_in_a_scratch_folder_sharing_the_checkpoints(tmp_path):
    cfg = make_config({}, output_dir=str(tmp_path / "run"))
    assert for_rank(cfg, 0) is cfg
    other = for_rank(cfg, 1)
    scratch = tmp_path / "run" / f"{SCRATCH_PREFIX}1"
    assert other.output_dir == str(scratch) and other.epochs == cfg.epochs
    assert (scratch / "checkpoints").resolve() == (tmp_path / "run" / "checkpoints").resolve()  # resume from rank 0's


@pytest.mark.slow
def test_two_process_script_run_writes_one_record(tmp_path):
    """devices=2, strategy ddp, without SLURM: Lightning starts rank 1 by re-running the command."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**TINY, "devices": "2", "strategy": "ddp", "accelerator": "cpu"}))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "eolab.launch", str(params), "--output-dir", str(out)],
                          check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # both ranks joined one process group
    record = json.loads((out / "record.json").read_text())
    assert record["params"]["devices"] == "2" and record["metrics"]["train_steps"] == 64 // 16
    assert {"encoder.pt", "history.csv", "record.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob(f"{SCRATCH_PREFIX}*")) and not (out / "checkpoints").exists()  # rank 1 cleaned up
