"""Re-render every committed page from its executed notebook, check each one offline in headless
Chromium (eolab.reports.pagecheck) and write one screenshot per kind of page.

    python tools/page_screenshots.py          (after results have changed: pages, then screenshots)

Rendering an executed notebook does not re-execute it. Screenshots start at a section with figures
(the summaries' first lines name the results folder, which says nothing about the page).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eolab.reports.pagecheck import browser, check_page  # noqa: E402
from eolab.runner.render import render_html  # noqa: E402

SHOTS = {  # page -> (heading the screenshot starts at, height in CSS px)
    "results/mask_ratio/summary.html": ("Linear-probe accuracy versus the ablated parameter", 1600),  # summary.ipynb
    "results/scaling/summary.html": ("Scaling laws of pre-training", 1600),  # scaling.ipynb: math
    "results/sampling/summary.html": ("Probe accuracy per sampler and budget", 1600),  # sampling_summary.ipynb
    "results/benchmark/benchmark.html": ("Linear probe, every task", 2800),  # benchmark.ipynb: headline figure
    "results/compare/compare.html": ("Ablations compared", 1600),  # compare.ipynb
}


def main() -> int:
    pages = [render_html(nb) for nb in sorted(REPO.glob("results/*/*.ipynb"))]
    bad = 0
    with browser() as endpoint:
        for page in pages:
            rel = page.relative_to(REPO).as_posix()
            heading, height = SHOTS.get(rel, (None, 0))
            shot = page.with_suffix(".png") if heading else None
            report = check_page(page, shot, shot_height=height or 1600, endpoint=endpoint, from_heading=heading)
            problems = report.problems()
            bad += bool(problems)
            print(f"{rel}: {page.stat().st_size / 1e6:.2f} MB, {len(report.external_requests)} external requests, "
                  f"{report.math_drawn}/{report.math} formulas" + (f", screenshot {shot.relative_to(REPO)}" if shot else ""))
            for problem in problems:
                print(f"  {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
