"""Preflight: bad parameter values and missing inputs are found once per `ablate` call, all at once,
before any kernel starts and before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eolab.__main__ import main
from eolab.config import ParameterError as ConfigError
from eolab.config import PretrainConfig
from eolab.data.cache import build_scene_cache
from eolab.data.inputs import missing_inputs
from eolab.preflight import check_runs
from eolab.runner.preflight import notebook_defaults, validates_with_config
from eolab.runner.spec import REPO_ROOT, SpecError, load_spec
from tests.test_runner import write_notebook, write_spec

SHARED = REPO_ROOT / ".." / "shared" / "data"
PRETRAIN = REPO_ROOT / "notebooks" / "pretrain.ipynb"

THREE_BAD = f"""\
name: three_bad
notebook: {PRETRAIN}
base: {{model_size: vit_huge, mask_ratio: 1.5, epochs: 1}}
grid: {{objective: [mae, maee]}}
"""


def test_config_reports_every_bad_value_and_accepts_the_same_values() -> None:
    with pytest.raises(ConfigError) as info:
        PretrainConfig(objective="maee", model_size="vit_huge", mask_ratio=1.5)
    assert len(info.value.problems) == 3
    for name in ("'objective'", "'model_size'", "'mask_ratio'"):
        assert name in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(TypeError, match="parameter 'epochs' must be int"):  # one problem: the message as before
        PretrainConfig(epochs="3")
    assert PretrainConfig(objective="mae+simclr", objective_weights="1,0.5").problems() == []
    with pytest.raises(ConfigError, match="objective_weights"):  # weights that are not numbers: named, no crash
        PretrainConfig(objective="mae+simclr", objective_weights="a,b")
    with pytest.raises(ConfigError, match="img_size"):
        PretrainConfig(patch_size=0)


def test_ablate_and_dry_run_report_three_bad_values_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "bad.yaml", THREE_BAD)
    results = tmp_path / "results"
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s) found before any run started" in err, err
    for fragment in ("parameter 'mask_ratio' must be in [0, 1), got 1.5 (all 2 runs)",
                     "got 'vit_huge' (all 2 runs)", "unknown: ['maee']) (run objective=maee-"):
        assert fragment in err, err
    assert not results.exists()  # no results folder, no run folder, no spec.json

    assert main(["ablate", str(spec), "--dry-run", "--results-root", str(results)]) == 2
    out = capsys.readouterr().out
    assert "preflight: 3 problem(s)" in out and out.count("  error   ") == 3, out
    assert not results.exists()


def test_missing_empty_or_scene_less_data_root_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = ("major_tom", "hydro", "ssl4eo")
    assert "does not exist" in missing_inputs(str(tmp_path / "none"), "scenes", sources)[0]
    (tmp_path / "empty").mkdir()
    assert "is empty" in missing_inputs(str(tmp_path / "empty"), "scenes", sources)[0]
    only_eurosat = tmp_path / "only_eurosat"
    only_eurosat.mkdir()
    (only_eurosat / "eurosat-ms").symlink_to((SHARED / "eurosat-ms").resolve())
    problems = missing_inputs(str(only_eurosat), "scenes", sources)
    assert len(problems) == 3 and all("has no files for source" in p for p in problems)
    assert missing_inputs(str(SHARED), "scenes", sources) == []
    assert missing_inputs(str(SHARED), "slovenia") == []
    # the scene cache refuses instead of saving an empty cache every later run would trust
    cache_dir = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="no scenes of source"):
        build_scene_cache(only_eurosat, sources, cache_dir=cache_dir)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    # the child's report names every run's problems (here: one data root for both runs)
    report = check_runs([{"label": f"run {i}", "params": {"data_root": str(only_eurosat)}} for i in range(2)])
    assert len(report["problems"]) == 6 and report["runs"] == 2


def test_only_notebooks_that_use_the_config_are_value_checked(tmp_path: Path) -> None:
    toy = write_notebook(tmp_path / "toy.ipynb")
    assert not validates_with_config(toy) and validates_with_config(PRETRAIN)
    spec = load_spec(write_spec(tmp_path / "s.yaml", THREE_BAD))
    defaults = notebook_defaults(spec)
    assert defaults["mask_ratio"] == 0.75 and "output_dir" not in defaults


def test_orchestration_imports_neither_torch_nor_the_pipeline() -> None:
    code = ("import sys, eolab.__main__, eolab.runner.execute, eolab.runner.study, eolab.runner.preflight, "
            "eolab.data.inputs, eolab.secrets; print(sorted(m for m in ('torch', 'eolab.pipeline', 'eolab.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_spec_reports_every_unknown_name_and_mistyped_value_at_once(tmp_path: Path) -> None:
    text = f"name: names\nnotebook: {PRETRAIN}\nbase: {{model_sise: vit_nano, epochs: '3'}}\ngrid: {{mask_ratio: [0.5, x]}}\n"
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path / "names.yaml", text))
    message = str(info.value)
    assert "3 problems in `base` and `grid`" in message
    for fragment in ("`model_sise` (in base/grid) is not a parameter of the notebook (did you mean `model_size`?)",
                     "`epochs` = '3' (str)", "`mask_ratio` = 'x' (str)"):
        assert fragment in message, message
