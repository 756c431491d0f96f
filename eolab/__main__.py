"""Command line: `python -m eolab <command> ...`.

    python -m eolab ablate SPEC [--force] [--only RUN_ID ...] [--dry-run] [--results-root DIR]
                                [--workers N] [--executor local|slurm]
    python -m eolab table RESULTS_DIR
    python -m eolab render NOTEBOOK.ipynb
    python -m eolab compare RESULTS_DIR RESULTS_DIR [...] [--reference ABLATION/RUN | --versus KEY=VALUE] [--csv FILE] [--summary DIR]
    python -m eolab results index [--root DIR]
    python -m eolab data [--data-root DIR]
    python -m eolab probe CHECKPOINT [--pool mean_std] [--cell-deg 2] [--data-root DIR]
    python -m eolab benchmark --checkpoint ENCODER.pt [--timing] [...]   (the embedding benchmark)
    python -m eolab launch PARAMS.yaml [--output-dir DIR]   (srun-launched DDP/FSDP; = python -m eolab.launch)

`ablate --workers N` runs up to N notebooks at once, each in its own child process, so a run
killed by the OOM killer (or SIGKILL) is recorded as failed and the others go on; the default 1
runs them one after another in this process. Several `ablate` processes may share one results
folder: each run is claimed (runs/<run_id>/claim) before it executes, so none runs twice.
`ablate --executor slurm` submits one SLURM job per run (a job array, through submitit; resources
from the spec's `resources:` section) and waits for them; the results folder must be on a file
system the compute nodes share.
A spec with a `study:` section runs an Optuna study instead (eolab.runner.study): --workers N
study workers (local processes, or SLURM jobs with --executor slurm) share its trials.

Benchmarks of eolab itself (throughput, runner overhead, samplers) are programs of the repository,
not of the library: `python -m benchmarks.throughput`, `python -m benchmarks.runner_overhead`,
`python -m benchmarks.sampling`, run from the repository root.

To add a command, write a `cmd_<name>(args) -> int` function and add one line to COMMANDS.
Exit codes: 0 success, 1 some runs (or the summary) failed, 2 invalid input (spec, paths, usage),
3 the results folder refused writes (full, read-only): the batch stopped, 130 Ctrl-C, 143 SIGTERM.
A stopped batch marks the runs in flight failed and writes the tables of what finished; a re-run
does the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE = 0, 1, 2

Argument = tuple[tuple[str, ...], dict[str, Any]]


def arg(*flags: str, **kwargs: Any) -> Argument:
    """An argparse argument, declared inline in COMMANDS: arg("--force", action="store_true")."""
    return flags, kwargs


@dataclass(frozen=True)
class Command:
    """A subcommand: its handler (returns the exit code), one-line help, and its arguments."""

    handler: Callable[[argparse.Namespace], int]
    help: str
    arguments: tuple[Argument, ...] = ()


class UsageError(Exception):
    """Bad input to a command (printed as `error: ...`, exit code 2, no traceback)."""


def cmd_ablate(args: argparse.Namespace) -> int:
    """Validate a spec and execute its runs (or, with --dry-run, list them)."""
    from eolab.runner.execute import DEFAULT_RESULTS_ROOT, run_ablation, select_runs
    from eolab.runner.preflight import preflight
    from eolab.runner.spec import load_spec
    from eolab.runner.store import RunStore

    results_root = Path(args.results_root) if args.results_root else DEFAULT_RESULTS_ROOT
    spec = load_spec(args.spec)
    if spec.study is not None:  # an Optuna study: eolab.runner.study runs it (same options)
        from eolab.runner.study import cli_ablate

        return cli_ablate(spec, results_root, args.workers, args.executor, args.force, args.dry_run, args.only)
    if args.dry_run:
        store = RunStore(results_root / spec.name)
        runs = select_runs(spec, args.only)
        print(f"{spec.name}: {len(runs)} run(s) of {spec.notebook} -> {store.results_dir}")
        for run in runs:
            verdict = "run " if args.force or not store.is_done(run.run_id) else "skip"
            values = " ".join(f"{k}={v!r}" for k, v in run.params.items())
            print(f"  {verdict} {run.run_id}  {values}")
        checks = preflight(spec, [(f"run {r.run_id}", r.params) for r in runs])
        print("\n".join(checks.lines()))
        return EXIT_OK if checks.ok else EXIT_USAGE

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.executor == "slurm" and args.workers != 1:
        raise UsageError("--workers applies to --executor local; SLURM runs every job of the array it can")
    with _sigterm_interrupts():
        summary = run_ablation(
            args.spec,
            force=args.force,
            only=args.only,
            results_root=results_root,
            workers=args.workers,
            executor_kind=args.executor,
        )
    print(
        f"{summary.name}: {len(summary.executed)} executed, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed; table.csv has {summary.table_rows} rows in {summary.results_dir}"
    )
    if summary.summary_html:
        print(f"summary: {summary.summary_html}")
    if summary.failed:
        print(f"{len(summary.failed)} run(s) failed:", file=sys.stderr)
        for run_id, error in summary.failed.items():
            notebook = summary.results_dir / "runs" / run_id / "notebook.ipynb"
            print(f"  {run_id}: {error}\n    see {notebook}", file=sys.stderr)
    if summary.summary_error:
        print(f"summary notebook failed: {summary.summary_error}", file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED_RUNS


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's or `kill`'s stop) ends the batch as Ctrl-C does: runs in flight are
    marked failed, the tables are written, exit code 143."""
    from eolab.runner.execute import Interrupted

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_table(args: argparse.Namespace) -> int:
    """Rebuild table.csv and runs.csv from the run folders (after a crash, or an edited record)."""
    from eolab.runner.store import RUNS_DIRNAME, rebuild_table

    results_dir = Path(args.results_dir)
    if not (results_dir / RUNS_DIRNAME).is_dir():
        raise UsageError(f"{results_dir} is not an ablation results folder (no {RUNS_DIRNAME}/ inside)")
    tables = rebuild_table(results_dir)
    print(f"{results_dir}: table.csv {len(tables.table)} rows, runs.csv {len(tables.runs)} runs")
    failed = tables.runs[tables.runs["status"] == "failed"] if len(tables.runs) else tables.runs
    for row in failed.itertuples():  # not in table.csv: say which and why, never silently
        print(f"  failed {row.run_id}: {row.error}", file=sys.stderr)
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    """Render an executed notebook to a self-contained HTML file beside it."""
    from eolab.runner.render import render_html

    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise UsageError(f"notebook not found: {notebook}")
    print(render_html(notebook))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Two or more ablations side by side (eolab.reports.compare): a markdown table on stdout, and
    optionally a CSV and the rendered compare notebook."""
    from eolab.reports.compare import CompareError, compare_runs, formatted, to_markdown

    try:
        frame = compare_runs(args.results_dirs, reference=args.reference, versus=args.versus)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    print(to_markdown(formatted(frame)), end="")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.csv, index=False)
        print(f"csv: {args.csv}")
    if args.summary:
        from eolab.reports.compare import render_compare

        html, error = render_compare(args.results_dirs, Path(args.summary), args.reference or "", args.versus or "")
        if html:
            print(f"summary: {html}")
        if error:
            print(f"compare notebook failed: {error}", file=sys.stderr)
            return EXIT_FAILED_RUNS
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    """`results index`: write results/index.md and index.csv listing every results folder."""
    from eolab.reports.compare import CompareError, write_index

    root = Path(args.root) if args.root else Path(__file__).resolve().parents[1] / "results"
    try:
        md, csv = write_index(root)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{_shown(md)}\n{_shown(csv)}")
    return EXIT_OK


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_data(args: argparse.Namespace) -> int:
    """Check the data root and build the packed scene cache (a preflight before long batches)."""
    from eolab.data import eurosat
    from eolab.data.cache import build_scene_cache
    from eolab.data.paths import data_root
    from eolab.data.raster import RasterError

    try:
        root = data_root(args.data_root)
        labelled = eurosat.load(root)
        cache = build_scene_cache(root)
        tiles = cache.tiles(patch=64, stride=32)
    except (FileNotFoundError, RasterError, ValueError) as exc:  # RasterError is a ValueError
        raise UsageError(str(exc)) from exc
    print(f"data root {root}: {len(labelled['label'])} labelled EuroSAT patches")
    print(f"scene cache {cache.path}: {len(cache.scenes)} scenes, {len(tiles)} patches of 64 px at stride 32")
    for source, n in tiles.groupby("source").size().items():
        print(f"  {source}: {n}")
    bad = cache.manifest.get("bad_bands") or ["none"]
    print(f"pixel checks: {cache.manifest.get('masked_pixels', 0)} pixels masked as no data (NaN, infinite or out "
          f"of range); bands without data (runs reading them leave the scene out): {'; '.join(bad)}")
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe a saved encoder on EuroSAT with a random and a spatially blocked split, next to the
    band-statistics baseline: the gap shows how much a score leans on having seen the place."""
    import numpy as np

    from eolab.checkpoint import CheckpointError, load_encoder
    from eolab.data import eurosat
    from eolab.evaluate import band_stats_features, embed, linear_probe
    from eolab.evaluate.protocols import spatial_block_probe, spatial_blocks

    try:
        encoder, norm, _ = load_encoder(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    data = eurosat.load(args.data_root)
    labels, lonlat = data["label"].numpy(), data["lonlat"].numpy()
    features = {"encoder": embed(encoder, norm, data, args.pool), "band_stats": band_stats_features(data, norm.bands)}
    n_cells = len(np.unique(spatial_blocks(lonlat, args.cell_deg)))
    print(f"EuroSAT: {len(labels)} patches in {n_cells} cells of {args.cell_deg} degrees; 5x5 folds; mean +- sd")
    for name, x in features.items():
        random = linear_probe(x, labels, 5, 5)
        blocked = spatial_block_probe(x, labels, lonlat, 5, 5, args.cell_deg)
        print(f"  {name:<10} random split {np.mean(random):.3f} +- {np.std(random, ddof=1):.3f}   "
              f"spatially blocked {np.mean(blocked):.3f} +- {np.std(blocked, ddof=1):.3f}")
    return EXIT_OK


def cmd_benchmark(args: argparse.Namespace) -> int:
    """The embedding benchmark on one or more checkpoints (all tasks, protocols and baselines)."""
    from eolab.cli.benchmark import main

    return main(args.benchmark_args)


def cmd_launch(args: argparse.Namespace) -> int:
    """One pre-training run from a parameters file, as srun starts it on every task."""
    from eolab.launch import main

    return main(args.launch_args)


# Subcommand registry: one line per command.
COMMANDS: dict[str, Command] = {
    "ablate": Command(
        cmd_ablate,
        "run an ablation spec (YAML); resumes, skipping runs already done",
        (
            arg("spec", help="path to the ablation spec, e.g. ablations/mask_ratio.yaml"),
            arg("--force", action="store_true", help="re-run runs that are already done"),
            arg("--only", nargs="+", metavar="RUN_ID", help="run only these run ids (or their 12-hex hashes)"),
            arg("--dry-run", action="store_true", help="validate the spec and list the runs, run nothing"),
            arg("--results-root", metavar="DIR", help="parent of results/<name>/ (default: <repo>/results)"),
            arg(
                "--workers",
                type=int,
                default=1,
                metavar="N",
                help="run up to N notebooks at once, each in a child process (default 1: sequential)",
            ),
            arg(
                "--executor",
                choices=("local", "slurm"),
                default="local",
                help="where runs execute: this machine (default) or SLURM jobs (a job array via submitit)",
            ),
        ),
    ),
    "table": Command(cmd_table, "rebuild table.csv and runs.csv of a results folder", (arg("results_dir"),)),
    "render": Command(cmd_render, "render an executed notebook to HTML beside it", (arg("notebook"),)),
    "compare": Command(
        cmd_compare,
        "ablations side by side: per run, pre-trained vs baselines with bootstrap intervals over folds",
        (
            arg("results_dirs", nargs="+", metavar="RESULTS_DIR", help="results folders of ablations, e.g. results/mask_ratio"),
            arg("--reference", metavar="ABLATION/RUN", help="pair every run of the same seed with this run, fold by fold"),
            arg("--versus", metavar="KEY=VALUE", help="pair every run with the one of the same settings but KEY=VALUE (e.g. mask=random)"),
            arg("--csv", metavar="FILE", help="also write the numbers (means, sds, interval bounds) as CSV"),
            arg("--summary", metavar="DIR", help="also execute notebooks/compare.ipynb into DIR and render compare.html"),
        ),
    ),
    "results": Command(cmd_results, "`results index`: write results/index.md and index.csv (every results folder)",
                       (arg("action", choices=("index",)), arg("--root", metavar="DIR", help="default: <repo>/results"))),
    "data": Command(cmd_data, "check the data root and build the scene cache", (arg("--data-root", metavar="DIR"),)),
    "probe": Command(
        cmd_probe,
        "probe a saved encoder on EuroSAT: random vs spatially blocked split, with the band-stats baseline",
        (
            arg("checkpoint", help="encoder.pt of a run"),
            arg("--pool", default="mean_std", choices=("mean", "cls", "mean_std")),
            arg("--cell-deg", type=float, default=2.0, help="size of the held-out lon/lat cells"),
            arg("--data-root", metavar="DIR"),
        ),
    ),
    "benchmark": Command(cmd_benchmark, "embedding benchmark of checkpoints on every task (= python -m eolab benchmark)",
                         (arg("benchmark_args", nargs="*", metavar="OPTION", help="options of python -m eolab benchmark"),)),
    "launch": Command(cmd_launch, "one pre-training run from a JSON/YAML parameters file (what srun starts per task)",
                      (arg("launch_args", nargs="*", metavar="OPTION", help="PARAMS [--output-dir DIR], as python -m eolab.launch"),)),
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, generated from COMMANDS."""
    parser = argparse.ArgumentParser(prog="python -m eolab", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        for flags, kwargs in command.arguments:
            sub.add_argument(*flags, **kwargs)
    return parser


FORWARDING = ("benchmark", "launch")
"""Commands whose arguments are another module's command line (`--` before them is optional)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn expected errors into `error: ...` with exit code 2."""
    from eolab.runner.execute import ExecutorError
    from eolab.runner.faults import BatchStopped
    from eolab.runner.notebook import KernelError
    from eolab.runner.spec import SpecError
    from eolab.secrets import install_redacting_excepthook, known_secrets, redact

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDING and argv[1:2] != ["--"]:
        argv = [argv[0], "--", *argv[1:]]  # their options belong to the module they forward to
    args = build_parser().parse_args(argv)
    install_redacting_excepthook()  # an unexpected traceback may quote a storage URL
    try:
        return COMMANDS[args.command].handler(args)
    except (SpecError, KernelError, ExecutorError, UsageError) as exc:
        print(f"error: {redact(str(exc), known_secrets())}", file=sys.stderr)
        return EXIT_USAGE
    except BatchStopped as exc:  # a full/read-only results folder, Ctrl-C, SIGTERM: one line, no traceback
        import logging

        # the interrupted notebook's executor task is abandoned on purpose: no "never retrieved" dump at exit
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code



if __name__ == "__main__":
    sys.exit(main())
