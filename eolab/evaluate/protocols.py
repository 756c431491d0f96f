"""Probe protocols beyond the random-split linear probe: spatial blocking, k-NN, few-shot.

Neighbouring EO patches share land cover, illumination and acquisition, so a random split puts
near-duplicates of test patches into training and flatters every encoder (spatial autocorrelation).
A spatially blocked split keeps whole grid cells of longitude/latitude out of training; the gap
between the two is a measure of how much a score relies on having seen the place.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import (
    GroupKFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from ..data.splits import spatial_blocks
from .probe import C_GRID, fit_linear_probe


def spatial_block_probe(
    features: np.ndarray, labels: np.ndarray, lonlat: np.ndarray, folds: int = 5, repeats: int = 5,
    cell_deg: float = 2.0, seed: int = 0,
) -> list[float]:
    """Linear-probe accuracy per fold with whole spatial cells held out (no cell in train and test)."""
    groups = spatial_blocks(lonlat, cell_deg)
    scores = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for train, test in splitter.split(features, labels, groups):
            assert not set(groups[train]) & set(groups[test])  # the property the protocol exists for
            model = fit_linear_probe(features[train], labels[train], seed)
            scores.append(float(model.score(features[test], labels[test])))
    return scores


def knn_probe(features: np.ndarray, labels: np.ndarray, splits, k: int = 5) -> list[float]:
    """k-nearest-neighbour accuracy (cosine on standardised features) on the given (train, test) splits."""
    scores = []
    for train, test in splits:
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(k, metric="cosine"))
        model.fit(features[train], labels[train])
        scores.append(float(model.score(features[test], labels[test])))
    return scores


def few_shot_probe(
    features: np.ndarray, labels: np.ndarray, shots: int, draws: int = 10, seed: int = 0
) -> list[float]:
    """Accuracy with ``shots`` labelled examples per class (repeated random draws), tested on the rest.

    Regularisation cannot be cross-validated on one or two examples per class, so a fixed, fairly
    strong C is used for every feature set alike.
    """
    scores = []
    for fold in few_shot_splits(labels, shots, draws, seed):
        model = fit_linear_probe(features[fold.train], labels[fold.train], seed, c_grid=None)
        scores.append(float(model.score(features[fold.test], labels[fold.test])))
    return scores


# ----------------------------------------------------------------------------------------------
# Generic splits, probes and metrics for every task kind (used by eolab.evaluate.battery)
#
# A split is a list of folds (repeat, train indices, test indices). Every feature set of a task
# goes through the very same folds, so differences between encoders are paired fold by fold.

CLASSIFICATION = ("classification", "segmentation")  # a segmentation sample is a labelled pixel
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "balanced_accuracy"),
    "segmentation": ("accuracy", "balanced_accuracy"),
    "regression": ("r2", "rmse"),
    "multilabel": ("micro_f1", "mean_ap"),
}
RIDGE_ALPHAS = tuple(10.0 ** np.arange(-3, 4))
MULTILABEL_C = 0.1  # multi-label tasks here are smoke tests, too small to cross-validate C
FEW_SHOT_C = 0.1  # as fit_linear_probe without a grid: one or a few examples per class cannot choose C


@dataclass(frozen=True)
class Fold:
    repeat: int
    train: np.ndarray
    test: np.ndarray


def random_splits(y: np.ndarray, kind: str, folds: int = 5, repeats: int = 2, seed: int = 0) -> list[Fold]:
    """Repeated k-fold, stratified by class for classification (k capped by the smallest class)."""
    n = len(y)
    if kind in CLASSIFICATION:
        k = min(folds, int(np.bincount(y).min()) if len(y) else folds)
        if k < 2:
            raise ValueError(f"the smallest class has {k} sample(s): too few for a {folds}-fold split")
        splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    else:
        k = min(folds, n)
        if k < 2:
            raise ValueError(f"{n} sample(s): too few for a {folds}-fold split")
        splitter = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return [Fold(i // k, tr, te) for i, (tr, te) in enumerate(splitter.split(np.zeros(n), y))]


def blocked_splits(y: np.ndarray, groups: np.ndarray, kind: str, folds: int = 5, repeats: int = 2,
                   seed: int = 0) -> list[Fold]:
    """Group k-fold over spatial blocks: no block has samples in both train and test (stratified by
    class as far as the blocks allow, for classification); each repeat reshuffles the blocks."""
    groups = np.asarray(groups)
    if (groups < 0).all():
        raise ValueError("the task gives neither coordinates nor groups: no blocked split is possible")
    k = min(folds, len(np.unique(groups)))
    if k < 2:
        raise ValueError("the samples lie in a single spatial block: no blocked split is possible")
    out = []
    for r in range(repeats):
        if kind in CLASSIFICATION:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + r)
        else:
            splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed + r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes rarer than k: as blocks allow
            for train, test in splitter.split(np.zeros(len(y)), y if kind in CLASSIFICATION else None, groups):
                assert not set(groups[train]) & set(groups[test])  # the property the split exists for
                out.append(Fold(r, train, test))
    return out


def official_split(is_test: np.ndarray | None) -> list[Fold]:
    """The task's documented train/test split as one fold (none when the task has no such split)."""
    if is_test is None:
        return []
    is_test = np.asarray(is_test, dtype=bool)
    return [Fold(0, np.flatnonzero(~is_test), np.flatnonzero(is_test))]


