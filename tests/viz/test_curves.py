"""Result plots (wsigraph.viz.curves): the curve numbers against hand-computed values and sklearn, and the
PNGs they draw."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from wsigraph.errors import InputError
from wsigraph.viz.curves import (GRID, calibration_bins, confusion, macro_roc_band, plot_calibration, plot_confusion,
                                 plot_history, plot_model_rocs, plot_roc_pr, plot_split, pr_curve_band,
                                 roc_curve_band)


def _scores(n=200, signal=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    return y, y * signal + rng.normal(size=n)


def test_roc_band_matches_sklearn_and_brackets_the_curve():
    y, s = _scores()
    roc = roc_curve_band(y, s, n_bootstrap=100, seed=1)
    assert roc["auc"] == pytest.approx(roc_auc_score(y, s))
    assert np.trapezoid(roc["tpr"], GRID) == pytest.approx(roc["auc"], abs=0.01)  # the grid keeps the area
    assert np.all(np.diff(roc["tpr"]) >= -1e-12) and roc["tpr"][-1] == 1.0
    assert np.all(roc["lo"] <= roc["tpr"] + 1e-12) and np.all(roc["tpr"] <= roc["hi"] + 1e-12)
    assert (roc["hi"] - roc["lo"])[10:90].mean() > 0.02  # a real band, not a line
    perfect = roc_curve_band(y, y.astype(float), n_bootstrap=0)
    assert perfect["auc"] == 1.0 and np.all(perfect["tpr"][1:] == 1.0) and perfect["lo"] is None
    assert roc_curve_band(y, -s, n_bootstrap=0)["auc"] == pytest.approx(1 - roc["auc"])


def test_pr_band_matches_sklearn_average_precision():
    y, s = _scores(seed=2)
    pr = pr_curve_band(y, s, n_bootstrap=50)
    assert pr["ap"] == pytest.approx(average_precision_score(y, s)) and pr["prevalence"] == pytest.approx(y.mean())
    assert np.all(np.diff(pr["precision"]) <= 1e-12)  # interpolated precision never rises with recall
    assert np.all(pr_curve_band(y, y.astype(float), n_bootstrap=0)["precision"] == 1.0)


def test_calibration_bins_by_hand():
    b = calibration_bins([0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95], n_bins=10)
    np.testing.assert_allclose(b["mean_predicted"], [0.05, 0.15, 0.95])
    np.testing.assert_allclose(b["fraction_positive"], [0.0, 0.5, 1.0])
    assert list(b["count"]) == [1, 2, 1]
    assert float(b["ece"]) == pytest.approx((0.05 + 2 * 0.35 + 0.05) / 4)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        calibration_bins([0, 1], [0.2, 1.3])


def test_confusion_and_macro_roc():
    assert confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    y = np.repeat([0, 1, 2], 20)
    probs = np.eye(3)[y] * 0.8 + 0.1  # each slide's own class scores highest
    macro = macro_roc_band(y, probs, n_bootstrap=20)
    assert macro["auc"] == pytest.approx(1.0, abs=0.01) and macro["classes"] == [0, 1, 2]
    with pytest.raises(InputError, match="both classes"):
        roc_curve_band([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(InputError, match="3 labels but 2 scores"):
        roc_curve_band([0, 1, 1], [0.2, 0.5])


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_plots_draw_what_they_are_given(tmp_path):
    y, s = _scores(seed=3)
    p = 1 / (1 + np.exp(-s))
    probs = np.stack([1 - p, p], axis=1)
    good = plot_roc_pr(y, probs, ["normal", "tumor"], tmp_path / "good.png", n_bootstrap=30)
    chance = plot_roc_pr(y, np.full_like(probs, 0.5) + np.random.default_rng(0).normal(0, 0.01, probs.shape),
                         ["normal", "tumor"], tmp_path / "chance.png", n_bootstrap=30)
    a, b = _pixels(good), _pixels(chance)
    assert a.shape == b.shape and a.std() > 20 and np.abs(a - b).mean() > 1  # other curves, other pixels
    three = np.repeat([0, 1, 2], 10)
    written = plot_split(three, np.eye(3)[three] * 0.7 + 0.1, ["a", "b", "c"], tmp_path / "plots", "test",
                         n_bootstrap=10)
    assert sorted(p.name for p in written) == ["calibration_test.png", "confusion_test.png", "roc_pr_test.png"]
    one_class = plot_split(np.zeros(5, np.int64), np.tile([0.7, 0.3], (5, 1)), ["a", "b"], tmp_path / "p1", "val")
    assert [p.name for p in one_class] == ["confusion_val.png"]  # no ROC without both classes
    plot_calibration(y, probs, ["normal", "tumor"], tmp_path / "cal.png")
    plot_confusion(y, probs, ["normal", "tumor"], tmp_path / "cm.png")
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.3], "train_recon": [0.9, 0.8, 0.7],
                         "val_loss": [0.7, 0.6, 0.65], "val_auc": [0.6, 0.7, 0.72]})
    assert _pixels(plot_history(hist, tmp_path / "hist.png")).std() > 20
    with pytest.raises(InputError, match="no epochs"):
        plot_history(hist.iloc[:0], tmp_path / "empty.png")
    rocs = plot_model_rocs({"good": [(y, s), (y, s + 0.1)], "none": [(y, np.random.default_rng(1).normal(size=len(y)))]},
                           tmp_path / "models.png", title="cohort")
    assert _pixels(rocs).std() > 20
