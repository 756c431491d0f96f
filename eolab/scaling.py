"""Scaling-law fits for pre-training ablations: loss (or a downstream error) against model size N,
samples seen D and compute C.

The main fit is the parametric form of Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models" (arXiv:2203.15556, Approach 3)::

    L(N, D) = E + A / N**alpha + B / D**beta

estimated as they did: minimise the Huber loss (delta = 1e-3) between the predicted and measured
log loss, with the prediction written as a log-sum-exp of the three terms
(LSE(a - alpha log N, b - beta log D, e), A = exp(a), B = exp(b), E = exp(e)), by L-BFGS-B from a
grid of initialisations, keeping the best. Two known pitfalls of that recipe, from the replication
by Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (arXiv:2404.10102): the
original optimiser stopped before convergence because the summed Huber loss is tiny compared with
L-BFGS's default tolerances (here the objective is scaled by 1/delta and the tolerances are tight),
and the reported confidence intervals were implausibly narrow (here every interval comes from a
non-parametric bootstrap over runs, refitting each resample).

Everything works on a tidy frame with one row per run and columns ``N``, ``D``, ``C`` and one or
more metric columns (`runs_table` builds it from an ablation's results folder), so the same calls
fit masked and contrastive objectives alike (`fit_groups`). All randomness comes from a seed.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3
"""Huber threshold on log-loss residuals (Hoffmann et al. 2022, Approach 3)."""

CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
"""Initialisation grid of Hoffmann et al. 2022 (Approach 3), in log space for A, B and E."""

HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Approach 3 estimates as printed in Hoffmann et al. 2022 (language models, D in tokens, C ~ 6 N D).
Besiroglu et al. 2024 found them rounded and under-converged; use them as a reference point only."""

CHINCHILLA_TOKENS_PER_PARAMETER = 20.0
"""The compute-optimal ratio Chinchilla was trained at (70B parameters, 1.4T tokens)."""

_ORDER = ("a", "b", "e", "alpha", "beta")  # parameter vector layout of the Chinchilla objective
_BOUNDS = {"a": (-20.0, 60.0), "b": (-20.0, 60.0), "e": (-20.0, 5.0), "alpha": (0.0, 5.0), "beta": (0.0, 5.0)}
_OPTIONS = {"maxiter": 20_000, "maxfun": 40_000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20}
_EPS = 1e-12


# --------------------------------------------------------------------------------------------------
# Input table


def check_positive(df: pd.DataFrame, columns: Sequence[str], min_rows: int = 1) -> None:
    """Raise ValueError naming the column if it is missing, non-finite or not strictly positive,
    or if ``df`` has fewer than ``min_rows`` rows."""
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"column `{column}` not found (have: {', '.join(map(str, df.columns))})")
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise ValueError(f"column `{column}` must be finite and > 0: {int(bad.sum())} of {len(values)} "
                             f"values are not (first: {df[column].iloc[int(np.argmax(bad))]!r})")
    if len(df) < min_rows:
        raise ValueError(f"need at least {min_rows} runs with {', '.join(f'`{c}`' for c in columns)}, "
                         f"got {len(df)}")


N_COLUMNS = ("encoder_params_nonembed", "encoder_params")
"""Candidates for N, in order of preference, when `runs_table` is not told which column to use."""

KNOWN_METRICS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "val_loss": lambda runs: runs["val_loss"],
    "probe_error": lambda runs: 1.0 - runs["pretrained_acc_mean"],
}
"""Metrics `runs_table` knows how to derive (probe_error = 1 - mean linear-probe accuracy)."""


def runs_table(
    source: str | Path | pd.DataFrame,
    metrics: Sequence[str] | None = None,
    optional: Sequence[str] = (),
    n_column: str | None = None,
    d_column: str | None = None,
    tokens_per_sample: float = 1.0,
    keep: Sequence[str] = ("run_id", "objective", "model_size", "n_pretrain", "batch_size", "train_steps", "seed"),
) -> pd.DataFrame:
    """One row per finished run with ``N``, ``D``, ``C``, ``tokens`` and the metric columns.

    ``source`` is an ablation's results folder (its ``runs.csv``, one row per run with the scalar
    metrics; a per-fold ``table.csv`` fills in the probe accuracy if runs.csv lacks it), a CSV
    path, or a frame in either layout (per-fold rows are collapsed to one per run).

    - ``N`` = ``n_column`` (default: the first of `N_COLUMNS` present: the encoder's parameters
      without patch embedding and position tables, else all of them);
    - ``D`` = ``d_column`` if given (e.g. ``n_pretrain``, the number of distinct samples), else the
      ``samples_seen`` the run recorded, else ``train_steps * batch_size * accumulate``;
    - ``C`` = ``train_flops`` (counted FLOPs of forward + backward), else ``flops_per_step * train_steps``;
    - ``tokens`` = ``D * tokens_per_sample``.

    ``metrics``: column names, or `KNOWN_METRICS` keys (``probe_error``); default every known one
    that can be computed. ``optional``: more metrics, added only where available. Runs whose
    status is not ``done`` are dropped; NaN metric values are kept (drop them per metric).
    """
    runs = _load_runs(source)
    if "status" in runs.columns:
        runs = runs[runs["status"].astype(str) == "done"]
    n_column = n_column or next((c for c in N_COLUMNS if c in runs.columns), N_COLUMNS[-1])
    d_column = d_column or ("samples_seen" if "samples_seen" in runs.columns else None)
    needed = [n_column, d_column] if d_column else [n_column, "train_steps", "batch_size"]
    for column in needed:
        if column not in runs.columns:
            raise ValueError(f"column `{column}` not found in the run table")
    out = runs[[c for c in keep if c in runs.columns]].copy()
    out["N"] = runs[n_column].astype(float)
    if d_column:
        out["D"] = runs[d_column].astype(float)
    else:
        accumulate = runs["accumulate"].fillna(1.0) if "accumulate" in runs.columns else 1.0
        out["D"] = runs["train_steps"].astype(float) * runs["batch_size"].astype(float) * accumulate
    if "train_flops" in runs.columns:
        out["C"] = runs["train_flops"].astype(float)
    elif "flops_per_step" in runs.columns:
        out["C"] = runs["flops_per_step"].astype(float) * runs["train_steps"].astype(float)
    else:
        raise ValueError("column `train_flops` (or `flops_per_step`) not found in the run table")
    out["tokens"] = out["D"] * tokens_per_sample
    wanted = list(metrics) if metrics is not None else [m for m in KNOWN_METRICS if _can_compute(m, runs)]
    wanted += [m for m in optional if m not in wanted and (m in runs.columns or _can_compute(m, runs))]
    for metric in wanted:
        if metric in KNOWN_METRICS and metric not in runs.columns:
            if not _can_compute(metric, runs):
                raise ValueError(f"metric `{metric}` cannot be computed: its source column is missing")
            out[metric] = KNOWN_METRICS[metric](runs).astype(float)
        elif metric in runs.columns:
            out[metric] = runs[metric].astype(float)
        else:
            raise ValueError(f"metric column `{metric}` not found in the run table")
    return out.reset_index(drop=True)


