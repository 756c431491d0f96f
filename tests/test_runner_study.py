"""Tests of Optuna studies (eolab.runner.study) on tiny throw-away notebooks (no pre-training).

Every trial starts a kernel (seconds each), so the executed study is shared by a module-scoped
fixture and the other executed studies stay at a handful of trials.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

from eolab import trial as trial_module
from eolab.__main__ import main
from eolab.runner import spec as spec_module
from eolab.runner import storage as storage_module
from eolab.runner import study as study_module
from eolab.runner.spec import REPO_ROOT, SpecError, load_spec, redact
from eolab.runner.storage import open_storage
from eolab.runner.store import PRUNED_MARKER_NAME, RunStore
from eolab.runner.study import ATTR_OWNER, ATTR_RUN_ID, fail_stale_trials, run_study
from eolab.trial import (
    PRUNER_ENV,
    RUN_DIR_ENV,
    STORAGE_ENV,
    STUDY_NAME_ENV,
    TRIAL_NUMBER_ENV,
    report_intermediate,
    trial_callbacks,
)
from tests.test_runner import write_notebook, write_spec

PARAMETERS = """\
x: float = 0.5  # the objective; every intermediate value grows with it
y: float = 0.1  # a dimension the objective ignores
mode: str = "a"  # a categorical dimension ("b" adds 0.01)
steps: int = 3  # how many intermediate values to report
fail_below: float = -1.0  # raise when x is below this (failure handling)
output_dir: str = "."  # where record.json goes
"""

# Reports x * (step + 1) / steps at each step (so a low x is pruned by a median pruner), then
# writes the record with metric `score`.
BODY = """\
import json
from pathlib import Path
from eolab.trial import report_intermediate
out = Path(output_dir)
if x < fail_below:
    raise ValueError(f"x={x} is below {fail_below}")
for step in range(steps):
    report_intermediate(x * (step + 1) / steps, step)
record = {
    "run_id": out.name, "seed": 0, "git_commit": "test", "wall_time_s": 0.1,
    "params": {"x": x, "y": y, "mode": mode, "steps": steps, "fail_below": fail_below},
    "metrics": {"score": x + (0.01 if mode == "b" else 0.0)},
}
(out / "record.json").write_text(json.dumps(record))
"""

SPACE = """\
    x: {type: float, low: 0.0, high: 1.0}
    y: {type: float, low: 1e-3, high: 1.0, log: true}
    mode: {type: categorical, choices: [a, b]}
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_notebook(tmp_path_factory.mktemp("nb") / "job.ipynb", parameters=PARAMETERS, body=BODY)


def study_spec(
    notebook: Path,
    n_trials: int = 8,
    name: str = "toy",
    extra_study: str = "",
    extra: str = "",
    space: str = SPACE,
    pruner: str = "{type: median, n_startup_trials: 2}",
) -> str:
    return (
        f"name: {name}\nnotebook: {notebook}\n{extra}"
        "study:\n  direction: maximize\n  metric: score\n"
        f"  n_trials: {n_trials}\n  sampler: {{type: random, seed: 0}}\n  pruner: {pruner}\n"
        f"  intermediate: score\n{extra_study}  space:\n{space}"
    )


