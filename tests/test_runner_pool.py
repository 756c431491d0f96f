"""Tests of the process-pool executor and of run claims, on tiny throw-away notebooks.

Each kernel start costs a few seconds, so each test runs a handful of runs at most.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from eolab.__main__ import main
from eolab.runner import load_spec, rebuild_table, run_ablation
from eolab.runner.claim import CLAIM_NAME, process_alive, try_claim
from eolab.runner.spec import REPO_ROOT
from eolab.runner.store import RunStore, write_json_atomic
from tests.test_runner import write_notebook, write_spec

PARAMETERS = """\
x: int = 1  # a knob
output_dir: str = "."  # where record.json goes
"""

# Appends x to executions.txt (in the notebook's folder, the kernel's cwd) on every execution.
# With faults: x == 2 raises; x == 3 writes its worker's pid (the kernel's parent) and its own pid,
# then sleeps until the test SIGKILLs the worker (or cancels its SLURM job).
BODY = """\
import json, os, time
from pathlib import Path
FAULTS = {faults}
out = Path(output_dir)
with open("executions.txt", "a") as log:
    log.write(f"{{x}}\\n")
if FAULTS and x == 2:
    raise ValueError("x=2 is cursed")
if FAULTS and x == 3:
    Path("kernel.pid").write_text(str(os.getpid()))
    Path("worker.pid").write_text(str(os.getppid()))
    array_task = (os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID"))
    Path("slurm_job.id").write_text("_".join(filter(None, array_task)))  # for test_runner_slurm
    time.sleep(120)
record = {{
    "run_id": out.name, "seed": 0, "git_commit": "test", "wall_time_s": 0.1,
    "params": {{"x": x}}, "metrics": {{"loss": 1.0 / x}},
    "folds": [{{"encoder": "pretrained", "fold": f, "accuracy": 0.5}} for f in range(2)],
}}
(out / "record.json").write_text(json.dumps(record))
"""


def job_notebook(folder: Path, faults: bool) -> Path:
    return write_notebook(folder / "job.ipynb", parameters=PARAMETERS, body=BODY.format(faults=faults))


def executions(folder: Path) -> Counter[int]:
    path = folder / "executions.txt"
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


def kill_worker_when_ready(folder: Path, timeout: float = 90.0) -> threading.Thread:
    """SIGKILL the worker whose notebook wrote worker.pid, from a background thread."""

    def kill() -> None:
        deadline = time.monotonic() + timeout
        pid_file = folder / "worker.pid"
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                pid = int(pid_file.read_text())
                assert pid not in (os.getpid(), 1)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


# --- claims --------------------------------------------------------------------------------------


def test_claim_is_exclusive_and_stale_claims_are_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    claim = try_claim(run_dir)
    assert claim is not None and try_claim(run_dir) is None  # held by a live pid (us)
    claim.release()
    assert not (run_dir / CLAIM_NAME).exists()

    dead = subprocess.Popen(["true"])
    dead.wait()
    write_json_atomic(run_dir / CLAIM_NAME, {"hostname": socket.gethostname(), "pid": dead.pid})
    taken = try_claim(run_dir)
    assert taken is not None and taken.pid == os.getpid()
    taken.release()

    write_json_atomic(run_dir / CLAIM_NAME, {"hostname": "elsewhere", "pid": dead.pid})
    assert try_claim(run_dir) is None  # another host's claim cannot be checked: respected
    assert (run_dir / CLAIM_NAME).exists()


def test_concurrent_rebuilds_never_leave_partial_tables(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for i in range(20):
        run_id = f"r{i:02d}"
        store.mark_finished(store.mark_running(run_id, {"x": i}), error=None)
        record = {"run_id": run_id, "params": {"x": i}, "metrics": {}, "seed": 0, "git_commit": "t", "wall_time_s": 0}
        write_json_atomic(store.run_dir(run_id) / "record.json", record)
    errors: list[BaseException] = []

    def rebuild() -> None:
        try:
            for _ in range(10):
                rebuild_table(tmp_path)
                assert len(pd.read_csv(tmp_path / "table.csv")) == 20
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=rebuild) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not list(tmp_path.glob(".*.tmp"))


# --- pool ----------------------------------------------------------------------------------------


def test_pool_survives_a_killed_worker_and_resume_completes(tmp_path: Path) -> None:
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    notebook = job_notebook(nb_dir, faults=True)
    spec_path = write_spec(tmp_path / "toy.yaml", f"name: toy\nnotebook: {notebook}\ngrid:\n  x: [1, 2, 3, 4]\n")
    ids = {r.params["x"]: r.run_id for r in load_spec(spec_path).runs()}
    killer = kill_worker_when_ready(nb_dir)
    lines: list[str] = []

    summary = run_ablation(spec_path, results_root=tmp_path / "results", workers=2, log=lines.append)

    killer.join(timeout=1)
    store = RunStore(summary.results_dir)
    assert set(summary.failed) == {ids[2], ids[3]}
    assert summary.failed[ids[2]] == "ValueError: x=2 is cursed"
    assert summary.failed[ids[3]] == "worker killed by signal 9 (SIGKILL)"
    assert store.status(ids[3])["state"] == "failed" and store.status(ids[3])["error"].startswith("worker killed")
    assert (store.run_dir(ids[3]) / "notebook.ipynb").is_file()  # partial notebook kept
    assert store.is_done(ids[1]) and store.is_done(ids[4])
    assert not list(store.runs_dir.glob(f"*/{CLAIM_NAME}*"))  # every claim released
    table = pd.read_csv(summary.results_dir / "table.csv")
    assert sorted(table["run_id"]) == sorted([ids[1], ids[1], ids[4], ids[4]])  # 2 folds each
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].startswith("[4/4]") and "failed 2" in progress[-1]
    assert wait_gone(int((nb_dir / "kernel.pid").read_text()))  # the orphaned kernel exited

    job_notebook(nb_dir, faults=False)  # fix the notebook and resume
    summary = run_ablation(spec_path, results_root=tmp_path / "results", workers=2, log=lambda _: None)

    assert summary.ok and sorted(o.run_id for o in summary.executed) == sorted([ids[2], ids[3]])
    assert sorted(summary.skipped) == sorted([ids[1], ids[4]])
    assert executions(nb_dir) == Counter({1: 1, 2: 2, 3: 2, 4: 1})
    table = pd.read_csv(summary.results_dir / "table.csv")
    assert len(table) == 8 and set(table["run_id"]) == set(ids.values())


def test_two_concurrent_ablates_run_every_run_once(tmp_path: Path) -> None:
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    notebook = job_notebook(nb_dir, faults=False)
    spec_path = write_spec(tmp_path / "toy.yaml", f"name: toy\nnotebook: {notebook}\ngrid:\n  x: [1, 4, 5, 6]\n")
    results_root = tmp_path / "results"

    def ablate(workers: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "eolab", "ablate", str(spec_path), "--results-root", str(results_root)]
            + ["--workers", str(workers)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    procs = [ablate(2), ablate(1)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    assert executions(nb_dir) == Counter({1: 1, 4: 1, 5: 1, 6: 1})
    table = pd.read_csv(results_root / "toy" / "table.csv")
    assert len(table) == 8 and not table.duplicated(["run_id", "fold"]).any()
    assert set(table["run_id"]) == {r.run_id for r in load_spec(spec_path).runs()}
    runs = pd.read_csv(results_root / "toy" / "runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"done"}


def test_cli_rejects_bad_worker_counts(tmp_path: Path, capsys) -> None:
    notebook = job_notebook(tmp_path, faults=False)
    spec_path = write_spec(tmp_path / "toy.yaml", f"name: toy\nnotebook: {notebook}\ngrid:\n  x: [1]\n")
    assert main(["ablate", str(spec_path), "--workers", "0", "--results-root", str(tmp_path)]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    assert main(["ablate", str(spec_path), "--executor", "slurm", "--workers", "2"]) == 2
    assert not (tmp_path / "toy").exists()


def test_workers_share_the_cores_unless_threads_are_set(monkeypatch):
    from eolab.runner.pool import worker_environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_environment(2, cores=8)["OMP_NUM_THREADS"] == "4"
    assert worker_environment(4, cores=2)["OMP_NUM_THREADS"] == "1"  # never zero
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_environment(2, cores=8)["OMP_NUM_THREADS"] == "3"  # the user's choice wins


def test_process_alive_treats_a_zombie_as_gone():
    # A child that exited but is not reaped yet is a zombie: its pid exists, yet it runs nothing, so a
    # claim or a trial it held must count as abandoned.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process_alive(os.getpid())
    deadline = time.monotonic() + 10
    while process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child.pid)  # exited, not yet reaped
    child.wait()
    assert not process_alive(child.pid)  # reaped: the pid no longer exists