def few_shot_splits(labels: np.ndarray, shots: int, draws: int = 10, seed: int = 0) -> list[Fold]:
    """``shots`` labelled examples per class drawn ``draws`` times; each draw tests on the rest."""
    rng = np.random.default_rng(seed)
    smallest = int(np.bincount(labels).min())
    if shots >= smallest:
        raise ValueError(f"{shots} shots per class leave no test sample of a class with {smallest} samples")
    out = []
    for d in range(draws):
        train = np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in np.unique(labels)])
        out.append(Fold(d, train, np.setdiff1d(np.arange(len(labels)), train)))
    return out


def linear_model(kind: str, seed: int = 0, fixed_c: float | None = None, y_train: np.ndarray | None = None):
    """The linear probe of a task kind, on standardised features.

    Classification: multinomial logistic regression, C chosen among ``C_GRID`` by an inner stratified
    3-fold CV on the training part (``LogisticRegressionCV``: the same search as ``fit_linear_probe``,
    warm-started along the C path, so several times cheaper), or ``fixed_c`` (few-shot: too few
    examples to cross-validate). Regression: ridge, alpha chosen by efficient leave-one-out CV.
    Multi-label: one-vs-rest logistic regressions with a fixed C. With ``y_train`` given, the inner
    search uses as many folds as its rarest class allows (2 or 3), and a fixed C when it allows none.
    """
    if kind in CLASSIFICATION:
        inner = 3 if y_train is None else min(3, int(np.unique(y_train, return_counts=True)[1].min()))
        if fixed_c is None and inner < 2:
            fixed_c = FEW_SHOT_C  # a class with one training sample: no C can be cross-validated
        if fixed_c is not None:
            head = LogisticRegression(C=fixed_c, max_iter=500, tol=1e-3)
        else:
            head = LogisticRegressionCV(Cs=list(C_GRID), cv=StratifiedKFold(inner, shuffle=True, random_state=seed),
                                        scoring="accuracy", max_iter=500, tol=1e-3)
    elif kind == "regression":
        head = RidgeCV(alphas=RIDGE_ALPHAS)
    elif kind == "multilabel":
        head = OneVsRestClassifier(LogisticRegression(C=MULTILABEL_C, max_iter=500, tol=1e-3))
    else:
        raise ValueError(f"no linear probe for task kind {kind!r}")
    return make_pipeline(StandardScaler(), head)


def knn_model(kind: str, k: int = 5, n_train: int | None = None):
    """k-nearest neighbours by cosine similarity of standardised features (classifier or regressor);
    k capped by the training samples there are."""
    k = k if n_train is None else max(1, min(k, n_train))
    head = KNeighborsRegressor(k, metric="cosine") if kind == "regression" else KNeighborsClassifier(k, metric="cosine")
    return make_pipeline(StandardScaler(), head)


