"""Your own corpus without Python: two shared folders described by a card and a source file each
(sources/terramesh_s2l2a.yaml, sources/bigearthnet_s2.yaml), packed with `data pack`, pre-trained on
through `ablate` and the notebook with `dataset: packed:<folder>` (ablations/own_data.yaml); and a
corpus that was never packed is named, with the pack command, before any kernel starts."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from eolab.__main__ import main
from eolab.preflight import check_runs
from eolab.runner.execute import run_ablation
from eolab.runner.spec import REPO_ROOT

SPEC = REPO_ROOT / "ablations" / "own_data.yaml"
SOURCES = "sources/terramesh_s2l2a.yaml,sources/bigearthnet_s2.yaml"


def own_data_spec(tmp_path: Path, dataset: str, **base: object) -> Path:
    """ablations/own_data.yaml with only the arm ``dataset`` and ``base`` over its base, in ``tmp_path``."""
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["base"]["sources"] == SOURCES  # what the corpus is packed from below
    spec["base"].update(base)
    spec["grid"] = {"dataset": [dataset]}
    spec["notebook"] = str(REPO_ROOT / spec["notebook"])
    spec.pop("summary")  # the summary notebook has its own tests
    path = tmp_path / "own_data.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_spec_has_a_scenes_and_a_packed_arm_over_the_same_sources() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    scenes, packed = spec["grid"]["dataset"]
    assert scenes == "scenes" and packed == "packed:.cache/corpora/own_data"
    assert spec["base"]["n_pretrain"] == 0  # a packed corpus refuses a budget: its packer chose the patches


def test_a_corpus_never_packed_is_named_with_the_pack_command(tmp_path: Path) -> None:
    missing = tmp_path / "never_packed"
    report = check_runs([{"label": "run a", "params": {"dataset": f"packed:{missing}", "sources": SOURCES}}])
    (problem,) = report["problems"]  # one message, not the config's "cannot read manifest.json" beside it
    assert problem["message"] == (f"parameter 'dataset': packed corpus {missing} does not exist: pack it first with "
                                  f"`python -m eolab data pack {SOURCES} --out {missing}`")
    missing.mkdir()  # a pack killed before its manifest was written
    (problem,) = check_runs([{"label": "run a", "params": {"dataset": f"packed:{missing}"}}])["problems"]
    assert "has no manifest.json" in problem["message"] and "data pack SOURCES --out" in problem["message"]
    # a relative folder is the repository's, as the run's notebook (started in notebooks/) reads it
    (problem,) = check_runs([{"label": "run a", "params": {"dataset": "packed:no/such/corpus"}}])["problems"]
    assert f"packed corpus no/such/corpus ({REPO_ROOT / 'no/such/corpus'}) does not exist" in problem["message"]
    # URLs are left to the config's check, which reads their manifest
    assert check_runs([{"label": "u", "params": {"dataset": "packed:http://127.0.0.1:9/c"}}])["problems"][0][
        "message"].startswith("parameter 'dataset': packed corpus http://127.0.0.1:9/c: cannot read manifest.json")


def test_ablate_refuses_a_spec_whose_corpus_is_not_packed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "corpus"
    spec = own_data_spec(tmp_path, f"packed:{missing}")
    results = tmp_path / "results"
    assert main(["ablate", str(spec), "--results-root", str(results)]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s) found before any run started" in err, err
    assert f"parameter 'dataset': packed corpus {missing} does not exist" in err, err
    assert f"python -m eolab data pack {SOURCES} --out {missing}" in err, err
    assert not results.exists()  # no kernel started, nothing written


@pytest.mark.slow
def test_pack_two_sources_then_ablate_on_the_packed_corpus(tmp_path: Path, root: Path) -> None:
    corpus = tmp_path / "corpus"
    # 32 windows per source (uniform) and batch 32: 2 optimiser steps in one epoch
    assert main(["data", "pack", SOURCES, "--out", str(corpus), "--n", "32", "--sampling", "uniform",
                 "--workers", "1", "--data-root", str(root)]) == 0
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["n"] == 64 and [p["n"] for p in manifest["parts"]] == [32, 32]
    spec = own_data_spec(tmp_path, f"packed:{corpus}", epochs=1, batch_size=32, data_root=str(root))
    summary = run_ablation(spec, results_root=tmp_path / "results", log=lambda line: None, progress="lines")
    assert summary.ok and len(summary.executed) == 1, summary.failed
    run_dir = summary.results_dir / "runs" / summary.executed[0].run_id
    record = json.loads((run_dir / "record.json").read_text())
    assert record["params"]["dataset"] == f"packed:{corpus}"
    assert "training: 2 optimiser steps" in (run_dir / "run.log").read_text()
    with (run_dir / "history.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    assert math.isfinite(record["metrics"]["loss_last10pct"])
    # the corpus it streamed, and the statistics it normalised with, are the packed ones
    packed = record["data"]["packed"]
    assert packed["location"] == str(corpus) and packed["n"] == 64 and packed["n_shards"] == 2
    assert record["normalization"]["corpus"].endswith("(packed statistics)")
