"""Declarative ablation specs: load a YAML file, check it against the job notebook, expand it into runs.

Everything that can be wrong with a spec is checked here, before the first (slow) run starts,
so a typo in a parameter name costs a second instead of a wasted night of pre-training.

Spec format (paths are relative to the repository root, not the cwd)::

    name: mask_ratio                 # results go to results/<name>/
    notebook: notebooks/pretrain.ipynb
    summary: notebooks/summary.ipynb # optional: rendered after the batch
    description: "Masking ratio of the masked autoencoder"
    base: {epochs: 4}                # parameters fixed for every run
    grid: {mask_ratio: [0.5, 0.75]}  # cartesian product over these
    seeds: [0, 1]                    # optional; every grid point x every seed (sets `seed`)
    resources:                       # optional; per-run SLURM request (`ablate --executor slurm`)
      {cpus_per_task: 8, gpus_per_node: 1, mem_gb: 32, timeout_min: 120, partition: gpu}
      # {tasks_per_node: 4, nodes: 2}: > 1 task makes each run one DDP job over srun tasks,
      # the notebook on rank 0 (see README, "Training at scale")

A spec may instead (or besides the grid) have an Optuna `study:` section; each trial is one run of
the notebook with sampled parameters (see `eolab.runner.study`)::

    study:
      direction: maximize            # or minimize
      metric: pretrained_acc_mean    # key of record.json's `metrics`: the objective
      n_trials: 8                    # COMPLETE + PRUNED trials to reach (resumes count)
      sampler: tpe                   # or {type: tpe, seed: 0, n_startup_trials: 4}
      pruner: median                 # or {type: median, n_startup_trials: 3}; default none
      intermediate: knn_accuracy     # what the notebook reports while training (needed by a pruner)
      storage: null                  # default sqlite:///<results>/<name>/study.db; any RDB URL
                                     # (${VAR} expands from the environment) or journal:///path.log
      space:
        mask_ratio: {type: float, low: 0.4, high: 0.95}
        lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
        mask: {type: categorical, choices: [random, block]}

With a `study`, the `grid` points (if any) are enqueued as the study's first trials and must lie in
the search space; `seeds` is not allowed (put `seed` in `base` or in the space).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml

from eolab.data.paths import (
    REPO_ROOT,  # relative paths in a spec resolve here, so specs work from any cwd
)
from eolab.secrets import redact, url_secrets

OUTPUT_DIR_PARAM = "output_dir"
"""Parameter every job notebook declares; the runner injects the run folder into it."""

SEED_PARAM = "seed"
"""Parameter that the spec's `seeds` list sets."""

SUMMARY_RESULTS_PARAM = "results_dir"
"""Parameter of the summary notebook that receives the ablation's results folder."""

ALLOWED_KEYS = ("name", "notebook", "summary", "description", "base", "grid", "seeds", "resources", "study")
REQUIRED_KEYS = ("name", "notebook")

RESOURCE_TYPES: dict[str, tuple[type, ...]] = {
    "cpus_per_task": (int,),
    "gpus_per_node": (int,),
    "mem_gb": (int, float),
    "timeout_min": (int,),
    "partition": (str,),
    "tasks_per_node": (int,),  # > 1 task: one DDP run over srun tasks, the notebook on rank 0
    "nodes": (int,),
}
"""Keys of the optional `resources` section (what one run asks the scheduler for) and their types."""

HASH_LENGTH = 12
_SLUG_VALUE_MAX = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A spec (or the notebook it names) is invalid; the message names the file and the culprit."""


@dataclass(frozen=True)
class NotebookParameter:
    """One parameter declared in a notebook's `parameters` cell, as papermill reads it."""

    name: str
    type_name: str  # the annotation as written ("float", "int", ...) or "None" when absent
    default: str  # source text of the default value
    help: str  # the trailing comment

    def expected_type(self) -> str | None:
        """The type a value must have: the annotation, else the type of a literal default, else None."""
        if self.type_name and self.type_name != "None":
            return self.type_name
        try:
            default = ast.literal_eval(self.default)
        except (ValueError, SyntaxError):
            return None
        inferred = type(default).__name__
        return inferred if inferred in _SIMPLE_CHECKS else None


