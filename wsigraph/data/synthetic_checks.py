"""What a synthetic cohort lets a model learn: a per-patch oracle and slide-level set statistics.

A benchmark cohort is only informative when its difficulty is known. For a cohort written by
:func:`~wsigraph.data.synthetic.make_synthetic_cohort` (or slides from
:func:`~wsigraph.data.synthetic.generate_slide`), :func:`cohort_report` measures, with the patch-level
ground truth that real data lacks:

* **the per-patch oracle**: a logistic regression trained on the patches of half the slides, with their
  patch labels (``target``: ``"lesion_like"`` or ``"patch_labels"``), scored on the patches of the other
  half (``oracle_patch_auc``). Its per-patch log-odds, combined over the true spatial graph by a
  neighbourhood statistic (the largest mean log-odds over a patch and its 8 lattice neighbours, the
  tissue patches among them), score each held-out slide (``oracle_slide_auc``): what a model that
  knows the patch signal and uses the contiguity of lesions can reach.
* **slide-level set statistics**, which ignore where the patches lie: a cross-validated logistic regression
  on the slides' mean features (``mean_features_auc``, what mean pooling can reach), the fraction of
  patches the oracle calls lesion-like (``oracle_count_auc``), the oracle's largest patch probability
  (``oracle_max_auc``, an attention model that finds the single most lesion-like patch) and the true
  lesion-like fraction (``true_count_auc``).

On a contiguity cohort the set statistics stay near 0.5 while the oracle's slide AUC is near 1; on a
camelyon cohort the oracle's slide AUC and ``oracle_max_auc`` bound what an attention model can do.
Run it on a bench config's cohort with ``python benchmarks/check_cohorts.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage


@dataclass
class SlideArrays:
    """One slide's arrays for the checks."""

    slide_id: str
    label: int
    coords: np.ndarray
    features: np.ndarray
    patch_labels: np.ndarray
    lesion_like: np.ndarray
    lesion_kind: np.ndarray | None
    step: int
    tissue_type: np.ndarray | None = None


def read_cohort_arrays(root: str | os.PathLike) -> list[SlideArrays]:
    """Every slide of a synthetic cohort folder (``manifest.csv``, ``features/``, ``synthetic.json``)."""
    import json

    import h5py
    import pandas as pd

    root = Path(root)
    classes = json.loads((root / "synthetic.json").read_text(encoding="utf-8"))["classes"]
    table = pd.read_csv(root / "manifest.csv")
    out = []
    for sid, label in zip(table["slide_id"], table["label"]):
        with h5py.File(root / "features" / f"{sid}.h5", "r") as f:
            out.append(SlideArrays(
                slide_id=str(sid), label=classes.index(str(label)), coords=f["coords"][()],
                features=f["features"][()], patch_labels=f["patch_labels"][()], lesion_like=f["lesion_like"][()],
                lesion_kind=f["lesion_kind"][()] if "lesion_kind" in f else None,
                step=int(f.attrs["patch_size_level0"]),
                tissue_type=f["tissue_type"][()] if "tissue_type" in f else None))
    return out


def generate_arrays(cfg: Any) -> list[SlideArrays]:
    """The slides of a :class:`~wsigraph.data.synthetic.SyntheticConfig` in memory (nothing written)."""
    from wsigraph.data.synthetic import _assign_labels, _make_space, generate_slide

    space, labels = _make_space(cfg), _assign_labels(cfg)
    out = []
    for i, lab in enumerate(labels):
        s = generate_slide(cfg, i, int(lab), space)
        out.append(SlideArrays(slide_id=f"syn_{i:03d}", label=int(lab), coords=s.coords, features=s.features,
                               patch_labels=s.patch_labels, lesion_like=s.lesion_like, lesion_kind=s.lesion_kind,
                               step=int(cfg.patch_size_level0), tissue_type=s.tissue_type))
    return out


def neighbourhood_mean(coords: np.ndarray, values: np.ndarray, step: int, missing: float | None = 0.0) -> np.ndarray:
    """Per patch: the mean of ``values`` over the patch and its 8 lattice neighbours (the 3 x 3 window of
    the spatial graph). Cells without a patch count ``missing``; None: the mean over the patches present."""
    lat = coords // step
    lat = lat - lat.min(axis=0)
    shape = (lat[:, 1].max() + 1, lat[:, 0].max() + 1)
    img = np.full(shape, 0.0 if missing is None else float(missing))
    img[lat[:, 1], lat[:, 0]] = values
    smooth = ndimage.uniform_filter(img, size=3, mode="constant", cval=0.0 if missing is None else float(missing))
    if missing is None:
        present = np.zeros(shape)
        present[lat[:, 1], lat[:, 0]] = 1.0
        smooth = smooth / np.maximum(ndimage.uniform_filter(present, size=3, mode="constant", cval=0.0), 1e-12)
    return smooth[lat[:, 1], lat[:, 0]]


