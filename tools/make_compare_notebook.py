"""Write notebooks/compare.ipynb (kept as a script so the notebook's source is reviewable in diffs).

The loading, pairing and plotting code lives in eolab/runner/compare.py; the notebook only calls it.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# Ablations compared\n\n"
        "Executed by `python -m eolab compare RESULTS_DIR RESULTS_DIR ... --summary DIR` and rendered to "
        "`DIR/compare.html`. It reads only the runner's outputs of each ablation (`spec.json`, `table.csv`: "
        "one row per run, encoder and fold); the helpers live in `eolab/runner/compare.py`."
    ),
    new_code_cell(
        'results_dirs: str = "../results/mask_ratio,../results/mask_scheme"  # comma-separated results folders\n'
        'reference: str = ""  # ABLATION/RUN: pair every run of the same seed with it, fold by fold (empty: none)\n'
        'versus: str = ""  # KEY and VALUE joined by an equals sign: pair each run with the run of its settings but that value (empty: none)',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import sys\n"
        "from pathlib import Path\n\n"
        "from IPython.display import Markdown, display\n\n"
        "try:\n"
        "    from eolab.reports import compare\n"
        "except ImportError:  # opened by hand from notebooks/: make the repository importable\n"
        "    sys.path.insert(0, str(Path.cwd().parent))\n"
        "    from eolab.reports import compare\n\n"
        "paths = [p.strip() for p in results_dirs.split(',') if p.strip()]\n"
        "frame = compare.compare_runs(paths, reference=reference or None, versus=versus or None)\n"
        "ablations = [compare.load_ablation(p) for p in paths]\n"
        "display(Markdown('\\n'.join(f\"- **{a.name}**: {a.spec.get('description') or '(no description)'} \"\n"
        "                            f\"({frame['ablation'].eq(a.name).sum()} runs with probe folds)\" for a in ablations)))"
    ),
    new_markdown_cell(
        "## Pre-trained encoder against the baselines, every run\n\n"
        "The pre-trained encoder's mean linear-probe accuracy over folds with its 95% bootstrap interval "
        "(over folds: optimistic, repeated k-fold folds share training data), and the two controls of the "
        "same run: **random_init** (the architecture untrained) and **band_stats** (per-band mean/std, no network)."
    ),
    new_code_cell("compare.plot_compare(frame);"),
    new_markdown_cell(
        "## The table\n\n"
        "Mean +- standard deviation over folds; *minus random_init* and *minus band_stats* are the "
        "pre-trained encoder's accuracy minus the baseline's on the same folds (mean and 95% interval). "
        "With a `reference` run, *minus reference* pairs each run of the same seed with it, fold by fold, "
        "across ablations (runs of one seed are probed on the same folds); empty where seeds differ. With "
        "`versus` (KEY=VALUE), each run is paired with the run of the same settings but KEY=VALUE."
    ),
    new_code_cell('compare.formatted(frame).set_index(["ablation", "run"])'),
    new_markdown_cell("## The numbers\n\nThe same, unformatted (what `--csv` writes)."),
    new_code_cell("frame.round(4)"),
]

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
for i, cell in enumerate(nb.cells):  # stable ids keep diffs of the committed notebook small
    cell["id"] = f"compare-{i:02d}"
nbformat.validate(nb)
nbformat.write(nb, str(Path(__file__).resolve().parents[1] / "notebooks" / "compare.ipynb"))
