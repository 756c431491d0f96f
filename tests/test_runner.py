"""Tests of the ablation runner on tiny throw-away notebooks (no pre-training involved).

Kernel starts cost a few seconds each, so the executed batch is shared by module-scoped fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbformat.v4 import new_code_cell, new_notebook

from eolab.__main__ import main
from eolab.runner import KernelError, SpecError, load_spec, rebuild_table, run_ablation
from eolab.runner.notebook import check_kernel
from eolab.runner.spec import REPO_ROOT, make_run_id
from eolab.runner.store import RunStore, write_json_atomic

PARAMETERS = """\
x: int = 1  # a knob
lr: float = 0.1  # learning rate
flag: bool = False  # a switch
name: str = "a"  # a label
seed: int = 0  # random seed
output_dir: str = "."  # where record.json and history.csv go
"""

# Writes the record contract; x == 2 raises, to exercise failure handling.
BODY = """\
import json, sys
from pathlib import Path
out = Path(output_dir)
if x == 2:
    raise ValueError("x=2 is cursed")
record = {
    "run_id": out.name, "seed": seed, "git_commit": "test", "wall_time_s": 0.5,
    "params": {"x": x, "lr": lr, "flag": flag, "name": name, "seed": seed},
    "metrics": {"final_loss": 1.0 / x},
    "folds": [{"encoder": e, "fold": f, "accuracy": 0.5 + 0.1 * f}
              for e in ("pretrained", "random_init") for f in range(2)],
}
(out / "record.json").write_text(json.dumps(record))
(out / "history.csv").write_text("step,loss\\n" + "".join(f"{s},{10 / (s + 1)}\\n" for s in range(10)))
import eolab  # the runner makes the repository importable from any notebook folder
print(sys.executable)
(out / "env.json").write_text(json.dumps({"executable": sys.executable, "eolab": eolab.__file__}))
"""


def write_notebook(path: Path, parameters: str | None = PARAMETERS, body: str = BODY) -> Path:
    """A minimal job notebook: an optional `parameters` cell and one body cell."""
    cells = []
    if parameters is not None:
        cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells.append(new_code_cell(body))
    nb = new_notebook(
        cells=cells,
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    )
    nbformat.write(nb, str(path))
    return path


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def job_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_notebook(tmp_path_factory.mktemp("nb") / "job.ipynb")


def spec_text(notebook: Path, grid: str = "x: [1, 3]", extra: str = "") -> str:
    return f"name: toy\nnotebook: {notebook}\nbase:\n  lr: 0.2\ngrid:\n  {grid}\n{extra}"


# --- spec validation -----------------------------------------------------------------------------


def test_spec_expands_grid_times_seeds(tmp_path: Path, job_notebook: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.yaml", spec_text(job_notebook, extra="seeds: [0, 1]\n")))
    runs = spec.runs()
    assert [r.params for r in runs] == [
        {"lr": 0.2, "x": 1, "seed": 0},
        {"lr": 0.2, "x": 1, "seed": 1},
        {"lr": 0.2, "x": 3, "seed": 0},
        {"lr": 0.2, "x": 3, "seed": 1},
    ]
    assert runs[0].run_id.startswith("x=1-seed=0-") and len(runs[0].run_id.rsplit("-", 1)[1]) == 12
    assert len({r.run_id for r in runs}) == 4
    assert spec.notebook == job_notebook and spec.varied_keys == ["x", "seed"]


def test_run_ids_are_stable(tmp_path: Path, job_notebook: Path) -> None:
    # Pinned: a changed hash would orphan every existing results folder.
    assert make_run_id({"x": 1, "seed": 0}, ["x", "seed"]) == "x=1-seed=0-971e5867374f"
    assert make_run_id({"seed": 0, "x": 1, "output_dir": "/a"}, ["x", "seed"]) == "x=1-seed=0-971e5867374f"

    # An int written for a float parameter gives the same run as the float; key order is irrelevant.
    def ids(text: str, name: str) -> list[str]:
        return [r.run_id for r in load_spec(write_spec(tmp_path / name, text)).runs()]

    as_int = ids(f"name: t\nnotebook: {job_notebook}\ngrid:\n  lr: [1]\nbase:\n  x: 2\n  seed: 3\n", "a.yaml")
    as_float = ids(f"name: t\nbase:\n  seed: 3\n  x: 2\nnotebook: {job_notebook}\ngrid:\n  lr: [1.0]\n", "b.yaml")
    assert as_int == as_float
    assert ids(f"name: t\nnotebook: {job_notebook}\ngrid:\n  lr: [1]\nbase:\n  x: 3\n", "c.yaml") != as_int


def test_relative_notebook_path_resolves_against_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebooks").mkdir()
    write_notebook(tmp_path / "notebooks" / "summary.ipynb")  # decoy: must not be picked up from the cwd
    spec = write_spec(tmp_path / "s.yaml", "name: t\nnotebook: notebooks/summary.ipynb\n")
    with pytest.raises(SpecError, match="output_dir"):  # the repo's summary notebook has no output_dir
        load_spec(spec)
    assert (REPO_ROOT / "notebooks" / "summary.ipynb").is_file()


@pytest.mark.parametrize(
    ("spec_body", "expected"),
    [
        ("grid:\n  xx: [1]\n", ["`xx`", "did you mean `x`", "valid parameters: flag, lr, name, seed, x"]),
        ("base:\n  name: 3\n", ["`name` = 3", "`str`"]),
        ("base:\n  x: true\n", ["`x` = True", "(bool)", "`int`"]),
        ("base:\n  lr: 1e-3\n", ["`lr` = '1e-3'", "write 1.0e-3"]),
        ("grid:\n  x: []\n", ["non-empty list"]),
        ("grid:\n  x: 3\n", ["non-empty list"]),
        ("grid:\n  x: [1, 1]\n", ["duplicate"]),
        ("base:\n  output_dir: /tmp\n", ["set by the runner"]),
        ("base:\n  seed: 1\nseeds: [0]\n", ["set by `seeds`"]),
        ("grids:\n  x: [1]\n", ["unknown top-level key 'grids'", "did you mean `grid`"]),
        ("base: [\n", ["invalid YAML"]),
        ("resources:\n  timeout_mins: 5\n", ["unknown key 'timeout_mins' in `resources`", "`timeout_min`"]),
        ("resources:\n  mem_gb: -1\n", ["`resources.mem_gb` must be a positive number"]),
        ("resources:\n  partition: 3\n", ["`resources.partition` must be a non-empty string"]),
        ("resources: 4\n", ["`resources` must be a mapping"]),
    ],
)
def test_spec_errors_name_file_and_culprit(
    tmp_path: Path, job_notebook: Path, spec_body: str, expected: list[str]
) -> None:
    spec = write_spec(tmp_path / "bad.yaml", f"name: toy\nnotebook: {job_notebook}\n{spec_body}")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = str(info.value)
    assert str(spec) in message
    for fragment in expected:
        assert fragment in message


def test_resources_are_parsed_and_optional(tmp_path: Path, job_notebook: Path) -> None:
    text = spec_text(job_notebook, extra="resources:\n  cpus_per_task: 4\n  mem_gb: 7.5\n  partition: gpu\n")
    spec = load_spec(write_spec(tmp_path / "s.yaml", text))
    assert spec.resources == {"cpus_per_task": 4, "mem_gb": 7.5, "partition": "gpu"}
    assert load_spec(write_spec(tmp_path / "t.yaml", spec_text(job_notebook))).resources == {}


def test_int_accepted_for_float(tmp_path: Path, job_notebook: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"name: t\nnotebook: {job_notebook}\nbase:\n  lr: 1\n"))
    assert spec.base == {"lr": 1.0}


def test_missing_notebook_and_missing_parameters_cell(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "name: t\nnotebook: nowhere/nothing.ipynb\n")
    with pytest.raises(SpecError, match=r"s\.yaml: `notebook` notebook not found: .*nothing\.ipynb"):
        load_spec(spec)
    bare = write_notebook(tmp_path / "bare.ipynb", parameters=None)
    with pytest.raises(SpecError, match="no cell tagged `parameters`"):
        load_spec(write_spec(spec, f"name: t\nnotebook: {bare}\n"))


def test_store_requires_record_for_done(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    status = store.mark_running("r1", {"x": 1})
    assert not store.is_done("r1")
    store.mark_finished(status, error=None)
    assert not store.is_done("r1")  # done without record.json: re-run
    (store.run_dir("r1") / "record.json").write_text("{}")
    assert not store.is_done("r1")  # a record that breaks the contract: re-run
    record = {"run_id": "r1", "params": {"x": 1}, "metrics": {}, "seed": 0, "git_commit": "t", "wall_time_s": 0}
    write_json_atomic(store.run_dir("r1") / "record.json", record)
    assert store.is_done("r1")


# --- execution (shared batch: x = 1, 2 (raises), 3) ----------------------------------------------


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, job_notebook: Path):
    root = tmp_path_factory.mktemp("batch")
    spec_path = write_spec(root / "toy.yaml", spec_text(job_notebook, grid="x: [1, 2, 3]"))
    lines: list[str] = []
    summary = run_ablation(spec_path, results_root=root / "results", log=lines.append)
    ids = {r.params["x"]: r.run_id for r in load_spec(spec_path).runs()}
    return summary, spec_path, ids, lines


def test_failing_run_is_recorded_and_batch_continues(batch) -> None:
    summary, _, ids, lines = batch
    assert set(summary.failed) == {ids[2]}
    assert "ValueError: x=2 is cursed" in summary.failed[ids[2]]
    store = RunStore(summary.results_dir)
    failed = store.status(ids[2])
    assert failed["state"] == "failed" and "cursed" in failed["traceback"]
    assert {"started_at", "ended_at", "hostname", "pid", "params"} <= set(failed)
    assert (store.run_dir(ids[2]) / "notebook.ipynb").is_file()  # partial notebook kept
    for x in (1, 3):
        assert store.status(ids[x])["state"] == "done" and store.is_done(ids[x])
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 3 and progress[-1].startswith("[3/3]") and "failed 1" in progress[-1]


def test_table_has_exactly_the_successful_runs(batch) -> None:
    summary, _, ids, _ = batch
    table = pd.read_csv(summary.results_dir / "table.csv")
    assert len(table) == 8 == summary.table_rows  # 2 runs x 2 encoders x 2 folds
    assert set(table["run_id"]) == {ids[1], ids[3]}
    assert {"x", "lr", "seed", "encoder", "fold", "accuracy", "status", "wall_time_s", "git_commit"} <= set(
        table.columns
    )
    runs = pd.read_csv(summary.results_dir / "runs.csv").set_index("run_id")
    assert len(runs) == 3 and runs.loc[ids[2], "status"] == "failed"
    assert "cursed" in runs.loc[ids[2], "error"] and runs.loc[ids[2], "x"] == 2
    assert runs.loc[ids[3], "final_loss"] == pytest.approx(1 / 3)


def test_table_rebuild_is_idempotent(batch) -> None:
    results_dir = batch[0].results_dir
    before = [(results_dir / n).read_bytes() for n in ("table.csv", "runs.csv")]
    rebuild_table(results_dir)
    assert main(["table", str(results_dir)]) == 0
    assert [(results_dir / n).read_bytes() for n in ("table.csv", "runs.csv")] == before


def test_kernel_runs_this_interpreter(batch) -> None:
    summary, _, ids, _ = batch
    env = json.loads((RunStore(summary.results_dir).run_dir(ids[1]) / "env.json").read_text())
    assert env["executable"] == sys.executable
    assert Path(env["eolab"]).resolve().parent.parent == REPO_ROOT


def test_kernel_check_rejects_foreign_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_kernel() == sys.executable
    foreign = KernelSpec(argv=["/usr/bin/python3", "-m", "ipykernel_launcher"], resource_dir="/elsewhere")
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", lambda self, name: foreign)
    with pytest.raises(KernelError, match="/usr/bin/python3, not this interpreter"):
        check_kernel()


def test_report_on_partial_results(batch, tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from eolab.reports import runs as report

    summary, _, ids, _ = batch
    results = report.load_results(summary.results_dir)
    assert results.grid_keys == ["x"]
    assert list(report.failed_runs(results)["run_id"]) == [ids[2]]
    table = report.accuracy_summary(results)
    assert list(table["run_id"]) == [ids[1], ids[3]] and table["loss fell"].all()
    assert table.loc[0, "pretrained"] == "0.550 ± 0.071"
    assert report.plot_accuracy(results) is not None and report.plot_loss_curves(results) is not None
    (tmp_path / "runs").mkdir()
    rebuild_table(tmp_path)  # an ablation whose runs never produced anything
    empty = report.load_results(tmp_path)
    assert report.plot_accuracy(empty) is None and report.plot_loss_curves(empty) is None
    assert report.accuracy_summary(empty).empty


def test_spec_json_and_output_dir(batch) -> None:
    summary, _, ids, _ = batch
    spec_json = json.loads((summary.results_dir / "spec.json").read_text())
    assert spec_json["grid"] == {"x": [1, 2, 3]} and len(spec_json["runs"]) == 3
    notebook = nbformat.read(str(summary.results_dir / "runs" / ids[1] / "notebook.ipynb"), as_version=4)
    injected = next(c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert f'output_dir = "{summary.results_dir / "runs" / ids[1]}"' in injected.source


def test_cli_skips_done_runs_and_exits_1_on_failure(batch, capsys: pytest.CaptureFixture[str]) -> None:
    summary, spec_path, ids, _ = batch
    common = ["ablate", str(spec_path), "--results-root", str(summary.results_dir.parent)]
    assert main([*common, "--only", ids[1], ids[3].rsplit("-", 1)[1]]) == 0  # done: no kernel started
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("skip")] == [
        ids[1],
        ids[3],
    ]
    assert main([*common, "--only", ids[2]]) == 1
    captured = capsys.readouterr()
    assert "1 run(s) failed" in captured.err and ids[2] in captured.err
    assert main([*common, "--only", "nope"]) == 2
    assert "matches no run" in capsys.readouterr().err


def test_resume_skips_done_and_force_reruns(tmp_path: Path, job_notebook: Path) -> None:
    spec_path = write_spec(tmp_path / "toy.yaml", spec_text(job_notebook))
    done, todo = load_spec(spec_path).runs()
    store = RunStore(tmp_path / "results" / "toy")
    store.mark_finished(store.mark_running(done.run_id, done.params), error=None)
    marker = {
        "run_id": done.run_id,
        "params": done.params,
        "metrics": {},
        "seed": 0,
        "git_commit": "fake",
        "wall_time_s": 0,
    }
    write_json_atomic(store.run_dir(done.run_id) / "record.json", marker)

    summary = run_ablation(spec_path, results_root=tmp_path / "results", log=lambda _: None)
    assert summary.skipped == [done.run_id] and [o.run_id for o in summary.executed] == [todo.run_id]
    assert json.loads((store.run_dir(done.run_id) / "record.json").read_text())["git_commit"] == "fake"

    summary = run_ablation(
        spec_path, force=True, only=[done.run_id], results_root=tmp_path / "results", log=lambda _: None
    )
    assert [o.run_id for o in summary.executed] == [done.run_id] and summary.ok
    assert json.loads((store.run_dir(done.run_id) / "record.json").read_text())["git_commit"] == "test"


def test_cli_spec_error_exits_2_without_traceback(tmp_path: Path, job_notebook: Path) -> None:
    spec = write_spec(tmp_path / "bad.yaml", spec_text(job_notebook, grid="mask_ratoi: [0.5]"))
    proc = subprocess.run(
        [sys.executable, "-m", "eolab", "ablate", str(spec), "--dry-run"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "mask_ratoi" in proc.stderr and str(spec) in proc.stderr


def test_cli_dry_run_table_render_usage(tmp_path: Path, job_notebook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path / "s.yaml", spec_text(job_notebook))
    assert main(["ablate", str(spec), "--dry-run", "--results-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "toy: 2 run(s)" in out and "run  x=1-" in out and not (tmp_path / "toy").exists()
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert main(["render", str(tmp_path / "missing.ipynb")]) == 2
    assert "error: notebook not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


# --- end to end: fake records -> CLI -> summary notebook -> HTML ------------------------------------


@pytest.mark.slow
def test_summary_renders_on_fake_results(tmp_path: Path, job_notebook: Path) -> None:
    spec_path = write_spec(
        tmp_path / "toy.yaml",
        spec_text(
            job_notebook, grid="x: [1, 3]\n  name: [a, b]", extra="seeds: [0, 1]\nsummary: notebooks/summary.ipynb\n"
        ),
    )
    store = RunStore(tmp_path / "results" / "toy")
    for i, run in enumerate(load_spec(spec_path).runs()):
        store.mark_finished(store.mark_running(run.run_id, run.params), error=None)
        folds = [
            {"encoder": e, "fold": f, "accuracy": 0.6 + 0.05 * run.params["x"] + 0.1 * (e == "pretrained") + 0.01 * f}
            for e in ("pretrained", "random_init", "band_stats")
            for f in range(3)
        ]
        record = {
            "run_id": run.run_id,
            "params": run.params,
            "metrics": {"final_loss": 0.1 * i},
            "seed": run.params["seed"],
            "git_commit": "fake",
            "wall_time_s": 1.0,
            "folds": folds,
        }
        write_json_atomic(store.run_dir(run.run_id) / "record.json", record)
        steps = range(50)
        pd.DataFrame({"step": steps, "loss": [2.0 / (1 + s) + 0.01 * i for s in steps]}).to_csv(
            store.run_dir(run.run_id) / "history.csv", index=False
        )

    proc = subprocess.run(
        [sys.executable, "-m", "eolab", "ablate", str(spec_path), "--results-root", str(tmp_path / "results")],
        cwd=tmp_path,  # paths in the spec resolve against the repository, not the cwd
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (store.results_dir / "summary.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64") >= 2  # accuracy plot and loss curves
    assert "loss fell" in html and "0.860 ± 0.010" in html
    executed = nbformat.read(str(store.results_dir / "summary.ipynb"), as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error" or o.get("name") == "stderr"]

    (store.results_dir / "summary.html").unlink()
    assert main(["render", str(store.results_dir / "summary.ipynb")]) == 0
    assert "data:image/png;base64" in (store.results_dir / "summary.html").read_text(encoding="utf-8")


def test_paired_gains_pair_folds_and_apply_the_fold_sd_margin(tmp_path: Path) -> None:
    from eolab.reports.runs import AblationResults, paired_gains

    folds = range(4)
    table = pd.DataFrame(
        [{"run_id": "r", "m": 1, "encoder": "pretrained", "fold": f, "accuracy": 0.80 + 0.01 * f} for f in folds]
        + [{"run_id": "r", "m": 1, "encoder": "random_init", "fold": f, "accuracy": 0.70 + 0.01 * f} for f in folds]
        + [{"run_id": "r", "m": 1, "encoder": "band_stats", "fold": f, "accuracy": 0.81} for f in folds]
    )
    results = AblationResults(tmp_path, {"grid": {"m": [1]}}, table, pd.DataFrame(), pd.DataFrame())
    gains = paired_gains(results).set_index("baseline")
    assert gains.loc["random_init", "gain"] == pytest.approx(0.10) and gains.loc["random_init", "gain_sd"] == 0
    assert bool(gains.loc["random_init", "beats"]) is True  # 0.10 > fold sd of about 0.013
    assert gains.loc["band_stats", "gain"] == pytest.approx(0.005)
    assert bool(gains.loc["band_stats", "beats"]) is False  # 0.005 is inside the fold sd