def _auc(y: Sequence[int], score: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def _halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of slide indices into (oracle training, held-out) halves."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a += idx[: len(idx) // 2].tolist()
        b += idx[len(idx) // 2:].tolist()
    return np.sort(a), np.sort(b)


def fit_patch_oracle(slides: Sequence[SlideArrays], target: str = "lesion_like", max_patches: int = 30000,
                     seed: int = 0) -> Any:
    """Logistic regression of ``target`` (``"lesion_like"`` / ``"patch_labels"``) on patch features, fitted
    on at most ``max_patches`` patches of ``slides`` (a random subset, fixed by ``seed``)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([s.features for s in slides]).astype(np.float32)
    y = np.concatenate([getattr(s, target) for s in slides]).astype(np.int64)
    if len(y) > max_patches:
        keep = np.random.default_rng(seed).choice(len(y), max_patches, replace=False)
        x, y = x[keep], y[keep]
    return LogisticRegression(max_iter=1000, C=1.0).fit(x, y)


def cohort_report(slides: Sequence[SlideArrays], target: str = "lesion_like", seed: int = 0,
                  max_patches: int = 30000) -> dict[str, float]:
    """The oracle and set-statistic AUCs of a cohort (binary: label > 0 is positive); see the module
    docstring. Camelyon cohorts add ``macro_patch_auc`` / ``micro_patch_auc`` / ``decoy_patch_auc`` (the
    oracle on those patches against lesion-free ones) and ``micro_only_oracle_slide_auc`` /
    ``micro_only_oracle_max_auc`` (the held-out positives whose lesions are all micro lesions, against the
    held-out negatives)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.array([int(s.label > 0) for s in slides])
    train, test = _halves(labels, seed)
    oracle = fit_patch_oracle([slides[i] for i in train], target, max_patches, seed)
    held = [slides[i] for i in test]
    y_held = labels[test]
    probs = [oracle.predict_proba(s.features.astype(np.float32))[:, 1] for s in held]
    logits = [oracle.decision_function(s.features.astype(np.float32)) for s in held]
    patch_y = np.concatenate([getattr(s, target) for s in held])
    report = {"n_slides": float(len(slides)), "n_held_out": float(len(held)),
              "oracle_patch_auc": _auc(patch_y, np.concatenate(probs))}
    logits = [g - np.median(g) for g in logits]  # per-slide centring: the stain moves a whole slide
    neigh = np.array([neighbourhood_mean(s.coords, g, s.step, missing=None).max() for s, g in zip(held, logits)])
    report["oracle_slide_auc"] = _auc(y_held, neigh)
    report["oracle_max_auc"] = _auc(y_held, [p.max() for p in probs])
    report["oracle_count_auc"] = _auc(y_held, [(p > 0.5).mean() for p in probs])
    report["oracle_mean_prob_auc"] = _auc(y_held, [p.mean() for p in probs])
    report["true_count_auc"] = _auc(labels, [s.lesion_like.mean() for s in slides])
    means = np.stack([s.features.astype(np.float64).mean(axis=0) for s in slides])
    n_splits = int(min(5, np.bincount(labels).min()))
    if n_splits >= 2:
        p = cross_val_predict(LogisticRegression(max_iter=2000), means, labels, method="predict_proba",
                              cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed))[:, 1]
        report["mean_features_auc"] = _auc(labels, p)
    if all(s.lesion_kind is not None for s in held):
        kinds = np.concatenate([s.lesion_kind for s in held])
        flat = np.concatenate(probs)
        for name, k in (("macro", 1), ("micro", 2), ("decoy", 3)):
            sel = (kinds == 0) | (kinds == k)
            if (kinds == k).any():
                report[f"{name}_patch_auc"] = _auc((kinds[sel] == k).astype(int), flat[sel])
        micro_only = np.array([s.label > 0 and (s.lesion_kind == 2).any() and not (s.lesion_kind == 1).any()
                               for s in held])
        sel = micro_only | (y_held == 0)
        if micro_only.any():
            report["micro_only_oracle_slide_auc"] = _auc(y_held[sel], neigh[sel])
            report["micro_only_oracle_max_auc"] = _auc(y_held[sel], [p.max() for p, k in zip(probs, sel) if k])
        report["micro_only_positive_fraction"] = float(micro_only.sum() / max(1, (y_held > 0).sum()))
    return report


def format_report(report: dict[str, float], keys: Iterable[str] | None = None) -> str:
    """``key value`` lines of a report."""
    keys = list(keys) if keys is not None else list(report)
    return "\n".join(f"{k:32s} {report[k]:.3f}" for k in keys if k in report)


__all__ = ["SlideArrays", "read_cohort_arrays", "generate_arrays", "neighbourhood_mean", "fit_patch_oracle",
           "cohort_report", "format_report"]
