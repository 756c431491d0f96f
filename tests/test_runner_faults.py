"""Faults of the machine and damaged run files, on tiny throw-away notebooks (no pre-training).

Nothing lost, nothing wrong in silence: a record.json that does not parse marks its run failed
(named, and re-run by `ablate`); a full or read-only results folder, Ctrl-C and SIGTERM stop the
batch with one line, mark the runs in flight failed and write the tables of what finished.
Tests run as root, whom chmod does not stop, so a refusing disk is a monkeypatched write that
raises the OSError the kernel would.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import eolab.io
import eolab.runner.store as store_module
from eolab.__main__ import main
from eolab.runner import load_spec, rebuild_table, run_ablation
from eolab.runner.spec import REPO_ROOT
from eolab.runner.store import RunStore

PARAMETERS = """\
x: int = 1
seed: int = 0
output_dir: str = "."
"""

BODY = """\
import json, os, time
from pathlib import Path
out = Path(output_dir)
if x == 5:  # the disk is full when this notebook writes (as a kernel's OSError reads)
    raise OSError(28, "No space left on device", str(out / "record.json"))
if x == 7:  # a long run, to be interrupted: say so, then wait
    (out / "started").write_text(str(os.getpid()))
    time.sleep(600)
record = {"run_id": out.name, "seed": seed, "git_commit": "test", "wall_time_s": 0.5,
          "params": {"x": x, "seed": seed}, "metrics": {"loss": 1.0 / x},
          "folds": [{"encoder": "pretrained", "fold": f, "accuracy": 0.5 + 0.1 * f} for f in range(2)]}
(out / "record.json").write_text(json.dumps(record))
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nb") / "job.ipynb"
    nb = new_notebook(cells=[new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}), new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nbformat.write(nb, str(path))
    return path


def _spec(tmp_path: Path, notebook: Path, xs: str) -> tuple[Path, dict[int, str]]:
    spec = tmp_path / "faults.yaml"
    spec.write_text(f"name: faults\nnotebook: {notebook}\ngrid:\n  x: [{xs}]\n")
    return spec, {r.params["x"]: r.run_id for r in load_spec(spec).runs()}


def _tables(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = results / "faults"
    return pd.read_csv(out / "table.csv"), pd.read_csv(out / "runs.csv").set_index("run_id")


# --- damaged run files ------------------------------------------------------------------------------


def test_unparsable_record_marks_its_run_failed_and_ablate_redoes_it(tmp_path, notebook, capsys):
    spec, ids = _spec(tmp_path, notebook, "1, 3")
    results = tmp_path / "results"
    assert run_ablation(spec, results_root=results, log=lambda _: None).ok
    record = results / "faults" / "runs" / ids[3] / "record.json"
    record.write_text(record.read_text()[:40])  # truncated, as by a kill or a full disk mid-write

    assert main(["table", str(results / "faults")]) == 0
    table, runs = _tables(results)
    assert runs.loc[ids[3], "status"] == "failed"
    assert f"runs/{ids[3]}/record.json does not parse" in runs.loc[ids[3], "error"]
    assert set(table["run_id"]) == {ids[1]}  # its rows are out of table.csv, and runs.csv says why
    assert f"failed {ids[3]}: runs/{ids[3]}/record.json does not parse" in capsys.readouterr().err
    assert not RunStore(results / "faults").is_done(ids[3])

    lines: list[str] = []
    summary = run_ablation(spec, results_root=results, log=lines.append)
    assert [o.run_id for o in summary.executed] == [ids[3]] and summary.ok
    assert any(line.startswith(f"redo   {ids[3]} (runs/{ids[3]}/record.json does not parse") for line in lines)
    table, runs = _tables(results)
    assert len(table) == 4 and set(runs["status"]) == {"done"}


def _default_notebook(path: Path, y: int) -> Path:
    """A job notebook whose record says it ran with parameter ``y``, which no spec sets."""
    parameters = f"x: int = 1\ny: int = {y}\nseed: int = 0\noutput_dir: str = \".\"\n"
    body = BODY.replace('"params": {"x": x, "seed": seed}', '"params": {"x": x, "y": y, "seed": seed}')
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}), new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nbformat.write(nb, str(path))
    return path