def _can_compute(metric: str, runs: pd.DataFrame) -> bool:
    if metric not in KNOWN_METRICS:
        return False
    try:
        KNOWN_METRICS[metric](runs.head(1))
    except KeyError:
        return False
    return True


def _load_runs(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A per-run frame from a results folder, a CSV or a frame (per-fold rows collapsed)."""
    if isinstance(source, pd.DataFrame):
        return _per_run(source)
    path = Path(source)
    if path.is_file():
        return _per_run(pd.read_csv(path))
    if not path.is_dir():
        raise FileNotFoundError(f"no run table at {path}")
    runs_csv, table_csv = path / "runs.csv", path / "table.csv"
    if not runs_csv.is_file():
        if not table_csv.is_file():
            raise FileNotFoundError(f"neither runs.csv nor table.csv in {path}")
        return _per_run(pd.read_csv(table_csv))
    runs = pd.read_csv(runs_csv)
    if "pretrained_acc_mean" not in runs.columns and table_csv.is_file():
        accuracy = _per_run(pd.read_csv(table_csv))
        if "pretrained_acc_mean" in accuracy.columns:
            runs = runs.merge(accuracy[["run_id", "pretrained_acc_mean"]], on="run_id", how="left")
    return _per_run(runs)


def _per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse a per-(run, encoder, fold) table to one row per run; the pre-trained encoder's mean
    fold accuracy becomes ``pretrained_acc_mean`` unless the frame already has it."""
    if "run_id" not in frame.columns or not frame["run_id"].duplicated().any():
        return frame.copy()
    fold_columns = [c for c in ("encoder", "fold", "accuracy") if c in frame.columns]
    runs = frame.drop(columns=fold_columns).groupby("run_id", sort=False, as_index=False).first()
    if {"encoder", "accuracy"} <= set(frame.columns) and "pretrained_acc_mean" not in runs.columns:
        accuracy = frame[frame["encoder"] == "pretrained"].groupby("run_id")["accuracy"].mean()
        runs["pretrained_acc_mean"] = runs["run_id"].map(accuracy)
    return runs


# --------------------------------------------------------------------------------------------------
# Robust objective


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss: quadratic within ``delta`` of zero, linear beyond (continuous slope)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(r: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(r, -delta, delta)


def _lse_objective(terms: np.ndarray, log_l: np.ndarray, delta: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Huber(LSE(terms) - log L) summed over runs (axis 1), scaled by 1/delta; also the softmax
    weights of the terms (d LSE / d term) and dHuber/dr. Inlined log-sum-exp: this is the inner
    loop of every fit, and `scipy.special.logsumexp`'s checks cost more than the arithmetic."""
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    r = top + np.log(total) - log_l
    value = float(huber(r, delta).sum()) / delta
    return value, exp / total, _huber_grad(r, delta) / delta


def _optimise(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: np.ndarray,
    bounds: list[tuple[float, float]],
) -> tuple[np.ndarray, float, int]:
    """L-BFGS-B from each start; the best (lowest objective) parameters, value and #converged."""
    best_x, best_f, converged = starts[0], math.inf, 0
    with _one_blas_thread():
        for x0 in starts:
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=_OPTIONS)
            converged += bool(res.success)
            if np.isfinite(res.fun) and res.fun < best_f:
                best_x, best_f = res.x, float(res.fun)
    return best_x, best_f, converged


_blas_depth = 0


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the fits with one BLAS thread. L-BFGS-B makes many tiny BLAS calls, and with a threaded
    OpenBLAS their synchronisation costs 10-30x the arithmetic (worse on a busy machine). Nested
    uses are free: only the outermost one sets the limit."""
    global _blas_depth
    if _blas_depth:
        yield
        return
    _blas_depth += 1
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _blas_depth -= 1


def _grid(axes: Mapping[str, Sequence[float]], order: Sequence[str]) -> np.ndarray:
    return np.array(list(itertools.product(*(axes[k] for k in order))), dtype=float)


# --------------------------------------------------------------------------------------------------
# Chinchilla fit


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A / N**alpha + B / D**beta (Hoffmann et al. 2022, eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    loss: float  # summed Huber loss on log residuals at the optimum (not scaled)
    n_points: int
    n_starts: int = 0
    n_converged: int = 0
    at_bound: str = ""  # parameters (a, b, e, alpha, beta) the optimum pinned to a bound: not identified

    def predict(self, N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta

    @property
    def theta(self) -> np.ndarray:
        """Parameters in the optimiser's layout (a, b, e, alpha, beta), logs floored to stay finite."""
        return np.array([math.log(max(self.A, _EPS)), math.log(max(self.B, _EPS)),
                         math.log(max(self.E, _EPS)), self.alpha, self.beta])

    def params(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k != "at_bound"}


def _chinchilla_value_grad(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                           delta: float) -> tuple[float, np.ndarray]:
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    value, w, g = _lse_objective(terms, log_l, delta)
    gw = g * w
    grad = np.array([gw[0].sum(), gw[1].sum(), gw[2].sum(), -(gw[0] * log_n).sum(), -(gw[1] * log_d).sum()])
    return value, grad


def _chinchilla_grid_values(grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                            delta: float) -> np.ndarray:
    """The objective at every grid point at once (rows of ``grid`` in `_ORDER` layout)."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(grid), len(log_n)))])
    r = logsumexp(terms, axis=0) - log_l
    return huber(r, delta).sum(axis=1) / delta


def _prepare(N: np.ndarray, D: np.ndarray, L: np.ndarray, min_points: int) -> tuple[np.ndarray, ...]:
    frame = pd.DataFrame({"N": np.ravel(N), "D": np.ravel(D), "L": np.ravel(L)})
    check_positive(frame, ["N", "D", "L"], min_rows=min_points)
    if frame["N"].nunique() < 2 or frame["D"].nunique() < 2:
        raise ValueError(f"need at least 2 distinct values of both N and D, got {frame['N'].nunique()} "
                         f"and {frame['D'].nunique()}")
    return tuple(np.log(frame[c].to_numpy(dtype=float)) for c in ("N", "D", "L"))


def fit_chinchilla(
    N: Sequence[float] | np.ndarray,
    D: Sequence[float] | np.ndarray,
    L: Sequence[float] | np.ndarray,
    delta: float = HUBER_DELTA,
    grid: Mapping[str, Sequence[float]] | None = None,
    n_starts: int | None = 64,
    extra_starts: Sequence[np.ndarray] = (),
) -> ChinchillaFit:
    """Fit L = E + A/N**alpha + B/D**beta by Huber regression on log L (Hoffmann et al. 2022, App. D.2).

    The objective is evaluated at every point of the initialisation grid (default
    `CHINCHILLA_GRID`, 4500 points) and L-BFGS-B is run from the ``n_starts`` best of them (all
    of them when None, as in the paper) plus ``extra_starts`` (vectors a, b, e, alpha, beta);
    the lowest optimum wins. Needs at least 6 runs (5 parameters) spanning 2 values of N and D.
    """
    log_n, log_d, log_l = _prepare(np.asarray(N), np.asarray(D), np.asarray(L), min_points=6)
    starts = _grid(grid or CHINCHILLA_GRID, _ORDER)
    if n_starts is not None and n_starts < len(starts):
        values = _chinchilla_grid_values(starts, log_n, log_d, log_l, delta)
        starts = starts[np.argsort(values, kind="stable")[:n_starts]]
    if len(extra_starts):
        starts = np.vstack([np.asarray(extra_starts, dtype=float).reshape(-1, 5), starts])
    if not len(starts):
        raise ValueError("no initialisation: give n_starts > 0 or extra_starts")
    bounds = [_BOUNDS[k] for k in _ORDER]
    starts = np.clip(starts, [lo for lo, _ in bounds], [hi for _, hi in bounds])

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        return _chinchilla_value_grad(theta, log_n, log_d, log_l, delta)

    theta, value, converged = _optimise(fun, starts, bounds)
    a, b, e, alpha, beta = (float(v) for v in theta)
    pinned = [k for k, v, (lo, hi) in zip(_ORDER, theta, bounds, strict=True) if min(v - lo, hi - v) < 1e-6]
    return ChinchillaFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta,
                         loss=value * delta, n_points=len(log_l), n_starts=len(starts), n_converged=converged,
                         at_bound=",".join(pinned))


def fit_chinchilla_frame(df: pd.DataFrame, metric: str, **kwargs: object) -> ChinchillaFit:
    """`fit_chinchilla` on a `runs_table` frame (columns N, D and ``metric``)."""
    check_positive(df, ["N", "D", metric], min_rows=6)
    return fit_chinchilla(df["N"], df["D"], df[metric], **kwargs)  # type: ignore[arg-type]


def fit_groups(df: pd.DataFrame, metric: str, by: str, **kwargs: object) -> dict[str, ChinchillaFit]:
    """One Chinchilla fit per value of ``by`` (e.g. ``objective``: masked versus contrastive)."""
    if by not in df.columns:
        raise ValueError(f"column `{by}` not found")
    return {str(key): fit_chinchilla_frame(group, metric, **kwargs) for key, group in df.groupby(by, sort=True)}


# --------------------------------------------------------------------------------------------------
# Per-axis power laws


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = E + A * x**-alpha (E = 0 for a pure power law)."""

    E: float
    A: float
    alpha: float
    loss: float  # Huber loss (with offset) or sum of squared log residuals (pure)
    n_points: int
    with_offset: bool

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=float) ** -self.alpha

    def params(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


POWER_LAW_GRID: dict[str, tuple[float, ...]] = {
    "a": CHINCHILLA_GRID["a"], "e": CHINCHILLA_GRID["e"], "alpha": CHINCHILLA_GRID["alpha"]}


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    L: Sequence[float] | np.ndarray,
    with_offset: bool = True,
    delta: float = HUBER_DELTA,
    n_starts: int | None = 16,
) -> PowerLawFit:
    """Per-axis power law in ``x`` (N, D or C).

    With offset: L = E + A x**-alpha by Huber regression of LSE(a - alpha log x, e) on log L from a
    grid of initialisations (as `fit_chinchilla`; needs 4 points). Without: log L = log A - alpha
    log x by ordinary least squares (needs 2 points with distinct x).
    """
    frame = pd.DataFrame({"x": np.ravel(x), "L": np.ravel(L)})
    check_positive(frame, ["x", "L"], min_rows=4 if with_offset else 2)
    if frame["x"].nunique() < 2:
        raise ValueError("need at least 2 distinct values of `x`")
    log_x, log_l = np.log(frame["x"].to_numpy(float)), np.log(frame["L"].to_numpy(float))
    if not with_offset:
        slope, intercept = np.polyfit(log_x, log_l, 1)
        resid = log_l - (intercept + slope * log_x)
        return PowerLawFit(E=0.0, A=math.exp(intercept), alpha=-float(slope), loss=float(resid @ resid),
                           n_points=len(log_l), with_offset=False)
    order = ("a", "e", "alpha")

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, e, alpha = theta
        terms = np.stack([a - alpha * log_x, np.full_like(log_x, e)])
        value, w, g = _lse_objective(terms, log_l, delta)
        gw = g * w
        return value, np.array([gw[0].sum(), gw[1].sum(), -(gw[0] * log_x).sum()])

    starts = _grid(POWER_LAW_GRID, order)
    if n_starts is not None and n_starts < len(starts):
        a, e, alpha = (starts[:, i : i + 1] for i in range(3))
        terms = np.stack([a - alpha * log_x, np.broadcast_to(e, (len(starts), len(log_x)))])
        values = huber(logsumexp(terms, axis=0) - log_l, delta).sum(axis=1)
        starts = starts[np.argsort(values, kind="stable")[:n_starts]]
    theta, value, _ = _optimise(fun, starts, [_BOUNDS[k] for k in order])
    a, e, alpha = (float(v) for v in theta)
    return PowerLawFit(E=math.exp(e), A=math.exp(a), alpha=alpha, loss=value * delta, n_points=len(log_l),
                       with_offset=True)


def pareto_front(df: pd.DataFrame, metric: str, x: str = "C") -> pd.DataFrame:
    """The runs that no cheaper run beats: the lower envelope of ``metric`` against ``x``."""
    ordered = df.sort_values([x, metric])
    best = ordered[metric].cummin()
    return ordered[ordered[metric] <= best].drop_duplicates(subset=[metric, x]).reset_index(drop=True)


def fit_compute_law(df: pd.DataFrame, metric: str) -> PowerLawFit:
    """L(C) = E + A C**-gamma over the compute-efficient envelope (`pareto_front`); a pure power
    law when the envelope has fewer than 4 runs."""
    front = pareto_front(df, metric)
    return fit_power_law(front["C"], front[metric], with_offset=len(front) >= 4)


# --------------------------------------------------------------------------------------------------
# Compute-optimal frontier


@dataclass(frozen=True)
class FlopsModel:
    """Training FLOPs as a function of N and D: C = D (c0 + k N).

    ``proportional`` (c0 = 0): C = k N D, as in Hoffmann et al. (k ~ 6 per token for a dense
    transformer LM). ``affine``: each sample also costs c0 FLOPs that do not grow with N, e.g. a
    decoder or projection head of fixed size and the patch embedding, which dominate small models.
    """

    k: float
    log_sd: float  # spread of log(measured C / modelled C) across runs: 0 when the model is exact
    n_runs: int
    c0: float = 0.0
    form: str = "proportional"

    def flops(self, N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray:
        return np.asarray(D, dtype=float) * (self.c0 + self.k * np.asarray(N, dtype=float))

    def samples(self, C: np.ndarray | float, N: np.ndarray | float) -> np.ndarray:
        """D that a budget C buys at model size N."""
        return np.asarray(C, dtype=float) / (self.c0 + self.k * np.asarray(N, dtype=float))


FLOPS_FORMS = ("proportional", "affine")


def estimate_k(df: pd.DataFrame) -> FlopsModel:
    """k by least squares on log C - log N - log D, i.e. the geometric mean of C / (N D).

    For a ViT with a masked encoder, k is not 6: a sample holds many tokens, the encoder sees only
    the visible ones, and the decoder's FLOPs (not counted in an encoder N) are included in C.
    """
    check_positive(df, ["N", "D", "C"], min_rows=1)
    log_k = np.log(df["C"].to_numpy(float)) - np.log(df["N"].to_numpy(float)) - np.log(df["D"].to_numpy(float))
    return FlopsModel(k=float(np.exp(log_k.mean())), log_sd=float(log_k.std(ddof=1)) if len(log_k) > 1 else 0.0,
                      n_runs=len(log_k))


def estimate_flops(df: pd.DataFrame, form: str = "proportional") -> FlopsModel:
    """`estimate_k` (``proportional``), or C / D = c0 + k N by least squares on relative errors
    (``affine``; falls back to proportional if that gives c0 < 0, or with one model size)."""
    if form not in FLOPS_FORMS:
        raise ValueError(f"flops model must be one of {', '.join(FLOPS_FORMS)}, got {form!r}")
    proportional = estimate_k(df)
    if form == "proportional" or df["N"].nunique() < 2:
        return proportional
    per_sample = df["C"].to_numpy(float) / df["D"].to_numpy(float)
    n = df["N"].to_numpy(float)
    design = np.column_stack([1 / per_sample, n / per_sample])
    (c0, k), *_ = np.linalg.lstsq(design, np.ones_like(n), rcond=None)
    if c0 < 0 or k <= 0:
        return proportional
    model = FlopsModel(k=float(k), c0=float(c0), log_sd=0.0, n_runs=len(n), form="affine")
    resid = np.log(df["C"].to_numpy(float)) - np.log(model.flops(n, df["D"].to_numpy(float)))
    return FlopsModel(k=float(k), c0=float(c0), log_sd=float(resid.std(ddof=1)) if len(n) > 1 else 0.0,
                      n_runs=len(n), form="affine")


def _as_flops(k: float | FlopsModel) -> FlopsModel:
    return k if isinstance(k, FlopsModel) else FlopsModel(k=float(k), log_sd=math.nan, n_runs=0)


def describe_flops(flops: FlopsModel) -> str:
    """The FLOPs model in words, e.g. for a figure title."""
    text = f"C = k N D, k = {flops.k:.3g} FLOPs per parameter per sample"
    if flops.c0:
        text = f"C = D (c0 + k N), c0 = {flops.c0:.3g} FLOPs per sample, k = {flops.k:.3g} per parameter per sample"
    return f"{text} (log spread {flops.log_sd:.2f})" if math.isfinite(flops.log_sd) else text


def optimal_exponents(fit: ChinchillaFit) -> tuple[float, float]:
    """(a, b) with N_opt ∝ C**a and D_opt ∝ C**b: a = beta/(alpha+beta), b = alpha/(alpha+beta)
    (exact for C = k N D; the large-C limit when each sample has a fixed cost too)."""
    total = fit.alpha + fit.beta
    if total <= 0:
        return math.nan, math.nan
    return fit.beta / total, fit.alpha / total


def _optimal_n(A: np.ndarray, B: np.ndarray, alpha: np.ndarray, beta: np.ndarray, C: np.ndarray,
               flops: FlopsModel) -> np.ndarray:
    """argmin over N of E + A N**-alpha + B D**-beta on C = D (c0 + k N); arrays broadcast.

    Closed form when c0 = 0 (Hoffmann et al. 2022, eq. 4): N_opt = G (C/k)**(beta/(alpha+beta)),
    G = (alpha A / (beta B))**(1/(alpha+beta)). Otherwise the loss is convex in u = log N, so
    bisection on the sign of dL/du (computed in log space) finds the minimum.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if flops.c0 == 0:
            G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
            return G * (C / flops.k) ** (beta / (alpha + beta))
        log_c0, log_k, log_c = math.log(flops.c0), math.log(flops.k), np.log(C)
        lo = np.full(np.broadcast(A, B, alpha, beta, C).shape, -10.0)
        hi = np.maximum(log_c - log_k, 0.0) + 10.0 + lo * 0
        for _ in range(80):
            u = (lo + hi) / 2
            # dL/du = -alpha A e^{-alpha u} + beta B k e^u (c0 + k e^u)^(beta-1) C^-beta
            falling = np.log(alpha * A) - alpha * u
            rising = (np.log(beta * B) + log_k + u + (beta - 1) * np.logaddexp(log_c0, log_k + u) - beta * log_c)
            up = rising > falling
            hi, lo = np.where(up, u, hi), np.where(up, lo, u)
        return np.exp((lo + hi) / 2)


def frontier(fit: ChinchillaFit, C: Sequence[float] | np.ndarray | float, k: float | FlopsModel) -> pd.DataFrame:
    """Compute-optimal N*(C), D*(C) of ``fit`` (Hoffmann et al. 2022, eq. 4).

    ``k``: FLOPs per parameter per sample (C = k N D), or a `FlopsModel` (C = D (c0 + k N)). With
    C = k N D, minimising E + A N**-alpha + B D**-beta on N D = S = C/k gives
    N_opt = G S**(beta/(alpha+beta)), D_opt = S / N_opt, G = (alpha A / (beta B))**(1/(alpha+beta)).
    """
    flops = _as_flops(k)
    C = np.atleast_1d(np.asarray(C, dtype=float))
    N_opt = _optimal_n(*(np.float64(v) for v in (fit.A, fit.B, fit.alpha, fit.beta)), C, flops)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        D_opt = flops.samples(C, N_opt)
        loss = fit.predict(N_opt, D_opt)
    return pd.DataFrame({"C": C, "N_opt": N_opt, "D_opt": D_opt, "D_per_N": D_opt / N_opt, "loss_opt": loss})


def tokens_per_parameter(fit: ChinchillaFit, C: float | np.ndarray, k: float | FlopsModel,
                         tokens_per_sample: float = 1.0) -> np.ndarray | float:
    """Compute-optimal D_opt * tokens_per_sample / N_opt at budget(s) C (Chinchilla: ~20)."""
    ratio = frontier(fit, C, k)["D_per_N"].to_numpy() * tokens_per_sample
    return float(ratio[0]) if np.ndim(C) == 0 else ratio


def derived_params(fit: ChinchillaFit, k: float | FlopsModel | None = None, budgets: Sequence[float] = (),
                   tokens_per_sample: float = 1.0) -> dict[str, float]:
    """Fitted parameters plus a, b and, given k, N_opt and tokens per parameter at each budget."""
    a, b = optimal_exponents(fit)
    out = {"E": fit.E, "A": fit.A, "B": fit.B, "alpha": fit.alpha, "beta": fit.beta, "a": a, "b": b}
    if k is not None and len(budgets):
        table = frontier(fit, budgets, k)
        for row in table.itertuples():
            out[f"N_opt@{row.C:.3g}"] = float(row.N_opt)
            out[f"tokens_per_param@{row.C:.3g}"] = float(row.D_per_N * tokens_per_sample)
    return out


# --------------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap(fit_fn: Callable[[pd.DataFrame], Mapping[str, float]], df: pd.DataFrame, n_boot: int = 300,
              seed: int = 0) -> pd.DataFrame:
    """Refit ``fit_fn`` on ``n_boot`` resamples of the runs (rows, with replacement).

    One row per draw; a resample the fit rejects (ValueError, e.g. a single value of N left)
    gives a row of NaN, so ``n_boot`` rows always come back and `intervals` reports how many counted.
    """
    rng = np.random.default_rng(seed)
    rows: list[Mapping[str, float]] = []
    with _one_blas_thread():
        for _ in range(n_boot):
            sample = df.iloc[rng.integers(0, len(df), size=len(df))]
            try:
                rows.append(dict(fit_fn(sample)))
            except ValueError:
                rows.append({})
    return pd.DataFrame(rows, index=pd.RangeIndex(n_boot, name="draw"))


def chinchilla_refit(metric: str, start: ChinchillaFit | None = None, k: float | FlopsModel | None = None,
                     budgets: Sequence[float] = (), tokens_per_sample: float = 1.0, n_starts: int = 2
                     ) -> Callable[[pd.DataFrame], dict[str, float]]:
    """A fast ``fit_fn`` for `bootstrap`: Chinchilla fit from ``start``'s optimum plus the
    ``n_starts`` best grid points of each resample (deterministic), returning `derived_params`.

    A resample's optimum lies near the full fit's, so one start there does most of the work; the
    grid starts guard against a resample whose optimum moved to another basin (e.g. E -> 0)."""
    extra = [start.theta] if start is not None else []

    def fit_fn(sample: pd.DataFrame) -> dict[str, float]:
        fit = fit_chinchilla(sample["N"], sample["D"], sample[metric], n_starts=n_starts, extra_starts=extra)
        return derived_params(fit, k, budgets, tokens_per_sample)

    return fit_fn


def intervals(draws: pd.DataFrame, level: float = 0.95, point: Mapping[str, float] | None = None
              ) -> pd.DataFrame:
    """Percentile intervals of every column of ``draws``: lower, median, upper, and the number of
    draws that counted (finite); with ``point`` (the fit on all runs) an ``estimate`` column first."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    rows = {}
    for column in draws.columns:
        values = pd.to_numeric(draws[column], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values)]
        lo, med, hi = np.quantile(values, [tail, 0.5, 1 - tail]) if len(values) else (math.nan,) * 3
        row = {"estimate": point.get(column, math.nan)} if point is not None else {}
        rows[column] = {**row, "lower": lo, "median": med, "upper": hi, "n": len(values)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("param")


# --------------------------------------------------------------------------------------------------
# Held-out validation


def split_holdout(df: pd.DataFrame, holdout: str = "largest_compute", n_holdout: float = 3
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out): the ``n_holdout`` runs (or that fraction of runs) largest in C, N or D
    (``holdout`` = largest_compute | largest_N | largest_D); ties broken by the other columns."""
    keys = {"largest_compute": ["C", "N", "D"], "largest_N": ["N", "D", "C"], "largest_D": ["D", "N", "C"]}
    if holdout not in keys:
        raise ValueError(f"holdout must be one of {', '.join(keys)}, got {holdout!r}")
    count = int(n_holdout) if float(n_holdout) >= 1 else math.ceil(float(n_holdout) * len(df))
    if not 1 <= count < len(df):
        raise ValueError(f"n_holdout={n_holdout} leaves no runs to hold out or none to fit on ({len(df)} runs)")
    order = df.sort_values(keys[holdout], ascending=False, kind="stable").index
    return df.drop(index=order[:count]), df.loc[order[:count]]


def _axis_prediction(train: pd.DataFrame, metric: str, fixed: str, value: float, axis: str, x: float) -> float:
    """Power law in ``axis`` fitted on the training runs sharing ``fixed`` = value, at ``axis`` = x:
    with offset from 4 runs, pure from 2, NaN below."""
    same = train[np.isclose(train[fixed].to_numpy(float), value, rtol=1e-6)]
    if same[axis].nunique() < 2:
        return math.nan
    fit = fit_power_law(same[axis], same[metric], with_offset=len(same) >= 4 and same[axis].nunique() >= 4)
    return float(fit.predict(x))


def holdout_validation(df: pd.DataFrame, metric: str, holdout: str = "largest_compute",
                       n_holdout: float = 3, **fit_kwargs: object) -> pd.DataFrame:
    """Fit on all but the held-out runs (`split_holdout`) and predict each held-out run.

    Methods, one ``pred_*`` and ``relerr_*`` (= |pred - measured| / measured) column each:

    - ``chinchilla``: the joint fit L(N, D) on the training runs;
    - ``powerlaw_D``: a power law in D fitted on the training runs with the held-out run's N;
    - ``powerlaw_N``: a power law in N fitted on the training runs with the held-out run's D;
    - ``powerlaw_mean``: the mean of the two per-axis predictions that exist.

    Per-axis laws are L = E + A x**-a from 4 runs on that axis, pure L = A x**-a from 2, and NaN
    (no prediction) with fewer. ``fit_kwargs`` go to `fit_chinchilla`.
    """
    check_positive(df, ["N", "D", "C", metric])
    train, test = split_holdout(df, holdout, n_holdout)
    fit = fit_chinchilla_frame(train, metric, **fit_kwargs)
    keep = [c for c in ("run_id", "objective", "model_size") if c in test.columns]
    out = test[[*keep, "N", "D", "C"]].copy()
    out["measured"] = test[metric].astype(float)
    out["pred_chinchilla"] = fit.predict(test["N"], test["D"])
    out["pred_powerlaw_D"] = [_axis_prediction(train, metric, "N", n, "D", d) for n, d in zip(test["N"], test["D"])]
    out["pred_powerlaw_N"] = [_axis_prediction(train, metric, "D", d, "N", n) for n, d in zip(test["N"], test["D"])]
    out["pred_powerlaw_mean"] = out[["pred_powerlaw_D", "pred_powerlaw_N"]].mean(axis=1, skipna=True)
    for method in HOLDOUT_METHODS:
        out[f"relerr_{method}"] = (out[f"pred_{method}"] - out["measured"]).abs() / out["measured"]
    out.attrs["fit"] = fit
    out.attrs["n_train"] = len(train)
    return out.reset_index(drop=True)


HOLDOUT_METHODS = ("chinchilla", "powerlaw_D", "powerlaw_N", "powerlaw_mean")


def holdout_summary(validation: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and max relative error over the held-out runs, and how many it predicted."""
    rows = {}
    for method in HOLDOUT_METHODS:
        err = validation[f"relerr_{method}"].dropna()
        rows[method] = {"mean_rel_error": err.mean() if len(err) else math.nan,
                        "max_rel_error": err.max() if len(err) else math.nan,
                        "n_predicted": len(err), "n_heldout": len(validation)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


# --------------------------------------------------------------------------------------------------
# One metric, end to end (what the notebook shows and writes)


def default_budgets(df: pd.DataFrame) -> list[float]:
    """Compute budgets to report the frontier at: the runs' smallest, largest, and 10x and 100x
    the largest (the last two are extrapolations)."""
    check_positive(df, ["C"])
    lo, hi = float(df["C"].min()), float(df["C"].max())
    return [float(f"{c:.3g}") for c in (lo, hi, 10 * hi, 100 * hi)]


@dataclass
class ScalingAnalysis:
    """Everything fitted for one metric (and one group of runs): the joint fit, its bootstrap
    intervals, the frontier, the compute-only law and the held-out validation."""

    metric: str
    group: str
    runs: pd.DataFrame
    fit: ChinchillaFit
    flops: FlopsModel
    budgets: list[float]
    tokens_per_sample: float
    draws: pd.DataFrame
    intervals: pd.DataFrame
    frontier: pd.DataFrame
    compute_law: PowerLawFit | None
    validation: pd.DataFrame | None
    holdout_summary: pd.DataFrame | None
    holdout_error: str = ""  # why there is no validation, if there is none

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (NaN becomes None)."""
        out = {
            "metric": self.metric, "group": self.group, "n_runs": len(self.runs),
            "fit": self.fit.params(), "fit_at_bound": self.fit.at_bound, "flops": asdict(self.flops),
            "tokens_per_sample": self.tokens_per_sample, "budgets": self.budgets,
            "intervals_95": self.intervals.to_dict(orient="index"),
            "frontier": self.frontier.to_dict(orient="records"),
            "tokens_per_param": dict(zip(map(str, self.frontier["C"]),
                                         self.frontier["D_per_N"] * self.tokens_per_sample, strict=True)),
            "compute_law": self.compute_law.params() if self.compute_law else None,
            "holdout": None if self.validation is None else self.validation.to_dict(orient="records"),
            "holdout_summary": None if self.holdout_summary is None else self.holdout_summary.to_dict(orient="index"),
            "holdout_error": self.holdout_error,
        }
        return _jsonable(out)


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def analyse(df: pd.DataFrame, metric: str, group: str = "all", n_boot: int = 300, seed: int = 0,
            n_holdout: float = 3, holdout: str = "largest_compute", tokens_per_sample: float = 1.0,
            budgets: Sequence[float] | None = None, level: float = 0.95, n_starts: int | None = 64,
            flops_model: str = "proportional") -> ScalingAnalysis:
    """Fit ``metric`` of the runs in ``df`` (a `runs_table` frame) and validate the fit.

    The joint fit uses every run; intervals come from ``n_boot`` bootstrap refits; the held-out
    validation refits without the ``n_holdout`` largest runs (`holdout_validation`) and is skipped,
    with the reason in ``holdout_error``, when too few runs remain. ``n_starts``: grid
    initialisations of the two full fits (`fit_chinchilla`). ``flops_model``: how C depends on N
    and D for the frontier (`estimate_flops`).
    """
    check_positive(df, ["N", "D", "C", metric], min_rows=6)
    runs = df.reset_index(drop=True)
    flops = estimate_flops(runs, flops_model)
    budgets = list(budgets) if budgets is not None else default_budgets(runs)
    fit = fit_chinchilla_frame(runs, metric, n_starts=n_starts)
    point = derived_params(fit, flops, budgets, tokens_per_sample)
    draws = bootstrap(chinchilla_refit(metric, fit, flops, budgets, tokens_per_sample), runs, n_boot, seed)
    try:
        compute_law: PowerLawFit | None = fit_compute_law(runs, metric)
    except ValueError:
        compute_law = None
    validation = summary = None
    error = ""
    try:
        validation = holdout_validation(runs, metric, holdout, n_holdout, n_starts=n_starts)
        summary = holdout_summary(validation)
    except ValueError as exc:
        error = str(exc)
    return ScalingAnalysis(metric=metric, group=group, runs=runs, fit=fit, flops=flops, budgets=budgets,
                           tokens_per_sample=tokens_per_sample, draws=draws,
                           intervals=intervals(draws, level, point=point), frontier=frontier(fit, budgets, flops),
                           compute_law=compute_law, validation=validation, holdout_summary=summary,
                           holdout_error=error)


def headline(analysis: ScalingAnalysis, goal: float = 0.05) -> str:
    """Markdown: exponents with intervals, held-out errors against ``goal``, and the compute-optimal
    tokens per parameter at the budget closest to the largest run's compute."""
    table = analysis.intervals

    def ci(param: str) -> str:
        row = table.loc[param]
        return f"{row['estimate']:.3g} [{row['lower']:.3g}, {row['upper']:.3g}]"

    lines = [f"**{analysis.group}, `{analysis.metric}`** ({len(analysis.runs)} runs)", "",
             (f"- alpha = {ci('alpha')}, beta = {ci('beta')} (bootstrap intervals); "
              f"N_opt ∝ C^{ci('a')}, D_opt ∝ C^{ci('b')}")]
    if analysis.holdout_summary is not None and analysis.validation is not None:
        summary = analysis.holdout_summary
        mean, worst = summary.loc["chinchilla", ["mean_rel_error", "max_rel_error"]]
        verdict = "within" if worst <= goal else "NOT within"
        per_axis = ", ".join(f"{m} {100 * summary.loc[m, 'mean_rel_error']:.1f}%" for m in HOLDOUT_METHODS[1:]
                             if summary.loc[m, "n_predicted"])
        lines.append(f"- {len(analysis.validation)} largest-compute runs held out: joint fit mean error "
                     f"{100 * mean:.1f}%, max {100 * worst:.1f}% ({verdict} the {100 * goal:.0f}% goal); "
                     f"per-axis power laws: {per_axis or 'no prediction possible'}")
    else:
        lines.append(f"- no held-out validation: {analysis.holdout_error}")
    pinned = analysis.fit.at_bound.split(",") if analysis.fit.at_bound else []
    if "e" in pinned:
        lines.append("- E went to its lower bound (~0): the runs show no loss floor")
    names = {"a": "A", "b": "B", "alpha": "alpha", "beta": "beta"}
    if others := [names[p] for p in pinned if p in names]:
        lines.append(f"- **warning**: {', '.join(others)} sits on its bound: the runs do not pin it down, "
                     f"and the frontier built on it is not to be trusted")
    c_max = float(analysis.runs["C"].max())
    budget = min(analysis.budgets, key=lambda c: abs(math.log(c / c_max)), default=None)
    key = f"tokens_per_param@{budget:.3g}" if budget else ""
    if key in table.index:
        lines.append(f"- compute-optimal tokens per parameter at C = {budget:.3g}: {ci(key)} "
                     f"({analysis.tokens_per_sample:g} tokens per sample, {describe_flops(analysis.flops)}); "
                     f"Chinchilla: ~{CHINCHILLA_TOKENS_PER_PARAMETER:g}")
    return "\n".join(lines)


def frontier_band(draws: pd.DataFrame, C: Sequence[float] | np.ndarray, k: float | FlopsModel,
                  level: float = 0.95) -> pd.DataFrame:
    """Percentile band of N_opt(C) and D_opt(C) over bootstrap draws (columns A, B, alpha, beta)."""
    flops = _as_flops(k)
    C = np.asarray(C, dtype=float)
    d = draws[["A", "B", "alpha", "beta"]].dropna().to_numpy(float)
    A, B, alpha, beta = (d[:, i : i + 1] for i in range(4))
    N_opt = _optimal_n(A, B, alpha, beta, C[None, :], flops)
    with np.errstate(divide="ignore", invalid="ignore"):
        D_opt = flops.samples(C[None, :], N_opt)
    tail = (1 - level) / 2
    (n_lo, n_hi), (d_lo, d_hi) = (np.nanquantile(x, [tail, 1 - tail], axis=0) for x in (N_opt, D_opt))
    return pd.DataFrame({"C": C, "N_lower": n_lo, "N_upper": n_hi, "D_lower": d_lo, "D_upper": d_hi})


def exponents_table(analyses: Sequence[ScalingAnalysis],
                    params: Sequence[str] = ("alpha", "beta", "a", "b", "E", "A", "B")) -> pd.DataFrame:
    """One row per analysis (group, metric), one column per parameter: "estimate [lower, upper]"."""
    rows = {}
    for analysis in analyses:
        table = analysis.intervals
        rows[(analysis.group, analysis.metric)] = {
            p: f"{table.loc[p, 'estimate']:.3g} [{table.loc[p, 'lower']:.3g}, {table.loc[p, 'upper']:.3g}]"
            for p in params if p in table.index}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = out.index.set_names(["group", "metric"])
    return out


# --------------------------------------------------------------------------------------------------
# Plots (the notebook's figures; each returns the Figure)


def _span(values: pd.Series | np.ndarray, below: float = 1.5, above: float = 1.5, num: int = 200) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.geomspace(values.min() / below, values.max() * above, num)


def _heldout_mask(analysis: ScalingAnalysis) -> np.ndarray:
    if analysis.validation is None or "run_id" not in analysis.runs.columns:
        return np.zeros(len(analysis.runs), dtype=bool)
    return analysis.runs["run_id"].isin(analysis.validation.get("run_id", [])).to_numpy()


def plot_fit(analysis: ScalingAnalysis) -> Figure:
    """The metric against D at each N, and against N at each D, with the joint fit's curves.

    Colour encodes the other axis (log scale); runs held out in the validation are ringed.
    """
    runs, fit, metric = analysis.runs, analysis.fit, analysis.metric
    held = _heldout_mask(analysis)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, (x, other) in zip(axes, (("D", "N"), ("N", "D")), strict=True):
        norm = LogNorm(runs[other].min(), runs[other].max() * (1 + 1e-9))
        grid = _span(runs[x])
        for value in sorted(runs[other].unique()):
            colour = plt.cm.viridis(norm(value))
            args = (value, grid) if other == "N" else (grid, value)
            ax.plot(grid, fit.predict(*args), color=colour, lw=1.2, alpha=0.8)
        ax.scatter(runs[x], runs[metric], c=runs[other], cmap="viridis", norm=norm, s=36, zorder=3,
                   edgecolor="white", lw=0.5)
        if held.any():
            ax.scatter(runs.loc[held, x], runs.loc[held, metric], s=120, facecolor="none", edgecolor="crimson",
                       lw=1.4, zorder=4, label="held out in validation")
            ax.legend(loc="upper right", fontsize="small")
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label=_AXIS_LABEL[other])
        ax.set(xscale="log", yscale="log", xlabel=_AXIS_LABEL[x], ylabel=metric)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"{analysis.group}: {metric} vs samples seen, one curve per model size")
    axes[1].set_title(f"{analysis.group}: {metric} vs model size, one curve per data size")
    fig.tight_layout()
    return fig


_AXIS_LABEL = {"N": "N (parameters)", "D": "D (samples seen)", "C": "C (training FLOPs)"}


def plot_residuals(analysis: ScalingAnalysis) -> Figure:
    """Relative residuals (measured / fitted - 1) of the joint fit against N, D and C."""
    runs, fit, metric = analysis.runs, analysis.fit, analysis.metric
    resid = runs[metric] / fit.predict(runs["N"], runs["D"]) - 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, x in zip(axes, ("N", "D", "C"), strict=True):
        colour_by = "D" if x == "N" else "N"
        ax.scatter(runs[x], 100 * resid, c=runs[colour_by], cmap="viridis", norm=LogNorm(), s=30)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xscale="log", xlabel=_AXIS_LABEL[x])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric}: measured / fit - 1 (%)")
    fig.suptitle(f"{analysis.group}: residuals of the joint fit (colour: the other axis)")
    fig.tight_layout()
    return fig


