"""Render executed notebooks to a single self-contained HTML file, to read or share without Jupyter."""

from __future__ import annotations

from pathlib import Path

from nbconvert import HTMLExporter

from eolab.runner.store import write_text_atomic


def render_html(notebook: str | Path, html: str | Path | None = None) -> Path:
    """Write `notebook` as HTML (default: same name, .html, beside it) and return the HTML path.

    Plot outputs are already inline PNGs; `embed_images` also inlines images referenced from
    markdown cells, so the file stands alone.
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    target = Path(html) if html else notebook.with_suffix(".html")
    exporter = HTMLExporter(embed_images=True)
    body, _resources = exporter.from_filename(str(notebook))
    write_text_atomic(target, body)
    return target
