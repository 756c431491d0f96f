"""Tiny synthetic results folders, written the way the runner writes them (status.json through
RunStore, record.json and history.csv as the job notebook writes them, spec.json, then the tables)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from eolab.runner.spec import make_run_id
from eolab.runner.store import RunStore, rebuild_table, write_json_atomic

ENCODERS = ("pretrained", "random_init", "band_stats")


def write_ablation(
    root: Path,
    name: str,
    grid: dict[str, list[Any]],
    accuracy: Callable[[dict[str, Any], str, int], float],
    seeds: tuple[int, ...] = (0,),
    folds: int = 5,
    commit: str = "abc1234",
    ended_at: str = "2026-11-24T05:10:44+00:00",
    failed: dict[str, Any] | None = None,
) -> Path:
    """results/<name>/ with one done run per grid point and seed; `accuracy(params, encoder, fold)`
    gives each fold's score. `failed` adds one failed run with those parameters."""
    store = RunStore(root / name)
    (key, values), = grid.items()
    points = [{key: v, "seed": s} for v in values for s in seeds]
    runs = []
    for params in points:
        run_id = make_run_id(params, [key, "seed"])
        runs.append({"run_id": run_id, "params": params})
        status = store.mark_running(run_id, params)
        record = {
            "run_id": run_id,
            "params": {**params, "output_dir": str(store.run_dir(run_id))},
            "metrics": {f"{e}_acc_mean": sum(accuracy(params, e, f) for f in range(folds)) / folds for e in ENCODERS},
            "seed": params["seed"],
            "git_commit": commit,
            "wall_time_s": 12.5,
            "folds": [{"encoder": e, "fold": f, "accuracy": accuracy(params, e, f)}
                      for e in ENCODERS for f in range(folds)],
        }
        write_json_atomic(store.run_dir(run_id) / "record.json", record)
        pd.DataFrame({"step": range(20), "loss": [1.0 / (1 + s) for s in range(20)]}).to_csv(
            store.run_dir(run_id) / "history.csv", index=False)
        write_json_atomic(store.run_dir(run_id) / "status.json",
                          {**status, "state": "done", "ended_at": ended_at})
    if failed is not None:
        run_id = make_run_id(failed, list(failed))
        store.mark_finished(store.mark_running(run_id, failed), error="ValueError: boom")
    store.write_spec({"name": name, "description": f"synthetic {key} ablation", "base": {}, "grid": grid,
                      "seeds": list(seeds), "varied_keys": [key, "seed"], "runs": runs})
    rebuild_table(store.results_dir)
    return store.results_dir
