"""SlurmExecutor against a real SLURM cluster (CI: /work/shared/tools/slurm-localhost.sh up).

Skipped unless `sinfo` is on PATH and SLURM_CONF is set (`source $SLURM_CI_ROOT/env.sh`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from eolab.runner import load_spec, run_ablation
from eolab.runner.claim import CLAIM_NAME
from eolab.runner.spec import REPO_ROOT
from eolab.runner.store import RunStore
from tests.test_runner import write_spec
from tests.test_runner_pool import executions, job_notebook

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        shutil.which("sinfo") is None or not os.environ.get("SLURM_CONF"),
        reason="no SLURM cluster: needs `sinfo` on PATH and SLURM_CONF set "
        "(bash /work/shared/tools/slurm-localhost.sh up && source $SLURM_CI_ROOT/env.sh)",
    ),
]


def cancel_job_when_ready(folder: Path, timeout: float = 120.0) -> threading.Thread:
    """scancel the SLURM job whose notebook wrote slurm_job.id, from a background thread."""

    def cancel() -> None:
        deadline = time.monotonic() + timeout
        id_file = folder / "slurm_job.id"
        while time.monotonic() < deadline:
            if id_file.exists() and id_file.read_text().strip():
                subprocess.run(["scancel", id_file.read_text().strip()], check=False)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def test_slurm_job_array_records_done_failed_and_cancelled_runs(tmp_path: Path) -> None:
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    notebook = job_notebook(nb_dir, faults=True)  # x == 2 raises, x == 3 sleeps until cancelled
    spec_path = write_spec(
        tmp_path / "toy.yaml",
        f"name: toy\nnotebook: {notebook}\ngrid:\n  x: [1, 2, 3, 4]\n"
        "resources:\n  cpus_per_task: 1\n  timeout_min: 10\n",
    )
    ids = {r.params["x"]: r.run_id for r in load_spec(spec_path).runs()}
    canceller = cancel_job_when_ready(nb_dir)
    lines: list[str] = []

    summary = run_ablation(spec_path, results_root=tmp_path / "results", executor_kind="slurm", log=lines.append)

    canceller.join(timeout=1)
    store = RunStore(summary.results_dir)
    assert set(summary.failed) == {ids[2], ids[3]}, summary.failed
    assert summary.failed[ids[2]] == "ValueError: x=2 is cursed"
    assert "CANCELLED" in summary.failed[ids[3]] and store.status(ids[3])["state"] == "failed"
    assert store.is_done(ids[1]) and store.is_done(ids[4])
    assert store.status(ids[1])["pid"] != os.getpid()  # executed by a SLURM job, not here
    assert not list(store.runs_dir.glob(f"*/{CLAIM_NAME}*"))
    assert list((summary.results_dir / "slurm").rglob("*.out"))  # submitit's job logs
    assert executions(nb_dir) == {1: 1, 2: 1, 3: 1, 4: 1}
    table = pd.read_csv(summary.results_dir / "table.csv")
    assert sorted(set(table["run_id"])) == sorted([ids[1], ids[4]]) and len(table) == 4
    assert len([line for line in lines if line.startswith("[")]) == 4


TINY_RUN = {
    "n_pretrain": 64, "model_size": "vit_nano", "decoder_dim": 32, "decoder_depth": 1, "epochs": 1, "batch_size": 16,
    "bands": "B02,B03,B04,B08", "knn_every": 0, "probe_folds": 2, "probe_repeats": 1, "checkpoint_every": 2,
    "batch_sampling": "shuffle", "accelerator": "cpu",
}


@pytest.mark.slow
def test_srun_two_tasks_train_one_run_and_write_one_record(tmp_path: Path) -> None:
    """`srun python -m eolab.launch` with 1 node x 2 tasks: one DDP group of 2, rank 0 writes."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps(TINY_RUN))
    log = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --job-name=eolab-ddp --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=15 --output={log}\n"
        f"cd {REPO_ROOT}\n"
        f"srun --kill-on-bad-exit=1 {sys.executable} -m eolab.launch {params} --output-dir {tmp_path / 'run'}\n"
    )
    done = subprocess.run(["sbatch", "--wait", str(script)], check=False, capture_output=True, text=True, timeout=900)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in text and "GLOBAL_RANK: 1, MEMBER: 2/2" in text  # world size 2
    assert text.count("record: ") == 1  # written by rank 0 only
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["params"]["devices"] == "2" and record["params"]["strategy"] == "ddp"
    assert record["metrics"]["train_steps"] == 64 // 16  # global batches of 16, 8 per rank
    assert not list((tmp_path / "run").glob(".rank*"))


@pytest.mark.slow
def test_slurm_executor_runs_the_notebook_as_rank_0_of_two_tasks(tmp_path: Path) -> None:
    """resources tasks_per_node: 2: the notebook (rank 0) and a training worker (rank 1) train one
    DDP run; the run folder is a notebook run's (status, executed notebook, record)."""
    from eolab.runner.slurm import SlurmExecutor
    from eolab.runner.store import NOTEBOOK_NAME
    from eolab.runner.types import RunTask

    results = tmp_path / "results" / "ddp"
    store = RunStore(results)
    task = RunTask(run_id="tiny-ddp", notebook=REPO_ROOT / "notebooks" / "pretrain.ipynb", results_dir=results,
                   parameters={**TINY_RUN, "output_dir": str(store.run_dir("tiny-ddp"))})
    executor = SlurmExecutor(results, resources={"tasks_per_node": 2, "cpus_per_task": 1, "timeout_min": 15},
                             job_name="eolab-ddp")
    [outcome] = executor.submit([task])
    assert outcome.state == "done", outcome.error
    assert store.is_done("tiny-ddp")
    notebook = (store.run_dir("tiny-ddp") / NOTEBOOK_NAME).read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in notebook  # the kernel trained as rank 0 of 2
    worker_logs = "".join(p.read_text() for p in (results / "slurm").rglob("*_1_log.*"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in worker_logs  # and the worker task as rank 1
    record = json.loads((store.run_dir("tiny-ddp") / "record.json").read_text())
    assert record["metrics"]["train_steps"] == 64 // 16
    assert not list(store.run_dir("tiny-ddp").glob(".rank*"))


@pytest.mark.slow
def test_slurm_multi_task_run_names_the_failing_worker(tmp_path: Path) -> None:
    """A worker rank that raises ends the job (srun --kill-on-bad-exit), rather than leaving rank 0
    waiting in a collective, and the run's error names it."""
    from eolab.runner.slurm import SlurmExecutor
    from eolab.runner.types import RunTask

    results = tmp_path / "results" / "bad"
    store = RunStore(results)
    task = RunTask(run_id="bad", notebook=REPO_ROOT / "notebooks" / "pretrain.ipynb", results_dir=results,
                   parameters={**TINY_RUN, "epochs": 0, "output_dir": str(store.run_dir("bad"))})
    [outcome] = SlurmExecutor(results, resources={"tasks_per_node": 2, "cpus_per_task": 1, "timeout_min": 10}).submit([task])
    assert outcome.state == "failed" and store.status("bad")["state"] == "failed"
    assert "parameter 'epochs' must be >= 1" in outcome.error and outcome.error == store.status("bad")["error"]