def plot_holdout(analysis: ScalingAnalysis, goal: float = 0.05) -> Figure | None:
    """Predicted against measured for the held-out runs, one marker per method, with the ±goal band."""
    validation = analysis.validation
    if validation is None:
        print(f"No held-out validation: {analysis.holdout_error}")
        return None
    fig, ax = plt.subplots(figsize=(5.6, 5))
    markers = {"chinchilla": "o", "powerlaw_D": "s", "powerlaw_N": "^", "powerlaw_mean": "D"}
    for method, marker in markers.items():
        pred = validation[f"pred_{method}"]
        if pred.notna().any():
            err = validation[f"relerr_{method}"].mean()
            ax.scatter(validation["measured"], pred, marker=marker, s=50, alpha=0.8,
                       label=f"{method} (mean error {100 * err:.1f}%)")
    values = pd.concat([validation["measured"], *(validation[f"pred_{m}"] for m in markers)]).dropna()
    line = np.linspace(values.min() * 0.9, values.max() * 1.1, 2)
    ax.plot(line, line, color="black", lw=0.8)
    ax.fill_between(line, line * (1 - goal), line * (1 + goal), color="grey", alpha=0.15,
                    label=f"within {100 * goal:.0f}%")
    ax.set(xlabel=f"measured {analysis.metric}", ylabel=f"predicted {analysis.metric}",
           title=f"{analysis.group}: held-out runs (largest compute)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_frontier(analysis: ScalingAnalysis, level: float = 0.95) -> Figure:
    """Iso-FLOP curves of the fit with their minima; N*(C) and D*(C) with bootstrap bands; the
    metric against compute with the efficient envelope, the compute-only law and the fit's optimum."""
    runs, fit, flops = analysis.runs, analysis.fit, analysis.flops
    budgets = np.geomspace(runs["C"].min(), 100 * runs["C"].max(), 5)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    norm = LogNorm(budgets.min(), budgets.max())
    best = frontier(fit, budgets, flops)
    for c, row in zip(budgets, best.itertuples(), strict=True):
        colour = plt.cm.plasma(norm(c) * 0.85)
        n_grid = np.geomspace(row.N_opt / 30, row.N_opt * 30, 200)  # two and a half decades either side
        ax.plot(n_grid, fit.predict(n_grid, flops.samples(c, n_grid)), color=colour, label=f"C = {c:.2g}")
        ax.scatter([row.N_opt], [row.loss_opt], color=colour, edgecolor="black", zorder=3)
    ax.set(xscale="log", yscale="log", xlabel=_AXIS_LABEL["N"], ylabel=analysis.metric,
           title="iso-FLOP curves of the fit (dot: optimum)")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3, which="both")

    ax = axes[1]
    c_grid = _span(runs["C"], 3, 300)
    curve, band = frontier(fit, c_grid, flops), frontier_band(analysis.draws, c_grid, flops, level)
    for column, colour, label in (("N", "tab:blue", "N*(C) parameters"), ("D", "tab:orange", "D*(C) samples")):
        ax.plot(c_grid, curve[f"{column}_opt"], color=colour, label=label)
        ax.fill_between(c_grid, band[f"{column}_lower"], band[f"{column}_upper"], color=colour, alpha=0.2)
        ax.scatter(runs["C"], runs[column], color=colour, s=12, alpha=0.5)
    ax.axvline(runs["C"].max(), color="grey", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=_AXIS_LABEL["C"], ylabel="count",
           title=f"compute-optimal frontier ({100 * level:.0f}% bootstrap band; dots: runs)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")

    ax = axes[2]
    front = pareto_front(runs, analysis.metric)
    ax.scatter(runs["C"], runs[analysis.metric], c=runs["N"], cmap="viridis", norm=LogNorm(), s=24, label="runs")
    ax.plot(front["C"], front[analysis.metric], color="black", lw=0.8, ls="--", label="efficient envelope")
    if analysis.compute_law is not None:
        law = analysis.compute_law
        ax.plot(c_grid, law.predict(c_grid), color="tab:red",
                label=f"L(C) = {law.E:.3g} + {law.A:.3g} C^-{law.alpha:.3f}")
    ax.plot(c_grid, curve["loss_opt"], color="tab:green", label="joint fit at N*(C), D*(C)")
    ax.axvline(runs["C"].max(), color="grey", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel=_AXIS_LABEL["C"], ylabel=analysis.metric,
           title="loss against compute")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"{analysis.group}: {analysis.metric}; {describe_flops(flops)}")
    fig.tight_layout()
    return fig