@dataclass(frozen=True)
class Run:
    """One execution of the job notebook; `params` excludes `output_dir`, which the runner adds."""

    run_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class AblationSpec:
    """A validated spec with absolute paths; `runs()` expands it."""

    path: Path
    name: str
    notebook: Path
    summary: Path | None
    description: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    parameters: dict[str, NotebookParameter] = field(repr=False)
    resources: dict[str, Any] = field(default_factory=dict)
    study: StudySpec | None = None

    @property
    def varied_keys(self) -> list[str]:
        """Parameters that differ between runs: what the run ids and the summary plots show."""
        keys = list(self.grid) + ([SEED_PARAM] if self.seeds is not None else [])
        if self.study is not None:
            keys += [k for k in self.study.space if k not in keys]
        return keys

    def grid_points(self) -> list[dict[str, Any]]:
        """The grid's cartesian product (grid order), without base or seeds; [{}] for no grid."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def runs(self) -> list[Run]:
        """Expand the grid (x seeds) into runs, in a stable order (grid order, then seeds).

        A study has no fixed runs (its grid points become enqueued trials): empty list.
        """
        if self.study is not None:
            return []
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys))
        seeds: list[int | None] = list(self.seeds) if self.seeds is not None else [None]
        runs = []
        for combo in combos:
            for seed in seeds:
                params = dict(self.base)
                params.update(zip(keys, combo, strict=True))
                if seed is not None:
                    params[SEED_PARAM] = seed
                runs.append(Run(run_id=make_run_id(params, self.varied_keys), params=params))
        return runs

    def to_json(self) -> dict[str, Any]:
        """The resolved spec, written to results/<name>/spec.json for the summary notebook."""
        return {
            "name": self.name,
            "spec_path": str(self.path),
            "notebook": str(self.notebook),
            "summary": str(self.summary) if self.summary else None,
            "description": self.description,
            "base": self.base,
            "grid": self.grid,
            "seeds": self.seeds,
            "resources": self.resources,
            "varied_keys": self.varied_keys,
            "runs": [{"run_id": r.run_id, "params": r.params} for r in self.runs()],
            "study": self.study.to_json() if self.study is not None else None,
        }


def resolve_repo_path(value: str | Path) -> Path:
    """Resolve a spec path against the repository root (absolute paths pass through)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def make_run_id(params: dict[str, Any], varied_keys: list[str]) -> str:
    """`<slug of varied values>-<12 hex>`: readable in `ls`, stable across machines and key order.

    The hash covers every parameter the spec sets (not only the varied ones), so changing a base
    parameter produces new run ids instead of silently reusing stale results.
    """
    params = {k: v for k, v in params.items() if k != OUTPUT_DIR_PARAM}
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    slug = "-".join(f"{k}={_slug_value(params[k])}" for k in varied_keys if k in params)
    return f"{slug}-{digest}" if slug else digest


