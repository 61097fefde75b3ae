"""Survival metrics (wsigraph.tasks.survival_metrics, through scikit-survival) against lifelines and hand
computations."""
from __future__ import annotations

import numpy as np
import pytest

from wsigraph.tasks.survival_metrics import (breslow_survival, c_index, c_index_ci, integrated_brier,
                                             survival_metrics, td_auc)


def _cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(1.0 / np.exp(risk))  # higher risk, earlier event
    cens = rng.exponential(2.0, size=n)
    return np.minimum(time, cens), (time <= cens).astype(int), risk


def test_c_index_agrees_with_lifelines_and_a_hand_count():
    from lifelines.utils import concordance_index

    t, e, r = _cohort()
    assert c_index(t, e, r) == pytest.approx(concordance_index(t, -r, e), abs=1e-9)  # lifelines: higher = longer
    # by hand: pairs (i event, t_i < t_j) concordant when r_i > r_j
    tt, ee, rr = [1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0], [0.9, 0.1, 0.5, 0.2]
    pairs = [(0, 1), (0, 2), (0, 3), (2, 3)]
    assert c_index(tt, ee, rr) == pytest.approx(sum(rr[i] > rr[j] for i, j in pairs) / len(pairs))
    assert np.isnan(c_index([1, 2], [0, 0], [0.1, 0.2]))  # no event: no comparable pair


def test_c_index_ci_brackets_the_estimate_and_depends_on_the_seed():
    t, e, r = _cohort(80)
    lo, hi = c_index_ci(t, e, r, n=300, seed=0)
    assert lo < c_index(t, e, r) < hi and 0.5 < lo
    assert c_index_ci(t, e, r, n=300, seed=0) == (lo, hi) and c_index_ci(t, e, r, n=300, seed=1) != (lo, hi)


def test_td_auc_of_a_perfect_and_a_reversed_risk():
    t = np.arange(1.0, 21.0)
    e = np.ones(20, int)
    aucs = td_auc(t, e, -t, t, e, [5.0, 10.0, 30.0])
    assert aucs[5.0] == pytest.approx(1.0) and aucs[10.0] == pytest.approx(1.0) and np.isnan(aucs[30.0])
    assert td_auc(t, e, t, t, e, [10.0])[10.0] == pytest.approx(0.0)


def test_integrated_brier_without_censoring_is_the_mean_squared_error_integrated():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(1, 10, size=30))
    e = np.ones(30, int)
    grid = np.array([2.0, 4.0, 6.0, 8.0])
    surv = rng.uniform(size=(30, 4))
    bs = ((t[:, None] > grid[None, :]).astype(float) - surv) ** 2
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    want = trapezoid(bs.mean(axis=0), grid) / (grid[-1] - grid[0])
    assert integrated_brier(t, e, surv, grid, t, e) == pytest.approx(want, rel=1e-6)


def test_breslow_baseline_with_zero_risks_is_nelson_aalen():
    from lifelines import NelsonAalenFitter

    t, e, _ = _cohort(40, seed=3)
    grid = np.quantile(t, [0.2, 0.5, 0.8])
    s = breslow_survival(np.zeros(40), t, e, np.zeros(2), grid)
    na = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(t, e)
    want = np.exp(-na.cumulative_hazard_at_times(grid).to_numpy())
    assert s.shape == (2, 3) and np.allclose(s[0], want, rtol=1e-6) and np.allclose(s[1], want, rtol=1e-6)
    # a higher risk survives less at every time
    s2 = breslow_survival(np.zeros(40), t, e, np.array([-1.0, 1.0]), grid)
    assert (s2[0] > s2[1]).all()


def test_survival_metrics_bundle():
    t, e, r = _cohort(80, seed=1)
    m = survival_metrics(t[:50], e[:50], r[:50], train_time=t[50:], train_event=e[50:], n_bootstrap=100, seed=0,
                         surv_fn=lambda grid: np.exp(-np.exp(r[:50])[:, None] * grid[None, :]))
    assert m["n"] == 50 and m["n_events"] == int(e[:50].sum()) and 0.5 < m["c_index"] <= 1
    assert len(m["c_index_ci95"]) == 2 and len(m["td_auc"]) >= 1 and 0.5 < m["mean_td_auc"] <= 1
    assert 0 < m["ibs"] < 0.25  # better than the uninformative S = 0.5 everywhere
