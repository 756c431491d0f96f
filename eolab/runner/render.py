"""Render executed notebooks to a single self-contained HTML file, to read or share without Jupyter.

A rendered page makes no request of its own: nbconvert's lab template would load require.js and
MathJax (and mermaid, where a notebook has diagrams) from a CDN, so offline a page showed raw
``$...$``. Here

- math in markdown (cells, and markdown the notebook displayed) becomes MathML at render time
  (``latex2mathml``), which browsers draw natively; no script is needed;
- require.js, MathJax, mermaid and the widget manager are left out of the page (static outputs
  need none of them);
- images are inlined (plots already are; ``embed_images`` does it for markdown images too);
- code is folded: each code cell's source sits in a closed ``<details>`` ("code") above its
  output, so the page reads as figures and tables;
- stderr streams (warnings: TqdmWarning, numpy's RuntimeWarnings...) are dropped; errors stay.
"""

from __future__ import annotations

import copy
import re
from html import escape as html_escape
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

from eolab.runner.store import write_text_atomic

PAGE_TEMPLATE = "eolab_page.html.j2"
_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block extra_css %}
<style type="text/css">
details.eolab-code { margin: 0 0 0.2em 0; }
details.eolab-code > summary { cursor: pointer; color: var(--jp-ui-font-color2, #616161);
  font-size: var(--jp-ui-font-size0, 11px); font-family: var(--jp-ui-font-family, sans-serif);
  padding: 0.1em 0.5em; user-select: none; }
details.eolab-code:not([open]) > summary::after { content: " (folded)"; }
math[display="block"] { margin: 0.6em 0; }
</style>
{% endblock extra_css %}
{% block input_group -%}
<details class="eolab-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.DOTALL)
"""Fenced blocks and inline code spans: their dollars are literal, not math."""
_DISPLAY_MATH = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$\w])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?![\w$])")
_PLACEHOLDER = "eolabmath"


def render_html(notebook: str | Path, html: str | Path | None = None) -> Path:
    """Write `notebook` as a self-contained HTML page (default: same name, .html, beside it) and
    return its path."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    target = Path(html) if html else notebook.with_suffix(".html")
    write_text_atomic(target, page(nbformat.read(notebook, as_version=4)))
    return target


def page(nb: nbformat.NotebookNode) -> str:
    """The HTML page of an executed notebook (see the module docstring for what it does)."""
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({PAGE_TEMPLATE: _TEMPLATE})],
        template_file=PAGE_TEMPLATE,
        embed_images=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    formulas: list[str] = []
    body, _resources = exporter.from_notebook_node(prepare(nb, formulas))
    return insert_math(body, formulas)


def prepare(nb: nbformat.NotebookNode, formulas: list[str]) -> nbformat.NotebookNode:
    """A copy of `nb` ready for a static page: no stderr, no widget views, and each formula of its
    markdown replaced by a placeholder (its MathML appended to `formulas`; see `insert_math`)."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = extract_math(cell.source, formulas)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                continue
            data = output.get("data")
            if data is not None:
                if WIDGET_MIME in data and len(data) > 1:
                    del data[WIDGET_MIME]  # the widget cannot run in a static page; keep its fallback
                if "text/markdown" in data:
                    data["text/markdown"] = extract_math(_text(data["text/markdown"]), formulas)
            outputs.append(output)
        cell.outputs = outputs
    return nb


def extract_math(markdown: str, formulas: list[str]) -> str:
    """`markdown` with every ``$...$`` and ``$$...$$`` outside code replaced by a placeholder word;
    the formula's MathML is appended to `formulas`.

    The MathML goes in only after the markdown is rendered (`insert_math`): nbconvert's markdown
    renderer with embed_images re-parses each inline HTML tag on its own, which would take MathML
    apart. A formula latex2mathml cannot parse is shown as code, without its dollars.
    """

    def hold(match: re.Match[str], display: str) -> str:
        formulas.append(_mathml(match.group(1), display))
        return f"{_PLACEHOLDER}{len(formulas) - 1}x"

    parts = _CODE.split(markdown)
    for i in range(0, len(parts), 2):  # even parts are outside code
        text = _DISPLAY_MATH.sub(lambda m: hold(m, "block"), parts[i])
        parts[i] = _INLINE_MATH.sub(lambda m: hold(m, "inline"), text)
    return "".join(parts)


def insert_math(html: str, formulas: list[str]) -> str:
    """Put the MathML of `extract_math` where its placeholders are (in attribute values, such as a
    heading's anchor id, the placeholder becomes plain `math`)."""
    word = re.compile(rf"{_PLACEHOLDER}(\d+)x")
    html = re.sub(r'="[^"<>]*"', lambda m: word.sub("math", m.group(0)), html)
    return word.sub(lambda m: formulas[int(m.group(1))], html)


def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert

    try:
        return convert(latex.strip(), display=display).replace("\n", " ")
    except Exception:  # noqa: BLE001 - any parse failure: show the source instead of raw dollars
        return f"<code>{html_escape(latex.strip())}</code>"


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)
