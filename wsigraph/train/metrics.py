"""Slide-level classification metrics and bootstrap confidence intervals (numpy only, vectorised).

Every metric is computed from a confusion matrix or from ranks, over any leading batch dimension, so the
same code gives the point estimate and ``n`` bootstrap replicates at once.

Conventions:

* ``probs``: (n, C) class probabilities; the prediction is the arg-max.
* ``auc``: binary -> AUC of the positive class (``classes[1]``); multi-class -> macro one-vs-rest (the
  unweighted mean of the per-class AUCs, as scikit-learn's ``roc_auc_score(multi_class="ovr")``), with
  ``auc_per_class``. A class absent from ``y_true`` has no AUC: NaN with a warning, left out of the mean.
* ``balanced_accuracy``: mean recall over the classes present in ``y_true`` (scikit-learn's).
* ``f1_macro``: mean F1 over the classes present in ``y_true`` or predicted (scikit-learn's default).
* ``kappa``: Cohen's kappa on the full C x C matrix; quadratic weights ``(i - j)^2`` when ``ordinal``.
* ``confusion_matrix``: rows = true class, columns = predicted class.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "kappa", "auc")


class MetricWarning(UserWarning):
    """A metric is undefined for the given labels (e.g. AUC of a class absent from y_true)."""


def _check(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must have shape (n, C) with n = len(y_true) = {y.shape[0]}, got {p.shape}")
    if p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {num_classes} classes")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y_true must be class indices in [0, {num_classes}), got values {np.unique(y).tolist()}")
    return y, p


# ----------------------------------------------------------------------------------------------------
# confusion-matrix metrics, batched over leading dimensions: cm (..., C, C)
# ----------------------------------------------------------------------------------------------------


def confusion_matrices(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(..., C, C) int64 confusion matrices of label arrays of shape (..., n); rows true, columns predicted."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    lead = y.shape[:-1]
    b = int(np.prod(lead)) if lead else 1
    flat = (np.arange(b, dtype=np.int64)[:, None] * num_classes * num_classes
            + y.reshape(b, -1) * num_classes + pred.reshape(b, -1)).ravel()
    counts = np.bincount(flat, minlength=b * num_classes * num_classes)
    return counts.reshape(*lead, num_classes, num_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def accuracy_from_cm(cm: np.ndarray) -> np.ndarray:
    return _safe_div(np.trace(cm, axis1=-2, axis2=-1).astype(np.float64), cm.sum(axis=(-2, -1)))


def balanced_accuracy_from_cm(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=-1)
    recall = _safe_div(np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64), support)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(recall, axis=-1)


def f1_macro_from_cm(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=-2) - tp) + (cm.sum(axis=-1) - tp)  # 2TP + FP + FN
    f1 = _safe_div(2 * tp, denom)  # NaN for classes neither present nor predicted: left out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(f1, axis=-1)


def kappa_from_cm(cm: np.ndarray, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa; ``weights`` None (unweighted), ``"linear"`` or ``"quadratic"`` on class indices."""
    c = cm.shape[-1]
    idx = np.arange(c)
    if weights is None:
        w = 1.0 - np.eye(c)
    elif weights == "linear":
        w = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    elif weights == "quadratic":
        w = ((idx[:, None] - idx[None, :]) ** 2).astype(np.float64)
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    cm = cm.astype(np.float64)
    total = cm.sum(axis=(-2, -1))
    expected = _safe_div(cm.sum(axis=-1)[..., :, None] * cm.sum(axis=-2)[..., None, :], total[..., None, None])
    num = (w * cm).sum(axis=(-2, -1))
    den = (w * expected).sum(axis=(-2, -1))
    return 1.0 - _safe_div(num, den)


# ----------------------------------------------------------------------------------------------------
# AUC via ranks (Mann-Whitney U), batched
# ----------------------------------------------------------------------------------------------------


def _rank_avg(scores: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) along the last axis."""
    from scipy.stats import rankdata

    return rankdata(scores, method="average", axis=-1)


def binary_auc(pos: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` for boolean labels ``pos``, both (..., n); NaN where one class is absent."""
    pos = np.asarray(pos, dtype=bool)
    ranks = _rank_avg(np.asarray(scores, dtype=np.float64))
    n_pos = pos.sum(axis=-1).astype(np.float64)
    n_neg = pos.shape[-1] - n_pos
    u = (ranks * pos).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return _safe_div(u, n_pos * n_neg)


