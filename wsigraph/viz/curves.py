"""Result plots a reviewer asks for: ROC and PR curves with bootstrap bands, reliability diagram, confusion
matrix, training curves, and the ROC curves of several models on one cohort.

Curves are computed on fixed grids so they can be averaged and banded: the ROC's true-positive rate at 101
false-positive rates in [0, 1] (vertical averaging), the PR curve's interpolated precision (the best
precision at recall >= r) at 101 recalls. A band is the 2.5-97.5 percentile of the curve over bootstrap
resamples of the slides (each resample keeps both classes). Multi-class problems are drawn one class
against the rest, with the macro average (mean over classes on the grid).

Every ``plot_*`` function writes one PNG atomically and returns its path; the ``*_curve`` functions return
the numbers, so tests and other plots can use them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from wsigraph.errors import InputError

GRID = np.linspace(0.0, 1.0, 101)


# ----------------------------------------------------------------------------------------------- numbers


def _binary(y: np.ndarray, score: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != score.shape:
        raise InputError(f"{where}: {len(y)} labels but {len(score)} scores")
    if not np.isin(y, (0, 1)).all():
        raise InputError(f"{where}: binary labels must be 0 or 1")
    if not np.isfinite(score).all():
        raise InputError(f"{where}: scores must be finite")
    return y, score


def _roc_on_grid(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    out = np.interp(GRID, fpr, tpr)
    out[0] = 0.0 if len(fpr) < 2 else out[0]
    return out


def _pr_on_grid(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, score)
    order = np.argsort(recall)
    recall, precision = recall[order], precision[order]
    best = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at recall >= r
    idx = np.searchsorted(recall, GRID, side="left").clip(max=len(recall) - 1)
    return best[idx]


def _resamples(y: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Up to ``n`` bootstrap index sets that keep both classes (none when a class is absent)."""
    if n <= 0 or y.min() == y.max():
        return []
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n, len(y)))
    keep = (y[idx].min(axis=1) == 0) & (y[idx].max(axis=1) == 1)
    return list(idx[keep])


def roc_curve_band(y: Sequence[int], score: Sequence[float], *, n_bootstrap: int = 200, seed: int = 0,
                   where: str = "roc") -> dict[str, Any]:
    """ROC of a binary problem on :data:`GRID`.

    Returns:
        ``fpr`` (101,), ``tpr`` (101,), ``lo``/``hi`` (101,) the bootstrap band (None without resamples),
        ``auc`` (float).
    """
    from sklearn.metrics import roc_auc_score

    y, score = _binary(np.asarray(y), np.asarray(score), where)
    if y.min() == y.max():
        raise InputError(f"{where}: a ROC curve needs slides of both classes")
    tpr = _roc_on_grid(y, score)
    reps = [_roc_on_grid(y[i], score[i]) for i in _resamples(y, n_bootstrap, seed)]
    lo, hi = (np.percentile(reps, [2.5, 97.5], axis=0) if reps else (None, None))
    return {"fpr": GRID.copy(), "tpr": tpr, "lo": lo, "hi": hi, "auc": float(roc_auc_score(y, score))}


def pr_curve_band(y: Sequence[int], score: Sequence[float], *, n_bootstrap: int = 200, seed: int = 0,
                  where: str = "precision-recall") -> dict[str, Any]:
    """Precision-recall curve of a binary problem on :data:`GRID` (interpolated precision).

    Returns:
        ``recall`` (101,), ``precision`` (101,), ``lo``/``hi`` (101,) or None, ``ap`` (average precision),
        ``prevalence`` (the precision of a random ranking).
    """
    from sklearn.metrics import average_precision_score

    y, score = _binary(np.asarray(y), np.asarray(score), where)
    if y.min() == y.max():
        raise InputError(f"{where}: a precision-recall curve needs slides of both classes")
    precision = _pr_on_grid(y, score)
    reps = [_pr_on_grid(y[i], score[i]) for i in _resamples(y, n_bootstrap, seed)]
    lo, hi = (np.percentile(reps, [2.5, 97.5], axis=0) if reps else (None, None))
    return {"recall": GRID.copy(), "precision": precision, "lo": lo, "hi": hi,
            "ap": float(average_precision_score(y, score)), "prevalence": float(y.mean())}