def trials_of(results_dir: Path, name: str = "toy", storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    url = storage or f"sqlite:///{results_dir / 'study.db'}"
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


# --- spec validation -----------------------------------------------------------------------------


def test_example_study_spec_validates() -> None:
    spec = load_spec(REPO_ROOT / "ablations" / "study_mask.yaml")
    assert spec.study is not None and spec.runs() == []
    assert list(spec.study.space) == ["mask_ratio", "lr", "mask"]
    assert spec.study.space["lr"].log and spec.study.storage is None
    assert spec.study.metric == "pretrained_acc_mean" and spec.study.intermediate == "knn_accuracy"
    assert spec.summary == REPO_ROOT / "notebooks" / "study_summary.ipynb"


@pytest.mark.parametrize(
    ("space", "extra_study", "extra", "expected"),
    [
        ("    xx: {type: float, low: 0, high: 1}\n", "", "", ["`xx`", "did you mean `x`", "valid parameters"]),
        ("    x: {type: float, low: 0.9, high: 0.4}\n", "", "", ["`study.space.x` needs low < high"]),
        ("    x: {type: float, low: 0.5, high: 0.5}\n", "", "", ["low < high"]),
        ("    y: {type: float, low: 0.0, high: 1.0, log: true}\n", "", "", ["log-scaled", "`low` must be positive"]),
        ("    mode: {type: categorical, choices: []}\n", "", "", ["`study.space.mode.choices` must be a non-empty"]),
        ("    mode: {type: categorical, choices: [a, 3]}\n", "", "", ["`mode` = 3", "`str`"]),
        ("    steps: {type: float, low: 1, high: 4}\n", "", "", ["float dimension", "`steps: int`", "type: int"]),
        ("    x: {type: int, low: 0, high: 4}\n", "", "", ["int dimension", "`x: float`"]),
        ("    steps: {type: int, low: 1.5, high: 4}\n", "", "", ["must be an int"]),
        ("    x: {type: float, low: 0, high: 1, lo: 2}\n", "", "", ["unknown key 'lo'", "`study.space.x`"]),
        ("    x: {type: uniform, low: 0, high: 1}\n", "", "", ["`type` one of float, int, categorical"]),
        ("    output_dir: {type: categorical, choices: [a]}\n", "", "", ["set by the runner"]),
        (SPACE, "  storage: not-a-url\n", "", ["`study.storage` must be a URL"]),
        (SPACE, "  storage: 'sqlite:///:memory:'\n", "", ["in-memory sqlite"]),
        (SPACE, "  storage: sqlite:////nonexistent-dir/s.db\n", "", ["/nonexistent-dir does not exist"]),
        (SPACE, "  storage: journal:///nonexistent-dir/s.log\n", "", ["/nonexistent-dir does not exist"]),
        (SPACE, "  samplr: tpe\n", "", ["unknown key 'samplr' in `study`", "did you mean `sampler`"]),
        (SPACE, "", "base:\n  x: 0.5\n", ["`x` appears in both `base` and `study.space`"]),
        (SPACE, "", "seeds: [0, 1]\n", ["`seeds` expands a grid"]),
        (SPACE, "", "grid:\n  steps: [1, 2]\n", ["grid parameter `steps` is not in `study.space`"]),
        (SPACE, "", "grid:\n  x: [0.5, 1.5]\n", ["grid value(s) [1.5] of `x` lie outside"]),
    ],
)
def test_study_spec_errors_name_file_and_key(
    tmp_path: Path, notebook: Path, space: str, extra_study: str, extra: str, expected: list[str]
) -> None:
    path = write_spec(tmp_path / "bad.yaml", study_spec(notebook, space=space, extra_study=extra_study, extra=extra))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("direction: maximize", "direction: up"), ["`study.direction` must be one of maximize, minimize"]),
        (("sampler: {type: random, seed: 0}", "sampler: tpee"), ["unknown `study.sampler` 'tpee'", "`tpe`"]),
        (("pruner: {type: median, n_startup_trials: 2}", "pruner: mediam"), ["unknown `study.pruner`", "`median`"]),
        (("sampler: {type: random, seed: 0}", "sampler: {type: tpe, n_startup: 3}"),
         ["tpe has no option 'n_startup'", "n_startup_trials"]),
        (("pruner: {type: median, n_startup_trials: 2}", "pruner: {type: median, n_startup_trials: -1}"),
         ["`study.pruner` median", "ValueError"]),
        (("  intermediate: score\n", ""), ["`study.pruner: median` prunes on values reported", "intermediate"]),
        (("n_trials: 8", "n_trials: 0"), ["`study.n_trials` must be a positive int"]),
        (("metric: score", "metric: ''"), ["missing required key `study.metric`"]),
    ],
)
def test_study_options_are_checked(tmp_path: Path, notebook: Path, replace: tuple[str, str], expected: list[str]) -> None:
    path = write_spec(tmp_path / "bad.yaml", study_spec(notebook).replace(*replace))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


