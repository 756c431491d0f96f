"""The seeds report (`python -m eolab results seeds`): arms over seeds, paired intervals.

Run folders are written here with known fold scores, so every number the report gives can be
checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eolab.__main__ import main
from eolab.intervals import seeds_bootstrap_ci
from eolab.reports.seeds import MAIN_SCORE, SeedsError, load_runs, seeds_table

FOLDS = 10


def _write_run(folder, run_id, params, seed, eurosat, bench=None):
    """A done run: EuroSAT folds per encoder in record.json, benchmark linear rows per encoder."""
    run_dir = folder / "runs" / run_id
    run_dir.mkdir(parents=True)
    folds = [{"encoder": enc, "fold": i, "accuracy": float(v)} for enc, vals in eurosat.items() for i, v in enumerate(vals)]
    record = {"run_id": run_id, "params": {**params, "seed": seed}, "seed": seed, "folds": folds}
    (run_dir / "record.json").write_text(json.dumps(record))
    if bench is not None:
        rows = [{"task": "toy", "encoder": enc, "protocol": "linear", "split": "blocked", "metric": "accuracy",
                 "value": float(np.mean(vals)), "n": len(vals), "fold_values": ";".join(repr(float(v)) for v in vals)}
                for enc, vals in bench.items()]
        rows.append({"task": "toy", "encoder": "pretrained", "protocol": "linear", "split": "official",
                     "metric": "accuracy", "value": 0.5, "n": 30, "fold_values": ""})  # a single test metric
        pd.DataFrame(rows).to_csv(run_dir / "benchmark.csv", index=False)


@pytest.fixture
def ablation(tmp_path):
    """Two objectives x three seeds: 'good' is 0.10 above band stats on every fold, 'same' equals
    band stats plus zero-mean noise; random init sits 0.05 below band stats."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "objectives_seeds"
    for seed in range(3):
        base = 0.7 + 0.02 * rng.standard_normal(FOLDS)
        for objective, shift in (("good", 0.10), ("same", 0.0)):
            noise = 0.01 * rng.standard_normal(FOLDS) if objective == "same" else np.zeros(FOLDS)
            eurosat = {"pretrained": base + shift + noise, "band_stats": base, "random_init": base - 0.05}
            _write_run(folder, f"objective={objective}-seed={seed}-{seed:012d}", {"objective": objective, "lr": 1e-3},
                       seed, eurosat, bench=eurosat)
    return folder


def test_arms_means_and_paired_differences(ablation):
    table = seeds_table(load_runs([ablation]))
    assert set(table["arm"]) == {"objective=good", "objective=same"}  # lr is the same everywhere: not an arm key
    assert set(table["score"]) == {MAIN_SCORE, "toy_blocked"}  # the official row has no folds to pair
    good = table[(table["arm"] == "objective=good") & (table["score"] == MAIN_SCORE)].iloc[0]
    assert good["seeds"] == 3 and good["seed_list"] == "0,1,2"
    assert good["minus_band_stats"] == pytest.approx(0.10)
    assert good["minus_random_init"] == pytest.approx(0.15)
    assert good["minus_band_stats_low"] == pytest.approx(0.10) == good["minus_band_stats_high"]  # every fold +0.10
    assert good["minus_band_stats_exceeds_noise"]
    same = table[(table["arm"] == "objective=same") & (table["score"] == "toy_blocked")].iloc[0]
    assert same["minus_band_stats_low"] < 0 < same["minus_band_stats_high"]
    assert not same["minus_band_stats_exceeds_noise"]
    assert same["minus_random_init_exceeds_noise"]  # +0.05 on every fold


def test_versus_pairs_by_seed_and_fold(ablation):
    table = seeds_table(load_runs([ablation]), versus="objective=same")
    good = table[(table["arm"] == "objective=good") & (table["score"] == MAIN_SCORE)].iloc[0]
    runs = {r.run_id: r for r in load_runs([ablation])}
    expected = np.mean([np.mean(runs[f"objective=good-seed={s}-{s:012d}"].scores[MAIN_SCORE]["pretrained"]
                                - runs[f"objective=same-seed={s}-{s:012d}"].scores[MAIN_SCORE]["pretrained"])
                        for s in range(3)])
    assert good["vs_objective"] == pytest.approx(expected) and good["vs_objective_seeds"] == 3
    assert good["vs_objective_arm"] == "objective=same" and good["vs_objective_exceeds_noise"]
    same = table[(table["arm"] == "objective=same") & (table["score"] == MAIN_SCORE)].iloc[0]
    assert pd.isna(same.get("vs_objective"))  # the reference arm is not paired with itself


def test_versus_unknown_key_is_named(ablation):
    with pytest.raises(SeedsError, match="'mask_ratio' is not a parameter that varies"):
        seeds_table(load_runs([ablation]), versus="mask_ratio=0.5")


def test_folder_without_runs_is_named(tmp_path):
    with pytest.raises(SeedsError, match="no done runs"):
        load_runs([tmp_path])


def test_two_level_bootstrap_carries_the_seed_spread():
    # Folds agree within a seed but seeds disagree: a fold-only bootstrap would be narrow; this is not.
    groups = [np.full(10, 0.0), np.full(10, 0.1), np.full(10, 0.2)]
    low, high = seeds_bootstrap_ci(groups)
    assert low < 0.05 and high > 0.15
    assert np.isnan(seeds_bootstrap_ci([np.array([0.3])])).all()  # one value: no interval


def test_command_writes_table(ablation, capsys):
    assert main(["results", "seeds", str(ablation)]) == 0
    md = (ablation / "seeds.md").read_text()
    assert "| objective=good |" in md and "*band_stats*" in md
    csv = pd.read_csv(ablation / "seeds.csv")
    assert len(csv) == 4
    assert "objective=good" in capsys.readouterr().out


def test_ignored_parameters_make_no_arm(ablation, tmp_path):
    # A twin ablation whose runs differ in a parameter the objective does not read: with it ignored,
    # the twin's runs pair with the first ablation's by seed and fold.
    twin = tmp_path / "twin"
    for run in load_runs([ablation]):
        if run.params["objective"] == "good":
            folds = {enc: v for enc, v in run.scores[MAIN_SCORE].items()}
            _write_run(twin, f"objective=good-x-seed={run.seed}-{run.seed:012d}",
                       {"objective": "good", "lr": 1e-3, "sampler": "old", "unread": 0.0}, run.seed,
                       {**folds, "pretrained": folds["pretrained"] - 0.02})
    for run_dir in (ablation / "runs").iterdir():
        record = json.loads((run_dir / "record.json").read_text())
        record["params"].update(sampler="new", unread=0.1)
        (run_dir / "record.json").write_text(json.dumps(record))
    runs = load_runs([ablation, twin])
    assert seeds_table(runs, versus="sampler=old")["arm"].str.contains("unread").all()
    table = seeds_table(runs, versus="sampler=old", ignore=("unread",))
    good = table[(table["arm"] == "objective=good, sampler=new") & (table["score"] == MAIN_SCORE)].iloc[0]
    assert good["vs_sampler"] == pytest.approx(0.02) and good["vs_sampler_seeds"] == 3
