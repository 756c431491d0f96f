"""Write notebooks/study_summary.ipynb (kept as a script so the notebook's source is reviewable in diffs).

The loading and plotting code lives in eolab/reports/study.py; the notebook only calls it.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# Study summary\n\n"
        "Executed by `python -m eolab ablate SPEC` after an Optuna study (a spec with a `study:` section; "
        "`results_dir` points at `results/<name>/`) and rendered to `results/<name>/summary.html`. It reads "
        "only the runner's files: `spec.json`, `trials.json` (every trial, exported from the study's storage) "
        "and `runs.csv`; the helpers live in `eolab/reports/study.py`."
    ),
    new_code_cell(
        'results_dir: str = "../results/study_mask"  # folder of an executed study',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "import sys\n"
        "from pathlib import Path\n\n"
        "from IPython.display import Markdown, display\n\n"
        "try:\n"
        "    from eolab.reports import study as report\n"
        "except ImportError:  # opened by hand from notebooks/: make the repository importable\n"
        "    sys.path.insert(0, str(Path.cwd().parent))\n"
        "    from eolab.reports import study as report\n\n"
        "results = report.load_study_results(results_dir)\n"
        "display(Markdown(report.describe_study(results)))"
    ),
    new_markdown_cell(
        "## Best trials\n\n"
        "Complete trials ranked by the objective (the spec's `study.metric`, read from each run's "
        "`record.json`). `run_id` names the run folder with the executed notebook. With a handful of "
        "trials and one seed each, neighbouring ranks are usually within noise of each other."
    ),
    new_code_cell("report.best_trials(results, k=10)"),
    new_markdown_cell(
        "## Parameter importances\n\n"
        "fANOVA: a random forest fitted to the complete trials, then the share of the objective's variance "
        "each parameter explains. A rough ranking with few trials; read it with the slice plots below."
    ),
    new_code_cell("importances = report.param_importances(results)\nreport.plot_importances(importances);"),
    new_markdown_cell(
        "## Parallel coordinates\n\n"
        "One line per trial through every searched parameter and the objective. Complete trials are coloured "
        "by their value; pruned trials are dashed grey and stop before the objective axis (they have none). "
        "Bundles of bright lines show the region the search converged to."
    ),
    new_code_cell("report.plot_parallel_coordinates(results);"),
    new_markdown_cell(
        "## Objective versus each parameter\n\n"
        "Complete trials, coloured by trial number (late trials show where the sampler went). Grey ticks "
        "on the x axis mark the parameter values of pruned trials."
    ),
    new_code_cell("report.plot_slices(results);"),
    new_markdown_cell(
        "## Intermediate values\n\n"
        "What the notebook reported while training (`health/<study.intermediate>`, through "
        "`eolab.trial.trial_callbacks`). Pruned trials are dashed and end in a red x where the "
        "pruner stopped them: compare them with the complete trials at the same step."
    ),
    new_code_cell("report.plot_intermediate(results);"),
    new_markdown_cell("## Failed trials\n\nTrials whose notebook failed, with the recorded error (empty if none)."),
    new_code_cell("report.failed_trials(results)"),
]
nb = new_notebook(
    cells=cells,
    metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    },
)
for i, cell in enumerate(nb.cells):  # stable ids keep diffs of the committed notebook small
    cell["id"] = f"study-summary-{i:02d}"
nbformat.validate(nb)
nbformat.write(nb, str(Path(__file__).resolve().parents[1] / "notebooks" / "study_summary.ipynb"))