def test_done_run_made_under_a_changed_default_is_redone_and_said(tmp_path, capsys):
    # The run id hashes what the spec sets only, so a default changed in the notebook would
    # otherwise leave done runs that ran something else than the spec now asks for.
    job = _default_notebook(tmp_path / "job.ipynb", y=2)
    spec, ids = _spec(tmp_path, job, "1, 3")
    results = tmp_path / "results"
    assert run_ablation(spec, results_root=results, log=lambda _: None).ok
    assert run_ablation(spec, results_root=results, log=lambda _: None).executed == []  # same default: skipped

    _default_notebook(job, y=4)
    assert main(["ablate", str(spec), "--results-root", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"redo {ids[1]}" in out and "(made under an earlier default: y 2 -> 4)" in out
    lines: list[str] = []
    summary = run_ablation(spec, results_root=results, log=lines.append)
    assert sorted(o.run_id for o in summary.executed) == sorted(ids.values()) and summary.ok
    assert f"redo   {ids[3]} (made under an earlier notebook default: y 2 -> 4)" in lines
    store = RunStore(results / "faults")
    assert store.record_params(ids[3])["y"] == 4
    assert run_ablation(spec, results_root=results, log=lambda _: None).executed == []  # now current

    # a record that does not name the parameter (added to the notebook later) is not judged
    record = store.run_dir(ids[1]) / "record.json"
    record.write_text(record.read_text().replace('"y": 4, ', ""))
    _default_notebook(job, y=5)
    assert [o.run_id for o in run_ablation(spec, results_root=results, log=lambda _: None).executed] == [ids[3]]
    # --force already re-runs everything; a spec that sets the parameter is never judged by its default
    spec.write_text(spec.read_text() + "base:\n  y: 4\n")
    assert run_ablation(spec, results_root=results, log=lambda _: None).executed != []  # new ids (y is hashed)
    assert run_ablation(spec, results_root=results, log=lambda _: None).executed == []


def test_record_without_required_keys_is_not_done(tmp_path):
    store = RunStore(tmp_path)
    store.mark_finished(store.mark_running("r1", {"x": 1}), error=None)
    (store.run_dir("r1") / "record.json").write_text("{}")
    assert not store.is_done("r1") and "lacks key(s) run_id" in store.record_problem("r1")
    assert rebuild_table(tmp_path).runs.set_index("run_id").loc["r1", "status"] == "failed"


def test_run_whose_process_died_shows_failed_not_running(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = RunStore(tmp_path)
    status = store.mark_running("r1", {"x": 1})
    store_module.write_json_atomic(store.run_dir("r1") / "status.json", dict(status, pid=dead.pid))
    store.mark_running("r2", {"x": 2})  # ours, alive: still running
    runs = rebuild_table(tmp_path).runs.set_index("run_id")
    assert runs.loc["r1", "status"] == "failed" and f"pid {dead.pid}" in runs.loc["r1", "error"]
    assert runs.loc["r2", "status"] == "running"


# --- a results folder that refuses writes -------------------------------------------------------------


def test_full_disk_mid_batch_stops_with_one_line_and_tables(tmp_path, notebook, capsys, monkeypatch):
    spec, ids = _spec(tmp_path, notebook, "1, 3, 9")
    results = tmp_path / "results"
    real = store_module.write_json_atomic

    def full_disk(path, obj):  # run x=3 ends, and its verdict cannot be written
        if Path(path).parent.name == ids[3] and obj.get("state") != "running":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(store_module, "write_json_atomic", full_disk)
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(results / "faults") in err[0] and "No space left on device" in err[0] and "re-run" in err[0]
    table, runs = _tables(results)
    assert runs.loc[ids[1], "status"] == "done" and runs.loc[ids[3], "status"] == "failed"
    assert "No space left on device" in runs.loc[ids[3], "error"] and ids[9] not in runs.index
    assert set(table["run_id"]) == {ids[1]} and len(table) == 2

    monkeypatch.setattr(store_module, "write_json_atomic", real)  # space freed: the re-run does the rest
    summary = run_ablation(spec, results_root=results, log=lambda _: None)
    assert sorted(o.run_id for o in summary.executed) == sorted([ids[3], ids[9]]) and summary.ok
    assert len(_tables(results)[0]) == 6


def test_full_disk_when_claiming_a_run_stops_the_batch(tmp_path, notebook, capsys, monkeypatch):
    import eolab.runner.claim as claim_module

    spec, ids = _spec(tmp_path, notebook, "1, 3")
    results = tmp_path / "results"
    real = claim_module.os.fsync

    def fsync(fd):  # the claim of x=3 is created, and its content cannot be written
        if any(ids[3] in str(p) for p in Path(f"/proc/self/fd/{fd}").resolve().parts):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(claim_module.os, "fsync", fsync)
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "1/2 run(s) done" in err[0], err
    assert not (results / "faults" / "runs" / ids[3] / "claim").exists()  # no empty claim left to block it
    monkeypatch.setattr(claim_module.os, "fsync", real)
    assert [o.run_id for o in run_ablation(spec, results_root=results, log=lambda _: None).executed] == [ids[3]]


def test_read_only_results_folder_names_it_and_changes_nothing(tmp_path, notebook, capsys, monkeypatch):
    spec, ids = _spec(tmp_path, notebook, "1, 3")
    results = tmp_path / "results"
    assert run_ablation(spec, results_root=results, log=lambda _: None, only=[ids[1]]).ok
    before = {p: p.read_bytes() for p in (results / "faults").rglob("*") if p.is_file()}

    def read_only(path, *args):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    for module in (store_module, eolab.io):
        monkeypatch.setattr(module, "write_text_atomic", read_only)
    monkeypatch.setattr(store_module, "write_json_atomic", read_only)
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(results / "faults") in err[0] and "Read-only file system" in err[0], err
    assert "tables not written" in err[0]
    after = {p: p.read_bytes() for p in (results / "faults").rglob("*") if p.is_file()}
    assert after == before  # nothing done was lost or changed


def test_notebook_failing_on_a_full_disk_stops_the_batch(tmp_path, notebook, capsys):
    spec, ids = _spec(tmp_path, notebook, "1, 5, 9")  # x=5 fails with ENOSPC inside the kernel
    results = tmp_path / "results"
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    runs = _tables(results)[1]
    assert runs.loc[ids[1], "status"] == "done" and runs.loc[ids[5], "status"] == "failed"
    assert ids[9] not in runs.index  # not started on a disk that is full


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_marks_runs_failed_and_writes_tables(tmp_path, notebook, signum, code, workers):
    spec, ids = _spec(tmp_path, notebook, "1, 7")  # x=7 waits to be interrupted
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "eolab", "ablate", str(spec), "--results-root", str(results),
                             "--workers", str(workers)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    started = results / "faults" / "runs" / ids[7] / "started"
    deadline = time.monotonic() + 300  # a bound on a kernel start on a loaded machine, not a timing assertion
    while not (started.exists() and RunStore(results / "faults").is_done(ids[1])):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    # one line from ablate, no traceback of its own (the dying kernel may still print to the shared stderr)
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and ours[0].startswith("error: faults: interrupted by"), err
    assert err.strip().splitlines()[-1] == ours[0] and str(REPO_ROOT / "eolab") not in err, err
    assert "1/2 run(s) done" in ours[0] and "1 interrupted run(s) marked failed" in ours[0], ours[0]
    table, runs = _tables(results)
    assert runs.loc[ids[1], "status"] == "done" and runs.loc[ids[7], "status"] == "failed"
    assert "nterrupt" in runs.loc[ids[7], "error"] and set(table["run_id"]) == {ids[1]}
    assert not RunStore(results / "faults").is_done(ids[7])
    assert not (results / "faults" / "runs" / ids[7] / "claim").exists()  # released: a re-run may take it


def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """Writers that want a file name (netCDF, pandas CSV) go through eolab.io.write_atomic too."""
    from eolab.io import write_atomic

    target = tmp_path / "rows.csv"
    target.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # a kill between writing and renaming

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]
    write_atomic(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]
