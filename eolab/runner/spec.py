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
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml

from eolab.data.paths import REPO_ROOT  # relative paths in a spec resolve here, so specs work from any cwd

OUTPUT_DIR_PARAM = "output_dir"
"""Parameter every job notebook declares; the runner injects the run folder into it."""

SEED_PARAM = "seed"
"""Parameter that the spec's `seeds` list sets."""

SUMMARY_RESULTS_PARAM = "results_dir"
"""Parameter of the summary notebook that receives the ablation's results folder."""

ALLOWED_KEYS = ("name", "notebook", "summary", "description", "base", "grid", "seeds", "resources")
REQUIRED_KEYS = ("name", "notebook")

RESOURCE_TYPES: dict[str, tuple[type, ...]] = {
    "cpus_per_task": (int,),
    "gpus_per_node": (int,),
    "mem_gb": (int, float),
    "timeout_min": (int,),
    "partition": (str,),
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

    @property
    def varied_keys(self) -> list[str]:
        """Parameters that differ between runs: what the run ids and the summary plots show."""
        return list(self.grid) + ([SEED_PARAM] if self.seeds is not None else [])

    def runs(self) -> list[Run]:
        """Expand the grid (x seeds) into runs, in a stable order (grid order, then seeds)."""
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

    base = {key: _checked_value(path, parameters, key, value) for key, value in base.items()}
    checked_grid: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: grid parameter `{key}` must be a non-empty list, got {values!r}")
        checked_grid[key] = [_checked_value(path, parameters, key, v) for v in values]
        _check_unique(path, key, checked_grid[key])
    if seeds is not None:
        _require_parameter(path, parameters, SEED_PARAM, where="seeds")
        seeds = [_checked_value(path, parameters, SEED_PARAM, s) for s in seeds]
        _check_unique(path, "seeds", seeds)

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
