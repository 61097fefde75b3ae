"""Regression metrics against scipy and hand computations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from wsigraph.tasks.regression_metrics import regression_metrics


def test_regression_metrics_match_scipy_with_cis():
    rng = np.random.default_rng(0)
    y = rng.normal(size=80)
    p = y + rng.normal(scale=0.5, size=80)
    m = regression_metrics(y, p, n_bootstrap=500, seed=0)
    assert m["pearson"] == pytest.approx(pearsonr(y, p)[0]) and m["spearman"] == pytest.approx(spearmanr(y, p)[0])
    assert m["mae"] == pytest.approx(np.abs(p - y).mean())
    assert m["rmse"] == pytest.approx(np.sqrt(((p - y) ** 2).mean()))
    assert m["r2"] == pytest.approx(1 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    for name in ("pearson", "spearman", "mae", "rmse"):
        lo, hi = m[f"{name}_ci95"]
        assert lo < m[name] < hi, name
    const = regression_metrics(y, np.zeros(80), n_bootstrap=0)
    assert np.isnan(const["pearson"]) and "pearson_ci95" not in const