def _slug_value(value: Any) -> str:
    """Render a value for a folder name: JSON-like, filesystem-safe, bounded length."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+=]", "_", text)[:_SLUG_VALUE_MAX]


def load_spec(spec_path: str | Path) -> AblationSpec:
    """Read and fully validate a spec; raise SpecError (naming the file) on the first problem."""
    path = Path(spec_path).expanduser().resolve()
    raw = _read_yaml(path)
    _check_keys(path, raw)

    name = raw["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(f"{path}: `name` must be a folder-safe string like 'mask_ratio', got {name!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise SpecError(f"{path}: `description` must be a string, got {description!r}")

    notebook = _existing_notebook(path, "notebook", raw["notebook"])
    parameters = notebook_parameters(notebook, spec_path=path)
    if OUTPUT_DIR_PARAM not in parameters:
        raise SpecError(
            f"{path}: notebook {notebook} has no `{OUTPUT_DIR_PARAM}` parameter; "
            "job notebooks must declare `output_dir: str` and write record.json there"
        )

    summary = None
    if raw.get("summary") is not None:
        summary = _existing_notebook(path, "summary", raw["summary"])
        if SUMMARY_RESULTS_PARAM not in notebook_parameters(summary, spec_path=path):
            raise SpecError(f"{path}: summary notebook {summary} has no `{SUMMARY_RESULTS_PARAM}` parameter")

    base = _mapping(path, raw, "base")
    grid = _mapping(path, raw, "grid")
    seeds = _seeds(path, raw.get("seeds"))
    _check_overlaps(path, base, grid, seeds)
    if raw.get("study") is not None and seeds is not None:
        raise SpecError(f"{path}: `seeds` expands a grid; with a `study`, put `seed` in `base` or in `study.space`")

    problems: list[SpecError] = []  # every unknown name and mistyped value of base and grid, at once

    def checked(key: str, value: Any) -> Any:
        try:
            return _checked_value(path, parameters, key, value)
        except SpecError as exc:
            problems.append(exc)
            return value

    base = {key: checked(key, value) for key, value in base.items()}
    checked_grid: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: grid parameter `{key}` must be a non-empty list, got {values!r}")
        checked_grid[key] = [checked(key, v) for v in values]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        listed = "\n".join(f"  - {str(p).removeprefix(f'{path}: ')}" for p in problems)
        raise SpecError(f"{path}: {len(problems)} problems in `base` and `grid`:\n{listed}")
    for key, values in checked_grid.items():
        _check_unique(path, key, values)
    if seeds is not None:
        _require_parameter(path, parameters, SEED_PARAM, where="seeds")
        seeds = [_checked_value(path, parameters, SEED_PARAM, s) for s in seeds]
        _check_unique(path, "seeds", seeds)

    study = None
    if raw.get("study") is not None:
        study = _study(path, raw["study"], parameters, base)
        _check_grid_in_space(path, checked_grid, study)

    return AblationSpec(
        path=path,
        name=name,
        notebook=notebook,
        summary=summary,
        description=description,
        base=base,
        grid=checked_grid,
        seeds=seeds,
        parameters=parameters,
        resources=_resources(path, raw.get("resources")),
        study=study,
    )


def _resources(path: Path, value: Any) -> dict[str, Any]:
    """The optional `resources` mapping; unknown keys and wrong types are errors (a misspelt
    `timeout_min` would otherwise silently give a job the cluster's default time limit)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path}: `resources` must be a mapping with keys {', '.join(RESOURCE_TYPES)}, got {value!r}")
    for key, item in value.items():
        if key not in RESOURCE_TYPES:
            raise SpecError(
                f"{path}: unknown key {key!r} in `resources`{_suggestion(str(key), RESOURCE_TYPES)}; "
                f"allowed keys: {', '.join(RESOURCE_TYPES)}"
            )
        types = RESOURCE_TYPES[key]
        valid = not isinstance(item, bool) and isinstance(item, types)
        if not valid or (item.strip() == "" if isinstance(item, str) else item <= 0):
            expected = "a non-empty string" if types == (str,) else "a positive number"
            raise SpecError(f"{path}: `resources.{key}` must be {expected}, got {item!r}")
    return dict(value)


def notebook_parameters(notebook: Path, spec_path: Path | None = None) -> dict[str, NotebookParameter]:
    """Parameters declared in the notebook's `parameters` cell (error if there is no such cell)."""
    where = f"{spec_path}: " if spec_path else ""
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for unreadable files
        raise SpecError(f"{where}cannot read notebook {notebook}: {exc}") from exc
    if not any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells):
        raise SpecError(f"{where}notebook {notebook} has no cell tagged `parameters`")
    inspected = papermill.inspect_notebook(str(notebook))
    return {
        name: NotebookParameter(
            name=name,
            type_name=str(p.get("inferred_type_name") or "None"),
            default=str(p.get("default") or ""),
            help=str(p.get("help") or ""),
        )
        for name, p in inspected.items()
    }


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parse the YAML file; syntax errors carry the file name and position."""
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping with keys {', '.join(ALLOWED_KEYS)}")
    return raw


def _check_keys(path: Path, raw: dict[str, Any]) -> None:
    """Reject unknown and missing top-level keys (a misspelt `seed:` would otherwise be ignored)."""
    for key in raw:
        if key not in ALLOWED_KEYS:
            raise SpecError(
                f"{path}: unknown top-level key {key!r}{_suggestion(str(key), ALLOWED_KEYS)}; "
                f"allowed keys: {', '.join(ALLOWED_KEYS)}"
            )
    for key in REQUIRED_KEYS:
        if raw.get(key) in (None, ""):
            raise SpecError(f"{path}: missing required key `{key}`")


def _existing_notebook(path: Path, key: str, value: Any) -> Path:
    """Resolve a notebook path from the spec and check that it exists."""
    if not isinstance(value, str):
        raise SpecError(f"{path}: `{key}` must be a path string, got {value!r}")
    notebook = resolve_repo_path(value)
    if not notebook.is_file():
        raise SpecError(f"{path}: `{key}` notebook not found: {notebook} (paths are relative to {REPO_ROOT})")
    return notebook


def _mapping(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    """`base` and `grid` are optional mappings; `base:` with nothing after it means empty."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path}: `{key}` must be a mapping of parameter names to values, got {value!r}")
    return value


