"""Survival metrics of slide-level risks, through scikit-survival: Harrell's C-index with a bootstrap 95%
CI, time-dependent (cumulative/dynamic) AUC at horizons, and the integrated Brier score.

Conventions: ``time`` (n,) follow-up in the manifest's unit, ``event`` (n,) 1 = event observed, 0 =
censored, ``risk`` (n,) higher = earlier event. The censoring weights of the time-dependent AUC and the
Brier score come from the training fold (``train_time``, ``train_event``), as scikit-survival requires.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def _surv(event: np.ndarray, time: np.ndarray) -> Any:
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, dtype=np.float64))


def c_index(time: Sequence[float], event: Sequence[int], risk: Sequence[float]) -> float:
    """Harrell's concordance index (ties in risk count one half); NaN without a comparable pair."""
    from sksurv.metrics import concordance_index_censored

    t, e, r = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (time, event, risk))
    if len(t) < 2 or not e.any():
        return float("nan")
    try:
        return float(concordance_index_censored(e.astype(bool), t, r)[0])
    except ValueError:  # no comparable pair (e.g. every event after every censoring)
        return float("nan")


def c_index_ci(time: Sequence[float], event: Sequence[int], risk: Sequence[float], n: int = 1000, seed: int = 0,
               level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`c_index` (slides resampled with replacement; NaN when fewer
    than half the replicates are defined)."""
    t, e, r = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (time, event, risk))
    m = len(t)
    if m < 2 or n <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m, size=(n, m))
    values = np.array([c_index(t[i], e[i], r[i]) for i in idx])  # one replicate per call: n calls, not per slide
    ok = np.isfinite(values)
    if ok.sum() < max(1, n // 2):
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(values[ok], [a, 1.0 - a])
    return float(lo), float(hi)


def default_horizons(train_time: np.ndarray, train_event: np.ndarray) -> list[float]:
    """The quartiles of the training fold's event times (the times at which the time-dependent AUC is read)."""
    times = np.asarray(train_time, dtype=np.float64)[np.asarray(train_event).astype(bool)]
    if times.size == 0:
        return []
    return [float(v) for v in np.unique(np.quantile(times, [0.25, 0.5, 0.75]))]


def _within_train(time: np.ndarray, event: np.ndarray, train_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Test follow-up beyond the training fold's last time, censored just before it: the censoring weights
    (a Kaplan-Meier of the training fold) are zero there. Metrics read at earlier times do not change."""
    cap = float(np.max(train_time))
    late = time >= cap
    t = np.where(late, np.nextafter(cap, -np.inf), time)
    return t, np.where(late, False, event)


def td_auc(time: np.ndarray, event: np.ndarray, risk: np.ndarray, train_time: np.ndarray,
           train_event: np.ndarray, horizons: Sequence[float]) -> dict[float, float]:
    """Cumulative/dynamic AUC at each horizon: events before it against slides still event-free after
    it, inverse-probability-of-censoring weighted. NaN at a horizon outside the test follow-up range."""
    from sksurv.metrics import cumulative_dynamic_auc

    t, e = _within_train(np.asarray(time, dtype=np.float64), np.asarray(event).astype(bool), train_time)
    out = {float(h): float("nan") for h in horizons}
    ok = [h for h in out if t[e].size and t.min() <= h < t.max() and (t[e] <= h).any() and (t > h).any()]
    if not ok:
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc, _ = cumulative_dynamic_auc(_surv(train_event, train_time), _surv(e, t),
                                            np.asarray(risk, dtype=np.float64), np.asarray(ok))
    except ValueError:
        return out
    out.update({float(h): float(v) for h, v in zip(ok, np.atleast_1d(auc))})
    return out


def brier_times(time: np.ndarray, train_time: np.ndarray, n: int = 15) -> np.ndarray:
    """A grid of times for the integrated Brier score: quantiles 10%..90% of the test times, inside both the
    test and the training follow-up (scikit-survival's requirement)."""
    t = np.asarray(time, dtype=np.float64)
    grid = np.unique(np.quantile(t, np.linspace(0.1, 0.9, n)))
    hi = min(t.max(), np.asarray(train_time, dtype=np.float64).max())
    return grid[(grid >= t.min()) & (grid < hi)]


def integrated_brier(time: np.ndarray, event: np.ndarray, surv_at: np.ndarray, grid: np.ndarray,
                     train_time: np.ndarray, train_event: np.ndarray) -> float:
    """Integrated Brier score of survival probabilities ``surv_at`` (n, T) at ``grid`` (T,); NaN when it
    cannot be computed (fewer than 2 grid times)."""
    from sksurv.metrics import integrated_brier_score

    if len(grid) < 2:
        return float("nan")
    time, event = _within_train(np.asarray(time, dtype=np.float64), np.asarray(event).astype(bool), train_time)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(integrated_brier_score(_surv(train_event, train_time), _surv(event, time), surv_at, grid))
    except ValueError:
        return float("nan")


def breslow_survival(train_risk: np.ndarray, train_time: np.ndarray, train_event: np.ndarray,
                     risk: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """S(t | r) = exp(-H0(t) exp(r)) at ``grid`` (n, T), with Breslow's baseline cumulative hazard H0 from the
    training fold's risks: H0(t) = sum over event times s <= t of d_s / sum_{j: t_j >= s} exp(r_j)."""
    tr = np.asarray(train_risk, dtype=np.float64)
    tt = np.asarray(train_time, dtype=np.float64)
    te = np.asarray(train_event).astype(bool)
    w = np.exp(tr - tr.max())  # shifted for stability; undone below
    s = np.unique(tt[te])
    deaths = (tt[te][None, :] == s[:, None]).sum(axis=1)
    at_risk = (tt[None, :] >= s[:, None]) @ w
    h0 = np.cumsum(deaths / at_risk) * np.exp(-tr.max())
    H = h0[np.searchsorted(s, np.asarray(grid, dtype=np.float64), side="right") - 1] if len(s) else np.zeros(len(grid))
    H = np.where(np.asarray(grid) < (s[0] if len(s) else np.inf), 0.0, H)
    return np.exp(-np.exp(np.asarray(risk, dtype=np.float64))[:, None] * H[None, :])


def survival_metrics(time: Sequence[float], event: Sequence[int], risk: Sequence[float], *,
                     train_time: Sequence[float] | None = None, train_event: Sequence[int] | None = None,
                     horizons: Sequence[float] | None = None, surv_fn: Any = None, n_bootstrap: int = 1000,
                     seed: int = 0) -> dict:
    """Every survival metric of one split.

    Args:
        time, event, risk: (n,) of the split's slides.
        train_time, train_event: the training fold (censoring weights; the default horizons).
        horizons: times of the time-dependent AUC (None: quartiles of the training event times).
        surv_fn: ``f(grid (T,)) -> (n, T)`` survival probabilities of the split's slides at the grid times,
            for the integrated Brier score (None: not computed).
        n_bootstrap: replicates of the C-index CI (0: none).

    Returns:
        ``{"n", "n_events", "c_index", "c_index_ci95", "td_auc": {horizon: auc}, "mean_td_auc", "ibs"}``.
    """
    t, e, r = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (time, event, risk))
    out: dict[str, Any] = {"n": int(len(t)), "n_events": int(e.sum()), "c_index": c_index(t, e, r)}
    if n_bootstrap > 0:
        out["c_index_ci95"] = list(c_index_ci(t, e, r, n=n_bootstrap, seed=seed))
    if train_time is not None and train_event is not None and len(t):
        tt, te = np.asarray(train_time, dtype=np.float64), np.asarray(train_event, dtype=np.float64)
        hs = default_horizons(tt, te) if horizons is None else [float(h) for h in horizons]
        aucs = td_auc(t, e, r, tt, te, hs)
        out["td_auc"] = {f"{h:g}": v for h, v in aucs.items()}
        finite = [v for v in aucs.values() if np.isfinite(v)]
        out["mean_td_auc"] = float(np.mean(finite)) if finite else float("nan")
        if surv_fn is not None:
            grid = brier_times(t, tt)
            out["ibs"] = integrated_brier(t, e, surv_fn(grid), grid, tt, te) if len(grid) >= 2 else float("nan")
    return out


__all__ = ["c_index", "c_index_ci", "td_auc", "integrated_brier", "breslow_survival", "survival_metrics",
           "default_horizons", "brier_times"]
