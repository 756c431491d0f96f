"""The runner benchmark's fault section, on the toy notebook in quick mode: counts, never timings.

Ten kernel starts (a 4-run pool batch, its resume, two concurrent `ablate` processes): slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.runner_overhead import main


@pytest.mark.slow
def test_faults_section_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["faults", "--quick", "--toy", "--workers", "2", "--timeout", "300",
                 "--results-root", str(tmp_path / "runs"), "--out", str(out)])

    report = json.loads((out / "faults.json").read_text())
    assert code == 0, [c for c in report["checks"] if not c["ok"]] or report["error"]
    assert report["ok"] and all(c["ok"] for c in report["checks"])
    figures = report["figures"]
    assert figures["runs"] == 4
    # 4 toy runs x 2 encoders x 2 folds; after the batch only the 2 done runs are in table.csv
    assert {k: figures["batch"][k] for k in ("done", "failed", "table_rows", "expected_table_rows", "runs_rows")} == {
        "done": 2, "failed": 2, "table_rows": 8, "expected_table_rows": 8, "runs_rows": 4}
    errors = figures["batch"]["errors"]
    assert errors[report["config"]["killed_run"]] == "worker killed by signal 9 (SIGKILL)"
    assert "IsADirectoryError" in errors[report["config"]["fault_run"]]
    assert figures["kill"]["code_cells_done"] >= 3
    assert {k: figures["resume"][k] for k in ("executed", "skipped", "done", "failed", "table_rows", "runs_rows")} == {
        "executed": 2, "skipped": 2, "done": 4, "failed": 0, "table_rows": 16, "runs_rows": 4}
    concurrent = figures["concurrent"]
    assert set(concurrent["executions_observed"].values()) == {1}
    assert sum(p["executed"] for p in concurrent["processes"]) == 4
    assert {k: concurrent["tables"][k] for k in ("done", "table_rows", "runs_rows")} == {
        "done": 4, "table_rows": 16, "runs_rows": 4}
    assert (out / "faults.md").read_text().count("| PASS |") == len(report["checks"])
    assert (out / "report.md").is_file()
