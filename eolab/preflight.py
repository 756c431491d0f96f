"""Check the parameters of many runs at once, without training: ``python -m eolab.preflight``.

The ablation runner (which never imports torch or the pipeline) starts this once per `ablate`
call, before any kernel starts. It reads JSON from stdin::

    {"runs": [{"label": "run mask_ratio=1.5-0123abcd4567", "params": {"mask_ratio": 1.5, ...}}, ...]}

(each run's full parameters: the notebook's defaults with the spec's values over them) and prints
JSON to stdout::

    {"problems": [{"label": ..., "message": ...}, ...], "data_roots": [...], "runs": N}

Every problem of every run is listed: each bad parameter value (`PretrainConfig.problems`) and each
input folder the run would not find (`eolab.data.inputs.missing_inputs`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from eolab.config import ParameterError, PretrainConfig
from eolab.data.inputs import missing_inputs, resolve_root


def check_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The problems of each run (label, message), and the data roots the valid runs read."""
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    problems: list[dict[str, str]] = []
    roots: set[str] = set()
    seen_inputs: dict[tuple, list[str]] = {}
    for run in runs:
        label, params = run["label"], {k: v for k, v in run["params"].items() if k in fields}
        try:
            cfg = PretrainConfig(**params)
        except ParameterError as exc:
            problems += [{"label": label, "message": m} for m in exc.problems]
            continue
        key = (cfg.data_root, cfg.dataset, cfg.source_list, cfg.val_source_list, cfg.eurosat)
        if key not in seen_inputs:
            seen_inputs[key] = missing_inputs(*key)
        problems += [{"label": label, "message": m} for m in seen_inputs[key]]
        roots.add(str(resolve_root(cfg.data_root)[0]))
    return {"problems": problems, "data_roots": sorted(roots), "runs": len(runs)}


def main() -> int:
    request = json.load(sys.stdin)
    json.dump(check_runs(request["runs"]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