def test_unreachable_storage_is_a_spec_error_without_the_password(
    tmp_path: Path, notebook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = "  storage: postgresql://u:secret@127.0.0.1:1/db\n"
    path = write_spec(tmp_path / "s.yaml", study_spec(notebook, extra_study=storage))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "secret" not in message and "postgresql://u:***@127.0.0.1:1/db" in message and "cannot connect" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained message with the URL

    # ${VAR} keeps the password out of the spec; unset, it is an error naming the variable
    storage = "  storage: postgresql://u:${EOLAB_TEST_DB_PW}@127.0.0.1:1/db\n"
    path = write_spec(tmp_path / "s.yaml", study_spec(notebook, extra_study=storage))
    monkeypatch.delenv("EOLAB_TEST_DB_PW", raising=False)
    with pytest.raises(SpecError, match="environment variable EOLAB_TEST_DB_PW"):
        load_spec(path)
    monkeypatch.setenv("EOLAB_TEST_DB_PW", "hunter22")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "hunter22" not in str(info.value)


def test_redact_hides_passwords_in_urls_and_messages() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("mysql+pymysql://:p%40ss@h/d and again p@ss", ["p%40ss", "p@ss"]) == "mysql+pymysql://:***@h/d and again ***"
    assert redact("sqlite:////a/b.db journal:///x.log") == "sqlite:////a/b.db journal:///x.log"


def test_dry_run_shows_space_and_redacted_storage(
    tmp_path: Path, notebook: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(spec_module, "check_rdb_reachable", lambda *args: None)  # no database server in tests
    storage = "  storage: postgresql://u:secret@db.invalid/optuna\n"
    path = write_spec(tmp_path / "s.yaml", study_spec(notebook, extra_study=storage, extra="grid:\n  x: [0.9]\n"))
    assert main(["ablate", str(path), "--dry-run", "--results-root", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "secret" not in out and "postgresql://u:***@db.invalid/optuna" in out
    for fragment in ("study of 8 trials", "maximize `score`", "x     float [0.0, 1.0]", "log", "['a', 'b']",
                     "enqueued  {'x': 0.9}", "median"):
        assert fragment in out, out
    spec = load_spec(path)
    assert "secret" not in json.dumps(study_module._spec_json(spec, tmp_path))
    assert main(["ablate", str(path), "--only", "abc"]) == 2
    assert "--only selects runs of a grid" in capsys.readouterr().err


# --- inside a trial (no kernel) -----------------------------------------------------------------------


@pytest.fixture
def trial_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[optuna.Study, optuna.Trial, Path]:
    """A sqlite study with two complete trials (intermediate step + 1 at steps 0..4), a median pruner,
    and the environment of a kernel running a third trial in run folder tmp_path/run."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="cb", storage=open_storage(url), direction="maximize")
    for _ in range(2):
        done = study.ask()
        for step in range(5):
            done.report(step + 1.0, step)
        study.tell(done, 5.0)
    trial = study.ask()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pruner = json.dumps({"type": "median", "n_startup_trials": 2})
    for key, value in {STORAGE_ENV: url, STUDY_NAME_ENV: "cb", PRUNER_ENV: pruner,
                       TRIAL_NUMBER_ENV: str(trial.number), RUN_DIR_ENV: str(run_dir)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(trial_module, "_TRIAL_CACHE", {})
    return study, trial, run_dir


def fake_trainer(metrics: dict[str, float], step: int) -> SimpleNamespace:
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj)
    return SimpleNamespace(callback_metrics=metrics, global_step=step, is_global_zero=True, strategy=strategy)


def test_trial_helpers_are_no_ops_outside_a_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (STORAGE_ENV, STUDY_NAME_ENV, PRUNER_ENV, TRIAL_NUMBER_ENV):
        monkeypatch.delenv(key, raising=False)
    assert trial_callbacks() == []
    assert report_intermediate(0.5, 3) is None


def test_lightning_callback_reports_new_values_and_prunes(trial_env) -> None:
    import lightning

    study, trial, run_dir = trial_env
    (callback,) = trial_callbacks("knn_accuracy")
    assert isinstance(callback, lightning.Callback)
    key = "health/knn_accuracy"
    callback.on_train_batch_end(fake_trainer({"loss": 1.0}, 0), None, None, None, 0)  # not logged yet
    callback.on_train_batch_end(fake_trainer({key: 2.5}, 1), None, None, None, 1)  # above the median (2)
    callback.on_train_batch_end(fake_trainer({key: 2.5}, 2), None, None, None, 2)  # same value: not new
    assert study.get_trials()[trial.number].intermediate_values == {1: 2.5}
    with pytest.raises(optuna.TrialPruned, match="pruned at step 3"):  # best so far 2.5 < median 4
        callback.on_train_batch_end(fake_trainer({key: 2.0}, 3), None, None, None, 3)
    assert study.get_trials()[trial.number].intermediate_values == {1: 2.5, 3: 2.0}
    marker = json.loads((run_dir / PRUNED_MARKER_NAME).read_text())
    assert marker["number"] == trial.number and marker["step"] == 3


def test_stale_running_trial_of_a_dead_worker_is_failed(trial_env) -> None:
    study, trial, _ = trial_env
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr(ATTR_OWNER, {"host": socket.gethostname(), "pid": dead.pid, "launch": "x", "worker": 0})
    store = RunStore(Path(os.environ[RUN_DIR_ENV]).parent)
    trial.set_user_attr(ATTR_RUN_ID, "dead-run")  # the killed worker's claim on its run is left behind
    (store.run_dir("dead-run")).mkdir(parents=True)
    (store.run_dir("dead-run") / "claim").write_text(json.dumps({"hostname": socket.gethostname(), "pid": dead.pid}))
    alive = study.ask()
    alive.set_user_attr(ATTR_OWNER, {"host": socket.gethostname(), "pid": os.getpid(), "launch": "x", "worker": 1})
    alive.set_user_attr(ATTR_RUN_ID, "live-run")
    (store.run_dir("live-run")).mkdir(parents=True)
    (store.run_dir("live-run") / "claim").write_text(json.dumps({"hostname": socket.gethostname(), "pid": os.getpid()}))
    assert fail_stale_trials(study, store) == 1
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[trial.number] == "FAIL" and states[alive.number] == "RUNNING"
    assert not (store.run_dir("dead-run") / "claim").exists() and (store.run_dir("live-run") / "claim").exists()


# --- executed studies ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_study(tmp_path_factory: pytest.TempPathFactory, notebook: Path):
    """8 trials, median pruner, 2 local worker processes; grid points x = 0.9, 0.95 go first, so
    later trials with a lower x fall below the median and are pruned."""
    root = tmp_path_factory.mktemp("study")
    summary_nb = REPO_ROOT / "notebooks" / "study_summary.ipynb"
    text = study_spec(notebook, extra=f"summary: {summary_nb}\ndescription: toy study\ngrid:\n  x: [0.9, 0.95]\n")
    spec_path = write_spec(root / "toy.yaml", text)
    lines: list[str] = []
    summary = run_study(spec_path, workers=2, results_root=root / "results", log=lines.append)
    return summary, spec_path, root, lines


def test_study_with_pruner_runs_n_trials_through_two_workers(pruned_study) -> None:
    summary, _, _, lines = pruned_study
    trials = trials_of(summary.results_dir)
    states = [t.state.name for t in trials]
    assert len(trials) == 8 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert "PRUNED" in states and states[:2] == ["COMPLETE", "COMPLETE"]  # the enqueued grid points
    assert [t.params["x"] for t in trials[:2]] == [0.9, 0.95]
    assert summary.ok and summary.finished == 8 and summary.best["value"] >= 0.95
    owners = {t.user_attrs[ATTR_OWNER]["pid"] for t in trials}
    assert len(owners) == 2 and os.getpid() not in owners  # two worker processes shared the trials

    runs = pd.read_csv(summary.results_dir / "runs.csv")
    assert len(runs) == 8 and sorted(runs["trial_number"]) == list(range(8))
    assert set(runs["study"]) == {"toy"}
    by_number = runs.set_index("trial_number")
    for trial in trials:
        row = by_number.loc[trial.number]
        assert row["run_id"] == trial.user_attrs["eolab_run_id"]
        assert row["trial_state"] == trial.state.name
        assert row["status"] == ("done" if trial.state.name == "COMPLETE" else "pruned")
    table = pd.read_csv(summary.results_dir / "table.csv")
    assert sorted(table["trial_number"]) == sorted(t.number for t in trials if t.state.name == "COMPLETE")
    assert len([line for line in lines if line.startswith("[")]) == 8
    assert any("PRUNED" in line and "at step" in line for line in lines)


def test_study_summary_notebook_and_exports(pruned_study) -> None:
    summary, _, _, _ = pruned_study
    assert summary.summary_error is None and summary.summary_html is not None and summary.summary_html.is_file()
    exported = json.loads((summary.results_dir / "trials.json").read_text())
    assert len(exported["trials"]) == 8 and exported["direction"] == "maximize"
    pruned = [t for t in exported["trials"] if t["state"] == "PRUNED"]
    assert all(t["intermediate"] for t in pruned)
    spec_json = json.loads((summary.results_dir / "spec.json").read_text())
    assert spec_json["study"]["storage"] == f"sqlite:///{summary.results_dir / 'study.db'}"
    assert spec_json["enqueued"] == [{"x": 0.9}, {"x": 0.95}]
    html = summary.summary_html.read_text()
    assert "Parameter importances" in html and "Traceback" not in html


def test_resume_continues_the_study(pruned_study, notebook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary, spec_path, root, _ = pruned_study
    before = {t.number: t.datetime_complete for t in trials_of(summary.results_dir)}

    again = run_study(spec_path, workers=2, results_root=root / "results", log=lambda line: None)
    assert again.ok and again.finished == 8 and len(trials_of(summary.results_dir)) == 8  # nothing to do

    more = write_spec(root / "more.yaml", spec_path.read_text().replace("n_trials: 8", "n_trials: 10"))
    assert main(["ablate", str(more), "--results-root", str(root / "results")]) == 0
    assert "10/10 trials finished" in capsys.readouterr().out
    trials = trials_of(summary.results_dir)
    assert len(trials) == 10 and {t.number: t.datetime_complete for t in trials[:8]} == before
    assert len(pd.read_csv(summary.results_dir / "runs.csv")) == 10


def test_failed_trial_is_told_fail_and_replaced(tmp_path: Path, notebook: Path) -> None:
    text = study_spec(notebook, n_trials=1, pruner="none", extra="base:\n  fail_below: 0.1\ngrid:\n  x: [0.05]\n")
    summary = run_study(write_spec(tmp_path / "s.yaml", text), results_root=tmp_path / "results", log=lambda line: None)
    trials = trials_of(summary.results_dir)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert "ValueError: x=0.05 is below 0.1" in trials[0].user_attrs["eolab_error"]
    assert summary.ok and summary.failed_trials == {0: trials[0].user_attrs["eolab_error"]}
    runs = pd.read_csv(summary.results_dir / "runs.csv").set_index("trial_number")
    assert runs.loc[0, "status"] == "failed" and runs.loc[0, "trial_state"] == "FAIL"


def test_two_processes_share_one_journal_study_without_losing_trials(tmp_path: Path, notebook: Path) -> None:
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    text = study_spec(notebook, n_trials=4, pruner="none", extra_study=f"  storage: journal://{journal}\n")
    spec_path = write_spec(tmp_path / "s.yaml", text)
    command = [sys.executable, "-m", "eolab", "ablate", str(spec_path), "--results-root", str(tmp_path / "results")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs

    trials = trials_of(tmp_path / "results" / "toy", storage=f"journal://{journal}")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # exactly n_trials between them, none lost
    assert len({t.user_attrs[ATTR_OWNER]["pid"] for t in trials}) == 2, outputs  # both processes worked
    runs = pd.read_csv(tmp_path / "results" / "toy" / "runs.csv")
    assert sorted(runs["trial_number"]) == [0, 1, 2, 3] and set(runs["status"]) == {"done"}
    assert sorted(runs["run_id"]) == sorted(t.user_attrs["eolab_run_id"] for t in trials)


@pytest.mark.slurm
@pytest.mark.skipif(
    shutil.which("sinfo") is None or not os.environ.get("SLURM_CONF"),
    reason="no SLURM cluster: needs `sinfo` on PATH and SLURM_CONF set "
    "(bash /work/shared/tools/slurm-localhost.sh up && source $SLURM_CI_ROOT/env.sh)",
)
def test_study_through_slurm_jobs(tmp_path: Path, notebook: Path) -> None:
    text = study_spec(notebook, n_trials=3, pruner="none", extra="resources:\n  cpus_per_task: 1\n  timeout_min: 10\n")
    summary = run_study(write_spec(tmp_path / "s.yaml", text), executor_kind="slurm", workers=2,
                        results_root=tmp_path / "results", log=lambda line: None)
    trials = trials_of(summary.results_dir)
    assert summary.ok and [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.user_attrs[ATTR_OWNER].get("slurm_job_id") for t in trials)
    assert list((summary.results_dir / "slurm").rglob("*.out"))


def test_lost_database_connection_is_retried_then_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage call whose connection drops is retried with backoff; a database that stays away
    ends in StorageLostError naming the storage, without any password the driver quoted."""
    import sqlalchemy.exc

    calls: list[int] = []
    real = optuna.storages.RDBStorage._get_trials  # what optuna's trial cache calls
    failures = {"n": 2}

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= failures["n"]:
            cause = Exception("server closed the connection unexpectedly (postgresql://u:secretpw@db/x)")
            raise sqlalchemy.exc.OperationalError("SELECT trials", {}, cause)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", flaky)
    monkeypatch.setattr(storage_module, "_RETRYING_CLASS", [])  # built again, around the flaky method
    monkeypatch.setattr(storage_module, "STORAGE_RETRY_DELAYS_S", (0.0, 0.01))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="lost", storage=open_storage(url))
    calls.clear()
    assert study.get_trials() == [] and len(calls) == 3  # two lost connections, then through

    calls.clear()
    failures["n"] = 99
    with pytest.raises(storage_module.StorageLostError) as lost:
        study.get_trials()
    message = str(lost.value)
    assert len(calls) == 3 and str(tmp_path / "study.db") in message and "_get_trials failed 3 times" in message
    assert "server closed the connection" in message and "secretpw" not in message
