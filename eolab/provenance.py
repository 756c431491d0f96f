"""Where a result came from: the code's git commit (one definition for run records, benchmark
records and reports, so "dirty" means the same everywhere)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .data.paths import REPO_ROOT


def git_commit(repo: Path = REPO_ROOT, short: bool = False) -> str:
    """HEAD's commit of ``repo``, with ``-dirty`` when tracked files differ from it; "unknown" outside
    a git checkout (an installed package, no git)."""
    try:
        sha = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=repo,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