def auc_per_class(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(..., C) one-vs-rest AUCs; y (..., n) indices, probs (..., n, C)."""
    c = probs.shape[-1]
    return np.stack([binary_auc(y == k, probs[..., k]) for k in range(c)], axis=-1)


def _auc(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    c = probs.shape[-1]
    if c == 2:
        return binary_auc(y == 1, probs[..., 1]), None
    per = auc_per_class(y, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per, axis=-1), per


# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def _metric_batch(name: str, y: np.ndarray, probs: np.ndarray, ordinal: bool) -> np.ndarray:
    """Metric ``name`` for y (..., n) and probs (..., n, C), over the leading dimensions."""
    c = probs.shape[-1]
    if name == "auc":
        return _auc(y, probs)[0]
    cm = confusion_matrices(y, probs.argmax(axis=-1), c)
    if name == "accuracy":
        return accuracy_from_cm(cm)
    if name == "balanced_accuracy":
        return balanced_accuracy_from_cm(cm)
    if name == "f1_macro":
        return f1_macro_from_cm(cm)
    if name == "kappa":
        return kappa_from_cm(cm, "quadratic" if ordinal else None)
    raise ValueError(f"unknown metric {name!r}; known: {list(SCALAR_METRICS)}")


def classification_metrics(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str],
                           ordinal: bool = False) -> dict:
    """Slide-level metrics of class probabilities.

    Args:
        y_true: (n,) true class indices into ``classes``.
        probs: (n, C) probabilities (rows need not sum to 1 for the AUC; the prediction is the arg-max).
        classes: the C class names.
        ordinal: quadratic-weighted kappa (ordered grades) instead of unweighted.

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "f1_macro", "kappa", "kappa_weights", "auc",
        "auc_per_class" (multi-class: {class: auc}), "confusion_matrix" (C x C list), "support" ({class: n})}``;
        undefined values are NaN (with a :class:`MetricWarning` for AUC).
    """
    classes = [str(c) for c in classes]
    y, p = _check(np.asarray(y_true), np.asarray(probs), len(classes))
    cm = confusion_matrices(y, p.argmax(axis=1), len(classes)) if len(y) else np.zeros((len(classes),) * 2, int)
    support = cm.sum(axis=1)
    absent = [classes[k] for k in range(len(classes)) if support[k] == 0]
    out: dict = {"n": int(len(y))}
    out["accuracy"] = float(accuracy_from_cm(cm))
    out["balanced_accuracy"] = float(balanced_accuracy_from_cm(cm))
    out["f1_macro"] = float(f1_macro_from_cm(cm))
    out["kappa"] = float(kappa_from_cm(cm, "quadratic" if ordinal else None))
    out["kappa_weights"] = "quadratic" if ordinal else "none"
    auc, per = _auc(y, p) if len(y) else (np.nan, np.full(len(classes), np.nan) if len(classes) > 2 else None)
    if absent:
        warnings.warn(f"class(es) {absent} absent from the true labels ({len(y)} slides): their AUC is undefined "
                      + ("(NaN)" if len(classes) == 2 else "(NaN, left out of the macro AUC)"),
                      MetricWarning, stacklevel=2)
    out["auc"] = float(auc)
    if per is not None:
        out["auc_per_class"] = {c: float(v) for c, v in zip(classes, per)}
    out["confusion_matrix"] = cm.tolist()
    out["support"] = {c: int(s) for c, s in zip(classes, support)}
    return out


def bootstrap_ci(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, metric: str | Callable, n: int = 1000,
                 seed: int = 0, *, ordinal: bool = False, level: float = 0.95,
                 chunk: int = 250) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric (slides resampled with replacement).

    Args:
        y_true: (m,) class indices; probs: (m, C).
        metric: a name in :data:`SCALAR_METRICS` (vectorised over the ``n`` replicates) or a callable
            ``f(y, probs) -> float`` (called once per replicate).
        n: number of bootstrap replicates; ``seed``: their random generator seed.
        level: coverage (0.95: the 2.5th and 97.5th percentiles).
        chunk: replicates computed at once (memory ~ chunk x m x C floats).

    Returns:
        ``(low, high)``; NaN when fewer than half the replicates give a defined value (e.g. AUC with a
        class absent from most resamples).
    """
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    m = len(y)
    if m == 0 or n <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        idx = rng.integers(0, m, size=(b, m))
        yb, pb = y[idx], p[idx]
        if callable(metric):
            values[start:start + b] = [float(metric(yb[i], pb[i])) for i in range(b)]
        else:
            values[start:start + b] = _metric_batch(metric, yb, pb, ordinal)
    ok = np.isfinite(values)
    if ok.sum() < max(1, n // 2):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values[ok], [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def metrics_with_ci(y_true: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str],
                    ordinal: bool = False, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """:func:`classification_metrics` plus ``<metric>_ci95: [low, high]`` for each scalar metric."""
    out = classification_metrics(y_true, probs, classes, ordinal=ordinal)
    if n_bootstrap > 0 and out["n"] > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            for name in SCALAR_METRICS:
                out[f"{name}_ci95"] = list(bootstrap_ci(y_true, probs, name, n=n_bootstrap, seed=seed,
                                                        ordinal=ordinal))
    return out


__all__ = ["classification_metrics", "bootstrap_ci", "metrics_with_ci", "confusion_matrices", "SCALAR_METRICS",
           "MetricWarning"]
