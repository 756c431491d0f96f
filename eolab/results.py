"""Committed results against the code: which are stale, and does a re-run reproduce a reference.

    python -m eolab results check [RESULTS_ROOT]      # which results an older commit made
    python -m eolab results diff NEW_DIR REFERENCE_DIR  # per run: identical fold accuracies, or by how much they differ

``check`` reads every ``git_commit`` that results carry (each run's record.json, and benchmark or
report JSON files) and compares it with the last commit that changed the code producing them
(``CODE_PATHS``: the package and the notebooks). A result is *current* when that last change is an
ancestor of (or is) the commit that made it, *stale* when the code changed since, *unknown* when its
commit is not in this repository's history. Records made from a dirty work tree are marked so.

``diff`` matches runs by run id (a spec gives the same ids wherever it runs) and compares their
per-fold probe accuracies: the same commit, parameters and seed give identical folds.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .data.paths import REPO_ROOT

CODE_PATHS = ("eolab", "notebooks")
"""What produces results: a change under these paths can change a result."""
RUN_ONLY_PARAMS = ("progress", "logger", "tracking_uri", "data_root")
"""Parameters that change how a run is shown or tracked, or where data lie, never its numbers."""


def _git(*args: str, repo: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def last_code_change(repo: Path = REPO_ROOT, paths: tuple[str, ...] = CODE_PATHS) -> str:
    """The newest commit that touched ``paths`` (full hash)."""
    out = _git("log", "-1", "--format=%H", "--", *paths, repo=repo)
    if out.returncode or not out.stdout.strip():
        raise RuntimeError(f"git log in {repo} failed: {out.stderr.strip() or 'no commit touches ' + ' '.join(paths)}")
    return out.stdout.strip()


@dataclass
class Verdict:
    commit: str  # as recorded (may end in -dirty)
    state: str  # current | stale | unknown
    changes_since: int = 0  # commits that touched the code paths after it

    @property
    def dirty(self) -> bool:
        return self.commit.endswith("-dirty")


def judge(commit: str, last_change: str, repo: Path = REPO_ROOT, paths: tuple[str, ...] = CODE_PATHS,
          cache: dict | None = None) -> Verdict:
    """Current, stale or unknown: ``commit`` against the last change of the code paths."""
    cache = {} if cache is None else cache
    if commit in cache:
        return cache[commit]
    sha = commit.removesuffix("-dirty")
    if not sha or sha == "unknown" or _git("cat-file", "-e", f"{sha}^{{commit}}", repo=repo).returncode:
        verdict = Verdict(commit, "unknown")
    elif _git("merge-base", "--is-ancestor", last_change, sha, repo=repo).returncode == 0:
        verdict = Verdict(commit, "current")
    else:
        count = _git("rev-list", "--count", f"{sha}..{last_change}", "--", *paths, repo=repo).stdout.strip()
        verdict = Verdict(commit, "stale", int(count or 0))
    cache[commit] = verdict
    return verdict


def _commits(obj) -> Iterator[str]:
    """Every ``git_commit`` string anywhere in a JSON value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "git_commit" and isinstance(value, str):
                yield value
            else:
                yield from _commits(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _commits(value)


@dataclass
class ResultSet:
    """One results folder (an ablation, a benchmark): its records and their verdicts."""

    path: Path
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)  # (file, verdict)

    def count(self, state: str) -> int:
        return sum(v.state == state for _, v in self.verdicts)

    @property
    def state(self) -> str:
        for state in ("stale", "unknown"):
            if self.count(state):
                return state
        return "current"


