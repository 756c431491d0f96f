"""Make committed result files machine-independent: absolute paths become repository-relative.

    python tools/relativize_results.py [results/NAME ...]      # default: every folder under results/

A run executes with absolute paths (its run folder, the notebook, the interpreter), and they end up
in executed notebooks, rendered pages, tables and records. Before results are committed this
rewrites, in every text file: the repository root to a relative path (``results/...``,
``notebooks/...``), a virtual environment's location to ``.venv/``, and temporary folders to
``<tmp>/``. ``tests/test_house.py`` fails when a committed result file still holds such a path.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".json", ".csv", ".ipynb", ".html", ".md", ".txt", ".log", ".yaml"}

# Checked in this order; each maps an absolute prefix to what stands for it in a committed file.
PATTERNS = [
    (re.compile(r"(?:/[\w.+-]+)*/\.venv/"), ".venv/"),  # any checkout's virtual environment
    # a checkout anywhere: what follows its root is repository-relative
    (re.compile(r"/(?:work|home|root|Users|scratch|tmp)(?:/[\w.+-]+)*?/(?=(?:results|notebooks|ablations|eolab|tests|tools|benchmarks|docs|\.cache)/)"), ""),
    (re.compile(r"/(?:tmp|var/tmp)/[\w.+-]+(?=[/\"'\s]|$)"), "<tmp>"),  # a temporary results root or clone
]
ABSOLUTE = re.compile(r"(?<![\w.<>:/])/(?:work|home|root|Users|scratch|tmp)/[\w.+-]+")
"""What counts as a machine path left in a committed file."""


def relativize(text: str, repo: Path = ROOT) -> str:
    text = text.replace(f"{repo}/", "")
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def leftovers(text: str) -> list[str]:
    return ABSOLUTE.findall(text)


def files(folders: list[Path]) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)


def main(argv: list[str]) -> int:
    folders = [Path(a) for a in argv] or [ROOT / "results"]
    changed = 0
    for path in files(folders):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = relativize(text)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
        for left in leftovers(new):
            print(f"{path.resolve().relative_to(ROOT)}: still holds {left}", file=sys.stderr)
    print(f"rewrote {changed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
