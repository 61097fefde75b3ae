"""Plots of survival and regression predictions: Kaplan-Meier curves of predicted risk groups with a
log-rank test, and predicted against true values."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from wsigraph.viz.curves import _figure, _save


def risk_groups(risk: Sequence[float], threshold: float) -> np.ndarray:
    """(n,) bool: the high-risk group, ``risk > threshold`` (the threshold is the validation fold's median
    risk, so the test split is cut where it was chosen)."""
    return np.asarray(risk, dtype=np.float64) > float(threshold)


def logrank_p(time: Sequence[float], event: Sequence[int], high: np.ndarray) -> float:
    """Two-sided log-rank p-value of the two groups (scikit-survival); NaN when a group is empty or has no
    event."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    t, e, g = np.asarray(time, dtype=np.float64), np.asarray(event).astype(bool), np.asarray(high).astype(bool)
    if g.all() or (~g).all() or not e.any():
        return float("nan")
    try:
        _, p = compare_survival(Surv.from_arrays(e, t), g.astype(int))
    except ValueError:
        return float("nan")
    return float(p)


def plot_km_groups(time: Sequence[float], event: Sequence[int], risk: Sequence[float], threshold: float,
                   out_png: str | os.PathLike, *, title: str = "") -> tuple[Path, float]:
    """Kaplan-Meier curves (with 95% confidence bands) of the low- and high-risk groups; returns the PNG and
    the log-rank p-value (also in the legend)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, e = np.asarray(time, dtype=np.float64), np.asarray(event).astype(bool)
    high = risk_groups(risk, threshold)
    p = logrank_p(t, e, high)
    fig, (ax,) = _figure(1, width=5.0, height=4.0)
    for name, mask, color in (("low risk", ~high, "tab:blue"), ("high risk", high, "tab:red")):
        if not mask.any():
            continue
        x, s, (lo, hi) = kaplan_meier_estimator(e[mask], t[mask], conf_type="log-log")
        ax.step(x, s, where="post", color=color, label=f"{name} (n={int(mask.sum())}, {int(e[mask].sum())} events)")
        ax.fill_between(x, lo, hi, step="post", color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title((title + "\n" if title else "") + f"log-rank p = {p:.3g}" if np.isfinite(p) else title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out_png), p


def plot_regression(y_true: Sequence[float], y_pred: Sequence[float], out_png: str | os.PathLike, *,
                    title: str = "") -> Path:
    """Predicted against true values with the identity line and Pearson / Spearman r in the title."""
    from wsigraph.tasks.regression_metrics import regression_metrics

    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    m = regression_metrics(y, p, n_bootstrap=0)
    fig, (ax,) = _figure(1, width=4.4, height=4.2)
    ax.scatter(y, p, s=14, alpha=0.7)
    lo, hi = float(np.nanmin([y.min(), p.min()])), float(np.nanmax([y.max(), p.max()]))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title((title + "\n" if title else "") + f"Pearson r {m['pearson']:.3f}, Spearman r {m['spearman']:.3f}")
    return _save(fig, out_png)


__all__ = ["risk_groups", "logrank_p", "plot_km_groups", "plot_regression"]