def scan(results_root: Path, repo: Path = REPO_ROOT) -> list[ResultSet]:
    """Every JSON file under ``results_root`` that records a git commit, grouped by results folder
    (a run's record.json belongs to the folder above ``runs/``)."""
    last = last_code_change(repo)
    cache: dict = {}
    sets: dict[Path, ResultSet] = {}
    for path in sorted(results_root.rglob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        commits = sorted(set(_commits(obj)))
        if not commits:
            continue
        folder = path.parent.parent.parent if path.parent.parent.name == "runs" else path.parent
        result_set = sets.setdefault(folder, ResultSet(folder))
        for commit in commits:
            result_set.verdicts.append((str(path.relative_to(folder)), judge(commit, last, repo, cache=cache)))
    return list(sets.values())


def check_report(results_root: Path, repo: Path = REPO_ROOT) -> tuple[list[str], bool]:
    """Lines saying which result folders an older commit made; True when all are current."""
    last = last_code_change(repo)
    when = _git("log", "-1", "--format=%h %cs", last, repo=repo).stdout.strip()
    lines = [f"code ({', '.join(p + '/' for p in CODE_PATHS)}) last changed at {when}"]
    sets = scan(results_root, repo)
    shown = Path(results_root)
    for rs in sets:
        name = rs.path.relative_to(shown) if rs.path.is_relative_to(shown) else rs.path
        n = len(rs.verdicts)
        commits = sorted({v.commit.removesuffix("-dirty")[:7] for _, v in rs.verdicts})
        dirty = sum(v.dirty for _, v in rs.verdicts)
        made = f"made at {', '.join(commits[:4])}{' ...' if len(commits) > 4 else ''}"
        if rs.state == "current":
            detail = "current"
        else:
            stale = [v for _, v in rs.verdicts if v.state == "stale"]
            parts = []
            if stale:
                lo, hi = min(v.changes_since for v in stale), max(v.changes_since for v in stale)
                parts.append(f"{len(stale)} of {n} made before the last code change "
                             f"({lo if lo == hi else f'{lo}-{hi}'} code commit(s) since)")
            if rs.count("unknown"):
                parts.append(f"{rs.count('unknown')} of {n} by a commit not in this history")
            detail = f"{rs.state.upper()}: " + "; ".join(parts)
        lines.append(f"  {name}: {n} record(s), {made}{f', {dirty} from a dirty tree' if dirty else ''} -> {detail}")
    stale_sets = [rs for rs in sets if rs.state != "current"]
    lines.append(f"{len(stale_sets)} of {len(sets)} result folder(s) not made by the current code"
                 + (": re-run them (python -m eolab ablate ablations/<name>.yaml --force) or read them as made by "
                    "the commits shown" if stale_sets else ""))
    return lines, not stale_sets


# --- diff: a re-run against a reference ---------------------------------------------------------

def _records(results_dir: Path) -> dict[str, dict]:
    runs = results_dir / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"{results_dir} is not an ablation results folder (no runs/ inside)")
    out = {}
    for path in sorted(runs.glob("*/record.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return out


def _folds(record: dict) -> dict[tuple[str, int], float]:
    return {(f["encoder"], int(f["fold"])): float(f["accuracy"]) for f in record.get("folds", [])}


@dataclass
class RunDiff:
    run_id: str
    identical: bool
    lines: list[str]


def diff_run(run_id: str, new: dict, ref: dict) -> RunDiff:
    """Fold accuracies of one run against the reference's: identical, or how they differ per encoder."""
    a, b = _folds(new), _folds(ref)
    lines = []
    if set(a) != set(b):
        lines.append(f"folds differ: {len(a)} here, {len(b)} in the reference")
    encoders = sorted({enc for enc, _ in a} | {enc for enc, _ in b})
    identical = set(a) == set(b)
    for enc in encoders:
        keys = sorted(k for k in set(a) & set(b) if k[0] == enc)
        if not keys:
            continue
        deltas = [a[k] - b[k] for k in keys]
        mean_a, mean_b = sum(a[k] for k in keys) / len(keys), sum(b[k] for k in keys) / len(keys)
        if all(d == 0 for d in deltas):
            lines.append(f"{enc:<12} identical ({len(keys)} folds, mean {mean_a:.3f})")
        else:
            identical = False
            changed = sum(d != 0 for d in deltas)
            lines.append(f"{enc:<12} {changed} of {len(keys)} folds differ: mean {mean_a:.3f} vs {mean_b:.3f} "
                         f"(diff {mean_a - mean_b:+.3f}, largest fold diff {max(deltas, key=abs):+.3f})")
    pa = {k: v for k, v in new.get("params", {}).items() if k not in RUN_ONLY_PARAMS}
    pb = {k: v for k, v in ref.get("params", {}).items() if k not in RUN_ONLY_PARAMS}
    changed = sorted(k for k in set(pa) | set(pb) if pa.get(k, "<absent>") != pb.get(k, "<absent>"))
    if changed:
        lines.append("parameters differ: " + ", ".join(f"{k} {pa.get(k, '<absent>')!r} vs {pb.get(k, '<absent>')!r}"
                                                      for k in changed))
    ca, cb = str(new.get("git_commit", "?")), str(ref.get("git_commit", "?"))
    if ca != cb:
        lines.append(f"made at {ca[:12]} here, {cb[:12]} in the reference")
    return RunDiff(run_id, identical, lines)


def diff_report(new_dir: Path, ref_dir: Path) -> tuple[list[str], bool]:
    """Lines comparing every run of ``new_dir`` with the same run of ``ref_dir``; True if all identical."""
    new, ref = _records(new_dir), _records(ref_dir)
    lines = [f"{new_dir} against the reference {ref_dir}:"]
    same = True
    for run_id in sorted(set(new) | set(ref)):
        if run_id not in ref:
            lines.append(f"  {run_id}: not in the reference")
            same = False
            continue
        if run_id not in new:
            lines.append(f"  {run_id}: in the reference only (not run here)")
            same = False
            continue
        d = diff_run(run_id, new[run_id], ref[run_id])
        same &= d.identical
        lines.append(f"  {run_id}: {'IDENTICAL fold accuracies' if d.identical else 'DIFFERENT'}")
        lines += [f"    {line}" for line in d.lines]
    n = len(set(new) & set(ref))
    lines.append(f"{n} run(s) compared: " + ("all identical" if same else
                 "differences above (a different commit changes numbers; `python -m eolab results check` says "
                 "which reference results an older commit made)"))
    return lines, same
