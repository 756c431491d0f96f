"""How representative a sample of pre-training patches is of the pool it was drawn from.

A sampler that picks "diverse" patches may still miss whole regions of the pool, over-weight a few
scenes, or shift the spectral distribution; no single number says all of that, so several are
reported side by side. All of them work on arrays (features, lon/lat, strata labels, windows), so
they apply to any pool, and all are memory-bounded: nothing allocates an (n x n) matrix.

Features are standardised with the *pool's* mean and std (``standardize``), so sample and pool are
measured on one scale. The metrics, with what high and low mean:

- ``vendi_cos``: Vendi score (Friedman & Dieng 2023), exp of the Shannon entropy of the eigenvalues
  of K/n, with the cosine kernel K_ij = <x_i, x_j> / (|x_i| |x_j|) on standardised features. The
  nonzero eigenvalues of K/n = X X^T / n equal those of X^T X / n (d x d), so it costs O(n d^2).
  Range [1, min(n, d)]: 1 when all points are identical (in direction), n for n orthogonal points.
  Higher = more diverse. Bounded by the feature dimension d, so it measures how many independent
  spectral directions the sample spans rather than how many distinct patches it has.
- ``vendi_rbf``: Vendi score with a Gaussian kernel exp(-|x - y|^2 / (2 h^2)), h = the median
  pairwise distance in a seeded pool subsample, approximated by D random Fourier features (rows
  renormalised so K_ii = 1; the same seeded features for sample and pool). Range [1, min(n, D)];
  it counts "effectively distinct" points at scale h. Higher = more diverse. An approximation: the
  random features add a small positive bias that is the same for every sample of equal size.
- ``coverage_mean`` / ``coverage_p95``: distance (standardised units) from each pool point to its
  nearest sampled point, mean and 95th percentile, over a seeded pool subsample of at most
  ``ref_size`` points (stated in the output as ``coverage_ref``). 0 when the sample is the pool.
  Lower = the pool is better covered; k-center minimises the maximum of this.
- ``spectral_js``: Jensen-Shannon divergence (bits, in [0, 1]) between sample and pool histograms
  of each feature on 32 pool-quantile bins, averaged over features. Lower = closer distributions.
  A finite sample has a floor above 0 (about bins / (2 n ln 2) bits): compare with ``uniform``.
- ``spectral_sw1``: sliced Wasserstein-1 distance (standardised units) between sample and pool
  subsample, averaged over 64 seeded random directions. Lower = closer.
- ``geo_js``: JS divergence (bits) between sample and pool counts on equal-area cells of
  ``geo_cell_km`` (Lambert cylindrical equal-area grid, see ``equal_area_cells``). Lower = closer.
- ``balance_<col>``: normalised entropy of the sample's counts over the pool's strata of ``col``,
  H / ln K with K the number of pool strata. 1 = equal counts in every pool stratum; 0 = one
  stratum only. High balance is the goal of stratified samplers, not of representative ones.
- ``covered_<col>``: fraction of the pool's strata with at least one sampled point.
- ``ess_<col>``: Kish effective sample size, as a fraction of n, of the importance weights
  w = (pool share of the stratum) / (sample share) that reweight the sample to the pool's mix:
  (sum w)^2 / (n sum w^2). 1 = the sample mixes strata like the pool; low = estimates of pool
  averages from this sample must be reweighted heavily (their variance grows by about 1/ess).
  Strata the sample misses cannot be reweighted at all (see ``covered_<col>``).
- ``effective_<col>``: 1 / sum p_k^2 over the sample's stratum shares p_k: the effective number of
  strata the sample draws from (K when equal, 1 when one).
- ``overlap_frac``: fraction of sampled windows that overlap another sampled window of the same
  scene (near-duplicates, common when the pool is tiled with a small stride). Lower = fewer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run with one BLAS thread: these are small or memory-bound BLAS calls, where OpenBLAS thread
    synchronisation costs more than it saves; on 2 cores shared with other jobs it was 20-40x slower
    (a 154k x 24 matrix-vector product: 0.9 ms on one thread, 20 ms on two; eigvalsh of 512 x 512:
    0.07 s against 2.7 s). The same measure as ``eolab.scaling``."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def equal_area_cells(lon: np.ndarray, lat: np.ndarray, cell_km: float) -> np.ndarray:
    """Integer cell id of each point on an equal-area grid with cells of ``cell_km`` x ``cell_km``.

    Lambert cylindrical equal-area projection: x = R lon, y = R sin(lat) (lon, lat in radians).
    Equal steps in x and y enclose equal areas anywhere on the sphere, so counting points per cell
    weights every km^2 alike; a plain lon/lat grid would over-weight high latitudes, where its
    cells shrink. Cells are square at the equator and stretched east-west towards the poles.
    """
    if cell_km <= 0:
        raise ValueError(f"cell size must be > 0 km, got {cell_km}")
    x = np.floor(np.radians(np.asarray(lon, np.float64)) * EARTH_RADIUS_KM / cell_km).astype(np.int64)
    y = np.floor(np.sin(np.radians(np.asarray(lat, np.float64))) * EARTH_RADIUS_KM / cell_km).astype(np.int64)
    nx = math.ceil(2 * math.pi * EARTH_RADIUS_KM / cell_km) + 2  # cells around the equator
    return y * nx + (x + nx // 2)


def standardize(features: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Z-scores (float32) of ``features`` with the mean and std of ``ref`` (default: themselves)."""
    ref = features if ref is None else ref
    mean = ref.mean(0, dtype=np.float64)
    std = ref.std(0, dtype=np.float64)
    std[std < 1e-12] = 1.0  # a constant feature carries no information; keep it at 0, not NaN
    return ((features - mean) / std).astype(np.float32)