def macro_roc_band(y: Sequence[int], probs: np.ndarray, *, n_bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """Macro-average one-vs-rest ROC of a C-class problem (mean TPR over classes on the grid), with band."""
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    present = [c for c in range(probs.shape[1]) if 0 < (y == c).sum() < len(y)]
    if not present:
        raise InputError("macro ROC: no class has both positive and negative slides")

    def macro(idx: np.ndarray) -> np.ndarray | None:
        curves = [_roc_on_grid((y[idx] == c).astype(np.int64), probs[idx, c]) for c in present
                  if 0 < (y[idx] == c).sum() < len(idx)]
        return np.mean(curves, axis=0) if len(curves) == len(present) else None

    tpr = macro(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    reps = [r for r in (macro(rng.integers(0, len(y), len(y))) for _ in range(max(n_bootstrap, 0))) if r is not None]
    lo, hi = (np.percentile(reps, [2.5, 97.5], axis=0) if reps else (None, None))
    auc = float(np.trapezoid(tpr, GRID)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, GRID))
    return {"fpr": GRID.copy(), "tpr": tpr, "lo": lo, "hi": hi, "auc": auc, "classes": present}


def calibration_bins(y_binary: Sequence[int], prob: Sequence[float], n_bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram data: equal-width bins of predicted probability.

    Returns:
        ``mean_predicted`` (B,), ``fraction_positive`` (B,), ``count`` (B,) for the non-empty bins, and ``ece``
        (expected calibration error: count-weighted mean |fraction - mean predicted|).
    """
    y, p = _binary(np.asarray(y_binary), np.asarray(prob), "calibration")
    if ((p < 0) | (p > 1)).any():
        raise InputError("calibration: probabilities must lie in [0, 1]")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    ok = count > 0
    mean_pred = np.bincount(b, weights=p, minlength=n_bins)[ok] / count[ok]
    frac = np.bincount(b, weights=y, minlength=n_bins)[ok] / count[ok]
    ece = float(np.sum(count[ok] * np.abs(frac - mean_pred)) / len(y))
    return {"mean_predicted": mean_pred, "fraction_positive": frac, "count": count[ok], "ece": np.float64(ece)}


def confusion(y: Sequence[int], pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    y = np.asarray(y).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    ok = (y >= 0) & (y < num_classes)
    return np.bincount(y[ok] * num_classes + pred[ok], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


# ----------------------------------------------------------------------------------------------- figures


def _figure(ncols: int, width: float = 4.2, height: float = 3.8) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig: Any, path: str | os.PathLike) -> Path:
    from wsigraph.utils.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _band(ax: Any, x: np.ndarray, curve: Mapping[str, Any], key: str, label: str, color: Any = None,
          alpha: float = 0.18) -> None:
    line, = ax.plot(x, curve[key], label=label, color=color, lw=1.6)
    if curve.get("lo") is not None:
        ax.fill_between(x, curve["lo"], curve["hi"], color=line.get_color(), alpha=alpha, lw=0)


def _one_vs_rest(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if len(classes) == 2:
        return [(str(classes[1]), (y == 1).astype(np.int64), probs[:, 1])]
    return [(str(c), (y == k).astype(np.int64), probs[:, k]) for k, c in enumerate(classes)
            if 0 < (y == k).sum() < len(y)]


def plot_roc_pr(y: Sequence[int], probs: np.ndarray, classes: Sequence[str], out_png: str | os.PathLike, *,
                title: str = "", n_bootstrap: int = 200, seed: int = 0) -> Path:
    """ROC (left) and precision-recall (right) curves with 95% bootstrap bands; per class and macro average
    for more than two classes, the positive class (``classes[1]``) for two.

    Args:
        y: (N,) true class indices. probs: (N, C) predicted probabilities.
    """
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    fig, (ax_roc, ax_pr) = _figure(2)
    for k, (name, yb, score) in enumerate(_one_vs_rest(y, probs, classes)):
        roc = roc_curve_band(yb, score, n_bootstrap=n_bootstrap, seed=seed + k)
        pr = pr_curve_band(yb, score, n_bootstrap=n_bootstrap, seed=seed + k)
        _band(ax_roc, roc["fpr"], roc, "tpr", f"{name} (AUC {roc['auc']:.3f})")
        _band(ax_pr, pr["recall"], pr, "precision", f"{name} (AP {pr['ap']:.3f})")
        if len(classes) == 2:
            ax_pr.axhline(pr["prevalence"], color="grey", ls=":", lw=1, label=f"chance ({pr['prevalence']:.2f})")
    if len(classes) > 2:
        macro = macro_roc_band(y, probs, n_bootstrap=n_bootstrap, seed=seed)
        _band(ax_roc, macro["fpr"], macro, "tpr", f"macro (AUC {macro['auc']:.3f})", color="black")
    ax_roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"ROC{' - ' + title if title else ''}")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
              title=f"precision-recall{' - ' + title if title else ''}")
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    return _save(fig, out_png)


def plot_calibration(y: Sequence[int], probs: np.ndarray, classes: Sequence[str], out_png: str | os.PathLike, *,
                     title: str = "", n_bins: int = 10) -> Path:
    """Reliability diagram: for two classes the probability of ``classes[1]``; for more, the confidence of
    the predicted class against its accuracy. A histogram of the predictions sits below."""
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(classes) == 2:
        yb, p, what = (y == 1).astype(np.int64), probs[:, 1], f"P({classes[1]})"
    else:
        pred = probs.argmax(axis=1)
        yb, p, what = (pred == y).astype(np.int64), probs.max(axis=1), "confidence of the predicted class"
    bins = calibration_bins(yb, p, n_bins)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 5.0), dpi=100, layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    ax.plot(bins["mean_predicted"], bins["fraction_positive"], "o-", lw=1.6,
            label=f"model (ECE {float(bins['ece']):.3f})")
    ax.set(ylabel="observed frequency" if len(classes) == 2 else "accuracy", xlim=(0, 1), ylim=(0, 1.01),
           title=f"calibration{' - ' + title if title else ''}")
    ax.legend(loc="upper left", fontsize=8)
    hist.hist(p, bins=n_bins, range=(0, 1), color="tab:blue", alpha=0.7)
    hist.set(xlabel=what, ylabel="slides")
    return _save(fig, out_png)


def plot_confusion(y: Sequence[int], probs: np.ndarray, classes: Sequence[str], out_png: str | os.PathLike, *,
                   title: str = "") -> Path:
    """Confusion matrix of the arg-max predictions: counts, with each row's share as the colour."""
    y = np.asarray(y).astype(np.int64)
    cm = confusion(y, np.asarray(probs).argmax(axis=1), len(classes))
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 2.2 + 0.6 * len(classes)
    fig, (ax,) = _figure(1, width=size + 0.8, height=size)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=10)
    ticks = range(len(classes))
    ax.set_xticks(list(ticks), [str(c) for c in classes], rotation=30, ha="right")
    ax.set_yticks(list(ticks), [str(c) for c in classes])
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion{' - ' + title if title else ''}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _save(fig, out_png)


def plot_history(history: Any, out_png: str | os.PathLike, *, title: str = "") -> Path:
    """Training curves from ``history.csv`` (a path or a DataFrame): the loss parts per epoch (left) and the
    validation metrics (right)."""
    import pandas as pd

    df = pd.read_csv(history) if isinstance(history, (str, os.PathLike)) else history
    if "epoch" not in df.columns or not len(df):
        raise InputError(f"{history if isinstance(history, (str, os.PathLike)) else 'history'}: no epochs to draw")
    losses = [c for c in df.columns if c.startswith("train_") or c == "val_loss"]
    metrics = [c for c in df.columns if c.startswith("val_") and c != "val_loss"
               and c not in ("val_attn_eff_frac", "val_attn_lesion_mass", "val_lesion_frac")]
    fig, (ax_l, ax_m) = _figure(2)
    for c in losses:
        ax_l.plot(df["epoch"], df[c], label=c, lw=1.4, ls="--" if c == "val_loss" else "-")
    for c in metrics:
        ax_m.plot(df["epoch"], df[c], label=c.removeprefix("val_"), lw=1.4)
    ax_l.set(xlabel="epoch", ylabel="loss", title=f"losses{' - ' + title if title else ''}")
    ax_m.set(xlabel="epoch", ylabel="validation metric", ylim=(0, 1.01),
             title=f"validation{' - ' + title if title else ''}")
    for ax in (ax_l, ax_m):
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_model_rocs(runs: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], out_png: str | os.PathLike, *,
                    title: str = "") -> Path:
    """Several models' ROC curves on one cohort: for each model the mean TPR over its runs (seeds x folds)
    on the grid, with the range between the runs' 2.5 and 97.5 percentiles as its band.

    Args:
        runs: model label -> list of ``(y, score)`` pairs, one per run (binary labels, positive-class scores).
    """
    fig, (ax,) = _figure(1, width=5.4, height=4.6)
    for label, pairs in runs.items():
        curves = [_roc_on_grid(*_binary(y, s, label)) for y, s in pairs if 0 < np.sum(y) < len(y)]
        if not curves:
            continue
        aucs = [roc_curve_band(y, s, n_bootstrap=0)["auc"] for y, s in pairs if 0 < np.sum(y) < len(y)]
        curve = {"tpr": np.mean(curves, axis=0), "lo": None, "hi": None}
        if len(curves) > 1:
            curve["lo"], curve["hi"] = np.percentile(curves, [2.5, 97.5], axis=0)
        _band(ax, GRID, curve, "tpr", f"{label} (AUC {np.mean(aucs):.3f}, {len(curves)} run{'s' * (len(curves) > 1)})",
              alpha=0.18 if len(runs) <= 3 else 0.07)  # many models: fainter bands keep the lines readable
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC{' - ' + title if title else ''}")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, out_png)


def plot_split(y: Sequence[int], probs: np.ndarray, classes: Sequence[str], out_dir: str | os.PathLike, split: str,
               *, title: str = "", n_bootstrap: int = 200, seed: int = 0) -> list[Path]:
    """The three plots of one split's predictions: ``roc_pr_<split>.png``, ``calibration_<split>.png`` and
    ``confusion_<split>.png`` in ``out_dir`` (ROC/PR and calibration need both classes present: skipped
    otherwise)."""
    out_dir = Path(out_dir)
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    title = title or split
    written = [plot_confusion(y, probs, classes, out_dir / f"confusion_{split}.png", title=title)]
    if len(np.unique(y[y >= 0])) >= 2:
        written.append(plot_roc_pr(y, probs, classes, out_dir / f"roc_pr_{split}.png", title=title,
                                   n_bootstrap=n_bootstrap, seed=seed))
        written.append(plot_calibration(y, probs, classes, out_dir / f"calibration_{split}.png", title=title))
    return written


__all__ = ["GRID", "calibration_bins", "confusion", "macro_roc_band", "plot_calibration", "plot_confusion",
           "plot_history", "plot_model_rocs", "plot_roc_pr", "plot_split", "pr_curve_band", "roc_curve_band"]
