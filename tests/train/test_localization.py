"""Tests of wsigraph.train.localization: per-patch scores against patch-level ground truth."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from wsigraph.data.annotations import lesion_components
from wsigraph.errors import InputError
from wsigraph.train.localization import (
    aggregate_localization,
    localization_metrics,
    patch_auc,
    patch_average_precision,
)

STEP = 224


def _slide():
    """A 10 x 10 lattice with two lesions: A (6 patches, top-left) and B (4 patches, bottom-right)."""
    ys, xs = np.mgrid[0:10, 0:10]
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64) * STEP + 448
    grid = np.zeros((10, 10), dtype=np.int8)
    grid[1:3, 1:4] = 1  # lesion A
    grid[7:9, 7:9] = 1  # lesion B
    return coords, grid.ravel(), grid


def test_perfect_scores():
    coords, labels, _ = _slide()
    scores = labels + np.linspace(0, 0.1, labels.size)  # positives above every negative
    m = localization_metrics(scores, labels, coords, STEP, k=(10, 50))
    assert (m["n_patches"], m["n_positive"], m["n_lesions"]) == (100, 10, 2)
    assert m["auc"] == 1.0 and m["ap"] == 1.0
    assert m["lesion_hit@10"] == 1.0 and m["n_lesions_hit@10"] == 2
    assert m["precision@10"] == 1.0
    assert m["precision@50"] == pytest.approx(10 / 50)
    assert m["lesion_hit@50"] == 1.0


def test_inverted_scores():
    coords, labels, _ = _slide()
    m = localization_metrics(-labels.astype(float), labels, coords, STEP, k=(10, 90, 91))
    assert m["auc"] == 0.0
    assert m["lesion_hit@10"] == 0.0 and m["precision@10"] == 0.0
    assert m["lesion_hit@90"] == 0.0  # the 90 negatives come first
    assert m["lesion_hit@91"] == 0.5 and m["n_lesions_hit@91"] == 1  # then the first positive patch (lesion A)


def test_top_k_covering_one_of_two_lesions_gives_one_half():
    coords, labels, _ = _slide()
    scores = np.zeros((10, 10))
    scores[1:3, 1:4] = 1.0  # the model looks at lesion A only
    scores[5, 0] = 0.5  # and at one negative patch
    m = localization_metrics(scores.ravel(), labels, coords, STEP, k=(6, 7, 8))
    assert m["lesion_hit@6"] == m["lesion_hit@7"] == 0.5
    assert m["precision@6"] == 1.0 and m["precision@7"] == pytest.approx(6 / 7)
    assert m["lesion_hit@8"] == 0.5  # the 8th is the first zero-scored patch in patch order: (0, 0), negative
    # AUC: lesion A beats all 90 negatives; lesion B ties with the 89 zero-scored negatives, loses to one
    assert m["auc"] == pytest.approx((6 * 90 + 4 * 0.5 * 89) / (10 * 90))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores.ravel()))
    assert 0.5 < m["auc"] < 1.0


def test_well_classified_slide_looking_at_the_wrong_place():
    """High scores on tissue next to the lesions, none on them: lesion hits are zero."""
    coords, labels, _ = _slide()
    scores = np.zeros((10, 10))
    scores[0, :] = 1.0  # the top row borders lesion A but is not part of it
    m = localization_metrics(scores.ravel(), labels, coords, STEP, k=10)
    assert m["lesion_hit@10"] == 0.0 and m["precision@10"] == 0.0
    assert m["auc"] < 0.5


def test_auc_and_ap_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.2).astype(np.int8)
    scores = np.round(rng.random(500) + 0.5 * labels, 1)  # many ties
    assert patch_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert patch_average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_lesion_ids_follow_lesion_components():
    coords, labels, _ = _slide()
    ids = lesion_components(coords, labels, STEP)
    assert sorted(np.unique(ids).tolist()) == [-1, 0, 1]
    scores = (ids == 1).astype(float)  # only lesion B
    m1 = localization_metrics(scores, labels, coords, STEP, k=4)
    m2 = localization_metrics(scores, labels, None, STEP, k=4, lesions=ids)  # precomputed lesions, no coords
    assert m1 == m2
    assert m1["lesion_hit@4"] == 0.5 and m1["precision@4"] == 1.0


def test_diagonal_patches_are_one_lesion():
    coords = np.array([[0, 0], [1, 1], [2, 2], [5, 5]]) * STEP
    labels = np.array([1, 1, 1, 1])
    scores = np.array([0.0, 0.0, 1.0, 0.0])
    m = localization_metrics(scores, labels, coords, STEP, k=1)
    assert m["n_lesions"] == 2 and m["lesion_hit@1"] == 0.5
    assert math.isnan(m["auc"])  # no negative patch


def test_negative_slide():
    coords, labels, _ = _slide()
    m = localization_metrics(np.arange(100.0), np.zeros(100), coords, STEP, k=(10,))
    assert m["n_positive"] == 0 and m["n_lesions"] == 0
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["lesion_hit@10"])
    assert m["precision@10"] == 0.0


def test_k_larger_than_the_slide_and_torch_inputs():
    coords, labels, _ = _slide()
    m = localization_metrics(torch.from_numpy(labels.astype(np.float32)), torch.from_numpy(labels),
                             torch.from_numpy(coords).float(), float(STEP), k=1000)
    assert m["lesion_hit@1000"] == 1.0 and m["precision@1000"] == pytest.approx(0.1)
    assert m["auc"] == 1.0


def test_lattice_units_as_in_graph_data_pos():
    coords, labels, _ = _slide()
    pos = (coords - 448) / STEP  # what GraphDataset stores in data.pos
    a = localization_metrics(labels.astype(float), labels, coords, STEP)
    b = localization_metrics(labels.astype(float), labels, pos.astype(np.float32), 1.0)
    assert a == b


def test_bad_inputs_are_named():
    coords, labels, _ = _slide()
    scores = np.zeros(100)
    scores[17] = np.nan
    with pytest.raises(InputError, match=r"slide_7: scores contain NaN or inf \(first at patch 17\)"):
        localization_metrics(scores, labels, coords, STEP, where="slide_7")
    with pytest.raises(InputError, match=r"s: scores has 99 entries but patch_labels has 100"):
        localization_metrics(np.zeros(99), labels, coords, STEP, where="s")
    with pytest.raises(InputError, match=r"coords must have shape \(100, 2\)"):
        localization_metrics(np.zeros(100), labels, coords[:50], STEP)
    with pytest.raises(InputError, match="k must be positive"):
        localization_metrics(np.zeros(100), labels, coords, STEP, k=(0, 10))
    with pytest.raises(InputError, match=r"scores must have shape \(N,\)"):
        localization_metrics(np.zeros((100, 2)), labels, coords, STEP)


def test_aggregate_over_positive_slides():
    coords, labels, _ = _slide()
    perfect = localization_metrics(labels + np.linspace(0, 0.1, 100), labels, coords, STEP, k=(10,))
    half_scores = np.zeros((10, 10))
    half_scores[1:3, 1:4] = 1.0
    half = localization_metrics(half_scores.ravel(), labels, coords, STEP, k=(10,))
    all_pos = localization_metrics(np.arange(4.0), np.ones(4), np.array([[0, 0], [1, 0], [5, 0], [9, 0]]), 1, k=(10,))
    negative = localization_metrics(np.arange(100.0), np.zeros(100), coords, STEP, k=(10,))
    agg = aggregate_localization([perfect, half, all_pos, negative])
    assert agg["n_slides"] == 3 and agg["n_slides_total"] == 4
    assert agg["auc"] == pytest.approx((perfect["auc"] + half["auc"]) / 2)  # NaN AUC of all_pos left out
    assert agg["n_auc"] == 2
    assert agg["lesion_hit@10"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    # pooled: lesions hit / lesions = (2 + 1 + 3) / (2 + 2 + 3)
    assert all_pos["n_lesions"] == 3
    assert agg["lesion_hit@10_pooled"] == pytest.approx(6 / 7)
    assert agg["precision@10"] == pytest.approx((1.0 + 0.6 + 1.0) / 3)


def test_aggregate_without_positive_slides():
    coords, _, _ = _slide()
    neg = localization_metrics(np.arange(100.0), np.zeros(100), coords, STEP, k=(5,))
    agg = aggregate_localization([neg])
    assert agg["n_slides"] == 0 and agg["n_slides_total"] == 1
    assert math.isnan(agg["auc"]) and math.isnan(agg["lesion_hit@5"]) and math.isnan(agg["lesion_hit@5_pooled"])
    assert aggregate_localization([])["n_slides"] == 0
