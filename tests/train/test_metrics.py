"""Slide-level metrics against scikit-learn and hand-checked cases; bootstrap confidence intervals."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from wsigraph.train.metrics import MetricWarning, bootstrap_ci, classification_metrics, metrics_with_ci


def random_case(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y] * rng.random((n, 1))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("c, ordinal, seed", [(2, False, 0), (3, False, 1), (4, True, 2), (5, False, 3)])
def test_against_sklearn(c, ordinal, seed):
    y, p = random_case(150, c, seed)
    classes = [f"c{i}" for i in range(c)]
    m = classification_metrics(y, p, classes, ordinal=ordinal)
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred, labels=list(range(c)),
                                                             weights="quadratic" if ordinal else None))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=list(range(c))).tolist()
    if c == 2:
        assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
        assert "auc_per_class" not in m
    else:
        assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
        for k, name in enumerate(classes):
            assert m["auc_per_class"][name] == pytest.approx(skm.roc_auc_score(y == k, p[:, k]))
    assert m["n"] == 150 and sum(m["support"].values()) == 150


def test_binary_hand_checked():
    # positives scored 0.9, 0.4; negatives 0.6, 0.2, 0.1 -> pairs won: (0.9 beats 3) + (0.4 beats 2) = 5 of 6
    y = np.array([1, 1, 0, 0, 0])
    pos = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    m = classification_metrics(y, np.stack([1 - pos, pos], 1), ["neg", "pos"])
    assert m["auc"] == pytest.approx(5 / 6)
    # predictions: pos, neg, pos, neg, neg -> TP 1, FN 1, FP 1, TN 2
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # F1(pos) = 2*1/(2*1+1+1) = 0.5, F1(neg) = 2*2/(2*2+1+1) = 2/3
    assert m["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)
    # kappa: po = 0.6, pe = (3/5*3/5) + (2/5*2/5) = 0.52 -> (0.6-0.52)/(1-0.52)
    assert m["kappa"] == pytest.approx(0.08 / 0.48)


def test_auc_ties_count_half():
    y = np.array([0, 1])
    m = classification_metrics(y, np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"])
    assert m["auc"] == pytest.approx(0.5)


def test_three_class_hand_checked_and_quadratic_kappa():
    y = np.array([0, 1, 2, 2])
    pred = np.array([0, 2, 2, 0])
    p = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = classification_metrics(y, p, ["g1", "g2", "g3"], ordinal=True)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]
    # quadratic weights (i-j)^2; observed sum w*O = 1*1 (1->2) + 4*1 (2->0) = 5
    # rows (1,1,2), cols (2,0,2), n=4: expected E_ij = r_i c_j / 4; sum w*E = (1/4)*sum r_i c_j (i-j)^2
    r, col = np.array([1, 1, 2]), np.array([2, 0, 2])
    w = (np.arange(3)[:, None] - np.arange(3)[None]) ** 2
    expected = (w * np.outer(r, col)).sum() / 4
    assert m["kappa"] == pytest.approx(1 - 5 / expected)
    assert m["kappa_weights"] == "quadratic"
    plain = classification_metrics(y, p, ["g1", "g2", "g3"], ordinal=False)
    assert plain["kappa"] != pytest.approx(m["kappa"])  # the weighting matters here


def test_class_absent_from_y_true_gives_nan_auc_with_warning():
    y = np.array([0, 0, 2, 2, 0])
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    with pytest.warns(MetricWarning, match="b"):
        m = classification_metrics(y, p, ["a", "b", "c"])
    assert np.isnan(m["auc_per_class"]["b"])
    expected = np.mean([skm.roc_auc_score(y == 0, p[:, 0]), skm.roc_auc_score(y == 2, p[:, 2])])
    assert m["auc"] == pytest.approx(expected)  # macro over the defined classes
    assert m["support"]["b"] == 0 and np.isfinite(m["accuracy"])
    with pytest.warns(MetricWarning):
        mb = classification_metrics(np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]), ["neg", "pos"])
    assert np.isnan(mb["auc"]) and mb["accuracy"] == pytest.approx(0.5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"])
    with pytest.raises(ValueError, match="y_true"):
        classification_metrics(np.array([0, 5]), np.ones((2, 2)) / 2, ["a", "b"])


@pytest.mark.parametrize("name", ["accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa"])
def test_bootstrap_vectorised_matches_per_replicate(name):
    y, p = random_case(60, 3, 7)
    n, seed = 200, 11
    lo, hi = bootstrap_ci(y, p, name, n=n, seed=seed)
    # the same resamples, one sklearn call each
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n, len(y)))
    fns = {
        "accuracy": lambda a, b: skm.accuracy_score(a, b.argmax(1)),
        "balanced_accuracy": lambda a, b: skm.balanced_accuracy_score(a, b.argmax(1)),
        "f1_macro": lambda a, b: skm.f1_score(a, b.argmax(1), average="macro"),
        "kappa": lambda a, b: skm.cohen_kappa_score(a, b.argmax(1), labels=[0, 1, 2]),
        "auc": lambda a, b: np.nanmean([skm.roc_auc_score(a == k, b[:, k]) if 0 < (a == k).sum() < len(a)
                                        else np.nan for k in range(3)]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vals = np.array([fns[name](y[i], p[i]) for i in idx])
    ok = np.isfinite(vals)
    ref = np.quantile(vals[ok], [0.025, 0.975])
    assert (lo, hi) == pytest.approx(tuple(ref))
    point = classification_metrics(y, p, ["a", "b", "c"])[name]
    assert lo <= point <= hi


def test_bootstrap_callable_and_seed():
    y, p = random_case(40, 2, 3)
    a = bootstrap_ci(y, p, "auc", n=100, seed=1)
    assert a == bootstrap_ci(y, p, "auc", n=100, seed=1)
    assert a != bootstrap_ci(y, p, "auc", n=100, seed=2)
    c = bootstrap_ci(y, p, lambda yy, pp: skm.roc_auc_score(yy, pp[:, 1]) if len(set(yy)) == 2 else np.nan,
                     n=100, seed=1)
    assert c == pytest.approx(a)


def test_metrics_with_ci_keys():
    y, p = random_case(30, 2, 5)
    m = metrics_with_ci(y, p, ["a", "b"], n_bootstrap=100, seed=0)
    for k in ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa"):
        lo, hi = m[f"{k}_ci95"]
        assert lo <= m[k] <= hi
