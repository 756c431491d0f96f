"""Preflight: what can be checked without training, once per `ablate` call, before any kernel starts.

`load_spec` has already checked the spec's form, its parameter names and types against the job
notebook, and (for a study) that its storage is reachable. What remains needs the pipeline's own
rules: the values of every run's parameters (unknown objective, model size or mask, ranges such as
`mask_ratio: 1.5`) and the data root with the sources those runs read. Those rules live with torch
(`eolab.config`), which this package never imports, so all runs are checked together in ONE
child process (`python -m eolab.preflight`) that reports every problem at once.

Only notebooks that validate their parameters with `PretrainConfig` are checked this way (any other
job notebook has no rules the runner could know of).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from eolab.runner.spec import OUTPUT_DIR_PARAM, REPO_ROOT, AblationSpec, SpecError

CONFIG_MARKERS = ("PretrainConfig", "Pipeline.from_namespace")
"""A job notebook whose code names one of these validates its parameters with the config (the
pipeline's runs do); preflight checks those."""
PREFLIGHT_MODULE = "eolab.preflight"
PREFLIGHT_TIMEOUT_S = 600


@dataclass
class Preflight:
    """What preflight checked (`checked`, lines for --dry-run) and found (`problems`, one line each)."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """--dry-run's preflight section."""
        head = "preflight: ok" if self.ok else f"preflight: {len(self.problems)} problem(s)"
        return [head, *(f"  checked {c}" for c in self.checked), *(f"  error   {p}" for p in self.problems)]

    def raise_if_failed(self, spec: AblationSpec) -> None:
        """SpecError (exit code 2) with every problem, before anything is written."""
        if self.problems:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            raise SpecError(
                f"{spec.path}: {len(self.problems)} problem(s) found before any run started "
                f"(nothing was run or written):\n{listed}"
            )


def validates_with_config(notebook: Path) -> bool:
    """Whether the job notebook builds a `PretrainConfig` (or the pipeline) from its parameters."""
    nb = nbformat.read(str(notebook), as_version=4)
    return any(cell.cell_type == "code" and any(m in cell.source for m in CONFIG_MARKERS) for cell in nb.cells)


def notebook_defaults(spec: AblationSpec) -> dict[str, Any]:
    """The notebook's parameter defaults that are literals (what a kernel starts from)."""
    defaults = {}
    for name, parameter in spec.parameters.items():
        if name == OUTPUT_DIR_PARAM:
            continue
        try:
            defaults[name] = ast.literal_eval(parameter.default)
        except (ValueError, SyntaxError):
            continue
    return defaults


def preflight(spec: AblationSpec, runs: Iterable[tuple[str, dict[str, Any]]]) -> Preflight:
    """Check (label, params) runs of `spec`: every bad value and missing input, in one child process."""
    result = Preflight()
    if spec.study is not None and spec.study.storage is not None:  # load_spec connected to it
        result.checked.append(f"storage {spec.study.storage_display}: reachable")
    runs = list(runs)
    if not runs:
        return result
    if not validates_with_config(spec.notebook):
        result.checked.append(f"parameter values: not checked ({spec.notebook.name} does not use {CONFIG_MARKERS[0]})")
        return result
    defaults = notebook_defaults(spec)
    request = {"runs": [{"label": label, "params": {**defaults, **params}} for label, params in runs]}
    report = _run_child(spec, request)
    if "error" in report:
        result.problems.append(report["error"])
        return result
    result.problems += _grouped(report["problems"], len(runs))
    result.checked.append(f"parameter values of {report['runs']} run(s) ({CONFIG_MARKERS[0]} rules)")
    for root in report["data_roots"]:
        result.checked.append(f"data root {root}: present, with the sources the runs read")
    return result


def _run_child(spec: AblationSpec, request: dict[str, Any]) -> dict[str, Any]:
    """`python -m eolab.preflight` with this repository importable; its JSON report, or {"error": ...}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run(  # noqa: S603  (this interpreter, a fixed module, JSON on stdin)
            [sys.executable, "-m", PREFLIGHT_MODULE], input=json.dumps(request), capture_output=True,
            text=True, env=env, timeout=PREFLIGHT_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the parameter check ({PREFLIGHT_MODULE}) took more than {PREFLIGHT_TIMEOUT_S} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the parameter check ({sys.executable} -m {PREFLIGHT_MODULE}) failed: {tail[0]}; "
                         "every run would fail the same way"}
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"the parameter check ({PREFLIGHT_MODULE}) printed no report: {done.stdout[-300:]!r}"}


def _grouped(problems: list[dict[str, str]], n_runs: int) -> list[str]:
    """One line per distinct message, with the runs it concerns (or 'all N runs')."""
    labels: dict[str, list[str]] = {}
    for p in problems:
        labels.setdefault(p["message"], []).append(p["label"])
    lines = []
    for message, where in labels.items():
        if len(where) == n_runs and n_runs > 1:
            lines.append(f"{message} (all {n_runs} runs)")
        else:
            shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
            lines.append(f"{message} ({shown})")
    return lines


def study_points(spec: AblationSpec) -> list[tuple[str, dict[str, Any]]]:
    """What a study's trials can be, to check up front: each enqueued grid point, and each bound or
    choice of each search-space dimension (over `base`; the other dimensions at the notebook's defaults)."""
    assert spec.study is not None
    points = [(f"enqueued trial {point}", {**spec.base, **point}) for point in (spec.grid_points() if spec.grid else [])]
    for key, dim in spec.study.space.items():
        values = list(dim.choices) if dim.kind == "categorical" else [dim.low, dim.high]
        points += [(f"study.space.{key} = {value!r}", {**spec.base, key: value}) for value in values]
    return points or [("base", dict(spec.base))]
