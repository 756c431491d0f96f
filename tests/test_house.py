"""The house rules, checked: imports go one way (import-linter contracts), no private name crosses a
module, ruff is clean, one parameter list (the notebook is generated from the config), and one
pipeline (a launched run and a notebook run write the same files and record keys)."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from eolab import config
from eolab.config import ParameterError, PretrainConfig
from eolab.pipeline import STEPS
from eolab.tasks import TaskParams

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOK = ROOT / "notebooks" / "pretrain.ipynb"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; it is in requirements.txt")
    return str(path)


def test_import_contracts_hold():
    """Layers, the torch-free runner, the small trial client and no cycles (pyproject.toml's contracts)."""
    result = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_ruff_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "eolab", "benchmarks", "tests", "tools"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]


def _private_imports(path: Path) -> list[str]:
    """`from x import _name` (or `import x._mod`) of a name private to another module."""
    def private(name: str) -> bool:
        return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if not (node.level or module.split(".")[0] in ("eolab", "benchmarks")):
                continue  # another project's privates are its business
            for name in [module, *(a.name for a in node.names)]:
                if private(name):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name} (from {module or '.'})")
        elif isinstance(node, ast.Import):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in ("eolab", "benchmarks") and private(a.name)]
    return found


def test_no_private_name_is_imported_across_modules():
    files = [*ROOT.glob("eolab/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py")]
    offences = [line for path in files for line in _private_imports(path)]
    assert not offences, "\n".join(offences)


def test_the_runner_imports_no_training_stack_at_run_time():
    """What import-linter checks statically, at run time: the orchestration modules load without torch."""
    code = ("import sys; import eolab.runner.execute, eolab.runner.study, eolab.runner.pool, eolab.runner.spec, "
            "eolab.runner.store, eolab.__main__; "
            "bad = sorted(m for m in ('torch', 'lightning', 'eolab.pipeline', 'eolab.train', 'eolab.config') "
            "if m in sys.modules); print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- one parameter list ---------------------------------------------------------------------------


def test_the_committed_notebook_is_what_the_generator_writes():
    """notebooks/pretrain.ipynb == tools/make_pretrain_notebook.py's output: regenerate, never hand-edit."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_pretrain_notebook
    finally:
        sys.path.remove(str(ROOT / "tools"))
    expected = make_pretrain_notebook.build()
    committed = nbformat.read(str(NOTEBOOK), as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in expected.cells], (
        "notebooks/pretrain.ipynb is out of date: run `python tools/make_pretrain_notebook.py`")


def test_the_parameters_page_is_generated_from_the_config():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_pretrain_notebook
    finally:
        sys.path.remove(str(ROOT / "tools"))
    page = make_pretrain_notebook.PARAMETERS_PAGE.read_text()
    assert page == make_pretrain_notebook.parameters_page(page), (
        "docs/parameters.md is out of date: run `python tools/make_pretrain_notebook.py`")
    assert all(f"`{name}`" in page for name in config.names())


def test_notebook_parameters_equal_the_config_fields():
    """Names, types and defaults as papermill reads them (what the runner validates specs against)."""
    found = papermill.inspect_notebook(str(NOTEBOOK))
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    assert list(found) == list(fields)
    for name, info in found.items():
        f = fields[name]
        assert info["inferred_type_name"] == f.type, name
        assert ast.literal_eval(info["default"]) == f.metadata.get("notebook", f.default), name
        assert info["help"] == f.metadata["help"], name


def test_task_params_take_their_defaults_from_the_config():
    defaults = config.defaults()
    shared = [f for f in dataclasses.fields(TaskParams) if f.name in defaults]
    assert len(shared) >= 8
    for f in shared:
        assert f.default == defaults[f.name], f.name
    params = PretrainConfig(mask_ratio=0.5, decoder_depth=2, temperature=0.1).task_params()
    assert (params.mask_ratio, params.decoder_depth, params.temperature) == (0.5, 2, 0.1)


def test_unknown_names_and_every_bad_value_are_reported_together():
    with pytest.raises(ParameterError, match="unknown parameters \\['maskratio'\\].*did you mean 'mask_ratio'"):
        PretrainConfig.from_params({"maskratio": 0.5})
    with pytest.raises(ParameterError) as info:
        PretrainConfig(objective="maee", model_size="vit_huge", mask_ratio=1.5)
    problems = info.value.problems
    assert len(problems) == 3
    assert [p.split("'")[1] for p in problems] == ["objective", "mask_ratio", "model_size"]
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


# --- one pipeline ---------------------------------------------------------------------------------


def test_the_notebook_runs_the_pipeline_steps_in_order():
    """Each step of eolab.pipeline.STEPS is called by exactly one code cell, in order."""
    committed = nbformat.read(str(NOTEBOOK), as_version=4)
    calls = []
    for cell in committed.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "run"):
                calls.append(node.func.attr)
    assert calls == list(STEPS)


TINY = {"model_size": "vit_nano", "n_pretrain": 64, "epochs": 1, "batch_size": 32, "decoder_depth": 1,
        "probe_folds": 2, "probe_repeats": 1, "knn_every": 0, "checkpoint_every": 0, "benchmark": "eurosat"}


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def _keys(record: dict) -> dict:
    return {k: sorted(v) if isinstance(v, dict) else type(v).__name__ for k, v in record.items()}


@pytest.mark.slow
def test_launch_and_notebook_write_the_same_files_and_record_keys(tmp_path):
    """`python -m eolab launch` and the notebook (as the runner executes it) with the same parameters
    write the same set of files, and records with the same keys (the embedding benchmark step too)."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps(TINY))
    launched = tmp_path / "launched"
    subprocess.run([sys.executable, "-m", "eolab", "launch", str(params), "--output-dir", str(launched)],
                   cwd=ROOT, check=True, capture_output=True)
    from eolab.runner.notebook import execute_notebook

    notebook_run = tmp_path / "notebook"
    execute_notebook(NOTEBOOK, notebook_run / "notebook.ipynb", {**TINY, "output_dir": str(notebook_run)})
    assert _files(launched) == _files(notebook_run) - {"notebook.ipynb"}
    assert {"record.json", "history.csv", "encoder.pt", "benchmark.csv", "benchmark.json"} <= _files(launched)
    a, b = (json.loads((d / "record.json").read_text()) for d in (launched, notebook_run))
    assert _keys(a) == _keys(b)
    assert a["benchmark"] == b["benchmark"] == "benchmark.csv"
    assert a["folds"] == b["folds"]  # same parameters, same seed: the same run


def test_committed_results_hold_no_machine_paths():
    """Committed result files are relative to the repository (tools/relativize_results.py rewrites them)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import relativize_results
    finally:
        sys.path.remove(str(ROOT / "tools"))
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    offences = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in relativize_results.TEXT_SUFFIXES and path.is_file():
            found = relativize_results.leftovers(path.read_text(encoding="utf-8", errors="replace"))
            offences += [f"{name}: {p}" for p in found[:1]]
    assert not offences, "run `python tools/relativize_results.py`:\n" + "\n".join(offences[:20])
