"""Write notebooks/pretrain.ipynb from the parameter list and the pipeline's steps.

    python tools/make_pretrain_notebook.py          # from the repository root

The parameters cell is ``eolab.config.parameters_cell()`` (names, types, defaults and comments of
``PretrainConfig``'s fields) and there is one cell per step of ``eolab.pipeline.STEPS``, so the
notebook cannot drift from the config or from ``python -m eolab launch``;
``tests/test_house.py`` fails when the committed notebook (or the table of ``docs/parameters.md``,
also written here) is not what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eolab.config import parameters_cell, parameters_markdown  # noqa: E402
from eolab.pipeline import STEPS  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "pretrain.ipynb"
PARAMETERS_PAGE = ROOT / "docs" / "parameters.md"
BEGIN, END = "<!-- parameters -->\n", "<!-- /parameters -->"

# What each step's cell says and shows; keys must be exactly the pipeline's steps.
STEP_CELLS = {
    "prepare": ("## Data\nThe scene cache is built once (decoded, resampled to 10 m, offsets removed) and reused; "
                "per-band statistics are computed on the pre-training patches and travel with the encoder.",
                "run.prepare()"),
    "pretrain": ("## Pre-training\nInside an Optuna trial the callbacks report the in-loop k-NN accuracy so the "
                 "pruner can stop a poor run early; outside a study there are none.",
                 "run.pretrain()"),
    "evaluate": ("## Linear probe on EuroSAT-MS\nRepeated stratified k-fold; every encoder sees the same folds. "
                 "The record also carries label-free diagnostics of each feature set (effective rank, "
                 "embedding spread, a collapse flag).",
                 "evaluation = run.evaluate()\nevaluation.not_applicable or pipeline.summarize(evaluation.scores)"),
    "embedding_benchmark": ("## Embedding benchmark\n"
                            "With `benchmark` set, the saved encoder, its random-init twin and band statistics go "
                            "through the benchmark's downstream tasks (linear probe, k-NN, few-shot, random and "
                            "spatially blocked splits, label-free diagnostics, leakage); the table is written to "
                            "`benchmark.csv` in the run folder.",
                            "benchmark_table = run.embedding_benchmark()  # None unless `benchmark` names tasks\n"
                            "None if benchmark_table is None else headline(benchmark_table)"),
    "record": ("## Record\nParameters, metrics, folds, seed and commit, written to `record.json` in the run folder.",
               "record = run.record()\n{k: round(v, 4) for k, v in record['metrics'].items()}"),
}
HISTORY = ("Loss and representation health during training: embedding spread and effective rank of each "
           "checked batch, and the in-loop k-NN accuracy on EuroSAT (what a collapsing run shows first).",
           "plot_history(run.result.history, title=run.cfg.objective)")


def build() -> nbf.NotebookNode:
    assert tuple(STEP_CELLS) == STEPS, f"STEP_CELLS {tuple(STEP_CELLS)} must be the pipeline's steps {STEPS}"
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    params = code(parameters_cell())
    params.metadata["tags"] = ["parameters"]
    cells = [
        md("# Self-supervised pre-training on real Earth-observation data\n\n"
           "One ablation run: pre-train a ViT encoder with a proxy task (masked reconstruction, contrast, "
           "denoising or a mix) on unlabelled data (Sentinel-2 scenes from Major-TOM, Hydro and SSL4EO-S12; "
           "paired Sentinel-1 and Sentinel-2; or time series), then measure its frozen embeddings on labelled "
           "EuroSAT-MS patches with a cross-validated linear probe, next to a randomly initialised encoder of "
           "the same size and per-band mean/std features. Executed by Papermill from `python -m eolab ablate`; "
           "the result leaves as files in `output_dir`. The cells below the parameters are the steps of "
           "`eolab.pipeline.STEPS`, the same ones `python -m eolab launch` runs."),
        params,
        code("import eolab.pipeline as pipeline\nfrom eolab.reports.history import plot_history\n"
             "from eolab.reports.benchmark import headline\nfrom eolab.trial import trial_callbacks\n\n"
             "run = pipeline.Pipeline.from_namespace(globals(), callbacks=trial_callbacks())  # validates every parameter\n"
             "run.cfg"),
    ]
    for step in STEPS:
        text, source = STEP_CELLS[step]
        cells += [md(text), code(source)]
        if step == "pretrain":
            cells += [md(HISTORY[0]), code(HISTORY[1])]
    nb.cells = cells
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating changes nothing
        cell["id"] = f"cell-{i:02d}"
    return nb


def parameters_page(text: str) -> str:
    """``docs/parameters.md`` with its table (between the markers) regenerated from the config."""
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + parameters_markdown() + END + rest.split(END, 1)[1]


if __name__ == "__main__":
    nbf.write(build(), str(NOTEBOOK))
    PARAMETERS_PAGE.write_text(parameters_page(PARAMETERS_PAGE.read_text()))
    print(f"wrote {NOTEBOOK.relative_to(ROOT)} and {PARAMETERS_PAGE.relative_to(ROOT)}")
