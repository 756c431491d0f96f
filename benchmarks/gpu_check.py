"""The prepared GPU check: eolab's step at users' sizes against lightly and Hugging Face, and a short
real pre-training run, on one GPU, in under 8 minutes; it writes ``results/gpu_check/``.

    benchmarks/gpu_check.sh [--data-root PATH] [--out results/gpu_check]     # sets up the venv if needed
    python -m benchmarks.gpu_check [--data-root PATH] [--out DIR] [--train-seconds 100]
    python -m benchmarks.gpu_check --allow-cpu          # no GPU: tiny sizes, to test that the script runs

What it runs, each part in its own process with a time limit (a hung compile costs its part only):
  1. ``python -m benchmarks.throughput --configs base-224`` and ``small-96``, bf16, eolab vs lightly
     vs HF, eager and compiled, batch as large as fits, MFU against the measured bf16 matmul peak,
     and the scene-cache loader against the step's rate;
  2. a real pre-training run through ``python -m eolab.launch`` (the notebook's steps, real data
     from the data root): ViT-S on 96 px windows, bf16, the whole task compiled, for about
     ``--train-seconds`` of training, about 3 minutes with data preparation, compilation and
     evaluation (its FLOP budget is set from the step rate part 1 measured);
then ``gpu_check.json`` (everything) and ``README.md`` (device name and the figures).

Without a CUDA GPU it stops before any work and says why, unless ``--allow-cpu``, which runs the
same parts at tiny sizes (micro-64, a vit_nano run of a few steps) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

GPU_PLAN = {
    # base-224 first, without the loader; small-96 then times the scene-cache loader at 96 px too.
    "configs": ("base-224", "small-96"),
    "bench_args": ["--precisions", "bf16", "--compile", "--warmup", "2", "--steps", "4", "--repeats", "3"],
    "loader_args": {"base-224": ["--loader-workers", ""],
                    "small-96": ["--loader-workers", "8", "--loader-seconds", "5", "--loader-batches", "16"]},
    "bench_timeout_s": 140,
    "pretrain_timeout_s": 190,  # 8 minutes in all: 2 x 140 s of benchmark, 190 s of pre-training run
    "pretrain": {"model_size": "vit_small", "img_size": 96, "patch_size": 8, "decoder_dim": 256, "decoder_depth": 4,
                 "batch_size": 256, "precision": "bf16-mixed", "torch_compile": True, "compile_scope": "task",
                 "accelerator": "gpu", "devices": "1", "num_workers": 8, "knn_every": 50, "checkpoint_every": 0,
                 "probe_folds": 5, "probe_repeats": 1, "probe_baselines": False, "progress": "log"},
    "fallback_tflops_per_s": 100.0,  # when part 1 measured nothing: a conservative H100-class bf16 rate
}
"""What the check runs on a GPU."""

TINY_PLAN = {
    "configs": ("micro-64",),
    "bench_args": ["--quick", "--precisions", "bf16", "--models", "eolab,lightly"],
    "loader_args": {"micro-64": ["--loader-workers", "0"]},
    "bench_timeout_s": 600,
    "pretrain_timeout_s": 900,
    "pretrain": {"model_size": "vit_nano", "img_size": 64, "patch_size": 8, "decoder_dim": 32, "decoder_depth": 1,
                 "batch_size": 16, "n_pretrain": 64, "epochs": 1, "bands": "B02,B03,B04,B08", "batch_sampling": "shuffle",
                 "precision": "32-true", "accelerator": "cpu", "knn_every": 2, "checkpoint_every": 0,
                 "probe_folds": 2, "probe_repeats": 1, "probe_baselines": False, "progress": "log"},
    "fallback_tflops_per_s": 0.05,
}
"""What ``--allow-cpu`` runs: the same parts at sizes a CPU finishes in a few minutes."""


class CheckError(SystemExit):
    """Stops the check with a message that says why (exit status 2)."""

    def __init__(self, message: str):
        print(f"gpu_check: error: {message}", file=sys.stderr)
        super().__init__(2)


def gpu_problem() -> str | None:
    """Why this machine cannot run the GPU check, or None."""
    import torch

    if not torch.cuda.is_available():
        built = f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda else \
            f"torch {torch.__version__} built without CUDA"
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (f"no CUDA GPU visible to torch (torch.cuda.is_available() is False; {built}"
                + (f"; CUDA_VISIBLE_DEVICES={seen!r}" if seen is not None else "") + "). "
                "This check measures a GPU: run it on a GPU machine, or pass --allow-cpu to test the script at tiny sizes")
    return None


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU only, torch {torch.__version__}"


def run_part(cmd: list[str], timeout: float, log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one part in its own process; its output goes to ``log_path``. Never raises for the
    part's own failure: the outcome (status, seconds, the log's last lines) is what the README shows."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
    return {"cmd": cmd, "status": status, "seconds": time.perf_counter() - start, "log": log_path.name,
            "log_tail": tail if status != "ok" else []}


def train_budget_tflops(bench: dict[str, Any] | None, seconds: float, fallback_tflops_per_s: float) -> tuple[float, str]:
    """The run's FLOP budget for about ``seconds`` of training: half the measured rate of eolab's
    compiled (else eager) step at small-96 (the rest: data loading, k-NN probes, compilation)."""
    rows = [r for t in (bench or {}).get("tables", []) for r in t["train"]
            if r["model"] == "eolab" and not r["variant"]]
    rows.sort(key=lambda r: (not r["compiled"], -r["achieved_tflops"]))
    if rows:
        rate = rows[0]["achieved_tflops"]
        return 0.5 * rate * seconds, f"half of eolab's measured {rate:.2f} TFLOP/s for {seconds:.0f} s"
    return 0.5 * fallback_tflops_per_s * seconds, f"no step rate measured: half of an assumed {fallback_tflops_per_s} TFLOP/s"


def summarise_bench(bench: dict[str, Any]) -> list[str]:
    """Markdown table rows of the benchmark's figures."""
    lines = ["matmul peak (measured): " + ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in bench["peaks"].items()),
             "", "| config | batch | model | compiled | images/s | MFU | vs faster peer (same compile) | vs peer eager |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in bench["tables"]:
        for r in t["train"]:
            ratio = f"{r['ratio_to_fastest_peer']:.2f}x" if r["ratio_to_fastest_peer"] else "-"
            eager = f"{r['ratio_to_fastest_peer_eager']:.2f}x" if r["ratio_to_fastest_peer_eager"] else "-"
            lines.append(f"| {t['config']} | {t['batch_size']} | {r['label']} | {'yes' if r['compiled'] else 'no'} | "
                         f"{r['images_per_s']:.4g} | {r['mfu']:.1%} | {ratio} | {eager} |")
        for r in t["loader"]:
            lines.append(f"| {t['config']} | {t['batch_size']} | loader {r['loader']} ({r['workers']} workers, "
                         f"{r['patch_px']} px) | - | {r['images_per_s']:.4g} | - | {r['ratio_to_training']:.2f}x of the step | - |")
    return lines