def _entropy_exp(eigenvalues: np.ndarray) -> float:
    """exp(Shannon entropy) of non-negative eigenvalues normalised to sum to one."""
    lam = np.clip(eigenvalues, 0.0, None)
    lam = lam / lam.sum()
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def _unit_gram_vendi(rows: np.ndarray, chunk: int = 8192) -> float:
    """Vendi score of the linear kernel on rows scaled to unit norm, via the (d x d) Gram matrix."""
    d = rows.shape[1]
    gram = np.zeros((d, d), np.float64)
    for s in range(0, len(rows), chunk):
        x = rows[s : s + chunk].astype(np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)  # a zero row has no direction
        gram += x.T @ x
    return _entropy_exp(np.linalg.eigvalsh(gram))


@dataclass(frozen=True)
class FourierFeatures:
    """Seeded random Fourier features of a Gaussian kernel with bandwidth ``h`` (Rahimi & Recht)."""

    weights: np.ndarray  # (d, D), entries ~ N(0, 1 / h^2)
    phases: np.ndarray  # (D,), uniform in [0, 2 pi)

    @classmethod
    def make(cls, dim: int, bandwidth: float, n_features: int = 512, seed: int = 0) -> FourierFeatures:
        rng = np.random.default_rng(seed)
        w = rng.normal(0.0, 1.0 / bandwidth, size=(dim, n_features)).astype(np.float32)
        return cls(w, rng.uniform(0.0, 2 * np.pi, n_features).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.cos(x @ self.weights + self.phases)  # (n, D); the sqrt(2/D) scale cancels in the unit-norm rows


def vendi_score(
    x: np.ndarray, kernel: str = "cosine", fourier: FourierFeatures | None = None, chunk: int = 8192
) -> float:
    """Vendi score of the rows of ``x`` (see the module docstring for the kernels).

    ``kernel="cosine"`` is exact; ``kernel="rbf"`` needs ``fourier`` (random Fourier features of the
    Gaussian kernel) and is computed chunk by chunk, so memory is O(chunk x D + D^2).
    """
    if len(x) == 0:
        raise ValueError("the Vendi score of an empty sample is undefined")
    if kernel not in ("cosine", "rbf"):
        raise ValueError(f"unknown Vendi kernel {kernel!r}; use 'cosine' or 'rbf'")
    if kernel == "rbf" and fourier is None:
        raise ValueError("kernel='rbf' needs fourier= (FourierFeatures.make(dim, bandwidth))")
    with one_blas_thread():
        if kernel == "cosine":
            return _unit_gram_vendi(x, chunk)
        d = fourier.weights.shape[1]
        gram = np.zeros((d, d), np.float64)
        for s in range(0, len(x), chunk):
            z = fourier(x[s : s + chunk].astype(np.float32)).astype(np.float64)
            z /= np.linalg.norm(z, axis=1, keepdims=True)
            gram += z.T @ z
        return _entropy_exp(np.linalg.eigvalsh(gram))


def nearest_distances(points: np.ndarray, centres: np.ndarray, max_block: int = 4_000_000) -> np.ndarray:
    """Euclidean distance from each of ``points`` to its nearest row of ``centres``, chunked.

    Blocks of (rows x centres) entries stay under ``max_block`` (16 MB float32), whatever the sizes.
    The nearest centre is found with one matrix product per block (|c|^2 - 2 p.c ranks centres as
    |p - c|^2 does); the distance to it is then computed directly, since the expanded form loses
    small distances to float32 cancellation.
    """
    points, centres = points.astype(np.float32), centres.astype(np.float32)
    c_sq = (centres * centres).sum(1)
    out = np.empty(len(points), np.float32)
    rows = max(1, max_block // max(1, len(centres)))
    with one_blas_thread():
        for s in range(0, len(points), rows):
            p = points[s : s + rows]
            nearest = (c_sq[None, :] - 2.0 * (p @ centres.T)).argmin(1)  # (rows,)
            out[s : s + rows] = np.linalg.norm(p - centres[nearest], axis=1)
    return out


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = equal, 1 = disjoint) of two count vectors."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_proj: int = 64, n_quantiles: int = 200, seed: int = 0) -> float:
    """Mean over seeded random unit directions of the 1-D Wasserstein-1 distance of the projections.

    The 1-D distance is the mean absolute difference of ``n_quantiles`` matched quantiles, so the two
    sets may have different sizes.
    """
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(a.shape[1], n_proj))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    with one_blas_thread():
        qa = np.quantile(a @ dirs, levels, axis=0)  # (n_quantiles, n_proj)
        qb = np.quantile(b @ dirs, levels, axis=0)
    return float(np.abs(qa - qb).mean())


