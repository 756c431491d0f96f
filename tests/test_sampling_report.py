"""The sampling ablation's summary helpers (eolab/runner/sampling_report.py) on a fake results folder.

The folder has the runner's layout (spec.json, runs/<run_id>/{record,status,sample}.json, tables
rebuilt by the runner's own ``rebuild_table``), with accuracies built so every expected number is
known: accuracy = 0.6 + sampler effect + seed shift + fold noise, the fold noise shared by every
run of a seed (same seed, same probe folds) and of mean zero.
"""

import hashlib
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from eolab.reports import runs as report
from eolab.reports import sampling as sr
from eolab.runner.store import rebuild_table

matplotlib.use("Agg")

SAMPLERS = {"uniform": 0.0, "kcenter": 0.05, "stratified:source": -0.01}  # effect on accuracy
BUDGETS = (4, 8)
SEED_SHIFT = {0: 0.0, 1: 0.02}  # uniform's seed spread is 0.02 at every budget
FOLD_NOISE = {0: [-0.02, -0.01, 0.0, 0.01, 0.02], 1: [0.01, -0.02, 0.02, 0.0, -0.01]}  # mean 0 per seed
METRICS = {"uniform": 10.0, "kcenter": 20.0, "stratified:source": 15.0}  # sample_vendi_cos (+ seed)

TILES = pd.DataFrame({
    "scene": np.repeat([0, 1, 2], 4), "source": np.repeat(["major_tom", "hydro", "hydro"], 4),
    "row": np.tile([0, 0, 2, 2], 3), "col": np.tile([0, 2, 0, 2], 3),
    "lon": np.repeat([10.0, -60.0, 120.0], 4) + np.tile([0.0, 0.01, 0.0, 0.01], 3),
    "lat": np.repeat([45.0, -10.0, 30.0], 4) + np.tile([0.0, 0.0, -0.01, -0.01], 3),
})
TILES["id"] = [f"scene{s}@{r},{c}+2" for s, r, c in zip(TILES["scene"], TILES["row"], TILES["col"], strict=True)]
POOL_SHA1 = hashlib.sha1("\n".join(TILES["id"]).encode()).hexdigest()


def _run_id(sampler, budget, seed):
    return f"sampling={sampler.replace(':', '_')}-n_pretrain={budget}-seed={seed}-{'0' * 12}"


def _write_run(runs_dir, run_id, params, accuracy_of, metrics, ids, state="done"):
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"run_id": run_id, "state": state, "params": params,
                                                      "error": "boom" if state == "failed" else None}))
    if state != "done":
        return
    folds = [{"encoder": enc, "fold": k, "accuracy": accuracy_of(k) - (0.2 if enc == "random_init" else 0.0)}
             for enc in ("pretrained", "random_init") for k in range(5)]
    pretrained = [f["accuracy"] for f in folds if f["encoder"] == "pretrained"]
    record = {"run_id": run_id, "params": params, "seed": params["seed"], "git_commit": "abc", "wall_time_s": 1.0,
              "metrics": {"pretrained_acc_mean": float(np.mean(pretrained)), "pretrained_acc_std": float(np.std(pretrained)),
                          **metrics},
              "folds": folds, "data": {"sample": {"sampler": params["sampling"], "file": "sample.json"}}}
    (run_dir / "record.json").write_text(json.dumps(record))
    if ids is not None:
        (run_dir / "sample.json").write_text(json.dumps({"sampler": params["sampling"], "pool_sha1": POOL_SHA1,
                                                         "ids": ids}))


