"""SlurmExecutor against a real SLURM cluster (CI: /work/shared/tools/slurm-localhost.sh up).

Skipped unless `sinfo` is on PATH and SLURM_CONF is set (`source $SLURM_CI_ROOT/env.sh`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from eolab.runner import load_spec, run_ablation
from eolab.runner.claim import CLAIM_NAME
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