def write_readme(out: Path, report: dict[str, Any]) -> None:
    lines = ["# GPU check", "", f"Device: **{report['device']}**. Written by `python -m benchmarks.gpu_check` "
             f"({'tiny CPU test mode, --allow-cpu: the figures say nothing about a GPU' if report['tiny'] else 'GPU mode'}), "
             f"{report['finished_utc']}, {report['seconds']:.0f} s in all, git {report['git_commit']}.", ""]
    lines += ["## Step throughput (bf16)", ""]
    for part in report["bench_parts"]:
        lines.append(f"- `{' '.join(part['cmd'][2:])}`: {part['status']} in {part['seconds']:.0f} s")
        lines += [f"      {line}" for line in part["log_tail"]]
    if report["bench"]:
        lines += [""] + summarise_bench(report["bench"])
    run = report["pretrain"]
    lines += ["", "## Pre-training run (python -m eolab.launch)", "",
              f"- status: {run['status']} in {run['seconds']:.0f} s; budget {run['train_tflops']:.1f} TFLOP "
              f"({run['budget_reason']}); parameters in `pretrain_params.json`"]
    lines += [f"      {line}" for line in run["log_tail"]]
    for key, label in (("train_steps", "steps"), ("train_time_s", "training seconds"),
                       ("train_images_per_s", "images/s"), ("final_knn_accuracy", "final in-loop k-NN accuracy"),
                       ("loss_first10pct", "loss, first 10% of steps"), ("loss_last10pct", "loss, last 10% of steps"),
                       ("pretrained_acc_mean", "EuroSAT linear probe accuracy")):
        if key in run.get("metrics", {}):
            value = run["metrics"][key]
            lines.append(f"- {label}: {value:.4g}" if isinstance(value, float) else f"- {label}: {value}")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check", help="folder for the results")
    p.add_argument("--data-root", default=None, help="real data (default: eolab.data.paths.data_root())")
    p.add_argument("--train-seconds", type=float, default=100.0,
                   help="about how long the pre-training run trains (its data preparation, compilation and "
                        "evaluation come on top: about 3 minutes in all)")
    p.add_argument("--allow-cpu", action="store_true", help="without a GPU: tiny sizes on the CPU (tests the script)")
    p.add_argument("--dry-run", action="store_true", help="check the machine and data, write the plan, run nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eolab.data.paths import data_root
    from eolab.provenance import git_commit

    problem = gpu_problem()
    if problem and not args.allow_cpu:
        raise CheckError(problem)
    tiny = problem is not None
    plan = TINY_PLAN if tiny else GPU_PLAN
    try:
        root = data_root(args.data_root)
    except Exception as exc:  # noqa: BLE001  (its own message names the folder and the variable)
        raise CheckError(f"the data root is not usable: {exc}") from exc
    if not Path(root).is_dir():
        raise CheckError(f"data root {root} is not a folder (set --data-root or $EOLAB_DATA)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "EOLAB_DATA": str(root)}
    bench_cmds = [[sys.executable, "-m", "benchmarks.throughput", "--configs", c, *plan["bench_args"],
                   *plan["loader_args"][c], "--data-root", str(root), "--out", str(out / f"bench_{c}.json")]
                  for c in plan["configs"]]
    params = dict(plan["pretrain"])
    print(f"gpu_check: {device_label()}; data root {root}; results in {out}"
          + ("; tiny CPU mode (--allow-cpu)" if tiny else ""), file=sys.stderr)
    if args.dry_run:
        (out / "plan.json").write_text(json.dumps({"device": device_label(), "tiny": tiny, "bench": bench_cmds,
                                                    "pretrain": params}, indent=1))
        print(f"gpu_check: dry run: wrote {out / 'plan.json'}", file=sys.stderr)
        return 0

    start = time.perf_counter()
    bench_parts, tables, bench = [], [], None
    for cmd in bench_cmds:
        print(f"gpu_check: {' '.join(cmd[2:5])} ...", file=sys.stderr)
        part = run_part(cmd, plan["bench_timeout_s"], out / f"{cmd[4]}.log", env)
        bench_parts.append(part)
        result_path = Path(cmd[-1])
        if part["status"] == "ok" and result_path.is_file():
            bench = json.loads(result_path.read_text())
            tables += bench["tables"]
    if bench is not None:
        bench = {**bench, "tables": tables}

    if tiny:  # a few steps, whatever the CPU's rate: the point is that the run goes through
        tflops, reason = 0.0, f"tiny mode: {params['epochs']} epoch of {params['n_pretrain']} patches"
    else:
        tflops, reason = train_budget_tflops(bench, args.train_seconds, plan["fallback_tflops_per_s"])
    params["train_tflops"] = round(tflops, 4)
    params_path = out / "pretrain_params.json"
    params_path.write_text(json.dumps(params, indent=1))
    run_dir = out / "pretrain_run"
    print(f"gpu_check: pre-training ({tflops:.2f} TFLOP) ...", file=sys.stderr)
    # The run's own limit covers training plus data preparation, compilation, probes and the record.
    pretrain = run_part([sys.executable, "-m", "eolab.launch", str(params_path), "--output-dir", str(run_dir)],
                        plan["pretrain_timeout_s"], out / "pretrain.log", env)
    pretrain.update({"train_tflops": tflops, "budget_reason": reason, "params": params})
    record = run_dir / "record.json"
    if record.is_file():
        pretrain["metrics"] = json.loads(record.read_text()).get("metrics", {})

    report = {"device": device_label(), "tiny": tiny, "data_root": str(root), "git_commit": git_commit(short=True),
              "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": time.perf_counter() - start, "bench_parts": bench_parts, "bench": bench, "pretrain": pretrain}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    write_readme(out, report)
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'README.md'} ({report['seconds']:.0f} s)",
          file=sys.stderr)
    failed = [p["status"] for p in [*bench_parts, pretrain] if p["status"] != "ok"]
    if failed:
        print(f"gpu_check: {len(failed)} part(s) did not finish: {', '.join(failed)} (see the logs in {out})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
