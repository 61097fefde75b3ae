"""Localisation metrics: do a model's per-patch scores point at the lesions?

Where patch-level ground truth exists (synthetic cohorts; CAMELYON16 lesion outlines turned into patch
labels by :mod:`wsigraph.data.annotations`), each slide's patch scores are compared with it:

* ``auc``: patch-level ROC AUC within the slide (NaN when the slide has no positive or no negative patch);
* ``ap``: patch-level average precision (NaN without positive patches);
* ``lesion_hit@k``: fraction of the slide's lesions (8-connected components of positive patches) with at
  least one patch among the ``k`` highest-scored patches;
* ``precision@k``: fraction of the ``k`` highest-scored patches that are positive.

A model that classifies slides well by looking at the wrong place shows a low ``lesion_hit@k``.
:func:`aggregate_localization` averages over the positive slides of a cohort.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from wsigraph.errors import InputError

#: per-slide keys that :func:`aggregate_localization` averages (plus the ``@k`` ones).
_MEAN_KEYS = ("auc", "ap")
_AT_K_PREFIXES = ("lesion_hit@", "precision@")


def _as_1d(x: Any, name: str, where: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{where}: {name} must have shape (N,), got {arr.shape}")
    return arr


def patch_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` against 0/1 ``labels`` (Mann-Whitney U with mid-ranks for ties); NaN if one class."""
    from scipy.stats import rankdata

    pos = labels > 0
    n_pos = int(pos.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: ties count one half
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def patch_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (area under the precision-recall steps; tied scores form one step); NaN if no positive."""
    pos = labels > 0
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], pos[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each group of tied scores
    tp = np.cumsum(y)[last]
    k = (np.flatnonzero(last) + 1).astype(np.float64)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * tp / k))


def localization_metrics(
    scores: Any,
    patch_labels: Any,
    coords: Any,
    patch_size_level0: float,
    k: int | Sequence[int] = (10, 50),
    *,
    lesions: np.ndarray | None = None,
    where: str = "slide",
) -> dict[str, float]:
    """Score one slide's per-patch scores against its patch labels.

    Args:
        scores: (N,) float, higher = more lesion-like (numpy or torch).
        patch_labels: (N,) 0/1 ground truth (values > 0 are positive).
        coords: (N, 2) patch positions, level-0 pixels top-left (or lattice units with step 1); used to
            find the lesions (connected components of positive patches).
        patch_size_level0: grid step in the units of ``coords``.
        k: one or several k for ``lesion_hit@k`` / ``precision@k`` (k larger than N uses all patches).
        lesions: (N,) lesion ids from :func:`wsigraph.data.annotations.lesion_components` (-1 outside),
            to reuse across models; computed when None.
        where: a name (slide id) for error messages.

    Returns:
        ``n_patches``, ``n_positive``, ``n_lesions``, ``auc``, ``ap`` and, for each k,
        ``lesion_hit@k`` (NaN without lesions), ``n_lesions_hit@k`` and ``precision@k``.
    """
    from wsigraph.data.annotations import lesion_components

    s = _as_1d(scores, "scores", where).astype(np.float64)
    y = _as_1d(patch_labels, "patch_labels", where)
    if s.size != y.size:
        raise InputError(f"{where}: scores has {s.size} entries but patch_labels has {y.size}")
    if s.size == 0:
        raise InputError(f"{where}: no patches")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise InputError(f"{where}: scores contain NaN or inf (first at patch {int(bad[0])})")
    ks = [int(k)] if np.isscalar(k) else [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise InputError(f"{where}: k must be positive integers, got {k!r}")
    pos = y > 0
    if lesions is None:
        c = np.asarray(coords.detach().cpu().numpy() if hasattr(coords, "detach") else coords)
        if c.shape != (s.size, 2):
            raise InputError(f"{where}: coords must have shape ({s.size}, 2), got {c.shape}")
        lesions = lesion_components(c, pos, patch_size_level0)
    else:
        lesions = _as_1d(lesions, "lesions", where)
        if lesions.size != s.size:
            raise InputError(f"{where}: lesions has {lesions.size} entries but scores has {s.size}")
    n_lesions = int(np.unique(lesions[lesions >= 0]).size)
    out: dict[str, float] = {
        "n_patches": int(s.size),
        "n_positive": int(pos.sum()),
        "n_lesions": n_lesions,
        "auc": patch_auc(s, pos),
        "ap": patch_average_precision(s, pos),
    }
    order = np.argsort(-s, kind="stable")
    for kk in ks:
        top = order[: min(kk, s.size)]
        hit = lesions[top]
        n_hit = int(np.unique(hit[hit >= 0]).size)
        out[f"lesion_hit@{kk}"] = n_hit / n_lesions if n_lesions else float("nan")
        out[f"n_lesions_hit@{kk}"] = n_hit
        out[f"precision@{kk}"] = float(pos[top].mean())
    return out


def aggregate_localization(per_slide: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Average per-slide localisation metrics over the positive slides (those with a positive patch).

    NaN values (e.g. the AUC of a slide whose patches are all positive) are left out of their mean.

    Returns:
        ``n_slides`` (positive slides), ``n_slides_total``, the mean of ``auc``, ``ap``,
        ``lesion_hit@k``, ``precision@k`` (NaN when no positive slide has a value), ``n_auc`` (slides
        with a defined AUC), and ``lesion_hit@k_pooled`` (lesions hit / lesions, over all positive slides).
    """
    rows = list(per_slide)
    positive = [r for r in rows if int(r.get("n_positive", 0)) > 0]
    keys = list(_MEAN_KEYS)
    for r in rows:
        keys += [key for key in r if key.startswith(_AT_K_PREFIXES) and key not in keys]
    out: dict[str, float] = {"n_slides": len(positive), "n_slides_total": len(rows)}
    for key in keys:
        vals = np.array([float(r[key]) for r in positive if key in r and r[key] is not None], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[key] = float(vals.mean()) if vals.size else float("nan")
        if key == "auc":
            out["n_auc"] = int(vals.size)
    for key in [key for key in keys if key.startswith("lesion_hit@")]:
        kk = key.split("@", 1)[1]
        n_les = sum(int(r.get("n_lesions", 0)) for r in positive if f"n_lesions_hit@{kk}" in r)
        n_hit = sum(int(r[f"n_lesions_hit@{kk}"]) for r in positive if f"n_lesions_hit@{kk}" in r)
        out[f"{key}_pooled"] = n_hit / n_les if n_les else float("nan")
    return out
