"""Scaling-law fits on synthetic runs whose true law is known (fast: no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eolab import scaling
from eolab.scaling import ChinchillaFit

TRUE = ChinchillaFit(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28, loss=0.0, n_points=0)
K = 300.0  # FLOPs per parameter per sample of the synthetic runs


def synthetic_runs(noise: float = 0.0, seed: int = 0, law: ChinchillaFit = TRUE) -> pd.DataFrame:
    """A 4 x 4 grid of runs, N in 1e5..5e6 and D in 2e3..5e4, loss from ``law`` times log-normal noise."""
    n, d = np.meshgrid(np.geomspace(1e5, 5e6, 4), np.geomspace(2e3, 5e4, 4), indexing="ij")
    n, d = n.ravel(), d.ravel()
    rng = np.random.default_rng(seed)
    loss = law.predict(n, d) * np.exp(rng.normal(0.0, noise, n.size))
    return pd.DataFrame({"run_id": [f"run{i}" for i in range(n.size)], "N": n, "D": d, "C": K * n * d,
                         "val_loss": loss, "probe_error": 0.1 + 30 * n ** -0.3 + 5 * d ** -0.2})


@pytest.fixture(scope="module")
def noisy() -> pd.DataFrame:
    return synthetic_runs(noise=0.002)


@pytest.fixture(scope="module")
def noisy_fit(noisy: pd.DataFrame) -> ChinchillaFit:
    return scaling.fit_chinchilla_frame(noisy, "val_loss")


def test_noiseless_fit_recovers_every_parameter() -> None:
    fit = scaling.fit_chinchilla_frame(synthetic_runs(), "val_loss")
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(TRUE, name), rel=1e-4), name
    assert fit.n_points == 16 and fit.n_converged > 0 and fit.at_bound == ""


def test_noisy_fit_recovers_exponents(noisy: pd.DataFrame, noisy_fit: ChinchillaFit) -> None:
    assert noisy_fit.alpha == pytest.approx(TRUE.alpha, abs=0.04)
    assert noisy_fit.beta == pytest.approx(TRUE.beta, abs=0.02)
    rel = np.abs(noisy_fit.predict(noisy["N"], noisy["D"]) / noisy["val_loss"] - 1)
    assert rel.max() < 0.01  # residuals at the noise level


def test_bootstrap_intervals_contain_truth(noisy: pd.DataFrame, noisy_fit: ChinchillaFit) -> None:
    fn = scaling.chinchilla_refit("val_loss", noisy_fit, k=K, budgets=[1e13], n_starts=0)
    draws = scaling.bootstrap(fn, noisy, n_boot=40, seed=1)
    assert len(draws) == 40
    point = scaling.derived_params(noisy_fit, K, [1e13])
    table = scaling.intervals(draws, 0.95, point=point)
    assert {"alpha", "beta", "E", "A", "B", "a", "b", "tokens_per_param@1e+13"} <= set(table.index)
    for name in ("alpha", "beta"):
        row = table.loc[name]
        assert row["lower"] <= getattr(TRUE, name) <= row["upper"], (name, row.to_dict())
        assert row["lower"] <= row["estimate"] <= row["upper"]
    assert (table["n"] > 35).all()
    again = scaling.bootstrap(fn, noisy, n_boot=40, seed=1)
    pd.testing.assert_frame_equal(draws, again)  # deterministic given the seed


def test_bootstrap_keeps_failed_draws_as_nan() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0]})

    def fails_sometimes(sample: pd.DataFrame) -> dict[str, float]:
        if sample["x"].nunique() < 2:
            raise ValueError("one value")
        return {"m": float(sample["x"].mean())}

    draws = scaling.bootstrap(fails_sometimes, df, n_boot=40, seed=0)
    assert len(draws) == 40 and draws["m"].isna().any()
    assert scaling.intervals(draws).loc["m", "n"] == draws["m"].notna().sum()


def test_frontier_is_the_iso_flop_minimum() -> None:
    budgets = np.array([1e12, 1e14, 1e16])
    table = scaling.frontier(TRUE, budgets, K)
    np.testing.assert_allclose(K * table["N_opt"] * table["D_opt"], budgets, rtol=1e-12)
    for row in table.itertuples():
        n = np.geomspace(row.N_opt / 100, row.N_opt * 100, 200_001)
        loss = TRUE.predict(n, row.C / (K * n))
        assert n[np.argmin(loss)] == pytest.approx(row.N_opt, rel=1e-3)
        assert row.loss_opt == pytest.approx(loss.min(), rel=1e-9)
    a, b = scaling.optimal_exponents(TRUE)
    assert a + b == pytest.approx(1.0)
    slope = np.polyfit(np.log(budgets), np.log(table["N_opt"]), 1)[0]
    assert slope == pytest.approx(a)
    ratio = scaling.tokens_per_parameter(TRUE, 1e14, K, tokens_per_sample=64)
    assert ratio == pytest.approx(64 * table["D_per_N"].iloc[1])


def test_frontier_with_a_fixed_cost_per_sample() -> None:
    flops = scaling.FlopsModel(k=K, c0=5e7, log_sd=0.0, n_runs=0, form="affine")
    budgets = np.array([1e12, 1e14, 1e16])
    table = scaling.frontier(TRUE, budgets, flops)
    np.testing.assert_allclose(table["D_opt"] * (flops.c0 + K * table["N_opt"]), budgets, rtol=1e-10)
    for row in table.itertuples():
        n = np.geomspace(row.N_opt / 100, row.N_opt * 100, 200_001)
        assert n[np.argmin(TRUE.predict(n, flops.samples(row.C, n)))] == pytest.approx(row.N_opt, rel=1e-3)
    # a negligible fixed cost gives the closed form back; a real one buys a larger model
    tiny = scaling.frontier(TRUE, budgets, scaling.FlopsModel(k=K, c0=1e-9, log_sd=0.0, n_runs=0))
    np.testing.assert_allclose(tiny["N_opt"], scaling.frontier(TRUE, budgets, K)["N_opt"], rtol=1e-9)
    assert (table["N_opt"] > tiny["N_opt"]).all()
    draws = pd.DataFrame([TRUE.params()] * 3)
    band = scaling.frontier_band(draws, budgets, flops)
    np.testing.assert_allclose(band["N_lower"], table["N_opt"], rtol=1e-9)


def test_estimate_flops_affine_recovers_the_fixed_cost() -> None:
    df = synthetic_runs()
    df["C"] = df["D"] * (4e7 + 120 * df["N"])
    flops = scaling.estimate_flops(df, "affine")
    assert flops.form == "affine" and flops.c0 == pytest.approx(4e7) and flops.k == pytest.approx(120)
    assert flops.log_sd == pytest.approx(0.0, abs=1e-9)
    assert scaling.estimate_flops(df, "proportional").log_sd > 0.3  # C is far from proportional to N D
    with pytest.raises(ValueError, match="flops model"):
        scaling.estimate_flops(df, "quadratic")


def test_estimate_k_is_the_geometric_mean() -> None:
    df = synthetic_runs()
    flops = scaling.estimate_k(df)
    assert flops.k == pytest.approx(K) and flops.log_sd == pytest.approx(0.0, abs=1e-12)
    df["C"] *= np.exp(np.linspace(-0.1, 0.1, len(df)))
    assert scaling.estimate_k(df).k == pytest.approx(K, rel=1e-9)  # symmetric log noise cancels


def test_holdout_validation_rows_and_noiseless_error() -> None:
    df = synthetic_runs()
    validation = scaling.holdout_validation(df, "val_loss", n_holdout=3, n_starts=16)
    largest = df.nlargest(3, "C")["run_id"]
    assert sorted(validation["run_id"]) == sorted(largest)
    assert validation.attrs["n_train"] == 13
    assert validation["relerr_chinchilla"].max() < 1e-4
    assert validation[["pred_powerlaw_D", "pred_powerlaw_N"]].notna().all().all()
    summary = scaling.holdout_summary(validation)
    assert list(summary.index) == list(scaling.HOLDOUT_METHODS)
    assert summary.loc["chinchilla", "n_predicted"] == 3
    fraction = scaling.holdout_validation(df, "val_loss", holdout="largest_N", n_holdout=0.25, n_starts=16)
    assert len(fraction) == 4 and (fraction["N"] == df["N"].max()).all()
    assert fraction["pred_powerlaw_D"].isna().all()  # no training run left at the largest N


def test_power_law_recovers_exponent() -> None:
    x = np.geomspace(1e3, 1e7, 8)
    with_offset = scaling.fit_power_law(x, 0.5 + 20 * x**-0.3)
    assert with_offset.alpha == pytest.approx(0.3, rel=1e-3) and with_offset.E == pytest.approx(0.5, rel=1e-3)
    pure = scaling.fit_power_law(x, 20 * x**-0.3, with_offset=False)
    assert pure.alpha == pytest.approx(0.3) and pure.A == pytest.approx(20) and pure.E == 0.0
    np.testing.assert_allclose(pure.predict(x), 20 * x**-0.3)


def test_compute_law_uses_the_envelope() -> None:
    df = synthetic_runs()
    front = scaling.pareto_front(df, "val_loss")
    assert front["val_loss"].is_monotonic_decreasing and front["C"].is_monotonic_increasing
    law = scaling.fit_compute_law(df, "val_loss")
    assert law.alpha > 0 and law.n_points == len(front)


def test_fit_works_on_a_downstream_metric_and_per_group() -> None:
    df = pd.concat([synthetic_runs().assign(objective="mae"),
                    synthetic_runs(law=ChinchillaFit(1.0, 300.0, 200.0, 0.5, 0.2, 0.0, 0)).assign(objective="simclr")])
    fits = scaling.fit_groups(df, "val_loss", by="objective", n_starts=16)
    assert fits["mae"].alpha == pytest.approx(0.34, rel=1e-3)
    assert fits["simclr"].alpha == pytest.approx(0.5, rel=1e-3)
    probe = scaling.fit_chinchilla_frame(df[df["objective"] == "mae"], "probe_error", n_starts=16)
    assert probe.alpha == pytest.approx(0.3, rel=1e-2) and probe.beta == pytest.approx(0.2, rel=1e-2)


@pytest.mark.parametrize("column", ["N", "D", "val_loss"])
def test_non_positive_values_name_the_column(column: str) -> None:
    df = synthetic_runs()
    df.loc[3, column] = 0.0 if column != "val_loss" else -1.0
    with pytest.raises(ValueError, match=f"`{column}`"):
        scaling.fit_chinchilla_frame(df, "val_loss")


def test_too_few_points_is_a_clear_error() -> None:
    df = synthetic_runs().head(5)
    with pytest.raises(ValueError, match="at least 6 runs with `N`, `D`, `val_loss`"):
        scaling.fit_chinchilla_frame(df, "val_loss")
    with pytest.raises(ValueError, match="at least 2 distinct values of both N and D"):
        scaling.fit_chinchilla_frame(synthetic_runs().assign(N=1e6), "val_loss")
    with pytest.raises(ValueError, match="at least 4 runs"):
        scaling.fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="column `probe_error` not found"):
        scaling.fit_chinchilla_frame(synthetic_runs().drop(columns="probe_error"), "probe_error")
    with pytest.raises(ValueError, match="n_holdout"):
        scaling.holdout_validation(synthetic_runs(), "val_loss", n_holdout=16)


def test_runs_table_from_results_folder(tmp_path) -> None:
    runs = pd.DataFrame({
        "run_id": ["r0", "r1", "r2"], "status": ["done", "done", "failed"], "objective": "mae",
        "model_size": ["vit_nano", "vit_micro", "vit_mini"], "batch_size": [64, 64, 64], "accumulate": [1.0, 2.0, 1.0],
        "train_steps": [100, 200, 0], "flops_per_step": [1e9, 2e9, 3e9], "train_flops": [1e11, 4e11, 0.0],
        "encoder_params": [1e5, 4e5, 9e5], "val_loss": [0.9, 0.7, np.nan]})
    folds = pd.DataFrame({"run_id": ["r0"] * 4 + ["r1"] * 4, "encoder": ["pretrained", "pretrained", "random_init",
                          "random_init"] * 2, "fold": [0, 1, 0, 1] * 2,
                          "accuracy": [0.6, 0.8, 0.1, 0.1, 0.9, 0.7, 0.1, 0.1]})
    runs.to_csv(tmp_path / "runs.csv", index=False)
    folds.merge(runs[["run_id", "model_size"]]).to_csv(tmp_path / "table.csv", index=False)
    table = scaling.runs_table(tmp_path, tokens_per_sample=64)
    assert list(table["run_id"]) == ["r0", "r1"]  # the failed run is dropped
    np.testing.assert_allclose(table["D"], [6400, 25600])  # steps x batch x accumulate
    np.testing.assert_allclose(table["tokens"], 64 * table["D"])
    np.testing.assert_allclose(table["C"], [1e11, 4e11])
    np.testing.assert_allclose(table["N"], [1e5, 4e5])
    np.testing.assert_allclose(table["probe_error"], [0.3, 0.2])
    np.testing.assert_allclose(table["val_loss"], [0.9, 0.7])
    per_fold = scaling.runs_table(folds.merge(runs.drop(columns="val_loss")), metrics=["probe_error"])
    np.testing.assert_allclose(per_fold["probe_error"], [0.3, 0.2])
    with pytest.raises(ValueError, match="`val_loss`"):
        scaling.runs_table(runs.drop(columns="val_loss"), metrics=["val_loss"])
    with pytest.raises(ValueError, match="`encoder_nonembedding`"):
        scaling.runs_table(runs, n_column="encoder_nonembedding")
    recorded = runs.assign(samples_seen=[6000.0, 25000.0, 0.0], encoder_params_nonembed=[9e4, 3.9e5, 8.9e5])
    table = scaling.runs_table(recorded, metrics=["val_loss"])
    np.testing.assert_allclose(table["D"], [6000, 25000])  # what the run recorded wins
    np.testing.assert_allclose(table["N"], [9e4, 3.9e5])  # non-embedding parameters preferred
    unique = scaling.runs_table(recorded.assign(n_pretrain=[224, 480, 1040]), metrics=["val_loss"], d_column="n_pretrain")
    np.testing.assert_allclose(unique["D"], [224, 480])


def test_analyse_plots_and_json() -> None:
    import json

    import matplotlib.pyplot as plt

    df = synthetic_runs(noise=0.002)
    analysis = scaling.analyse(df, "val_loss", group="mae", n_boot=12, tokens_per_sample=64, n_starts=8,
                               flops_model="affine")
    assert analysis.flops.k == pytest.approx(K)
    assert len(analysis.validation) == 3 and analysis.holdout_error == ""
    assert list(analysis.frontier["C"]) == analysis.budgets
    summary = json.loads(json.dumps(analysis.to_dict(), allow_nan=False))
    assert summary["fit"]["alpha"] == pytest.approx(analysis.fit.alpha)
    assert set(summary["intervals_95"]["alpha"]) == {"estimate", "lower", "median", "upper", "n"}
    assert len(summary["tokens_per_param"]) == len(analysis.budgets)
    figures = [scaling.plot_fit(analysis), scaling.plot_residuals(analysis), scaling.plot_holdout(analysis),
               scaling.plot_frontier(analysis), scaling.plot_compare([analysis, analysis])]
    assert all(fig is not None for fig in figures)
    plt.close("all")
    table = scaling.exponents_table([analysis])
    assert table.index.tolist() == [("mae", "val_loss")] and "alpha" in table.columns
    few = scaling.analyse(df.head(8), "val_loss", n_boot=2, n_holdout=3, n_starts=8)
    assert few.validation is None and "at least 6 runs with `N`, `D`, `val_loss`" in few.holdout_error
    assert "no held-out validation" in scaling.headline(few)
