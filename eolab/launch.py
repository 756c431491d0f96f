"""One pre-training run from a script: the entry point that ``srun`` starts once per task.

    srun --nodes 2 --ntasks-per-node 4 --gpus-per-node 4 python -m eolab.launch params.yaml --output-dir runs/x
    python -m eolab.launch params.json --output-dir runs/x      # one process (or Lightning's own DDP launch)

``params`` is a JSON or YAML mapping of ``eolab.config.PretrainConfig`` fields (the pretrain
notebook's parameters); ``--output-dir`` overrides its ``output_dir``. The run executes the steps
of ``eolab.pipeline.STEPS``, the same ones as the notebook: every task runs the training steps
(``prepare``, ``pretrain``); Lightning's SLURM environment reads SLURM_NTASKS, SLURM_PROCID,
SLURM_LOCALID and SLURM_NNODES, so the tasks join one DDP process group (``eolab.train.fit`` turns
``devices="auto"`` into the tasks per node, ``strategy="auto"`` into "ddp" and sets the node
count). Only global rank 0 runs the rest (evaluation, embedding benchmark, record) and writes outputs
(``record.json``, ``history.csv``, ``encoder.pt``, the same files as a notebook run); the other ranks train in a scratch folder
inside the run folder, which they remove when done.

``worker_main`` is the other ranks' half of a notebook run under SLURM with several tasks
(``eolab.runner.slurm``): rank 0 executes the notebook, whose ``pretrain`` call is one rank of the
group; every other rank trains the same configuration here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the training stack is imported where a run needs it, so that --help is instant
    from eolab.config import PretrainConfig

SCRATCH_PREFIX = ".rank"
"""Scratch folder of a non-zero rank inside the run folder: ``<output_dir>/.rank<N>``."""


def global_rank() -> int:
    """This process's rank in the job before torch.distributed starts: torchrun's RANK, the
    SLURM_PROCID of an srun step of several tasks, or a process Lightning launched itself
    (NODE_RANK, LOCAL_RANK: ranks on one node are numbered first)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    local, node = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("NODE_RANK", "0"))
    return local + node * 1000 if node else local  # unique (a scratch folder name), zero only for rank 0


def load_params(path: str | Path) -> dict[str, Any]:
    """A JSON (``.json``) or YAML mapping of parameter names to values; ``-``: JSON on stdin."""
    if str(path) == "-":
        path, text = Path("<stdin>.json"), sys.stdin.read()
    else:
        path = Path(path)
        text = path.read_text()
    if path.suffix == ".json":
        params = json.loads(text)
    else:
        import yaml

        params = yaml.safe_load(text)
    if not isinstance(params, dict):
        raise TypeError(f"{path}: expected a mapping of parameter names to values, got {type(params).__name__}")
    return params


def make_config(params: dict[str, Any], output_dir: str | None = None) -> PretrainConfig:
    """Validated config; names that are not PretrainConfig fields are an error (a typo would
    otherwise silently run the default)."""
    if output_dir is not None:
        params = {**params, "output_dir": output_dir}
    from eolab.config import PretrainConfig

    return PretrainConfig.from_params(params)


def for_rank(cfg: PretrainConfig, rank: int) -> PretrainConfig:
    """The config rank ``rank`` trains with: rank 0 the run's own; any other rank the same training
    in ``<output_dir>/.rank<N>``, whose ``checkpoints`` links to the run's, so that every rank
    resumes from the checkpoint rank 0 writes and none overwrites rank 0's files."""
    if rank == 0:
        return cfg
    out = Path(cfg.output_dir).resolve()
    scratch = out / f"{SCRATCH_PREFIX}{rank}"
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / "checkpoints"
    if not link.is_symlink():
        link.symlink_to(out / "checkpoints", target_is_directory=True)
    return dataclasses.replace(cfg, output_dir=str(scratch))


def run(cfg: PretrainConfig, rank: int | None = None) -> dict | None:
    """The pipeline's steps: the training steps on every rank, all of them on rank 0 (its record)."""
    rank = global_rank() if rank is None else rank
    mine = for_rank(cfg, rank)
    try:
        from eolab.pipeline import STEPS, TRAINING_STEPS, Pipeline

        return Pipeline(mine).run_all(STEPS if rank == 0 else TRAINING_STEPS)
    finally:
        if rank != 0:
            shutil.rmtree(mine.output_dir, ignore_errors=True)


def worker_main(parameters: dict[str, Any], notebook: str | Path | None = None) -> None:
    """A non-zero rank of a notebook run: train what the notebook's kernel (rank 0) trains.

    ``parameters`` are the run's notebook parameters; those it does not set take the notebook's
    own defaults (its parameters cell), so both sides build the same PretrainConfig."""
    params = dict(parameters)
    if notebook is not None:
        params = {**notebook_defaults(notebook), **params}
    from eolab.config import PretrainConfig

    run(PretrainConfig.from_params(params))


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """The default values of a notebook's parameters cell (papermill's reading of it)."""
    import ast

    import papermill

    defaults = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            continue  # not a literal: leave it to the config's default
    return defaults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eolab.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("params", help="JSON or YAML file of PretrainConfig parameters")
    p.add_argument("--output-dir", default=None, help="the run folder (overrides output_dir in params)")
    p.add_argument("--worker-of", metavar="NOTEBOOK", default=None,
                   help="train as a non-zero rank of a notebook run (parameters the file does not set take the "
                        "notebook's defaults); what the SLURM executor starts on every task but the first")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker_of:
        worker_main(load_params(args.params), notebook=args.worker_of)
        return 0
    try:
        cfg = make_config(load_params(args.params), args.output_dir)
    except (OSError, ValueError, TypeError) as exc:  # unreadable file, unknown or invalid parameter
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from eolab.train import slurm_layout

    layout = slurm_layout()
    if layout is not None:  # the record says what ran: fit resolves these the same way
        cfg = dataclasses.replace(cfg, devices=str(layout[1]) if cfg.devices == "auto" else cfg.devices,
                                  strategy="ddp" if cfg.strategy == "auto" else cfg.strategy)
    record = run(cfg)
    if record is not None:
        print(f"record: {Path(cfg.output_dir) / 'record.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
