"""Ablations side by side (`python -m eolab compare`) and the index of results/ (`results index`),
on tiny synthetic results folders written as the runner writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eolab.__main__ import main
from eolab.intervals import bootstrap_ci
from eolab.reports.compare import CompareError, compare_runs, formatted, results_index, to_markdown
from tests.ablation_fixtures import write_ablation

FOLD_NOISE = [0.03, -0.02, 0.01, -0.04, 0.02]  # shared by every run of a seed: which patches a fold tests


def _accuracy(shift: float):
    def acc(params, encoder, fold):
        base = {"pretrained": 0.70 + shift, "random_init": 0.65, "band_stats": 0.75}[encoder]
        return base + FOLD_NOISE[fold] + 0.01 * params["seed"]
    return acc


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    a = write_ablation(tmp_path, "ratio", {"mask_ratio": [0.5, 0.75]}, lambda p, e, f: _accuracy(0.1 * p["mask_ratio"])(p, e, f),
                       commit="1111111aaaa", failed={"mask_ratio": 0.9, "seed": 0})
    b = write_ablation(tmp_path, "scheme", {"mask": ["random", "block"]},
                       lambda p, e, f: _accuracy(0.075 + (0.03 if p["mask"] == "block" else 0.0))(p, e, f),
                       commit="2222222bbbb-dirty", ended_at="2026-11-26T01:02:03+00:00")
    return a, b


def test_compare_gives_every_run_with_baselines_and_intervals(two) -> None:
    a, b = two
    frame = compare_runs([a, b])
    assert list(frame["ablation"]) == ["ratio", "ratio", "scheme", "scheme"]  # the failed run has no folds
    row = frame[frame["run"] == "mask_ratio=0.75-seed=0"].iloc[0]
    folds = np.array([0.775 + n for n in FOLD_NOISE])
    assert row["pretrained_mean"] == pytest.approx(folds.mean())
    assert (row["pretrained_ci_low"], row["pretrained_ci_high"]) == pytest.approx(bootstrap_ci(folds))
    assert row["minus_random_init"] == pytest.approx(0.125)  # paired: the fold noise cancels
    assert row["minus_random_init_ci_high"] - row["minus_random_init_ci_low"] < 1e-9
    assert row["minus_band_stats"] == pytest.approx(0.025)
    assert row["folds"] == 5 and row["git_commit"] == "1111111"
    assert frame.loc[frame["ablation"] == "scheme", "git_commit"].eq("2222222-dirty").all()
    table = formatted(frame)
    assert table.loc[1, "pretrained"] == f"{folds.mean():.3f} +- {folds.std(ddof=1):.3f}"
    assert table.loc[1, "minus random_init (paired)"] == "+0.125 [+0.125, +0.125]"
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("| ablation | run |") and md.count("\n") == 6


def test_reference_pairs_runs_of_one_seed_across_ablations(two) -> None:
    a, b = two
    frame = compare_runs([a, b], reference="ratio/mask_ratio=0.75-seed=0")
    by_run = frame.set_index("run")
    assert by_run.loc["mask_ratio=0.75-seed=0", "is_reference"]
    assert by_run.loc["mask=block-seed=0", "minus_reference"] == pytest.approx(0.03)
    assert by_run.loc["mask=random-seed=0", "minus_reference"] == pytest.approx(0.0)
    assert by_run.loc["mask_ratio=0.5-seed=0", "minus_reference"] == pytest.approx(-0.025)
    assert formatted(frame).loc[1, "minus reference (paired)"] == "(reference)"
    with pytest.raises(CompareError, match="matches 0 runs"):
        compare_runs([a, b], reference="ratio/mask_ratio=0.6-seed=0")
    with pytest.raises(CompareError, match="ABLATION/RUN"):
        compare_runs([a, b], reference="mask_ratio=0.75")


def test_different_seeds_are_not_paired(tmp_path: Path) -> None:
    a = write_ablation(tmp_path, "s0", {"x": [1]}, _accuracy(0.0), seeds=(0,))
    b = write_ablation(tmp_path, "s1", {"x": [1]}, _accuracy(0.0), seeds=(1,))
    frame = compare_runs([a, b], reference="s0/x=1-seed=0")
    assert np.isnan(frame.set_index("ablation").loc["s1", "minus_reference"])


def test_versus_pairs_each_run_with_its_counterpart(tmp_path: Path) -> None:
    grid = {"mask": ["random", "block"]}
    a = write_ablation(tmp_path, "scheme", grid, lambda p, e, f: _accuracy(-0.02 * (p["mask"] == "block"))(p, e, f), seeds=(0, 1))
    frame = compare_runs([a], versus="mask=random").set_index("run")
    assert frame.loc["mask=block-seed=1", "reference"] == "scheme/mask=random-seed=1"
    assert frame.loc["mask=block-seed=0", "minus_reference"] == pytest.approx(-0.02)
    assert frame.loc["mask=random-seed=0", "is_reference"]
    with pytest.raises(CompareError, match="not a parameter the ablations vary"):
        compare_runs([a], versus="lr=0.1")


def test_compare_command(two, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two
    out_csv = tmp_path / "cmp" / "compare.csv"
    assert main(["compare", str(a), str(b), "--csv", str(out_csv)]) == 0
    stdout = capsys.readouterr().out
    assert "| ratio | mask_ratio=0.75-seed=0 |" in stdout
    assert len(pd.read_csv(out_csv)) == 4
    not_results = tmp_path / "empty"
    not_results.mkdir()
    assert main(["compare", str(a), str(not_results)]) == 2
    assert f"{not_results} is not an ablation results folder" in capsys.readouterr().err


def test_results_index(two, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two
    (a / "summary.html").write_text("<html></html>")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "report.json").write_text(json.dumps({"speed": {"started_at": "2026-11-20T10:00:00+00:00",
                                                            "git_commit": "3333333cccc"}}))
    index = results_index(tmp_path).set_index("name")
    assert index.loc["ratio", "runs"] == "2 of 3 (1 failed)"
    assert index.loc["ratio", "best"].startswith(f"{0.775 + np.mean(FOLD_NOISE):.3f}")
    assert index.loc["ratio", "best run"] == "mask_ratio=0.75-seed=0"
    assert index.loc["ratio", "page"] == "ratio/summary.html" and index.loc["ratio", "commit"] == "1111111"
    assert index.loc["scheme", "date"] == "2026-11-26" and index.loc["scheme", "runs"] == "2 of 2"
    assert index.loc["bench", "kind"] == "benchmark" and index.loc["bench", "commit"] == "3333333"
    assert index.loc["bench", "date"] == "2026-11-20"
    assert main(["results", "index", "--root", str(tmp_path)]) == 0
    md = (tmp_path / "index.md").read_text()
    assert "| [ratio](ratio/summary.html) | ablation | 2 of 3 (1 failed) |" in md
    assert len(pd.read_csv(tmp_path / "index.csv")) == 3


@pytest.mark.slow
def test_compare_summary_page(two, tmp_path: Path) -> None:
    """`compare --summary DIR` executes notebooks/compare.ipynb and renders it like the other summaries."""
    a, b = two
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--reference", "ratio/mask_ratio=0.75-seed=0", "--summary", str(out)]) == 0
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "(reference)" in html and "cdnjs" not in html
    assert "+0.030 [+0.030, +0.030]" in html  # block minus the reference, paired by fold
    try:
        from eolab.reports.pagecheck import BrowserUnavailable, check_page

        report = check_page(out / "compare.html")
    except BrowserUnavailable:
        return
    assert report.problems() == [] and report.images == report.images_drawn == 1


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["results", "--help"]])
def test_help_prints(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
