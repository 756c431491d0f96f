"""Which committed results an older commit made, and whether a re-run reproduces a reference."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from eolab.__main__ import main
from eolab.results import check_report, diff_report, judge, last_code_change, scan


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def _commit(repo: Path, path: str, text: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    _git(repo, "add", path)
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"change {path}")
    return _git(repo, "rev-parse", "HEAD")


def _record(folder: Path, run_id: str, commit: str, folds: list[float], **params) -> None:
    run = folder / "runs" / run_id
    run.mkdir(parents=True, exist_ok=True)
    rows = [{"encoder": "pretrained", "fold": i, "accuracy": a} for i, a in enumerate(folds)]
    rows += [{"encoder": "band_stats", "fold": i, "accuracy": 0.7} for i in range(len(folds))]
    (run / "record.json").write_text(json.dumps({"run_id": run_id, "git_commit": commit, "folds": rows,
                                                 "params": {"seed": 0, **params}, "metrics": {}}))


def test_check_tells_stale_current_and_unknown(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    old = _commit(repo, "eolab/train.py", "v1")
    code = _commit(repo, "notebooks/pretrain.ipynb", "v2")  # the last change of the code paths
    docs = _commit(repo, "README.md", "docs only")  # after it, but no code path: results stay current
    results = tmp_path / "results"
    _record(results / "old", "r1", old, [0.5])
    _record(results / "old", "r2", old + "-dirty", [0.5])
    _record(results / "new", "r1", docs, [0.5])
    _record(results / "new", "r2", code, [0.5])
    _record(results / "lost", "r1", "0123456789abcdef0123456789abcdef01234567", [0.5])
    (results / "bench").mkdir()
    (results / "bench" / "benchmark.json").write_text(json.dumps({"meta": {"git_commit": old}, "rows": []}))
    assert last_code_change(repo) == code
    assert judge(old, code, repo).state == "stale" and judge(old, code, repo).changes_since == 1
    assert judge(docs, code, repo).state == "current" and judge("unknown", code, repo).state == "unknown"
    states = {rs.path.name: rs.state for rs in scan(results, repo)}
    assert states == {"old": "stale", "new": "current", "lost": "unknown", "bench": "stale"}
    lines, ok = check_report(results, repo)
    text = "\n".join(lines)
    assert not ok
    assert f"old: 2 record(s), made at {old[:7]}, 1 from a dirty tree -> STALE: 2 of 2 made before the last code change (1 code commit(s) since)" in text
    assert "new: 2 record(s)" in text and "-> current" in text
    assert "lost: 1 record(s)" in text and "UNKNOWN: 1 of 1 by a commit not in this history" in text
    assert "3 of 4 result folder(s) not made by the current code" in text


def test_check_of_this_repository_runs(capsys):
    code = main(["results", "check"])
    out = capsys.readouterr().out
    assert code in (0, 1) and out.startswith("code (eolab/, notebooks/) last changed at")
    assert "mask_ratio: 3 record(s)" in out


def test_diff_says_identical_or_by_how_much(tmp_path, capsys):
    ref, new = tmp_path / "ref" / "abl", tmp_path / "new" / "abl"
    _record(ref, "a", "c1", [0.70, 0.75], mask_ratio=0.5)
    _record(new, "a", "c1", [0.70, 0.75], mask_ratio=0.5, progress="log", logger="csv")  # run-only params
    _record(ref, "b", "c0", [0.70, 0.80], mask_ratio=0.75)
    _record(new, "b", "c1", [0.66, 0.80], mask_ratio=0.75, batch_sampling="diverse")
    _record(ref, "c", "c0", [0.6], mask_ratio=0.9)
    lines, same = diff_report(new, ref)
    text = "\n".join(lines)
    assert not same
    assert "  a: IDENTICAL fold accuracies" in text and "pretrained   identical (2 folds, mean 0.725)" in text
    assert "  b: DIFFERENT" in text
    assert "pretrained   1 of 2 folds differ: mean 0.730 vs 0.750 (diff -0.020, largest fold diff -0.040)" in text
    assert "band_stats   identical (2 folds, mean 0.700)" in text
    assert "parameters differ: batch_sampling 'diverse' vs '<absent>'" in text
    assert "made at c1 here, c0 in the reference" in text
    assert "  c: in the reference only (not run here)" in text
    assert main(["results", "diff", str(new), str(ref)]) == 0
    assert main(["results", "diff", str(new), str(ref), "--strict"]) == 1
    assert main(["results", "diff", str(tmp_path / "nothing"), str(ref)]) == 2
    assert "no runs/ inside" in capsys.readouterr().err
    same_lines, same = diff_report(new, new)
    assert same and same_lines[-1] == "2 run(s) compared: all identical"
