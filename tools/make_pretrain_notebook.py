"""Write notebooks/pretrain.ipynb (kept as a script so the notebook's source is reviewable in diffs)."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
params = code('''\
# --- data ---------------------------------------------------------------------------------
data_root: str = ""                      # empty: $EOLAB_DATA, else ../shared/data beside the repository
sources: str = "major_tom,hydro,ssl4eo"  # unlabelled Sentinel-2 scenes to pre-train on (comma-separated)
bands: str = "B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12"  # input bands by name (the 10 m and 20 m surface bands)
n_pretrain: int = 0                      # number of 64x64 pre-training patches drawn from them (0: all)
tile_stride: int = 32                    # stride (pixels) of the patch grid over the scenes
eurosat: str = "local"                   # "local" (273 patches in the data root) or "torchgeo" (full 27,000; downloads)
# --- model --------------------------------------------------------------------------------
model_size: str = "vit_micro"            # vit_nano | vit_micro | vit_mini | vit_tiny | vit_small | vit_base
patch_size: int = 8                      # token size in pixels (64x64 input -> (64/patch_size)^2 tokens)
# --- proxy task: masked autoencoder -------------------------------------------------------
mask_ratio: float = 0.75                 # fraction of tokens hidden from the encoder
mask: str = "random"                     # masking scheme: random (MAE) or block (2x2-token blocks)
norm_pix_loss: bool = True               # reconstruct per-patch normalised pixels (MAE default)
decoder_dim: int = 128                   # width of the decoder
decoder_depth: int = 4                   # transformer blocks in the decoder (deeper helps linear probes)
# --- optimisation -------------------------------------------------------------------------
epochs: int = 20                         # passes over the pre-training patches
batch_size: int = 64                     # images per step
lr: float = 1.5e-3                       # peak AdamW learning rate (warm-up then cosine decay)
weight_decay: float = 0.05               # AdamW weight decay (not on biases, norms, tokens)
seed: int = 0                            # seeds weights, masks, data order and probe folds
accelerator: str = "auto"                # Lightning accelerator: auto | cpu | gpu
precision: str = "32-true"               # Lightning precision: 32-true | bf16-mixed | 16-mixed
# --- evaluation ---------------------------------------------------------------------------
pool: str = "mean_std"                   # embedding: mean | cls | mean_std (mean and spatial std of patch tokens)
probe_folds: int = 5                     # stratified folds of the linear probe
probe_repeats: int = 5                   # repeats of the k-fold split (folds x repeats scores)
# --- output -------------------------------------------------------------------------------
output_dir: str = "../results/scratch"   # run folder: record.json, history.csv, encoder.pt''')
params.metadata["tags"] = ["parameters"]
nb.cells = [
    md("# Masked-autoencoder pre-training on real Sentinel-2 scenes\n\n"
       "One ablation run: pre-train a ViT encoder with a masked-autoencoder proxy task on unlabelled "
       "Sentinel-2 patches (Major-TOM, Hydro, SSL4EO-S12), then measure its frozen embeddings on labelled "
       "EuroSAT-MS patches with a cross-validated linear probe, next to a randomly initialised encoder of "
       "the same size and per-band mean/std features. Executed by Papermill from `python -m eolab ablate`; "
       "the result leaves as files in `output_dir`."),
    params,
    code("import time\n\nimport eolab.experiment as ex\n\n"
         "started = time.perf_counter()\ncfg = ex.PretrainConfig.from_namespace(globals())  # validates every parameter\ncfg"),
    md("## Data\nThe scene cache is built once (decoded, resampled to 10 m, offsets removed) and reused; "
       "per-band statistics are computed on the pre-training patches and travel with the encoder."),
    code("data = ex.prepare_data(cfg)\ndata.manifest"),
    md("## Pre-training"),
    code("run = ex.pretrain(cfg, data)\n"
         "ax = run.history.plot(x='step', y='loss', logy=True, title='masked-reconstruction loss', legend=False)"),
    md("## Linear probe on EuroSAT-MS\nRepeated stratified k-fold; every encoder sees the same folds. "
       "The record also carries label-free diagnostics of each feature set (effective rank, "
       "embedding spread, a collapse flag)."),
    code("evaluation = ex.evaluate(cfg, data, run)\nex.summarize(evaluation.scores)"),
    code("record = ex.write_record(cfg, data, run, evaluation, started)\n"
         "{k: round(v, 4) for k, v in record['metrics'].items()}"),
]
nbf.write(nb, "notebooks/pretrain.ipynb")
