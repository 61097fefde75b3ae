"""Regression metrics of slide-level predictions: Pearson and Spearman r with bootstrap 95% CIs, MAE, RMSE,
R^2."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (R, n) arrays (NaN where a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float], n_bootstrap: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict:
    """``{"n", "pearson", "pearson_p", "spearman", "spearman_p", "mae", "rmse", "r2"}`` plus
    ``<name>_ci95`` (percentile bootstrap, slides resampled) for pearson, spearman, mae and rmse."""
    from scipy.stats import pearsonr, spearmanr

    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    n = len(y)
    nan = float("nan")
    out: dict = {"n": int(n)}
    if n >= 3 and np.ptp(y) > 0 and np.ptp(p) > 0:
        pr, sr = pearsonr(y, p), spearmanr(y, p)
        out.update(pearson=float(pr[0]), pearson_p=float(pr[1]), spearman=float(sr[0]), spearman_p=float(sr[1]))
    else:
        out.update(pearson=nan, pearson_p=nan, spearman=nan, spearman_p=nan)
    err = p - y
    out["mae"] = float(np.abs(err).mean()) if n else nan
    out["rmse"] = float(np.sqrt((err ** 2).mean())) if n else nan
    var = float(((y - y.mean()) ** 2).sum()) if n else 0.0
    out["r2"] = 1.0 - float((err ** 2).sum()) / var if var > 0 else nan
    if n_bootstrap > 0 and n >= 3:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        yb, pb = y[idx], p[idx]
        e = pb - yb
        reps = {"pearson": _pearson_rows(yb, pb), "spearman": _pearson_rows(_ranks(yb), _ranks(pb)),
                "mae": np.abs(e).mean(axis=1), "rmse": np.sqrt((e ** 2).mean(axis=1))}
        a = (1.0 - level) / 2.0
        for name, v in reps.items():
            ok = v[np.isfinite(v)]
            out[f"{name}_ci95"] = ([float(q) for q in np.quantile(ok, [a, 1.0 - a])]
                                   if ok.size >= max(1, n_bootstrap // 2) else [nan, nan])
    return out


__all__ = ["regression_metrics"]
