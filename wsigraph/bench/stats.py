"""Paired tests of a reference model against the others: Wilcoxon signed-rank over seed x fold pairs."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

WILCOXON_COLUMNS = ["cohort", "metric", "reference", "model", "n", "n_nonzero", "mean_reference", "mean_model",
                    "mean_diff", "median_diff", "statistic", "p_value", "note"]


def paired_wilcoxon(ref: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``ref - other`` (pairs with a NaN dropped).

    Returns ``n`` (pairs), ``n_nonzero``, ``mean_reference``, ``mean_model``, ``mean_diff``, ``median_diff``,
    ``statistic`` (scipy's: the smaller rank sum), ``p_value`` and ``note``. All differences zero -> p = 1
    (the two models agree on every pair), statistic NaN; fewer than two pairs -> NaN with a note.
    Zero differences are dropped before ranking (Wilcoxon's original method), ties share mid-ranks.
    """
    from scipy.stats import wilcoxon

    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    nonzero = int(np.count_nonzero(d))
    out: dict[str, Any] = {
        "n": int(d.size), "n_nonzero": nonzero,
        "mean_reference": float(a.mean()) if a.size else float("nan"),
        "mean_model": float(b.mean()) if b.size else float("nan"),
        "mean_diff": float(d.mean()) if d.size else float("nan"),
        "median_diff": float(np.median(d)) if d.size else float("nan"),
        "statistic": float("nan"), "p_value": float("nan"), "note": "",
    }
    if d.size < 2:
        out["note"] = f"{d.size} complete pair(s): no test"
        return out
    if nonzero == 0:
        out["p_value"] = 1.0
        out["note"] = "all differences zero"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and tie warnings: the note says what happened
        res = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    out["statistic"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    if nonzero < 6:
        out["note"] = f"only {nonzero} non-zero difference(s): p cannot go below {2.0 / 2 ** nonzero:.3g}"
    return out


def wilcoxon_table(runs: Any, reference: str, metrics: Sequence[str], keys: Sequence[str] = ("seed", "fold")) -> Any:
    """One row per cohort x metric x model (other than ``reference``): the paired test over ``keys``.

    Args:
        runs: DataFrame with ``cohort``, ``model``, the ``keys`` and the metric columns.
        reference: the model label every other model is compared with.
        metrics: columns of ``runs`` to test.
    """
    import pandas as pd

    rows = []
    for cohort, part in runs.groupby("cohort", sort=False):
        ref = part[part["model"] == reference]
        if ref.empty:
            continue
        for model in [m for m in part["model"].unique() if m != reference]:
            other = part[part["model"] == model]
            for metric in metrics:
                if metric not in part.columns:
                    continue
                joined = ref[list(keys) + [metric]].merge(other[list(keys) + [metric]], on=list(keys),
                                                          suffixes=("_ref", "_other"))
                res = paired_wilcoxon(joined[f"{metric}_ref"], joined[f"{metric}_other"])
                rows.append({"cohort": cohort, "metric": metric, "reference": reference, "model": model, **res})
    return pd.DataFrame(rows, columns=WILCOXON_COLUMNS)


__all__ = ["paired_wilcoxon", "wilcoxon_table", "WILCOXON_COLUMNS"]
