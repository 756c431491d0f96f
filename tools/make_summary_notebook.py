"""Write notebooks/summary.ipynb (kept as a script so the notebook's source is reviewable in diffs).

The plotting and loading code lives in eolab/reports/runs.py; the notebook only calls it.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# Ablation summary\n\n"
        "Executed by `python -m eolab ablate SPEC` after a batch (with `results_dir` pointing at "
        "`results/<name>/`) and rendered to `results/<name>/summary.html`. It only reads the runner's "
        "outputs: `spec.json`, `table.csv` (one row per run, encoder and fold), `runs.csv` "
        "(one row per run) and each run's `history.csv`; the helpers live in `eolab/reports/runs.py`."
    ),
    new_code_cell(
        'results_dir: str = "../results/mask_ratio"  # folder of an executed ablation',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import sys\n"
        "from pathlib import Path\n\n"
        "from IPython.display import Markdown, display\n\n"
        "try:\n"
        "    from eolab.reports import runs as report\n"
        "except ImportError:  # opened by hand from notebooks/: make the repository importable\n"
        "    sys.path.insert(0, str(Path.cwd().parent))\n"
        "    from eolab.reports import runs as report\n\n"
        "results = report.load_results(results_dir)\n"
        "display(Markdown(report.describe(results)))"
    ),
    new_markdown_cell(
        "## Linear-probe accuracy versus the ablated parameter\n\n"
        "Each large point is the mean accuracy over the cross-validation folds, with a ±1 standard "
        "deviation bar; the faint dots are the individual folds. Three encoders are probed with the "
        "same linear classifier:\n\n"
        "- **pretrained**: the encoder produced by this run's pre-training;\n"
        "- **random_init**: the same architecture with untrained weights (what the architecture alone gives);\n"
        "- **band_stats**: per-band mean/std features, no network (what the spectra alone give).\n\n"
        "Pre-training is only worth its cost where *pretrained* sits clearly above both controls, "
        "by more than the fold spread."
    ),
    new_code_cell("report.plot_accuracy(results);"),
    new_markdown_cell(
        "## Pre-training loss\n\n"
        "Training loss per step for every run (read from each run's `history.csv`). Curves that stay "
        "flat or diverge point to a broken run even when its probe accuracy looks plausible."
    ),
    new_code_cell("report.plot_loss_curves(results);"),
    new_markdown_cell(
        "## Representation health during pre-training\n\n"
        "Logged inside every run: the in-loop k-NN accuracy on EuroSAT's own train/test split, and the "
        "effective rank and spread of the training batch's embeddings. A run whose rank drops towards 1 "
        "while its loss falls has collapsed, however good its loss looks."
    ),
    new_code_cell("report.plot_health(results);"),
    new_markdown_cell(
        "## Time to quality\n\n"
        "The in-loop k-NN accuracy against wall-clock training seconds (left) and training FLOPs (right), one colour "
        "per arm: which arm reaches a given quality first, not only which one ends highest. The table gives, per arm, "
        "the seconds and TFLOPs its runs took to first reach `level` (the lowest of the arms' best accuracies, so "
        "every arm reaches it). Seconds depend on the machine and its load; FLOPs do not."
    ),
    new_code_cell("report.plot_time_to_quality(results);\nreport.time_to_quality(results)"),
    new_markdown_cell(
        "## Compute and health per run\n\n"
        "Training FLOPs are counted per step from the model (forward and backward); with a FLOP budget "
        "(`train_tflops`) every run spends the same total, so costlier objectives take fewer steps."
    ),
    new_code_cell("report.compute_summary(results)"),
    new_markdown_cell(
        "## Accuracy per run and encoder\n\n"
        "Mean ± standard deviation over folds. **loss fell** checks that the mean loss over the last "
        "10% of steps is below that over the first 10% (empty when a run has no history)."
    ),
    new_code_cell("report.accuracy_summary(results)"),
    new_markdown_cell(
        "## What pre-training added, fold by fold\n\n"
        "Accuracy of the pre-trained encoder minus each baseline on the same folds (`gain`, with the "
        "standard deviation of the per-fold differences, `gain_sd`). `beats` is true when the mean gain "
        "exceeds the standard deviation of the pre-trained encoder's fold accuracies (`fold_sd`)."
    ),
    new_code_cell("report.paired_gains(results)"),
    new_markdown_cell(
        "## Arms compared with each other\n\n"
        "Each run's pre-trained accuracy minus that of the best run *with the same seed* (so the same "
        "probe folds), fold by fold: the mean difference and its 95% bootstrap interval over folds "
        "(optimistic: repeated k-fold folds are not independent). With several seeds, `seed_sd` is how "
        "much an arm's mean moves between seeds, and `exceeds_seed_noise` says whether the difference "
        "is more than twice that; with one seed it stays empty, and differences are at most suggestive."
    ),
    new_code_cell("report.compare_arms(results)"),
    new_markdown_cell(
        "## Failed runs\n\nRuns that did not finish, with the error recorded by the runner (empty if none)."
    ),
    new_code_cell("report.failed_runs(results)"),
]
nb = new_notebook(
    cells=cells,
    metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    },
)
for i, cell in enumerate(nb.cells):  # stable ids keep diffs of the committed notebook small
    cell["id"] = f"summary-{i:02d}"
nbformat.validate(nb)
nbformat.write(nb, str(Path(__file__).resolve().parents[1] / "notebooks" / "summary.ipynb"))