def make_results(root, stale=False):
    """The fake folder: 3 samplers x 2 budgets x 2 seeds, one failed run, optionally a stale run."""
    runs_dir = root / "runs"
    listed = []
    for sampler, effect in SAMPLERS.items():
        for budget in BUDGETS:
            for seed in (0, 1):
                run_id = _run_id(sampler, budget, seed)
                listed.append({"run_id": run_id})
                params = {"sampling": sampler, "n_pretrain": budget, "seed": seed, "sources": "fake",
                          "img_size": 2, "tile_stride": 2}
                metrics = {"sample_vendi_cos": METRICS[sampler] + seed, "sample_geo_js": 0.1 * seed,
                           "sample_n": budget, "sample_coverage_ref": 12}
                # kcenter draws from scene 0 only, the others from every scene; seed 1 of
                # stratified at budget 8 wrote no sample.json.
                ids = list(TILES["id"][:budget] if sampler == "kcenter" else TILES["id"].sample(budget, random_state=seed))
                if sampler == "stratified:source" and budget == 8 and seed == 1:
                    ids = None
                _write_run(runs_dir, run_id, params,
                           lambda k, e=effect, s=seed: 0.6 + e + SEED_SHIFT[s] + FOLD_NOISE[s][k], metrics, ids)
    failed = {"sampling": "kmeans", "n_pretrain": 4, "seed": 0}
    _write_run(runs_dir, _run_id("kmeans", 4, 0), failed, None, {}, None, state="failed")
    listed.append({"run_id": _run_id("kmeans", 4, 0)})
    if stale:  # a folder an earlier spec left behind: same cell as a listed run, different result
        params = {"sampling": "uniform", "n_pretrain": 4, "seed": 0, "sources": "fake", "img_size": 2, "tile_stride": 2}
        _write_run(runs_dir, "sampling=uniform-n_pretrain=4-seed=0-ffffffffffff", params, lambda k: 0.1, {}, None)
    spec = {"name": "sampling", "grid": {"sampling": [*SAMPLERS, "kmeans"], "n_pretrain": list(BUDGETS)},
            "seeds": [0, 1], "base": {}, "runs": listed}
    (root / "spec.json").write_text(json.dumps(spec))
    rebuild_table(root)
    return report.load_results(root)


@pytest.fixture
def results(tmp_path):
    return make_results(tmp_path)


def test_one_row_per_sampler_and_budget(results):
    table = sr.sampling_table(results)
    assert list(zip(table["sampler"], table["budget"], strict=True)) == [
        (s, b) for s in SAMPLERS for b in BUDGETS]  # spec order; the failed kmeans run adds no row
    assert (table["n_seeds"] == 2).all() and (table["n_folds"] == 10).all()
    for sampler, effect in SAMPLERS.items():
        rows = table[table["sampler"] == sampler]
        assert np.allclose(rows["acc_mean"], 0.6 + effect + 0.01)  # mean of the two seed shifts
        assert np.allclose(rows["sample_vendi_cos"], METRICS[sampler] + 0.5)  # mean over seeds
        assert np.allclose(rows["random_init_acc"], 0.4 + effect + 0.01)
    assert np.allclose(table["seed_spread"], 0.02)
    assert (table["ci_low"] <= table["acc_mean"]).all() and (table["acc_mean"] <= table["ci_high"]).all()
    assert (table["ci_high"] - table["ci_low"] > 0).all()
    assert "sample_n" not in table and "sample_coverage_ref" not in table  # bookkeeping, not metrics


def test_paired_differences_are_exact(results):
    diffs = sr.paired_differences(results)
    assert len(diffs) == 2 * len(BUDGETS) * 2 * 5  # two samplers x budgets x seeds x folds
    for sampler in ("kcenter", "stratified:source"):
        mine = diffs[diffs["sampler"] == sampler]
        assert np.allclose(mine["difference"], SAMPLERS[sampler])  # fold noise and seed shift cancel
        assert set(mine["versus"]) == {_run_id("uniform", b, s) for b in BUDGETS for s in (0, 1)}
    pooled = sr.versus_uniform(results)
    assert len(pooled) == 4 and "uniform" not in set(pooled["sampler"])
    assert (pooled["n_pairs"] == 10).all() and (pooled["n_seeds"] == 2).all() and pooled["same_sign"].all()
    assert np.allclose(pooled.set_index("sampler").loc["kcenter", "difference"], 0.05)
    assert np.allclose(pooled.set_index("sampler").loc["stratified:source", "difference"], -0.01)
    by_seed = sr.versus_uniform(results, by_seed=True)
    assert len(by_seed) == 8 and set(by_seed["seed"]) == {0, 1}
    assert (by_seed["versus"] == [_run_id("uniform", b, s) for b, s in zip(by_seed["budget"], by_seed["seed"],
                                                                          strict=True)]).all()


