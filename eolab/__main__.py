"""eolab's command line, `python -m eolab COMMAND ...`: ablations of Earth-observation pre-training, their results, their encoders.

    python -m eolab ablate SPEC [--force] [--only RUN_ID ...] [--dry-run] [--results-root DIR]
                                [--workers N] [--executor local|slurm]
    python -m eolab table RESULTS_DIR
    python -m eolab render NOTEBOOK.ipynb
    python -m eolab data [--data-root DIR]
    python -m eolab data pack SOURCES --out DIR [--patch 64] [--n N --sampling SPEC] [--workers 2]  (shards; dataset=packed:DIR)
    python -m eolab probe CHECKPOINT [--pool mean_std] [--cell-deg 2] [--data-root DIR]
    python -m eolab embed --checkpoint ENC.pt --data DIR_OR_GLOB --out emb.nc [--pool ...] [--bands ...]
    python -m eolab compare RESULTS_DIR RESULTS_DIR [...] [--reference ABLATION/RUN | --versus KEY=VALUE] [--csv FILE] [--summary DIR]
    python -m eolab results index [--root DIR]
    python -m eolab results check [RESULTS_ROOT]      (which committed results an older commit made)
    python -m eolab results diff NEW_DIR REFERENCE_DIR (does a re-run reproduce the reference's folds)
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
`python -m benchmarks.sampling`, `python -m benchmarks.data_throughput` (packed corpora),
`python -m benchmarks.shard_formats`, run from the repository root.

To add a command, write a `cmd_<name>(args) -> int` function and add one line to COMMANDS; its
docstring is the command's --help description. Nothing heavy (torch, papermill) is imported before
the arguments are parsed, so `--help` of every command answers at once.
Exit codes: 0 success, 1 some runs (or the summary) failed, 2 invalid input (spec, paths, usage),
3 the results folder refused writes (full, read-only): the batch stopped, 130 Ctrl-C, 143 SIGTERM.
A stopped batch marks the runs in flight failed and writes the tables of what finished; a re-run
does the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
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


@dataclass(frozen=True)
class Group:
    """A command with actions of its own (``results check``, ``results diff``)."""

    help: str
    actions: dict[str, Command]


class UsageError(Exception):
    """Bad input to a command (printed as `error: ...`, exit code 2, no traceback)."""


def cmd_ablate(args: argparse.Namespace) -> int:
    """Validate an ablation spec (YAML) and execute its runs, each a papermill run of the spec's
    notebook into results/<name>/runs/<run_id>/, then rebuild the tables and render the summary.

    Runs already done are skipped (--force re-runs them), except those made under a notebook default
    that has changed since, which are redone; a failed run does not stop the batch.
    While runs execute, a line shows runs done / running / failed / left, the time left and each
    running run's step, loss and images/s (from its run.log, whose path is printed when the run
    starts); without a terminal, or with --quiet or $CI, plain lines are printed instead.

    examples:
      python -m eolab ablate ablations/quick.yaml --results-root demo-results   # one run, about a minute
      python -m eolab ablate ablations/mask_ratio.yaml --dry-run                # list the runs
      python -m eolab ablate ablations/mask_ratio.yaml --workers 2 --only 6f5eda29865a"""
    from eolab.runner.execute import DEFAULT_RESULTS_ROOT, run_ablation, select_runs, stale_runs
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
        stale = {} if args.force else stale_runs(spec, store, runs)
        for run in runs:
            verdict = "run " if args.force or not store.is_done(run.run_id) else "redo" if run.run_id in stale else "skip"
            values = " ".join(f"{k}={v!r}" for k, v in run.params.items())
            why = f"  (made under an earlier default: {', '.join(stale[run.run_id])})" if run.run_id in stale else ""
            print(f"  {verdict} {run.run_id}  {values}{why}")
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
            progress="quiet" if args.quiet else "auto",
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
    from eolab.runner.faults import Interrupted

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_table(args: argparse.Namespace) -> int:
    """Rebuild table.csv and runs.csv of an ablation results folder from its run folders (after a
    crash, or an edited record); the records are the source of truth."""
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


def cmd_data(args: argparse.Namespace) -> int:
    """Check the data root (EuroSAT patches, scenes) and build the packed scene cache: a preflight
    before long batches. The data root is --data-root, else $EOLAB_DATA, else ../shared/data beside
    the repository; the cache goes to $EOLAB_CACHE (default .cache/ in the repository).

    `data pack SOURCES --out DIR` packs pre-training patches into WebDataset shards with a manifest
    (exact per-band statistics, per-patch records, sha256 per shard), in --workers processes. A
    killed pack re-run keeps its finished shards; packing another source into DIR adds its shards.
    Train on it with the parameter dataset=packed:DIR (or a URL the shards were copied to).

    examples:
      python -m eolab data
      python -m eolab data pack hydro,major_tom --out corpus --n 500 --sampling geo_grid
      python -m eolab data pack ssl4eo --out corpus          # adds ssl4eo's shards beside the others"""
    if args.action == "pack":
        return _data_pack(args)
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


