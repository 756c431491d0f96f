"""Check the parameters of many runs at once, without training: ``python -m eolab.preflight``.

The ablation runner (which never imports torch or the pipeline) starts this once per `ablate`
call, before any kernel starts. It reads JSON from stdin::

    {"runs": [{"label": "run mask_ratio=1.5-0123abcd4567", "params": {"mask_ratio": 1.5, ...}}, ...]}

(each run's full parameters: the notebook's defaults with the spec's values over them) and prints
JSON to stdout::

    {"problems": [{"label": ..., "message": ...}, ...], "data_roots": [...], "runs": N}

Every problem of every run is listed: each bad parameter value (`PretrainConfig.problems`), each
input folder the run would not find (`eolab.data.inputs.missing_inputs`), and a packed corpus
(`dataset: packed:<folder>`) that is not packed yet, with the `data pack` command that writes it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from eolab.config import ParameterError, PretrainConfig
from eolab.data.inputs import missing_inputs, resolve_root
from eolab.data.paths import REPO_ROOT
from eolab.data.pretraining import PACKED, is_packed
from eolab.data.shards import MANIFEST

DEFAULT_SOURCES = next(f.default for f in dataclasses.fields(PretrainConfig) if f.name == "sources")


def corpus_folder(dataset: str) -> Path | None:
    """The local folder a run with ``dataset: packed:<folder>`` reads (None: not packed, or a URL).

    A run's notebook starts in notebooks/ and a spec's relative paths are relative to the repository
    root, so a relative folder is the repository's (as ``open_corpus`` finds it from a notebook), not
    the current directory's of whoever called ``ablate``.
    """
    location = dataset.removeprefix(PACKED).rstrip("/")
    if not is_packed(dataset) or not location or ("://" in location and not location.startswith("file://")):
        return None
    folder = Path(location.removeprefix("file://")).expanduser()
    return folder if folder.is_absolute() else REPO_ROOT / folder


def missing_corpus(dataset: str, sources: str) -> str | None:
    """Why the packed corpus of ``dataset`` is not there (with the command that packs it), or None."""
    folder = corpus_folder(dataset)
    if folder is None or (folder / MANIFEST).is_file():
        return None
    location = dataset.removeprefix(PACKED)
    shown = location if Path(location.removeprefix("file://")).expanduser().is_absolute() else f"{location} ({folder})"
    what = "has no manifest.json (a pack that never finished?)" if folder.is_dir() else "does not exist"
    # the run's own sources when it names them: for a corpus packed from them, the exact command
    packed_from = sources if sources and sources != DEFAULT_SOURCES else "SOURCES"
    elsewhere = Path.cwd() / location
    hint = (f"; {elsewhere} has one: give its absolute path, dataset: packed:{elsewhere}"
            if not Path(location).is_absolute() and (elsewhere / MANIFEST).is_file() else "")
    out = location if Path.cwd().resolve() == REPO_ROOT.resolve() else folder  # --out is relative to where pack runs
    return (f"parameter 'dataset': packed corpus {shown} {what}: pack it first with "
            f"`python -m eolab data pack {packed_from} --out {out}`{hint}")


def check_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The problems of each run (label, message), and the data roots the valid runs read."""
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    problems: list[dict[str, str]] = []
    roots: set[str] = set()
    seen_inputs: dict[tuple, list[str]] = {}
    for run in runs:
        label, params = run["label"], {k: v for k, v in run["params"].items() if k in fields}
        unpacked = None
        if isinstance(params.get("dataset"), str):
            unpacked = missing_corpus(params["dataset"], str(params.get("sources", DEFAULT_SOURCES)))
        if unpacked:
            problems.append({"label": label, "message": unpacked})
        try:
            cfg = PretrainConfig(**params)
        except ParameterError as exc:
            # the config's own message for an unreadable corpus ("cannot read manifest.json") says less
            said = [m for m in exc.problems if not (unpacked and m.startswith("parameter 'dataset': packed corpus"))]
            problems += [{"label": label, "message": m} for m in said]
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
