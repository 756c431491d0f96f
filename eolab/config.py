"""The parameters of one pre-training run: the single list every other place is derived from.

``PretrainConfig``'s fields are the run's parameters: their names, types, defaults, the comment a
user reads and the section they sit in. The pre-training notebook's parameters cell is generated
from them (``parameters_cell``; ``tools/make_pretrain_notebook.py``), the proxy tasks' ``TaskParams``
take their defaults from them, and a test fails when the notebook and this list disagree.

Every check (types, then values against the registries: objective, model size, mask, ranges) runs
when a config is built, and all problems are reported together in one ``ParameterError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from .data import eurosat
from .data.downstream import TASKS as DOWNSTREAM_TASKS
from .data.downstream import is_task_file
from .data.pretraining import DATASET_BANDS, PACKED, PACKED_SAMPLING, TIME_SERIES, dataset_bands, is_packed
from .data.sampling import parse_spec
from .data.sources import SourceError, builtin_sources, load_source
from .data.stream import open_corpus
from .models.vit import POOLS, SIZES, TOKENIZERS
from .progress import PROGRESS_MODES
from .tasks import AUGMENTATIONS, LATENT_LOSSES, MASKS, TaskParams, parse_objective
from .text import split_names
from .tracking import LOGGERS, loggable_params, redact_uri

STRATEGIES = ("auto", "ddp", "ddp_notebook", "ddp_spawn", "fsdp", "deepspeed")
"""Lightning strategies a run may name (multi-GPU training is Lightning's). Inside a Jupyter kernel
(a notebook run by the ablation runner) Lightning can launch processes only by forking:
``ddp_notebook``; ``ddp`` and ``fsdp`` re-run a script, so they suit scripts launched by srun."""

BATCH_SAMPLING = ("balanced", "balanced_sqrt", "diverse", "shuffle")
"""How training batches are drawn (``eolab.data.samplers``). "balanced" is the default: over three seeds
it gave the MAE +0.021 [+0.002, +0.040] EuroSAT accuracy against "diverse" and cost SimCLR nothing
(results/sampler_seeds). The scene-aware samplers need a scene/window index (dataset "scenes"); on
datasets without one (series, pairs, packed corpora) batches are shuffled, and run.log says so."""

TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def param(default: Any, help: str, section: str | None = None, notebook: Any = dataclasses.MISSING) -> Any:
    """A parameter: its default and the one-line help shown in the notebook (``section`` starts a
    new block of the parameters cell; ``notebook`` is the notebook's own default where it must differ,
    e.g. where an interactive run writes)."""
    meta = {"help": help, "section": section}
    if notebook is not dataclasses.MISSING:
        meta["notebook"] = notebook
    return dataclasses.field(default=default, metadata=meta)


class ParameterError(ValueError, TypeError):
    """One or more parameters are unknown, of the wrong type or of a bad value; ``problems`` lists
    every one (each message names its parameter). A ValueError and a TypeError, as a single bad
    value or type was before problems were collected."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        text = problems[0] if len(problems) == 1 else f"{len(problems)} invalid parameters: " + "; ".join(problems)
        super().__init__(text)


def source_problems(sources: tuple[str, ...]) -> list[str]:
    """Why each entry of a ``sources`` list cannot be used (a built-in name or a source YAML file whose
    fields and card load; the error names the file and field); empty: all usable."""
    problems = []
    for s in sources:
        try:
            load_source(s)
        except SourceError as exc:
            problems.append(str(exc))
    return problems


@dataclass(frozen=True)
class PretrainConfig:
    """The parameters of one pre-training run (the notebook's parameters cell, validated)."""

    data_root: str = param("", "empty: $EOLAB_DATA, else ../shared/data beside the repository", section="data")
    dataset: str = param("scenes", "scenes (S2 scene tiles) | s1s2 (paired S1+S2) | slovenia (NDVI series) | ssl4eo_series | packed:<folder or URL> (a corpus of `data pack`)")
    sources: str = param("major_tom,hydro,ssl4eo", "scenes only: unlabelled scenes to pre-train on (comma-separated built-in names or paths to source YAML files, docs/data.md)")
    val_sources: str = param("", "scenes only: scenes held out for the proxy task's validation loss (empty: none)")
    bands: str = param("B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12", "input bands by name (s1s2 appends VV,VH and slovenia uses NDVI)")
    n_pretrain: int = param(0, "number of pre-training patches drawn (0 means all): by `sampling` from scene tiles, a seeded uniform subset of a packed corpus")
    sampling: str = param("pandas_uniform", "scenes with n_pretrain: which patches (uniform | geo_grid | stratified:source | kcenter | kmeans | clear | mixes like 0.5*uniform+0.5*kcenter)")
    tile_stride: int = param(32, "stride (pixels) of the window grid over scenes and series")
    img_size: int = param(64, "window size in pixels")
    num_dates: int = param(4, "time-series datasets: dates per sample")
    batch_sampling: str = param("balanced", "balanced (every batch mixes scenes in proportion to their size, no overlapping windows) | balanced_sqrt (in proportion to the square root of their size) | diverse (scenes dealt round-robin, no overlapping windows in a batch) | shuffle; datasets without scene tiles are shuffled")
    eurosat: str = param("local", "local (273 patches in the data root) or torchgeo (full 27,000 and downloads)")
    model_size: str = param("vit_micro", "vit_nano | vit_micro | vit_mini | vit_tiny | vit_small | vit_base", section="model")
    patch_size: int = param(8, "token size in pixels")
    tokenizer: str = param("patch", "patch (all bands) | groups (one token per band group) | temporal (per date)")
    band_groups: str = param("B02,B03,B04,B08|B05,B06,B07,B8A|B11,B12", "groups tokenizer: bands by comma and groups by a bar")
    objective: str = param("mae", "mae | simclr | moco | denoise | cross_view | jepa (latent masked modelling) | dino | mae_teacher or a mix such as mae+simclr", section="proxy task")
    objective_weights: str = param("", "weights of a mix by comma (empty means all 1)")
    mask_ratio: float = param(0.75, "mae, mae_teacher and jepa: fraction of tokens hidden from the encoder")
    mask: str = param("random", "mae, mae_teacher, jepa and dino's iBOT: random | block | group_independent | group_consistent | group_drop")
    norm_pix_loss: bool = param(True, "mae: reconstruct per-patch normalised pixels (MAE default)")
    decoder_dim: int = param(128, "mae, denoise and jepa: width of the decoder (jepa: of the latent predictor)")
    decoder_depth: int = param(4, "mae, denoise and jepa: transformer blocks in the decoder (jepa: predictor)")
    view_augment: str = param("eo", "simclr, moco and dino (global) views: none | dihedral | crop | spectral | eo (no colour jitter)")
    temperature: float = param(0.2, "contrastive: InfoNCE temperature")
    denoise_target: str = param("eps", "denoise: predict the noise (eps) or the clean signal (x0)")
    latent_loss: str = param("smooth_l1", "jepa: smooth_l1 | mse | cosine | patch_disc (each prediction picks its own target token)")
    target_encoder: str = param("ema", "jepa: target encoder, ema (moving average of the encoder) or frozen (its initial weights)")
    ema_momentum: float = param(0.996, "jepa, dino and mae_teacher: teacher momentum at the first step, cosine to 1 at the last")
    dino_out_dim: int = param(1024, "dino: number of prototypes (output width of the DINO head)")
    local_crops: int = param(4, "dino: local crops (windows of half the token grid, spectrally augmented)")
    teacher_temp: float = param(0.07, "dino: teacher temperature after a warm-up from 0.04 over the first 30% of steps")
    koleo_weight: float = param(0.0, "dino: weight of the KoLeo spreading term (DINOv2: 0.1)")
    ibot_weight: float = param(0.0, "dino: weight of the iBOT masked-patch term (DINOv2: 1.0)")
    distill_weight: float = param(1.0, "mae_teacher: weight of the distillation term against the MAE's reconstruction")
    augment: str = param("dihedral", "augmentation of every training batch (same names as view_augment)")
    epochs: int = param(20, "passes over the pre-training set (unless train_tflops is set)", section="optimisation")
    train_tflops: float = param(0.0, "training budget in TFLOPs (counted per step) for equal compute (0 means epochs)")
    batch_size: int = param(64, "images per step")
    lr: float = param(1.5e-3, "peak AdamW learning rate (warm-up then cosine decay)")
    weight_decay: float = param(0.05, "AdamW weight decay (not on biases, norms, tokens)")
    seed: int = param(0, "seeds weights, masks, data order and probe folds")
    accelerator: str = param("auto", "Lightning accelerator: auto | cpu | gpu")
    devices: str = param("auto", "Lightning devices per node: auto or a count (e.g. 4 GPUs)")
    strategy: str = param("auto", "Lightning strategy: auto | ddp_notebook (several GPUs from a notebook) | ddp | fsdp")
    precision: str = param("32-true", "Lightning precision: 32-true | bf16-mixed | 16-mixed")
    accumulate: int = param(1, "gradient accumulation (batches per optimiser step)")
    torch_compile: bool = param(False, "compile with torch.compile (inductor; on CPU needs g++): what compile_scope names")
    compile_scope: str = param("blocks", "torch_compile: blocks (the transformer blocks) | task (the proxy task's whole forward, loss and backward)")
    num_workers: int = param(0, "data-loader worker processes")
    checkpoint_every: int = param(200, "steps between training checkpoints for resuming a killed run (0 means none)")
    knn_every: int = param(100, "steps between in-loop EuroSAT k-NN probes (0 means off)", section="evaluation")
    pool: str = param("mean_std", "embedding: mean | cls | mean_std (mean and spatial std of patch tokens)")
    probe_folds: int = param(5, "stratified folds of the linear probe")
    probe_repeats: int = param(5, "repeats of the k-fold split (folds x repeats scores)")
    probe_baselines: bool = param(True, "also probe a random-init encoder and band statistics")
    benchmark: str = param("", "embedding benchmark tasks after the probe: \"\" (none), all, or names (eurosat,slovenia_landcover,...)")
    progress: str = param("auto", "auto | bar (Lightning progress bar and run.log) | log (run.log only) | none; auto: log under the ablation runner or CI, else bar", section="progress and tracking")
    logger: str = param("none", "experiment tracking: none | csv | tensorboard | mlflow (experiment: the ablation name; run name: the run id)")
    tracking_uri: str = param("", "mlflow: tracking server URI (empty: $MLFLOW_TRACKING_URI); tensorboard: a log folder (empty: the run folder)")
    output_dir: str = param(".", "run folder: record.json, history.csv, encoder.pt", section="output", notebook="../results/scratch")

    def __post_init__(self):
        problems = self._type_problems()
        if not problems:  # values are checked once every type is right
            problems = self._value_problems()
        if problems:
            raise ParameterError(problems)

    def _type_problems(self) -> list[str]:
        problems = []
        for f in dataclasses.fields(self):
            value, expected = getattr(self, f.name), TYPES[f.type]
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                ok = True
            if not ok:
                problems.append(f"parameter {f.name!r} must be {f.type}, got {value!r} ({type(value).__name__})")
        return problems

    def _value_problems(self) -> list[str]:
        problems = []
        try:
            parts = parse_objective(self.objective)
        except ValueError as exc:
            parts = None
            problems.append(f"parameter 'objective': {exc}")
        try:
            parse_spec(self.sampling, param="sampling")  # its errors name the parameter
        except ValueError as exc:
            problems.append(str(exc))
        try:  # a packed corpus's bands are in its manifest: an unreachable location is named here, before training
            # scene sources with a problem are reported by the 'sources' check; their bands are unknown
            readable = self.source_list if self.dataset == "scenes" and not source_problems(self.source_list) else ()
            packed = open_corpus(self.dataset.removeprefix(PACKED)) if is_packed(self.dataset) and len(self.dataset) > 7 else None
            known_bands = packed.bands if packed is not None else dataset_bands(self.dataset, readable)
        except ValueError as exc:  # ShardError
            packed = None
            known_bands = None  # unknown: the dataset's problem is the one to report
            problems.append(f"parameter 'dataset': {exc}")
        # Each check is evaluated on its own, so a value one check cannot even read (weights that
        # are not numbers, patch_size 0) is reported without hiding the others.
        checks = [
            ("dataset", lambda: self.dataset in DATASET_BANDS or (is_packed(self.dataset) and len(self.dataset) > 7),
             f"one of {sorted(DATASET_BANDS)} or packed:<folder or URL> (a corpus of python -m eolab data pack)"),
            ("n_pretrain", lambda: packed is None or self.n_pretrain <= len(packed),
             f"at most the {len(packed)} patches of the packed corpus {packed.location} (0 = all of them)"
             if packed is not None else ""),
            ("sampling", lambda: not is_packed(self.dataset) or self.sampling in PACKED_SAMPLING,
             "'uniform' on a packed corpus (n_pretrain draws a seeded uniform subset; the packer's --sampling chose "
             "its patches)"),
            ("mask_ratio", lambda: 0.0 <= self.mask_ratio < 1.0, "in [0, 1)"),
            ("model_size", lambda: self.model_size in SIZES, f"one of {sorted(SIZES)}"),
            ("mask", lambda: self.mask in MASKS, f"one of {sorted(MASKS)}"),
            ("tokenizer", lambda: self.tokenizer in TOKENIZERS, f"one of {TOKENIZERS}"),
            ("tokenizer", lambda: self.tokenizer != "temporal" or self.dataset in TIME_SERIES,
             f"'temporal' only for the time-series datasets {TIME_SERIES}"),
            ("tokenizer", lambda: self.dataset not in TIME_SERIES or self.tokenizer == "temporal",
             f"'temporal' for the time-series datasets {TIME_SERIES}"),
            ("band_groups",
             lambda: self.tokenizer != "groups" or sorted(b for g in self.group_list for b in g) == sorted(self.band_list),
             f"groups (bands by comma, groups by '|') that partition the bands {self.band_list}"),
            ("objective_weights", lambda: not self.objective_weights or parts is None or len(self.weight_list) == len(parts),
             f"one comma-separated weight per part of the objective {self.objective!r}"),
            ("view_augment", lambda: self.view_augment in AUGMENTATIONS, f"one of {sorted(AUGMENTATIONS)}"),
            ("augment", lambda: self.augment in AUGMENTATIONS, f"one of {sorted(AUGMENTATIONS)}"),
            ("batch_sampling", lambda: self.batch_sampling in BATCH_SAMPLING, f"one of {BATCH_SAMPLING}"),
            ("latent_loss", lambda: self.latent_loss in LATENT_LOSSES, f"one of {LATENT_LOSSES}"),
            ("target_encoder", lambda: self.target_encoder in ("ema", "frozen"), "'ema' or 'frozen'"),
            ("ema_momentum", lambda: 0.0 <= self.ema_momentum <= 1.0, "in [0, 1]"),
            ("dino_out_dim", lambda: self.dino_out_dim >= 2, ">= 2"),
            ("local_crops", lambda: self.local_crops >= 0, ">= 0"),
            ("teacher_temp", lambda: self.teacher_temp > 0, "> 0"),
            ("koleo_weight", lambda: self.koleo_weight >= 0, ">= 0"),
            ("ibot_weight", lambda: self.ibot_weight >= 0, ">= 0"),
            ("distill_weight", lambda: self.distill_weight >= 0, ">= 0"),
            ("denoise_target", lambda: self.denoise_target in ("eps", "x0"), "'eps' or 'x0'"),
            ("temperature", lambda: self.temperature > 0, "> 0"),
            ("train_tflops", lambda: self.train_tflops >= 0, ">= 0 (0 = train for `epochs`)"),
            ("knn_every", lambda: self.knn_every >= 0, ">= 0 (0 = no in-loop k-NN probe)"),
            ("num_dates", lambda: self.num_dates >= 1, ">= 1"),
            ("devices", lambda: self.devices == "auto" or self.devices.isdigit() or self.devices == "-1",
             "'auto', -1 or a count"),
            ("strategy", lambda: self.strategy in STRATEGIES, f"one of {STRATEGIES}"),
            ("accumulate", lambda: self.accumulate >= 1, ">= 1"),
            ("compile_scope", lambda: self.compile_scope in ("blocks", "task"), "'blocks' or 'task'"),
            ("num_workers", lambda: self.num_workers >= 0, ">= 0"),
            ("checkpoint_every", lambda: self.checkpoint_every >= 0, ">= 0 (0 = no checkpoints, no resume)"),
            ("progress", lambda: self.progress in PROGRESS_MODES, f"one of {PROGRESS_MODES}"),
            ("logger", lambda: self.logger in LOGGERS, f"one of {LOGGERS}"),
            ("tracking_uri", lambda: self.logger != "mlflow" or bool(self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")),
             "the MLflow tracking server's URI when logger is 'mlflow' (or set $MLFLOW_TRACKING_URI)"),
            ("img_size", lambda: self.img_size % self.patch_size == 0, f"a multiple of patch_size {self.patch_size}"),
            ("sources", lambda: not source_problems(self.source_list),
             f"comma-separated built-in names from {builtin_sources()} or paths to source YAML files"
             + "".join(f"; {p}" for p in source_problems(self.source_list))),
            ("val_sources", lambda: not source_problems(self.val_source_list),
             f"empty or comma-separated built-in names from {builtin_sources()} or paths to source YAML files"
             + "".join(f"; {p}" for p in source_problems(self.val_source_list))),
            ("val_sources", lambda: not set(self.val_source_list) & set(self.source_list),
             f"sources held out of pre-training, none of them in sources {self.sources!r}"),
            ("val_sources", lambda: not self.val_sources or self.dataset == "scenes", "empty unless dataset is 'scenes'"),
            ("bands", lambda: known_bands is None or bool(self.band_list) and all(b in known_bands for b in self.band_list),
             f"comma-separated band names of dataset {self.dataset!r}"
             + (f" with sources {self.sources!r}" if self.dataset == "scenes" else "") + f": from {list(known_bands or ())}"),
            ("eurosat", lambda: self.eurosat in eurosat.DEFAULT_SPLITS, f"one of {sorted(eurosat.DEFAULT_SPLITS)}"),
            ("pool", lambda: self.pool in POOLS, f"one of {POOLS}"),
            ("epochs", lambda: self.epochs >= 1, ">= 1"),
            ("batch_size", lambda: self.batch_size >= 1, ">= 1"),
            ("lr", lambda: self.lr > 0, "> 0"),
            ("n_pretrain", lambda: self.n_pretrain >= 0, ">= 0 (0 = all patches)"),
            ("sampling", lambda: self.sampling == "pandas_uniform" or self.n_pretrain > 0,
             "left at its default unless n_pretrain (the budget it samples) is set"),
            ("probe_folds", lambda: self.probe_folds >= 2, ">= 2"),
            ("benchmark", lambda: all(t in DOWNSTREAM_TASKS or is_task_file(t) for t in self.benchmark_list),
             f"empty, 'all' or comma-separated task names from {list(DOWNSTREAM_TASKS)} or task files (*.yaml)"),
        ]
        for name, check, what in checks:
            try:
                ok = check()
            except (ValueError, ZeroDivisionError) as exc:  # e.g. weights that are not numbers
                problems.append(f"parameter {name!r} must be {what}, got {self._shown(name)!r} ({exc})")
                continue
            if not ok:
                problems.append(f"parameter {name!r} must be {what}, got {self._shown(name)!r}")
        return problems

    def _shown(self, name: str):
        """A parameter's value as messages show it: a tracking URI without its password."""
        value = getattr(self, name)
        return redact_uri(value) if name == "tracking_uri" else value

    def __repr__(self) -> str:  # the notebook shows the config: never a tracking password
        values = ", ".join(f"{k}={v!r}" for k, v in loggable_params(dataclasses.asdict(self) | {"output_dir": None}).items())
        return f"PretrainConfig({values}, output_dir={self.output_dir!r})"

    def problems(self) -> list[str]:
        """Every bad value of this config (empty: valid); building a config raises them all at once."""
        return self._type_problems() or self._value_problems()

    @property
    def source_list(self) -> tuple[str, ...]:
        return split_names(self.sources)

    @property
    def val_source_list(self) -> tuple[str, ...]:
        return split_names(self.val_sources)

    @property
    def band_list(self) -> tuple[str, ...]:
        return split_names(self.bands)

    @property
    def group_list(self) -> tuple[tuple[str, ...], ...]:
        return tuple(split_names(g) for g in self.band_groups.split("|") if split_names(g))

    @property
    def benchmark_list(self) -> tuple[str, ...]:
        """The embedding benchmark's downstream tasks this run ends with ('all': every one)."""
        return tuple(DOWNSTREAM_TASKS) if self.benchmark.strip() == "all" else split_names(self.benchmark)

    @property
    def weight_list(self) -> tuple[float, ...]:
        return tuple(float(w) for w in split_names(self.objective_weights))

    @classmethod
    def from_namespace(cls, namespace: dict) -> PretrainConfig:
        """Build from a notebook's globals: picks exactly the config's fields (a notebook's globals
        hold much else: imports, IPython's names)."""
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PretrainConfig:
        """Build from a mapping of parameter names (a spec's, a params file's, a record's): a name
        that is not a parameter is an error (a typo would otherwise silently run the default)."""
        unknown = sorted(set(params) - set(names()))
        if unknown:
            hints = "".join(_suggest(n) for n in unknown)
            raise ParameterError([f"unknown parameters {unknown}{hints}; the parameters are {list(names())}"])
        return cls(**params)


    def task_params(self, **extra: Any) -> TaskParams:
        """The proxy task's parameters: every ``TaskParams`` field this config has a parameter of
        (same name), plus ``extra`` (what is derived per run, e.g. cross-view groups)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(TaskParams) if hasattr(self, f.name)}
        return TaskParams(**shared, weights=self.weight_list, **extra)

    def encoder_spec(self, bands: tuple[str, ...]) -> dict[str, Any]:
        """Arguments of ``build_encoder`` / ``encoder_config`` for this run, reading ``bands``."""
        groups = self.group_list if self.tokenizer == "groups" else ()
        return {"size": self.model_size, "bands": bands, "img_size": self.img_size, "patch_size": self.patch_size,
                "tokenizer": self.tokenizer, "groups": groups,
                "num_dates": self.num_dates if self.tokenizer == "temporal" else 1}


def names() -> tuple[str, ...]:
    """Every parameter's name, in the order of the notebook's parameters cell."""
    return tuple(f.name for f in dataclasses.fields(PretrainConfig))


def defaults() -> dict[str, Any]:
    """Every parameter's default value."""
    return {f.name: f.default for f in dataclasses.fields(PretrainConfig)}


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, names(), n=1)
    return f" ({name!r}: did you mean {close[0]!r}?)" if close else ""


def parameters_cell() -> str:
    """The notebook's parameters cell: one annotated assignment per field with its help as a comment,
    blocks headed by their section. Papermill reads names, types and defaults from it."""
    lines = []
    for f in dataclasses.fields(PretrainConfig):
        section = f.metadata["section"]
        if section:
            lines.append(f"# --- {section} " + "-" * max(3, 88 - len(section) - 7))
        value = f.metadata.get("notebook", f.default)
        literal = json.dumps(value) if isinstance(value, str) else repr(value)  # "..." as the notebook writes strings
        assignment = f"{f.name}: {f.type} = {literal}"
        lines.append(f"{assignment:<40} # {f.metadata['help']}" if len(assignment) < 40 else f"{assignment}  # {f.metadata['help']}")
    return "\n".join(lines)


def parameters_markdown() -> str:
    """The parameter list as Markdown tables, one per section (``docs/parameters.md`` is generated
    from it, so the page cannot go stale)."""
    out, table = [], []
    for f in dataclasses.fields(PretrainConfig):
        if f.metadata["section"]:
            if table:
                out += table + [""]
            table = [f"## {f.metadata['section'].capitalize()}", "", "| parameter | type | default | meaning |",
                     "| --- | --- | --- | --- |"]
        value = f.metadata.get("notebook", f.default)
        literal = json.dumps(value) if isinstance(value, str) else repr(value)
        meaning = f.metadata["help"].replace("|", "\\|")
        literal = literal.replace("|", "\\|")  # a bar ends a table cell, even inside backticks
        table.append(f"| `{f.name}` | {f.type} | `{literal}` | {meaning} |")
    return "\n".join(out + table) + "\n"