def _seeds(path: Path, value: Any) -> list[Any] | None:
    """`seeds` is optional; when present it must be a non-empty list."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise SpecError(f"{path}: `seeds` must be a non-empty list of ints, got {value!r}")
    return value


def _check_overlaps(path: Path, base: dict[str, Any], grid: dict[str, Any], seeds: list[Any] | None) -> None:
    """A parameter has one source: base, grid, seeds, or (for output_dir) the runner."""
    both = sorted(set(base) & set(grid))
    if both:
        raise SpecError(f"{path}: parameter(s) {', '.join(both)} appear in both `base` and `grid`")
    for section in (base, grid):
        if OUTPUT_DIR_PARAM in section:
            raise SpecError(f"{path}: `{OUTPUT_DIR_PARAM}` is set by the runner (results/<name>/runs/<run_id>)")
        if seeds is not None and SEED_PARAM in section:
            raise SpecError(f"{path}: `{SEED_PARAM}` is set by `seeds`; remove it from `base`/`grid`")


def _check_unique(path: Path, key: str, values: list[Any]) -> None:
    """Duplicate values would produce two runs with the same run id."""
    seen = [json.dumps(v, sort_keys=True) for v in values]
    dupes = sorted({s for s in seen if seen.count(s) > 1})
    if dupes:
        raise SpecError(f"{path}: `{key}` lists duplicate value(s) {', '.join(dupes)}")


def _require_parameter(path: Path, parameters: dict[str, NotebookParameter], key: str, where: str) -> None:
    """Name the unknown key, the valid names, and the closest match."""
    if key in parameters:
        return
    valid = sorted(p for p in parameters if p != OUTPUT_DIR_PARAM)
    raise SpecError(
        f"{path}: `{key}` (in {where}) is not a parameter of the notebook"
        f"{_suggestion(key, valid)}; valid parameters: {', '.join(valid) or '(none)'}"
    )


def _suggestion(key: str, candidates: Any) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _checked_value(path: Path, parameters: dict[str, NotebookParameter], key: str, value: Any) -> Any:
    """Check a value against the parameter's declared type and normalise ints given for floats.

    Normalising 1 -> 1.0 for float parameters keeps run ids identical whichever way it is written.
    """
    _require_parameter(path, parameters, key, where="base/grid")
    expected = parameters[key].expected_type()
    if expected is None or _matches(expected, value):
        return float(value) if _base_type(expected) == "float" and value is not None else value
    hint = ""
    if _base_type(expected) == "float" and isinstance(value, str) and _parses_as_float(value):
        hint = " (YAML reads exponents without a dot, like 1e-3, as strings: write 1.0e-3)"
    raise SpecError(
        f"{path}: parameter `{key}` = {value!r} ({type(value).__name__}) does not match "
        f"the notebook's declared type `{expected}`{hint}"
    )


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_SIMPLE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


def _optional_inner(annotation: str) -> str | None:
    """'Optional[int]' / 'int | None' / 'None | int' -> 'int'; anything else -> None."""
    text = annotation.replace(" ", "")
    match = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", text)
    if match:
        return match.group(1)
    parts = text.split("|")
    if len(parts) == 2 and "None" in parts:
        return parts[0] if parts[1] == "None" else parts[1]
    return None


def _base_type(annotation: str | None) -> str | None:
    """The simple type an annotation checks against: 'list[int]' -> 'list', 'int | None' -> 'int'."""
    if annotation is None:
        return None
    inner = _optional_inner(annotation)
    text = inner if inner is not None else annotation.replace(" ", "")
    text = re.sub(r"^typing\.", "", text)
    head = text.split("[", 1)[0]
    return {"List": "list", "Dict": "dict"}.get(head, head)


def _matches(annotation: str, value: Any) -> bool:
    """Whether a YAML value fits the annotation; annotations we cannot interpret are not checked."""
    if value is None and _optional_inner(annotation) is not None:
        return True
    check = _SIMPLE_CHECKS.get(_base_type(annotation) or "")
    return True if check is None else check(value)


# --- Optuna studies --------------------------------------------------------------------------------

STUDY_KEYS = ("direction", "metric", "n_trials", "space", "sampler", "pruner", "storage", "intermediate")
REQUIRED_STUDY_KEYS = ("direction", "metric", "n_trials", "space")
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
}
"""`study.sampler` type -> optuna.samplers class (the samplers that need no fixed search space)."""
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
}
"""`study.pruner` type -> optuna.pruners class."""
_EXTRA_PACKAGES = {"cmaes": "cmaes"}
"""Samplers that import an optional package only when they first sample (checked up front here)."""
SPACE_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
              "categorical": ("type", "choices")}
DEFAULT_STORAGE_NAME = "study.db"
"""File name of the default storage, sqlite:///<results>/<name>/study.db."""
JOURNAL_SCHEME = "journal://"
STORAGE_CONNECT_TIMEOUT_S = 10