def plot_compare(analyses: Sequence[ScalingAnalysis], level: float = 0.95) -> Figure:
    """Several groups (e.g. objectives) on the same axes: N*(C) with bands and the optimal metric."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    c_all = pd.concat([a.runs["C"] for a in analyses])
    c_grid = _span(c_all, 3, 300)
    for i, analysis in enumerate(analyses):
        colour = plt.cm.tab10(i)
        curve = frontier(analysis.fit, c_grid, analysis.flops)
        band = frontier_band(analysis.draws, c_grid, analysis.flops, level)
        a = analysis.intervals.loc["a"]
        axes[0].plot(c_grid, curve["N_opt"], color=colour,
                     label=f"{analysis.group}: a = {a['estimate']:.2f} [{a['lower']:.2f}, {a['upper']:.2f}]")
        axes[0].fill_between(c_grid, band["N_lower"], band["N_upper"], color=colour, alpha=0.15)
        axes[1].plot(c_grid, curve["loss_opt"], color=colour, label=analysis.group)
        axes[1].scatter(analysis.runs["C"], analysis.runs[analysis.metric], color=colour, s=12, alpha=0.5)
    axes[0].set(ylabel="N*(C) (parameters)", title="compute-optimal model size")
    axes[1].set(ylabel=analyses[0].metric, title="metric at the compute-optimal allocation (dots: runs)")
    for ax in axes:
        ax.axvline(c_all.max(), color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel=_AXIS_LABEL["C"])
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