def _data_pack(args: argparse.Namespace) -> int:
    from eolab.data.raster import RasterError
    from eolab.data.shards import PackOptions, pack

    if not args.sources or not args.out:
        raise UsageError("data pack needs SOURCES (comma-separated, e.g. hydro,major_tom) and --out DIR")
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    opts = PackOptions(patch=args.patch, stride=args.stride or args.patch // 2,
                       bands=tuple(b.strip() for b in args.bands.split(",")) if args.bands else None,
                       sampling=args.sampling, n=args.n, seed=args.seed, shard_size=args.shard_size, repeat=args.repeat)
    try:
        manifest = pack(sources, Path(args.out), root=args.data_root, opts=opts, workers=args.workers)
    except (FileNotFoundError, RasterError, ValueError) as exc:  # ShardError is a ValueError
        raise UsageError(str(exc)) from exc
    print(f"{args.out}: {manifest['n']} patches in {len(manifest['shards'])} shards; bands {','.join(manifest['bands'])} "
          f"({manifest['unit']}); parts: {', '.join(p['source'] + ' ' + str(p['n']) for p in manifest['parts'])}")
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


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed GeoTIFFs with a saved encoder and write the vectors with their coordinates (xarray:
    netCDF for .nc, zarr for .zarr): variable `embedding` (sample, dim), coordinates sample (id),
    file, row, col, lon, lat (WGS84 centre of each window, from the file's CRS and geotransform), crs.

    Each file is cut into windows of the encoder's img_size (a file of that size is one sample).
    Band names come from --bands, else from the file's band descriptions, else the 13-band
    EuroSAT-MS order for 13-band files; the encoder's normalisation picks its bands by name.

    example:
      python -m eolab embed --checkpoint demo-results/quick/runs/RUN/encoder.pt --data '../shared/data/eurosat-ms/test/*/*.tif' --out emb.nc"""
    from eolab.checkpoint import CheckpointError
    from eolab.data.raster import RasterError
    from eolab.data.stats import NormalizationMismatch
    from eolab.evaluate.export import EmbedError, embed_files

    bands = tuple(b.strip() for b in args.bands.split(",") if b.strip()) if args.bands else None
    if bands:
        from eolab.data.bands import canonical_band_name

        try:
            bands = tuple(canonical_band_name(b) for b in bands)
        except KeyError as exc:
            raise UsageError(f"--bands: {exc.args[0]}") from exc
    try:
        ds = embed_files(args.checkpoint, args.data, args.out, pool=args.pool, stride=args.stride, bands=bands,
                         scale=args.scale, offset=args.offset, batch_size=args.batch_size)
    except (CheckpointError, FileNotFoundError, EmbedError, RasterError, NormalizationMismatch) as exc:
        raise UsageError(str(exc)) from exc
    files = len(set(ds["file"].values.tolist()))
    print(f"{args.out}: {ds.sizes['sample']} embeddings of {ds.sizes['dim']} dims from {files} file(s) "
          f"(pool {args.pool}, lon {float(ds.lon.min()):.3f}..{float(ds.lon.max()):.3f}, "
          f"lat {float(ds.lat.min()):.3f}..{float(ds.lat.max()):.3f})")
    return EXIT_OK


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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


def cmd_results_index(args: argparse.Namespace) -> int:
    """`results index`: write results/index.md and index.csv listing every results folder."""
    from eolab.reports.compare import CompareError, write_index

    root = Path(args.root) if args.root else Path(__file__).resolve().parents[1] / "results"
    try:
        md, csv = write_index(root)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{_shown(md)}\n{_shown(csv)}")
    return EXIT_OK


def cmd_results_seeds(args: argparse.Namespace) -> int:
    """Arms of one or more ablations over their seeds: per arm and score (the run's EuroSAT probe and
    every linear-probe task and split of its embedding benchmark), the mean over seeds, the seed sd,
    the interquartile mean, and the paired difference to band statistics and to the random-init
    encoder (with --versus KEY=VALUE also to the arm that differs only there) with a bootstrap
    interval over seeds and folds; writes seeds.csv and seeds.md (eolab.reports.seeds)."""
    from eolab.reports.seeds import SeedsError, write_seeds

    folders = [Path(p) for p in args.results_dirs]
    missing = [str(p) for p in folders if not p.is_dir()]
    if missing:
        raise UsageError(f"results folder(s) not found: {', '.join(missing)}")
    try:
        csv_path, md_path = write_seeds(folders, Path(args.out) if args.out else folders[0], versus=args.versus or "",
                                      ignore=tuple(k.strip() for k in (args.ignore or "").split(",") if k.strip()))
    except SeedsError as exc:
        raise UsageError(str(exc)) from exc
    print(md_path.read_text(), end="")
    print(f"{_shown(md_path)}\n{_shown(csv_path)}")
    return EXIT_OK


def cmd_results_check(args: argparse.Namespace) -> int:
    """Say which results under RESULTS_ROOT were made by a commit older than the last change to the
    code that produces them (eolab/ and notebooks/): each record's git_commit against `git log`.
    Exit code 1 when some are stale (or made by a commit unknown here), 0 when all are current."""
    from eolab.results import check_report

    root = Path(args.results_root)
    if not root.is_dir():
        raise UsageError(f"results folder not found: {root}")
    try:
        lines, ok = check_report(root)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_FAILED_RUNS


def cmd_results_diff(args: argparse.Namespace) -> int:
    """Compare an ablation's runs with a reference's, run by run (matched by run id): identical
    per-fold probe accuracies (same commit, parameters and seed), or the differences per encoder,
    with parameters and commits that differ. Exit code 0, or with --strict 1 when any run differs."""
    from eolab.results import diff_report

    try:
        lines, same = diff_report(Path(args.new), Path(args.reference))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(lines))
    return EXIT_FAILED_RUNS if args.strict and not same else EXIT_OK


def cmd_benchmark(args: argparse.Namespace) -> int:
    """The embedding benchmark on one or more checkpoints (all tasks, protocols and baselines)."""
    from eolab.cli.benchmark import main

    return main(args.benchmark_args)


def cmd_launch(args: argparse.Namespace) -> int:
    """One pre-training run from a parameters file, as srun starts it on every task."""
    from eolab.launch import main

    return main(args.launch_args)


# Subcommand registry: one line per command.
COMMANDS: dict[str, Command | Group] = {
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
            arg("--quiet", action="store_true",
                help="one line per finished run, no live progress line (also when $CI is set)"),
        ),
    ),
    "table": Command(cmd_table, "rebuild table.csv and runs.csv of a results folder",
                     (arg("results_dir", help="an ablation's results folder, e.g. results/mask_ratio"),)),
    "render": Command(cmd_render, "render an executed notebook to HTML beside it",
                      (arg("notebook", help="an executed notebook, e.g. results/mask_ratio/summary.ipynb"),)),
    "data": Command(
        cmd_data, "check the data root and build the scene cache; `data pack` packs patches into shards",
        (
            arg("action", nargs="?", choices=("pack",), help="pack: write SOURCES' patches as shards into --out"),
            arg("sources", nargs="?", metavar="SOURCES", help="pack: comma-separated sources, e.g. hydro,major_tom,ssl4eo"),
            arg("--data-root", metavar="DIR", help="data root (default: $EOLAB_DATA, else ../shared/data)"),
            arg("--out", metavar="DIR", help="pack: the corpus folder (created; finished shards in it are kept)"),
            arg("--patch", type=int, default=64, metavar="PX", help="pack: patch size in pixels (default 64)"),
            arg("--stride", type=int, default=0, metavar="PX", help="pack: window stride (default patch / 2)"),
            arg("--bands", metavar="B02,B03,...", help="pack: bands by name (default: every band of the scenes)"),
            arg("--sampling", default="uniform", metavar="SPEC",
                help="pack with --n: which windows (a sampler spec, e.g. uniform, geo_grid, stratified:source)"),
            arg("--n", type=int, default=0, metavar="N", help="pack: windows per source the sampler chooses (default 0: all)"),
            arg("--seed", type=int, default=0, help="pack: the sampler's seed (default 0)"),
            arg("--shard-size", type=int, default=512, metavar="N", help="pack: patches per shard (default 512)"),
            arg("--workers", type=int, default=2, metavar="N", help="pack: writer processes (default 2)"),
            arg("--repeat", type=int, default=1, metavar="K",
                help="pack: write every window K times (scale tests only; the manifest says so)"),
        ),
    ),
    "probe": Command(
        cmd_probe,
        "probe a saved encoder on EuroSAT: random vs spatially blocked split, with the band-stats baseline",
        (
            arg("checkpoint", help="encoder.pt of a run"),
            arg("--pool", default="mean_std", choices=("mean", "cls", "mean_std"),
                help="how patch tokens become one vector (default mean_std: mean and spatial std)"),
            arg("--cell-deg", type=float, default=2.0, help="size in degrees of the held-out lon/lat cells (default 2)"),
            arg("--data-root", metavar="DIR", help="data root (default: $EOLAB_DATA, else ../shared/data)"),
        ),
    ),
    "embed": Command(
        cmd_embed,
        "embed GeoTIFFs with a saved encoder; write vectors with lon/lat (netCDF or zarr)",
        (
            arg("--checkpoint", required=True, metavar="ENC.pt", help="encoder.pt of a run"),
            arg("--data", required=True, metavar="DIR|GLOB",
                help="a folder (searched recursively for *.tif), a GeoTIFF, or a quoted glob such as 'dir/*/*.tif'"),
            arg("--out", required=True, metavar="PATH", help="output: .nc (netCDF4) or .zarr"),
            arg("--pool", default="mean_std", choices=("mean", "cls", "mean_std"),
                help="how patch tokens become one vector (default mean_std)"),
            arg("--bands", metavar="B02,B03,...", help="the files' band names in file order "
                "(default: the files' band descriptions, or the EuroSAT-MS order for 13 bands)"),
            arg("--scale", type=float, default=10_000.0,
                help="divide values by this after subtracting --offset (default 10000: S2 digital numbers to reflectance)"),
            arg("--offset", type=float, default=0.0, help="subtracted before scaling (e.g. 1000 for L2A since 2022)"),
            arg("--stride", type=int, default=0, metavar="PX", help="window stride in pixels (default: the window size)"),
            arg("--batch-size", type=int, default=128, metavar="N", help="windows per forward pass (default 128)"),
        ),
    ),
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
    "results": Group(
        "results under results/: `index` lists them, `check` which are stale, `seeds` arms over seeds, `diff` a re-run against a reference",
        {
            "index": Command(cmd_results_index, "write results/index.md and index.csv: every results folder, runs, best, date, commit",
                             (arg("--root", metavar="DIR", help="folder of result folders (default: <repo>/results)"),)),
            "check": Command(cmd_results_check, "say which results were made by a commit older than the last code change",
                             (arg("results_root", nargs="?", default="results", metavar="RESULTS_ROOT",
                                  help="folder of result folders (default: results)"),)),
            "seeds": Command(cmd_results_seeds, "arms over seeds: means, seed sd, IQM, paired intervals against the baselines",
                             (arg("results_dirs", nargs="+", metavar="RESULTS_DIR", help="results folders of ablations with seeds"),
                              arg("--versus", metavar="KEY=VALUE", help="also pair every arm with the one that differs only in KEY=VALUE"),
                              arg("--ignore", metavar="KEY,...", help="parameters that make no arm (ones the objectives do not read)"),
                              arg("--out", metavar="DIR", help="where seeds.csv and seeds.md go (default: the first folder)"))),
            "diff": Command(cmd_results_diff, "compare an ablation's runs with a reference's: fold accuracies identical or not",
                            (arg("new", metavar="NEW_DIR", help="results folder of the re-run, e.g. demo-results/mask_ratio"),
                             arg("reference", metavar="REFERENCE_DIR", help="the reference, e.g. results/mask_ratio"),
                             arg("--strict", action="store_true", help="exit code 1 when any run differs"))),
        },
    ),
    "benchmark": Command(cmd_benchmark, "embedding benchmark of checkpoints on every task (python -m eolab benchmark --help lists its options)",
                         (arg("benchmark_args", nargs="*", metavar="OPTION", help="options of the embedding benchmark"),)),
    "launch": Command(cmd_launch, "one pre-training run from a JSON/YAML parameters file (what srun starts per task)",
                      (arg("launch_args", nargs="*", metavar="OPTION", help="PARAMS [--output-dir DIR], as python -m eolab.launch"),)),
}


def _add_command(subparsers, name: str, command: Command) -> None:
    description = inspect.getdoc(command.handler) or command.help
    sub = subparsers.add_parser(name, help=command.help, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=command.handler)
    for flags, kwargs in command.arguments:
        sub.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, generated from COMMANDS (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="python -m eolab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\nEvery command explains its options: python -m eolab COMMAND --help",
        epilog="Exit codes: 0 success, 1 some runs (or the summary) failed, 2 invalid input (spec, paths, usage).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if isinstance(command, Group):
            group = subparsers.add_parser(name, help=command.help, description=command.help)
            actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
            for action, sub in command.actions.items():
                _add_command(actions, action, sub)
        else:
            _add_command(subparsers, name, command)
    return parser


FORWARDING = ("benchmark", "launch")
"""Commands whose arguments are another module's command line (`--` before them is optional)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and turn expected errors into `error: ...` with exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDING and argv[1:2] != ["--"]:
        argv = [argv[0], "--", *argv[1:]]  # their options belong to the module they forward to
    args = build_parser().parse_args(argv)  # --help ends here, before anything heavy is imported
    from eolab.secrets import install_redacting_excepthook, known_secrets, redact

    install_redacting_excepthook()  # an unexpected traceback may quote a storage URL
    if argv and argv[0] in FORWARDING:  # their own command lines: help, usage errors and exit codes are theirs
        return args.handler(args)
    from eolab.runner.execute import ExecutorError
    from eolab.runner.faults import BatchStopped
    from eolab.runner.notebook import KernelError
    from eolab.runner.spec import SpecError

    try:
        return args.handler(args)
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