_ENV_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class ParamSpace:
    """One dimension of a study's search space, as Optuna's suggest_* API takes it."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        """Whether a (grid) value lies in this dimension, so it can be enqueued as a trial."""
        if self.kind == "categorical":
            return any(json.dumps(value) == json.dumps(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def suggest(self, trial: Any) -> Any:
        """Sample this dimension for an optuna Trial (fixed for enqueued trials)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        """`float [0.4, 0.95] log`-style text for --dry-run and the summary."""
        if self.kind == "categorical":
            return f"categorical {list(self.choices)}"
        extra = " log" if self.log else (f" step {self.step}" if self.step is not None else "")
        return f"{self.kind} [{self.low}, {self.high}]{extra}"

    def to_json(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Component:
    """A sampler or pruner: its `type` (a key of SAMPLERS/PRUNERS) and constructor options."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return self.type + (f" {self.options}" if self.options else "")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **self.options}


@dataclass(frozen=True)
class StudySpec:
    """A validated `study:` section.

    `storage` is the URL as written (relative sqlite/journal paths made absolute), possibly with
    `${VAR}` references; None means the default sqlite file in the results folder. It is kept out
    of repr, and `storage_display` is the only form that is ever printed or written to a file.
    """

    direction: str
    metric: str
    n_trials: int
    space: dict[str, ParamSpace]
    sampler: Component
    pruner: Component
    storage: str | None = field(default=None, repr=False)
    intermediate: str | None = None

    @property
    def storage_display(self) -> str:
        """The storage for messages and files: password redacted, ${VAR} left unexpanded."""
        return redact(self.storage) if self.storage else f"sqlite:///<results>/<name>/{DEFAULT_STORAGE_NAME}"

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "metric": self.metric,
            "n_trials": self.n_trials,
            "space": {k: v.to_json() for k, v in self.space.items()},
            "sampler": self.sampler.to_json(),
            "pruner": self.pruner.to_json(),
            "storage": self.storage_display,
            "intermediate": self.intermediate,
        }


def expand_storage(template: str, where: str = "") -> str:
    """Expand `${VAR}` in a storage URL from the environment (so a password can stay out of the
    spec file); an unset variable is an error rather than an empty password."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in os.environ:
            raise SpecError(f"{where}environment variable {name} (used in `study.storage`) is not set")
        return os.environ[name]

    return _ENV_VAR_RE.sub(value, template)


def storage_kind(url: str) -> str:
    """'journal', 'sqlite' or 'rdb' (any other SQLAlchemy database)."""
    if url.startswith(JOURNAL_SCHEME):
        return "journal"
    return "sqlite" if url.split(":", 1)[0].split("+", 1)[0] == "sqlite" else "rdb"


def journal_path(url: str) -> Path:
    """journal:///abs/file.log -> /abs/file.log; journal://rel/file.log -> <repo>/rel/file.log."""
    return resolve_repo_path(url[len(JOURNAL_SCHEME):])


def _study(path: Path, value: Any, parameters: dict[str, NotebookParameter], base: dict[str, Any]) -> StudySpec:
    """Validate the `study` section: keys, objective, search space, sampler, pruner and storage."""
    if not isinstance(value, dict):
        raise SpecError(f"{path}: `study` must be a mapping with keys {', '.join(STUDY_KEYS)}, got {value!r}")
    for key in value:
        if key not in STUDY_KEYS:
            raise SpecError(
                f"{path}: unknown key {key!r} in `study`{_suggestion(str(key), STUDY_KEYS)}; "
                f"allowed keys: {', '.join(STUDY_KEYS)}"
            )
    for key in REQUIRED_STUDY_KEYS:
        if value.get(key) in (None, ""):
            raise SpecError(f"{path}: missing required key `study.{key}`")
    direction = value["direction"]
    if direction not in DIRECTIONS:
        raise SpecError(f"{path}: `study.direction` must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    metric = _metric_name(path, "metric", value["metric"])
    n_trials = value["n_trials"]
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SpecError(f"{path}: `study.n_trials` must be a positive int, got {n_trials!r}")
    intermediate = value.get("intermediate")
    if intermediate is not None:
        intermediate = _metric_name(path, "intermediate", intermediate)
    sampler = _component(path, "sampler", value.get("sampler", "tpe"), SAMPLERS)
    pruner = _component(path, "pruner", value.get("pruner", "none"), PRUNERS)
    if pruner.type != "none" and intermediate is None:
        raise SpecError(
            f"{path}: `study.pruner: {pruner.type}` prunes on values reported during training: set "
            "`study.intermediate` to the metric the notebook reports (e.g. knn_accuracy), or use `pruner: none`"
        )
    return StudySpec(
        direction=direction,
        metric=metric,
        n_trials=n_trials,
        space=_space(path, value["space"], parameters, base),
        sampler=sampler,
        pruner=pruner,
        storage=_storage(path, value.get("storage")),
        intermediate=intermediate,
    )


def _metric_name(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _METRIC_RE.match(value):
        raise SpecError(f"{path}: `study.{key}` must be a metric name like 'pretrained_acc_mean', got {value!r}")
    return value


def _component(path: Path, key: str, value: Any, registry: dict[str, str]) -> Component:
    """`sampler: tpe` or `sampler: {type: tpe, seed: 0}`; build it once so bad options fail now."""
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise SpecError(
            f"{path}: `study.{key}` must be a name ({', '.join(registry)}) or a mapping with `type` and "
            f"options, got {value!r}"
        )
    options = {k: v for k, v in value.items() if k != "type"}
    component = Component(type=value["type"], options=options)
    if component.type not in registry:
        raise SpecError(
            f"{path}: unknown `study.{key}` {component.type!r}{_suggestion(component.type, registry)}; "
            f"choose one of {', '.join(registry)}"
        )
    cls = _optuna_class(key, registry[component.type])
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for option in options:
        if option not in accepted:
            raise SpecError(
                f"{path}: `study.{key}` {component.type} has no option {option!r}{_suggestion(option, accepted)}; "
                f"options: {', '.join(accepted) or '(none)'}"
            )
    package = _EXTRA_PACKAGES.get(component.type) if key == "sampler" else None
    if package and importlib.util.find_spec(package) is None:
        raise SpecError(f"{path}: `study.sampler: {component.type}` needs the `{package}` package (pip install {package})")
    try:
        build_component(key, component)
    except Exception as exc:  # optuna validates options in its constructors with several exception types
        raise SpecError(f"{path}: `study.{key}` {component.describe()}: {type(exc).__name__}: {exc}") from exc
    return component


def _optuna_class(key: str, class_name: str) -> Any:
    import optuna  # lazily: grid specs must not pay for importing optuna

    module = optuna.samplers if key == "sampler" else optuna.pruners
    return getattr(module, class_name)


def build_component(key: str, component: Component, seed_offset: int = 0) -> Any:
    """An optuna sampler (`key="sampler"`) or pruner instance from its spec.

    `seed_offset` shifts a sampler's `seed` (the study runner gives each trial its own seed, see
    eolab.runner.study.RESEEDED_SAMPLERS).
    """
    registry = SAMPLERS if key == "sampler" else PRUNERS
    options = dict(component.options)
    if key == "sampler" and options.get("seed") is not None and seed_offset:
        options["seed"] = int(options["seed"]) + seed_offset
    return _optuna_class(key, registry[component.type])(**options)


def _space(
    path: Path, value: Any, parameters: dict[str, NotebookParameter], base: dict[str, Any]
) -> dict[str, ParamSpace]:
    """Each dimension names a notebook parameter not set in `base`, with bounds that Optuna accepts
    and values of the parameter's declared type."""
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{path}: `study.space` must be a non-empty mapping of parameter names to dimensions")
    space = {}
    for key, dim in value.items():
        key = str(key)
        where = f"`study.space.{key}`"
        if key == OUTPUT_DIR_PARAM:
            raise SpecError(f"{path}: `{OUTPUT_DIR_PARAM}` is set by the runner (results/<name>/runs/<run_id>)")
        _require_parameter(path, parameters, key, where="study.space")
        if key in base:
            raise SpecError(f"{path}: parameter `{key}` appears in both `base` and `study.space`")
        if not isinstance(dim, dict) or dim.get("type") not in SPACE_KEYS:
            raise SpecError(
                f"{path}: {where} must be a mapping with `type` one of {', '.join(SPACE_KEYS)}, got {dim!r}"
            )
        for option in dim:
            if option not in SPACE_KEYS[dim["type"]]:
                allowed = SPACE_KEYS[dim["type"]]
                raise SpecError(
                    f"{path}: unknown key {option!r} in {where}{_suggestion(str(option), allowed)}; "
                    f"a {dim['type']} dimension takes {', '.join(allowed)}"
                )
        if dim["type"] == "categorical":
            space[key] = _categorical(path, key, dim, parameters)
        else:
            space[key] = _numeric(path, key, dim, parameters)
    return space


def _categorical(path: Path, key: str, dim: dict[str, Any], parameters: dict[str, NotebookParameter]) -> ParamSpace:
    choices = dim.get("choices")
    if not isinstance(choices, list) or not choices:
        raise SpecError(f"{path}: `study.space.{key}.choices` must be a non-empty list, got {choices!r}")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise SpecError(
                f"{path}: `study.space.{key}.choices` may hold only None, bools, numbers and strings "
                f"(what Optuna stores), got {choice!r}"
            )
    checked = [_checked_value(path, parameters, key, c) for c in choices]
    _check_unique(path, f"study.space.{key}.choices", checked)
    return ParamSpace(name=key, kind="categorical", choices=tuple(checked))


def _numeric(path: Path, key: str, dim: dict[str, Any], parameters: dict[str, NotebookParameter]) -> ParamSpace:
    """A float or int dimension: declared type matches the notebook's, low < high, log needs low > 0."""
    kind = dim["type"]
    where = f"`study.space.{key}`"
    expected = _base_type(parameters[key].expected_type())
    if expected is not None and expected != kind:
        raise SpecError(
            f"{path}: {where} is a {kind} dimension but the notebook declares `{key}: "
            f"{parameters[key].expected_type()}`; use `type: {expected}`"
            + (" (or categorical)" if expected not in SPACE_KEYS else "")
        )
    low, high = (_bound(path, key, name, dim.get(name), kind) for name in ("low", "high"))
    log = dim.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{path}: `study.space.{key}.log` must be true or false, got {log!r}")
    step = None if dim.get("step") is None else _bound(path, key, "step", dim["step"], kind)
    if low >= high:
        raise SpecError(f"{path}: {where} needs low < high, got low={low} and high={high}")
    if log and low <= 0:
        raise SpecError(f"{path}: {where} is log-scaled, so `low` must be positive, got {low}")
    if step is not None and (step <= 0 or log):
        problem = "must be positive" if step <= 0 else "cannot be combined with log: true"
        raise SpecError(f"{path}: `study.space.{key}.step` {problem}, got {step}")
    return ParamSpace(name=key, kind=kind, low=low, high=high, log=log, step=step)


def _bound(path: Path, key: str, name: str, value: Any, kind: str) -> float | int:
    """A number for `low`/`high`/`step`. For floats, a numeric string is accepted: YAML reads
    `1e-4` (exponent without a dot) as a string, and a bound can only mean a number."""
    where = f"`study.space.{key}.{name}`"
    if value is None:
        raise SpecError(f"{path}: {where} is required for a {kind} dimension")
    if kind == "float" and isinstance(value, str) and _parses_as_float(value):
        value = float(value)
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"{path}: {where} must be an int for an int dimension, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{path}: {where} must be a number, got {value!r}")
    return float(value) if kind == "float" else value


def _storage(path: Path, value: Any) -> str | None:
    """Check the storage URL's form, then connect (RDB) or check the folder (sqlite, journal), so an
    unreachable database fails now and not after the first trial. Errors never show the password."""
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value:
        shown = redact(str(value))
        raise SpecError(
            f"{path}: `study.storage` must be a URL (sqlite:///file.db, postgresql://user:pw@host/db, "
            f"journal:///path/file.log) or null for the default, got {shown!r}"
        )
    url = expand_storage(value, where=f"{path}: ")
    secrets = url_secrets(url)
    where = f"{path}: `study.storage` {redact(value)}"
    kind = storage_kind(url)
    if kind == "journal":
        target = journal_path(url)
        _check_parent(where, target)
        return JOURNAL_SCHEME + str(target)
    if kind == "sqlite":
        resolved = _resolve_sqlite(where, url, secrets)
        _check_parent(where, Path(resolved.split(":///", 1)[1]))
        return resolved
    check_rdb_reachable(where, url, secrets)
    return value


def _resolve_sqlite(where: str, url: str, secrets: list[str]) -> str:
    """sqlite:///relative.db resolves against the repository root (like every spec path);
    :memory: is refused, since trials run in other processes."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SpecError(f"{where}: malformed URL: {redact(str(exc), secrets)}") from None
    if parsed.username or parsed.password or parsed.host or ":///" not in url:
        raise SpecError(f"{where}: a sqlite URL names a file, sqlite:///relative.db or sqlite:////abs/file.db, "
                        "with no user, password or host")
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise SpecError(f"{where}: an in-memory sqlite database cannot be shared by the trial processes; name a file")
    return f"{url.split(':///', 1)[0]}:///{resolve_repo_path(database)}"


def _check_parent(where: str, target: Path) -> None:
    if not target.parent.is_dir():
        raise SpecError(f"{where}: folder {target.parent} does not exist")


def check_rdb_reachable(where: str, url: str, secrets: list[str]) -> None:
    """Open (and close) one connection; any failure, including a missing driver, is a SpecError."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        driver = parsed.get_driver_name()
        connect_args = {"connect_timeout": STORAGE_CONNECT_TIMEOUT_S} if driver in _TIMEOUT_DRIVERS else {}
        engine = create_engine(parsed, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ModuleNotFoundError, OperationalError...
        hint = " (install the database driver into this venv)" if isinstance(exc, ImportError) else ""
        raise SpecError(f"{where}: cannot connect: {type(exc).__name__}: {redact(str(exc), secrets)}{hint}") from None


_TIMEOUT_DRIVERS = ("psycopg2", "psycopg", "pymysql", "mysqldb")
"""Database drivers that take `connect_timeout` (seconds), so an unreachable host fails fast."""


def _check_grid_in_space(path: Path, grid: dict[str, list[Any]], study: StudySpec) -> None:
    """With a study, grid points become enqueued trials: each key must be a search-space dimension
    and each value must lie in it (Optuna would otherwise record a parameter it cannot model)."""
    for key, values in grid.items():
        if key not in study.space:
            raise SpecError(
                f"{path}: grid parameter `{key}` is not in `study.space`; with a study, the grid lists "
                "points of the search space to try first (put fixed parameters in `base`)"
            )
        outside = [v for v in values if not study.space[key].contains(v)]
        if outside:
            raise SpecError(
                f"{path}: grid value(s) {outside} of `{key}` lie outside `study.space.{key}` "
                f"({study.space[key].describe()})"
            )
