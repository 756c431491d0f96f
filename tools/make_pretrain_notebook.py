"""Write notebooks/pretrain.ipynb (kept as a script so the notebook's source is reviewable in diffs)."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
params = code('''\
# --- data ---------------------------------------------------------------------------------
data_root: str = ""                      # empty: $EOLAB_DATA, else ../shared/data beside the repository
dataset: str = "scenes"                  # scenes (S2 scene tiles) | s1s2 (paired S1+S2) | slovenia (NDVI series) | ssl4eo_series
sources: str = "major_tom,hydro,ssl4eo"  # scenes only: unlabelled Sentinel-2 scenes to pre-train on (comma-separated)
val_sources: str = ""                    # scenes only: scenes held out for the proxy task's validation loss (empty: none)
bands: str = "B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12"  # input bands by name (s1s2 appends VV,VH and slovenia uses NDVI)
n_pretrain: int = 0                      # scenes only: number of pre-training patches drawn (0 means all)
sampling: str = "pandas_uniform"         # scenes with n_pretrain: which patches (uniform | geo_grid | stratified:source | kcenter | kmeans | clear | mixes like 0.5*uniform+0.5*kcenter)
tile_stride: int = 32                    # stride (pixels) of the window grid over scenes and series
img_size: int = 64                       # window size in pixels
num_dates: int = 4                       # time-series datasets: dates per sample
batch_sampling: str = "diverse"          # diverse (scenes mixed, no overlapping windows in a batch) | shuffle
eurosat: str = "local"                   # local (273 patches in the data root) or torchgeo (full 27,000 and downloads)
# --- model --------------------------------------------------------------------------------
model_size: str = "vit_micro"            # vit_nano | vit_micro | vit_mini | vit_tiny | vit_small | vit_base
patch_size: int = 8                      # token size in pixels
tokenizer: str = "patch"                 # patch (all bands) | groups (one token per band group) | temporal (per date)
band_groups: str = "B02,B03,B04,B08|B05,B06,B07,B8A|B11,B12"  # groups tokenizer: bands by comma and groups by a bar
# --- proxy task ---------------------------------------------------------------------------
objective: str = "mae"                   # mae | simclr | moco | denoise | cross_view or a mix such as mae+simclr
objective_weights: str = ""              # weights of a mix by comma (empty means all 1)
mask_ratio: float = 0.75                 # mae: fraction of tokens hidden from the encoder
mask: str = "random"                     # mae: random | block | group_independent | group_consistent | group_drop
norm_pix_loss: bool = True               # mae: reconstruct per-patch normalised pixels (MAE default)
decoder_dim: int = 128                   # mae and denoise: width of the decoder
decoder_depth: int = 4                   # mae and denoise: transformer blocks in the decoder
view_augment: str = "eo"                 # simclr and moco views: none | dihedral | crop | spectral | eo (no colour jitter)
temperature: float = 0.2                 # contrastive: InfoNCE temperature
denoise_target: str = "eps"              # denoise: predict the noise (eps) or the clean signal (x0)
augment: str = "dihedral"                # augmentation of every training batch (same names as view_augment)
# --- optimisation -------------------------------------------------------------------------
epochs: int = 20                         # passes over the pre-training set (unless train_tflops is set)
train_tflops: float = 0.0                # training budget in TFLOPs (counted per step) for equal compute (0 means epochs)
batch_size: int = 64                     # images per step
lr: float = 1.5e-3                       # peak AdamW learning rate (warm-up then cosine decay)
weight_decay: float = 0.05               # AdamW weight decay (not on biases, norms, tokens)
seed: int = 0                            # seeds weights, masks, data order and probe folds
accelerator: str = "auto"                # Lightning accelerator: auto | cpu | gpu
devices: str = "auto"                    # Lightning devices per node: auto or a count (e.g. 4 GPUs)
strategy: str = "auto"                   # Lightning strategy: auto | ddp_notebook (several GPUs from a notebook) | ddp | fsdp
precision: str = "32-true"               # Lightning precision: 32-true | bf16-mixed | 16-mixed
accumulate: int = 1                      # gradient accumulation (batches per optimiser step)
torch_compile: bool = False              # compile the transformer blocks with torch.compile (inductor; on CPU needs g++)
num_workers: int = 0                     # data-loader worker processes
checkpoint_every: int = 200              # steps between training checkpoints for resuming a killed run (0 means none)
# --- progress and tracking ---------------------------------------------------------------
progress: str = "auto"                   # auto | bar (Lightning progress bar and run.log) | log (run.log only) | none; auto: log under the ablation runner or CI, else bar
logger: str = "none"                     # experiment tracking: none | csv | tensorboard | mlflow (experiment: the ablation name; run name: the run id)
tracking_uri: str = ""                   # mlflow: tracking server URI (empty: $MLFLOW_TRACKING_URI); tensorboard: a log folder (empty: the run folder)
# --- evaluation ---------------------------------------------------------------------------
knn_every: int = 100                     # steps between in-loop EuroSAT k-NN probes (0 means off)
pool: str = "mean_std"                   # embedding: mean | cls | mean_std (mean and spatial std of patch tokens)
probe_folds: int = 5                     # stratified folds of the linear probe
probe_repeats: int = 5                   # repeats of the k-fold split (folds x repeats scores)
probe_baselines: bool = True             # also probe a random-init encoder and band statistics
benchmark: str = ""                      # embedding benchmark tasks after the probe: "" (none), all, or names (eurosat,slovenia_landcover,...)
# --- output -------------------------------------------------------------------------------
output_dir: str = "../results/scratch"   # run folder: record.json, history.csv, encoder.pt''')
params.metadata["tags"] = ["parameters"]
nb.cells = [
    md("# Self-supervised pre-training on real Earth-observation data\n\n"
       "One ablation run: pre-train a ViT encoder with a proxy task (masked reconstruction, contrast, "
       "denoising or a mix) on unlabelled data (Sentinel-2 scenes from Major-TOM, Hydro and SSL4EO-S12; "
       "paired Sentinel-1 and Sentinel-2; or time series), then measure its frozen embeddings on labelled "
       "EuroSAT-MS patches with a cross-validated linear probe, next to a randomly initialised encoder of "
       "the same size and per-band mean/std features. Executed by Papermill from `python -m eolab ablate`; "
       "the result leaves as files in `output_dir`."),
    params,
    code("import time\n\nimport eolab.experiment as ex\nfrom eolab.history import plot_history\nfrom eolab.runner.study import trial_callbacks\n\n"
         "started = time.perf_counter()\ncfg = ex.PretrainConfig.from_namespace(globals())  # validates every parameter\ncfg"),
    md("## Data\nThe scene cache is built once (decoded, resampled to 10 m, offsets removed) and reused; "
       "per-band statistics are computed on the pre-training patches and travel with the encoder."),
    code("data = ex.prepare_data(cfg)\ndata.manifest"),
    md("## Pre-training"),
    code("# Inside an Optuna trial the callbacks report the in-loop k-NN accuracy so the pruner can stop\n"
         "# a poor run early; outside a study the list is empty.\n"
         "run = ex.pretrain(cfg, data, callbacks=trial_callbacks())\nrun.compute"),
    md("Loss and representation health during training: embedding spread and effective rank of each "
       "checked batch, and the in-loop k-NN accuracy on EuroSAT (what a collapsing run shows first)."),
    code("plot_history(run.history, title=cfg.objective)"),
    md("## Linear probe on EuroSAT-MS\nRepeated stratified k-fold; every encoder sees the same folds. "
       "The record also carries label-free diagnostics of each feature set (effective rank, "
       "embedding spread, a collapse flag)."),
    code("evaluation = ex.evaluate(cfg, data, run)\nevaluation.not_applicable or ex.summarize(evaluation.scores)"),
    md("## Embedding benchmark\n"
       "With `benchmark` set, the saved encoder, its random-init twin and band statistics go through the "
       "benchmark's tasks (linear probe, k-NN, few-shot, random and spatially blocked splits, label-free "
       "diagnostics, leakage); the table is written to `benchmark.csv` in the run folder."),
    code("from eolab.evaluate.report import headline\n\n"
         "benchmark_table = ex.benchmark(cfg, data, run)  # None unless `benchmark` names tasks\n"
         "None if benchmark_table is None else headline(benchmark_table)"),
    code("record = ex.write_record(cfg, data, run, evaluation, started)\n"
         "{k: round(v, 4) for k, v in record['metrics'].items()}"),
]
nbf.write(nb, "notebooks/pretrain.ipynb")