def test_exceeds_seed_noise_only_beyond_uniforms_seed_spread(results):
    pooled = sr.versus_uniform(results).set_index("sampler")
    assert np.allclose(pooled["reference_seed_spread"], 0.02)
    assert pooled.loc["kcenter", "exceeds_seed_noise"].all()  # |0.05| > 0.02
    assert not pooled.loc["stratified:source", "exceeds_seed_noise"].any()  # |-0.01| < 0.02
    assert np.allclose(pooled["sampler_seed_spread"], 0.02)  # every sampler moves with the seed alike here
    assert (pooled["exceeds_both_seed_spreads"] == pooled["exceeds_seed_noise"]).all()
    # Both intervals exclude 0: the folds alone would call the small difference real.
    assert pooled["interval_excludes_0"].all()


def test_seed_noise_flag_is_none_with_one_seed(tmp_path):
    results = make_results(tmp_path)
    results.table = results.table[results.table["seed"] == 0]
    out = sr.versus_uniform(results)
    assert out["reference_seed_spread"].isna().all() and out["exceeds_seed_noise"].isna().all()
    assert out["same_sign"].isna().all() and out["exceeds_both_seed_spreads"].isna().all()


def test_runs_of_an_earlier_spec_are_left_out(tmp_path, capsys):
    results = make_results(tmp_path, stale=True)
    assert "ffffffffffff" in " ".join(results.runs["run_id"])
    table = sr.sampling_table(results)
    assert np.allclose(table.set_index(["sampler", "budget"]).loc[("uniform", 4), "acc_mean"], 0.61)
    assert "earlier spec" in capsys.readouterr().out
    results.spec.pop("runs")  # no list of current runs: one run per (sampler, budget, seed) still
    scores = sr.fold_scores(results)
    assert scores.groupby(["sampler", "budget", "seed"])["run_id"].nunique().max() == 1
    assert "ffffffffffff" not in " ".join(scores["run_id"]) and "left out" in capsys.readouterr().out


def test_failed_runs_are_listed_not_tabulated(results):
    assert list(report.failed_runs(results)["run_id"]) == [_run_id("kmeans", 4, 0)]
    assert "kmeans" not in set(sr.run_metrics(results)["sampler"])


def test_sample_locations_from_a_given_tile_index(results, capsys):
    locations = sr.sample_locations(results, tiles=TILES)
    assert list(locations.columns[:10]) == ["run_id", "sampler", "budget", "seed", "id", "scene", "scene_id",
                                            "source", "lon", "lat"]
    assert "no sample.json" in capsys.readouterr().out  # the one run without it is named, not fatal
    assert locations["run_id"].nunique() == 11
    sizes = locations.groupby("run_id").size()
    assert (sizes == [int(r.split("n_pretrain=")[1].split("-")[0]) for r in sizes.index]).all()
    kcenter = locations[(locations["sampler"] == "kcenter") & (locations["budget"] == 4)]
    assert set(kcenter["scene"]) == {0} and set(kcenter["source"]) == {"major_tom"}
    merged = locations.merge(TILES, on="id", suffixes=("", "_pool"))
    assert len(merged) == len(locations) and np.allclose(merged["lon"], merged["lon_pool"])
    assert np.allclose(merged["lat"], merged["lat_pool"]) and (merged["scene_id"] == "scene" + merged["scene"].astype(str)).all()


def test_sample_locations_from_a_callable_per_run(results, capsys):
    seen = []

    def tiles_of(params):
        seen.append((params["sources"], params["img_size"], params["tile_stride"]))
        return TILES.iloc[:8]  # scene 2 missing: its ids count as unknown, and the pool hash differs

    locations = sr.sample_locations(results, tiles=tiles_of)
    assert seen == [("fake", 2, 2)]  # built once for the runs sharing a pool
    out = capsys.readouterr().out
    assert "ids not in the pool" in out and "pool_sha1" in out
    assert set(locations["scene"]) <= {0, 1}


