"""Patient-level prediction: the outputs of a patient's slides aggregated into one row per ``case_id``.

``mean``: the mean of the slides' rows (probabilities; risk and survival curve; predicted value). ``max``:
classification takes each class's largest probability, renormalised; survival and regression take the
row of the slide with the highest risk / value (the worst slide decides).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from wsigraph.errors import InputError

PATIENT_AGGREGATIONS = ("none", "mean", "max")


def has_multislide_patients(case_ids: Sequence[str]) -> bool:
    """True when some case holds more than one slide."""
    return len(set(case_ids)) < len(case_ids)


def aggregate_patients(task: Any, case_ids: Sequence[str], slide_ids: Sequence[str], targets: np.ndarray,
                       rows: np.ndarray, how: str = "mean") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(case ids, targets (m, T), rows (m, P), slides per case (m,))``, cases in first-seen order.

    Raises:
        InputError: a case whose slides carry different targets (labels, times, events or values), naming
            the case and its slides.
    """
    if how not in PATIENT_AGGREGATIONS[1:]:
        raise ValueError(f"patient aggregation must be one of {PATIENT_AGGREGATIONS[1:]}, got {how!r}")
    cases = pd.Series([str(c) for c in case_ids])
    codes, uniques = pd.factorize(cases)
    t = np.asarray(targets, dtype=np.float64).reshape(len(cases), -1)
    r = np.asarray(rows, dtype=np.float64).reshape(len(cases), -1)
    first = pd.DataFrame(t).groupby(codes).transform("first").to_numpy()
    differs = ~((first == t) | (np.isnan(first) & np.isnan(t))).all(axis=1)
    if differs.any():
        case = uniques[codes[np.flatnonzero(differs)[0]]]
        slides = [s for s, c in zip(slide_ids, cases) if c == case]
        raise InputError(f"case {case!r}: its slides {slides} have different targets; patient-level prediction "
                         "needs one target per patient (fix the manifest, or set data.patient_level: none)")
    targets_p = pd.DataFrame(t).groupby(codes).first().to_numpy()
    counts = np.bincount(codes)
    frame = pd.DataFrame(r)
    if how == "mean":
        rows_p = frame.groupby(codes).mean().to_numpy()
    elif task.name == "classification":
        rows_p = frame.groupby(codes).max().to_numpy()
        rows_p = rows_p / rows_p.sum(axis=1, keepdims=True)
    else:
        worst = frame[0].groupby(codes).idxmax().to_numpy()
        rows_p = r[worst]
    return [str(u) for u in uniques], targets_p, rows_p, counts


def patient_frame(task: Any, case_ids: Sequence[str], targets: np.ndarray, rows: np.ndarray,
                  counts: np.ndarray) -> Any:
    """The patient predictions table: ``case_id, n_slides``, then the task's target and prediction columns."""
    df = task.predictions_frame(case_ids, targets, rows).rename(columns={"slide_id": "case_id"})
    df.insert(1, "n_slides", np.asarray(counts, dtype=np.int64))
    return df


__all__ = ["aggregate_patients", "patient_frame", "has_multislide_patients", "PATIENT_AGGREGATIONS"]