def stratum_metrics(pool_labels: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """Balance, coverage, Kish ESS and effective number of strata of a sample (see module docstring)."""
    strata, inv = np.unique(pool_labels, return_inverse=True)
    pool_counts = np.bincount(inv, minlength=len(strata)).astype(np.float64)
    counts = np.bincount(inv[idx], minlength=len(strata)).astype(np.float64)
    n, k = counts.sum(), len(strata)
    share = counts / n
    nz = share > 0
    entropy = float(-(share[nz] * np.log(share[nz])).sum())
    # Importance weight of each sampled point: pool share / sample share of its stratum.
    w = (pool_counts[nz] / pool_counts.sum()) / share[nz]
    ess = float((counts[nz] * w).sum() ** 2 / (n * (counts[nz] * w * w).sum()))
    return {
        "balance": entropy / math.log(k) if k > 1 else 1.0,
        "covered": float(nz.sum() / k),
        "ess": ess,
        "effective": float(1.0 / (share**2).sum()),
    }


def overlap_fraction(scene: np.ndarray, row: np.ndarray, col: np.ndarray, patch: int, max_block: int = 4_000_000) -> float:
    """Fraction of windows that overlap another window of the same scene (|dr| < patch and |dc| < patch)."""
    n = len(scene)
    if n < 2:
        return 0.0
    hit = np.zeros(n, bool)
    for s in np.unique(scene):
        members = np.flatnonzero(scene == s)
        r, c = row[members].astype(np.int64), col[members].astype(np.int64)
        rows = max(1, max_block // len(members))
        for a in range(0, len(members), rows):
            near = (np.abs(r[a : a + rows, None] - r[None, :]) < patch) & (np.abs(c[a : a + rows, None] - c[None, :]) < patch)
            hit[members[a : a + rows]] = near.sum(1) > 1  # every window overlaps itself once
    return float(hit.mean())


@dataclass
class PoolReference:
    """Everything about the pool that every sample is compared with, computed once.

    ``features`` are raw per-patch features (n, d); ``strata`` maps a name (e.g. "source", "scene")
    to per-patch labels; ``windows`` = (scene, row, col, patch) enables ``overlap_frac``;
    ``quality`` maps e.g. "cloud_frac" to per-patch values whose sample mean is reported (NaN =
    unknown, ignored). Pool subsamples are seeded by ``seed`` and hold at most ``ref_size`` points.
    """

    features: np.ndarray
    lonlat: np.ndarray | None = None
    strata: dict[str, np.ndarray] = field(default_factory=dict)
    windows: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    geo_cell_km: float = 10.0
    ref_size: int = 20_000
    bins: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        n, d = self.features.shape
        self.z = standardize(self.features)
        rng = np.random.default_rng(self.seed)
        self.ref = np.sort(rng.choice(n, min(n, self.ref_size), replace=False))
        # Pool-quantile bin edges per feature (inner edges only) and the pool's counts in them.
        inner = np.quantile(self.z, np.linspace(0, 1, self.bins + 1)[1:-1], axis=0).T  # (d, bins - 1)
        self.edges = inner.astype(np.float32)
        self.pool_hist = np.stack([self._hist(self.z[:, j], j) for j in range(d)])
        sub = self.z[self.ref[rng.choice(len(self.ref), min(len(self.ref), 2000), replace=False)]]
        sq = (sub * sub).sum(1)
        with one_blas_thread():
            dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * (sub @ sub.T), 0, None))  # (m, m), m <= 2000
        self.bandwidth = float(np.median(dist[np.triu_indices(len(sub), 1)])) or 1.0
        self.fourier = FourierFeatures.make(d, self.bandwidth, seed=self.seed)
        if self.lonlat is not None:
            self.cells = equal_area_cells(self.lonlat[:, 0], self.lonlat[:, 1], self.geo_cell_km)
            self.cell_ids, cell_inv = np.unique(self.cells, return_inverse=True)
            self.cell_inv = cell_inv
            self.pool_cells = np.bincount(cell_inv, minlength=len(self.cell_ids))

    def _hist(self, values: np.ndarray, j: int) -> np.ndarray:
        return np.bincount(np.searchsorted(self.edges[j], values, side="right"), minlength=self.bins)

    def pool_summary(self) -> dict[str, float]:
        """The pool's own diversity (on the seeded subsample), as the ceiling samples approach."""
        zr = self.z[self.ref]
        return {"n": len(self.z), "ref": len(self.ref), "vendi_cos": vendi_score(zr),
                "vendi_rbf": vendi_score(zr, "rbf", self.fourier), "rbf_bandwidth": self.bandwidth}

    def measure(self, idx: np.ndarray) -> dict[str, float]:
        """All metrics of the sample ``idx`` (positions into the pool)."""
        idx = np.asarray(idx, np.int64)
        if len(idx) == 0:
            raise ValueError("cannot measure an empty sample")
        zs = self.z[idx]
        cover = nearest_distances(self.z[self.ref], zs)
        out: dict[str, float] = {
            "n": len(idx),
            "vendi_cos": vendi_score(zs),
            "vendi_rbf": vendi_score(zs, "rbf", self.fourier),
            "coverage_mean": float(cover.mean()),
            "coverage_p95": float(np.quantile(cover, 0.95)),
            "coverage_ref": len(self.ref),
            "spectral_js": float(np.mean([js_divergence(self._hist(zs[:, j], j), self.pool_hist[j])
                                          for j in range(zs.shape[1])])),
            "spectral_sw1": sliced_wasserstein(zs, self.z[self.ref], seed=self.seed),
        }
        if self.lonlat is not None:
            out["geo_js"] = js_divergence(np.bincount(self.cell_inv[idx], minlength=len(self.cell_ids)), self.pool_cells)
        for name, labels in self.strata.items():
            for key, value in stratum_metrics(labels, idx).items():
                out[f"{key}_{name}"] = value
        if self.windows is not None:
            scene, row, col, patch = self.windows
            out["overlap_frac"] = overlap_fraction(scene[idx], row[idx], col[idx], patch)
        for name, values in self.quality.items():
            v = values[idx]
            out[f"mean_{name}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        return out