def test_sample_locations_without_a_pool_give_a_message(results, capsys):
    def no_data(params):
        raise FileNotFoundError("data root /nowhere does not exist")

    assert sr.sample_locations(results, tiles=no_data).empty
    assert "pool not available" in capsys.readouterr().out


def test_scene_shares_and_plots(results):
    import matplotlib.pyplot as plt

    locations = sr.sample_locations(results, tiles=TILES)
    shares = sr.scene_shares(locations, TILES)
    assert np.allclose(shares.drop(columns=[("pool", "")]).sum(), 100)
    assert np.allclose(shares[("kcenter", 4)], [100, 0, 0]) and np.allclose(shares[("pool", "")], 100 / 3)
    assert list(shares.columns[:2]) == [("uniform", 4), ("uniform", 8)]
    figures = [sr.plot_sampler_accuracy(results), sr.plot_scene_shares(locations, TILES),
               sr.plot_world(locations, TILES), sr.plot_scene_zoom(locations, TILES),
               sr.plot_world(locations), sr.plot_scene_zoom(locations, budget=4, seed=1),
               sr.plot_accuracy_vs_representativeness(results)]
    assert all(fig is not None for fig in figures)
    plt.close("all")
    assert sr.plot_world(locations.iloc[:0]) is None and sr.plot_scene_shares(locations.iloc[:0]) is None


def test_empty_results_give_empty_frames(tmp_path):
    (tmp_path / "runs").mkdir()
    results = report.load_results(tmp_path)
    assert sr.sampling_table(results).empty and sr.versus_uniform(results).empty
    assert sr.sample_locations(results, tiles=TILES).empty
    assert sr.plot_accuracy_vs_representativeness(results) is None


def test_sample_file_name_matches_the_pretrain_notebook():
    """The file the pipeline writes is the one the report reads (one name, in eolab.run_folder)."""
    from eolab import pipeline

    values = [pipeline.SAMPLE_FILE]
    assert values == [sr.SAMPLE_NAME]


@pytest.mark.slow
def test_summary_notebook_runs_on_fake_results(tmp_path):
    from eolab.data.paths import REPO_ROOT
    from eolab.runner.notebook import execute_notebook

    make_results(tmp_path / "sampling")
    out = tmp_path / "summary.ipynb"
    execute_notebook(REPO_ROOT / "notebooks" / "sampling_summary.ipynb", out,
                     {"results_dir": str(tmp_path / "sampling"), "data_root": str(tmp_path / "no_data")})
    table = pd.read_csv(tmp_path / "sampling" / sr.SUMMARY_CSV)
    versus = pd.read_csv(tmp_path / "sampling" / sr.VERSUS_CSV)
    assert len(table) == 6 and len(versus) == 4


def test_benchmark_of_the_runs_encoders_by_sampler(results):
    assert sr.benchmark_by_sampler(results).empty  # not benchmarked: nothing to show
    runs = sr.run_metrics(results)
    rows = []
    for r in runs.itertuples():
        for split, value in (("random", 0.7 + 0.01 * r.seed), ("blocked", 0.6)):
            rows.append({"task": "eurosat", "encoder": r.run_id, "protocol": "linear", "split": split, "variant": "",
                         "metric": "accuracy", "value": value, "ci_low": value - 0.05, "ci_high": value + 0.05})
            rows.append({**rows[-1], "metric": "balanced_accuracy"})  # not the headline metric: left out
    path = results.results_dir / sr.BENCHMARK_TABLE
    path.parent.mkdir()
    pd.DataFrame(rows).to_csv(path, index=False)
    table = sr.benchmark_by_sampler(results)
    cells = runs.groupby(["sampler", "budget"]).ngroups
    assert len(table) == 2 * cells and set(table["metric"]) == {"accuracy"}
    random = table[table["split"] == "random"]
    assert np.allclose(random["value"], 0.705) and np.allclose(random["seed_spread"], 0.01)  # mean and spread of seeds 0, 1
