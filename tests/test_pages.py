"""Rendered pages are fit to share: self-contained (no request leaves them, checked in headless
Chromium with the network off), math drawn, code folded, no warnings, figures shown."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest

from eolab.runner.render import extract_math, insert_math, page, render_html
from tests.ablation_fixtures import write_ablation

try:
    import websocket  # noqa: F401 - websocket-client drives the browser

    from eolab.reports.pagecheck import BrowserUnavailable, check_page, chromium_path

    chromium_path()
    NO_BROWSER = ""
except (ImportError, BrowserUnavailable) as exc:  # CI installs chromium with apt-get; say why when it could not
    NO_BROWSER = str(exc)

needs_browser = pytest.mark.skipif(bool(NO_BROWSER), reason=f"headless chromium unavailable: {NO_BROWSER}")
REPO = Path(__file__).resolve().parents[1]


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [2, 1, 0.5])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def toy_notebook() -> nbformat.NotebookNode:
    """An executed notebook with what summaries hold: math in markdown (cell and output), a figure,
    a table, a warning on stderr, and code."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("fit(results)", execution_count=1)
    code.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="report.py:301: RuntimeWarning: All-NaN axis encountered\n"),
        nbformat.v4.new_output("display_data", data={"text/markdown": "fitted $\\alpha \\approx 0.34$ and `cost $5`",
                                                     "text/plain": "<Markdown>"}),
        nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("execute_result", execution_count=1,
                               data={"text/html": "<table><tr><th>run</th><th>acc</th></tr><tr><td>a</td><td>0.7</td></tr></table>",
                                     "text/plain": "table"}),
    ]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Scaling\n\nThe loss $L(N, D) = E + A/N^\\alpha + B/D^\\beta$, with $N^*(C)$ "
                                      "and $D^*(C)$.\n\n$$C = k N D$$\n\nIn code: `x = $HOME`."),
        code,
        nbformat.v4.new_code_cell("import warnings", execution_count=2),
    ]
    return nb


def test_math_outside_code_becomes_mathml_placeholders() -> None:
    formulas: list[str] = []
    text = extract_math("a $x^2$ b `$y$` c $$\\frac{1}{2}$$ costs 5$ and $5", formulas)
    assert text.count("eolabmath") == 2 and "`$y$`" in text and "costs 5$ and $5" in text
    assert formulas[0].startswith("<math") and 'display="inline"' in formulas[0]
    assert 'display="block"' in formulas[1] and "<mfrac>" in formulas[1]
    html = insert_math(f'<h2 id="{text}">{text}</h2>', formulas)
    assert html.count("<math") == 2 and 'id="a math b' in html  # no markup inside attributes


def test_page_is_static_folded_and_without_warnings() -> None:
    html = page(toy_notebook())
    assert "cdnjs" not in html and "<script src" not in html and "require" not in html.lower().split("<body")[0]
    assert html.count("<math") == 5  # 4 in the markdown cell, 1 in the displayed markdown
    assert html.count('<details class="eolab-code">') == 2 and "<details class=\"eolab-code\" open" not in html
    assert "RuntimeWarning" not in html
    assert "data:image/png;base64," in html and "<td>0.7</td>" in html
    assert "eolabmath" not in html and "$HOME" in html and "cost $5" in html


@needs_browser
def test_page_offline_in_chromium(tmp_path: Path) -> None:
    nb_path = tmp_path / "toy.ipynb"
    nbformat.write(toy_notebook(), str(nb_path))
    html = render_html(nb_path)
    report = check_page(html, screenshot=tmp_path / "toy.png")
    assert report.requests and not report.external_requests, report.requests  # the page itself, nothing else
    assert report.problems() == []
    assert report.math == report.math_drawn == 5 and not report.raw_math
    assert "$" not in report.text.replace("$HOME", "").replace("cost $5", "")
    assert report.images == report.images_drawn == 1
    assert report.code_cells == 2 and report.code_visible == 0 and "fit(results)" not in report.text
    assert (tmp_path / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_an_old_page_fails_the_check(tmp_path: Path) -> None:
    """The check catches what pages used to do: CDN scripts, raw math offline, code shown."""
    from nbconvert import HTMLExporter

    old = tmp_path / "old.html"
    old.write_text(HTMLExporter(embed_images=True).from_notebook_node(toy_notebook())[0], encoding="utf-8")
    report = check_page(old)
    assert any("cdnjs" in url for url in report.external_requests)
    assert report.raw_math and report.code_visible == 2


@pytest.mark.slow
@needs_browser
def test_executed_summary_page_offline(tmp_path: Path) -> None:
    """The ablation summary notebook, executed on a tiny results folder and rendered as `ablate` does."""
    from eolab.runner.execute import render_summary

    results = write_ablation(tmp_path, "toy", {"mask_ratio": [0.5, 0.75]},
                             lambda p, e, f: 0.6 + 0.1 * (e == "pretrained") * p["mask_ratio"] + 0.01 * f)
    html, error = render_summary(REPO / "notebooks" / "summary.ipynb", results)
    assert error is None and html is not None
    report = check_page(html, screenshot=results / "summary.png")
    assert report.problems() == [] and report.images == report.images_drawn >= 2 and "Warning" not in report.text
    assert "0.695" in report.text  # the pretrained mean of mask ratio 0.75 reaches the page


@pytest.mark.slow
@needs_browser
def test_committed_pages_are_fit_to_share() -> None:
    """Every rendered page under results/ passes the offline check (re-render with `python -m eolab
    render results/<name>/summary.ipynb` when one does not)."""
    from eolab.reports.pagecheck import browser

    pages = sorted(REPO.glob("results/*/*.html"))
    assert pages
    with browser() as endpoint:
        failures = {str(p.relative_to(REPO)): check_page(p, endpoint=endpoint).problems() for p in pages}
    assert {p: f for p, f in failures.items() if f} == {}


@needs_browser
def test_pagecheck_command_writes_a_screenshot_from_a_heading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eolab.reports.pagecheck import main

    nb_path = tmp_path / "toy.ipynb"
    nbformat.write(toy_notebook(), str(nb_path))
    html = render_html(nb_path)
    assert main([str(html), "--screenshot", "--from-heading", "Scaling", "--height", "400"]) == 0
    assert "0 external" in capsys.readouterr().out
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no heading contains 'no such heading'"):
        main([str(html), "--screenshot", "--from-heading", "no such heading"])