@dataclass
class FoldResult:
    """Out-of-fold outputs of one fitted probe (and of the same probe on degraded test features)."""

    fold: Fold
    pred: np.ndarray
    score: np.ndarray | None  # multi-label decision scores (for average precision)
    variants: dict[str, tuple[np.ndarray, np.ndarray | None]]


def run_probe(make_model, x: np.ndarray, y: np.ndarray, folds: list[Fold],
              variants: dict[str, np.ndarray] | None = None) -> list[FoldResult]:
    """Fit ``make_model(y_train)`` on every fold's training part; predict its test part, and the same
    test samples in each of ``variants`` (features of the same samples with inputs degraded,
    e.g. bands missing at test time: the probe is not refitted)."""
    out = []
    # One BLAS thread: these problems are small, and a multi-threaded BLAS on a shared machine spends
    # its time waiting for cores (measured: 20x slower under load for the same fit).
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # rare classes in inner folds of blocked splits
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's announced default changes (set here)
        for fold in folds:
            model = make_model(y[fold.train])
            model.fit(x[fold.train], y[fold.train])
            outputs = {name: _predict(model, v[fold.test]) for name, v in (variants or {}).items()}
            out.append(FoldResult(fold, *_predict(model, x[fold.test]), outputs))
    return out


def _predict(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    pred = model.predict(x)
    score = model.decision_function(x) if pred.ndim == 2 and hasattr(model, "decision_function") else None
    if pred.ndim == 2 and score is None:  # multi-label k-NN: the fraction of neighbours with the label
        score = np.stack([p[:, -1] for p in model.predict_proba(x)], 1)
    return pred, score


def metrics(kind: str, y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of a task kind on one set of predictions (plain numpy where it is simple: this runs
    thousands of times in bootstrap intervals)."""
    if kind in CLASSIFICATION:
        hit = pred == y
        recall = [hit[y == c].mean() for c in np.unique(y)]  # balanced accuracy: mean recall of the classes present
        return {"accuracy": float(hit.mean()), "balanced_accuracy": float(np.mean(recall))}
    if kind == "regression":
        sse = float(((y - pred) ** 2).sum())
        sst = float(((y - y.mean()) ** 2).sum())
        return {"r2": 1 - sse / sst if sst > 0 else np.nan, "rmse": float(np.sqrt(sse / len(y)))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        present = (y.sum(0) > 0) & (y.sum(0) < len(y))  # average precision needs positives and negatives
        ap = average_precision_score(y[:, present], score[:, present], average="macro") if present.any() else np.nan
        return {"micro_f1": f1_score(y, pred, average="micro", zero_division=0), "mean_ap": float(ap)}


def fold_metrics(kind: str, y: np.ndarray, results: list[FoldResult], variant: str | None = None,
                 pooled: bool = False) -> list[dict[str, float]]:
    """Metrics per fold, or (``pooled``) per repeat over its pooled out-of-fold predictions (for
    tasks so small that a fold holds a handful of samples)."""
    def outputs(r: FoldResult):
        return (r.pred, r.score) if variant is None else r.variants[variant]

    if not pooled:
        return [metrics(kind, y[r.fold.test], *outputs(r)) for r in results]
    values = []
    for rep in sorted({r.fold.repeat for r in results}):
        part = [r for r in results if r.fold.repeat == rep]
        test = np.concatenate([r.fold.test for r in part])
        pred = np.concatenate([outputs(r)[0] for r in part])
        score = None if outputs(part[0])[1] is None else np.concatenate([outputs(r)[1] for r in part])
        values.append(metrics(kind, y[test], pred, score))
    return values


def bootstrap_test_ci(kind: str, y: np.ndarray, result: FoldResult, variant: str | None = None, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric over the test samples of one fold (a single
    documented train/test split: its uncertainty is that of a finite test set)."""
    pred, score = (result.pred, result.score) if variant is None else result.variants[variant]
    yt = y[result.fold.test]
    rng = np.random.default_rng(seed)
    draws = [metrics(kind, yt[i], pred[i], None if score is None else score[i])
             for i in rng.integers(0, len(yt), (n_boot, len(yt)))]
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return {m: (float(np.nanquantile([d[m] for d in draws], lo)), float(np.nanquantile([d[m] for d in draws], hi)))
            for m in draws[0]}


# ----------------------------------------------------------------------------------------------
# A learned temporal probe over per-date embeddings (``temporal_pooling: probe``)


class TemporalProbe:
    """A small attention pooling over the per-date embeddings of a series, then a linear head.

    ``fit(x, y)`` takes (N, T x D) features (per-date embeddings concatenated in date order) of the
    training part only: the features are standardised with that part's statistics, each date gets a
    score ``w . h_t + b_t`` (``b_t``: a learned bias per date, so a season can weigh more; a linear
    score, as a hidden layer over-fits the few hundred samples of a task's training part),
    the scores are softmaxed over dates, the weighted mean of the dates goes through a linear layer
    (logits, or the standardised target of a regression). Trained full-batch with AdamW for a fixed
    number of epochs from a seeded initialisation (no early stopping: nothing is held out of the
    training part, and the same data and seed give the same probe). ``predict`` as scikit-learn's.
    """

    def __init__(self, kind: str, steps: int, seed: int = 0, epochs: int = 200, lr: float = 1e-2,
                 weight_decay: float = 1e-2):
        if kind not in CLASSIFICATION and kind != "regression":
            raise ValueError(f"the temporal probe supports classification and regression tasks, not {kind!r}")
        self.kind, self.steps, self.seed = kind, steps, seed
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay

    def _series(self, x: np.ndarray):
        n = len(x)
        x = np.asarray(x, dtype=np.float32).reshape(n, self.steps, -1)  # (N, T*D) -> (N, T, D)
        return torch.from_numpy((x - self.mean_) / self.std_)

    def fit(self, x: np.ndarray, y: np.ndarray) -> TemporalProbe:
        n = len(x)
        series = np.asarray(x, dtype=np.float32).reshape(n, self.steps, -1)  # (N, T, D)
        self.mean_ = series.mean((0, 1))
        self.std_ = series.std((0, 1)) + 1e-6
        h = self._series(x)
        d = h.shape[-1]
        if self.kind in CLASSIFICATION:
            self.classes_, target = np.unique(y, return_inverse=True)
            target = torch.as_tensor(target, dtype=torch.long)
            out, loss_fn = len(self.classes_), nn.functional.cross_entropy
        else:
            y = np.asarray(y, dtype=np.float64)
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
            target = torch.as_tensor((y - self.y_mean_) / self.y_std_, dtype=torch.float32)[:, None]
            out, loss_fn = 1, nn.functional.mse_loss
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's random state
            torch.manual_seed(self.seed)
            self.net_ = _AttentionPool(d, self.steps, out)
        optimiser = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny problems: one thread is faster on shared cores, and the sums keep their order
        try:
            for _ in range(self.epochs):
                optimiser.zero_grad()
                loss = loss_fn(self.net_(h), target)
                loss.backward()
                optimiser.step()
        finally:
            torch.set_num_threads(threads)
        self.net_.eval()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.net_(self._series(x)).numpy()
        if self.kind in CLASSIFICATION:
            return self.classes_[out.argmax(1)]
        return out[:, 0] * self.y_std_ + self.y_mean_

    def attention(self, x: np.ndarray) -> np.ndarray:
        """(N, T) weights the fitted probe gives each date of each sample."""
        with torch.no_grad():
            return self.net_.weights(self._series(x)).numpy()


class _AttentionPool(nn.Module):
    """(N, T, D) -> (N, out): softmax over dates of ``w . h_t + b_t``, weighted mean, linear."""

    def __init__(self, dim: int, steps: int, out: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.date_bias = nn.Parameter(torch.zeros(steps))
        self.head = nn.Linear(dim, out)

    def weights(self, h: torch.Tensor) -> torch.Tensor:
        return (self.score(h)[..., 0] + self.date_bias).softmax(1)  # (N, T, D) -> (N, T)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head((self.weights(h)[..., None] * h).sum(1))  # (N, T, D) -> (N, D) -> (N, out)
