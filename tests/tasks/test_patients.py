"""Patient-level aggregation (wsigraph.tasks.patients)."""
from __future__ import annotations

import numpy as np
import pytest

from wsigraph.errors import InputError
from wsigraph.tasks import ClassificationTask, RegressionTask, SurvivalTask
from wsigraph.tasks.patients import aggregate_patients, has_multislide_patients, patient_frame


def test_mean_and_max_of_a_patient_s_slides():
    task = ClassificationTask(["normal", "tumor"])
    cases, slides = ["p1", "p2", "p1", "p3"], ["a", "b", "c", "d"]
    targets = np.array([[1.0], [0.0], [1.0], [0.0]])
    rows = np.array([[0.8, 0.2], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    ids, t, r, n = aggregate_patients(task, cases, slides, targets, rows, "mean")
    assert ids == ["p1", "p2", "p3"] and n.tolist() == [2, 1, 1] and t[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert r[0] == pytest.approx([0.5, 0.5]) and r[1] == pytest.approx([0.6, 0.4])
    _, _, rmax, _ = aggregate_patients(task, cases, slides, targets, rows, "max")
    assert rmax[0] == pytest.approx([0.8 / 1.6, 0.8 / 1.6]) and rmax.sum(axis=1) == pytest.approx(np.ones(3))
    df = patient_frame(task, ids, t, r, n)
    assert list(df.columns[:3]) == ["case_id", "n_slides", "label"] and df["pred"].tolist()[1] == "normal"
    assert has_multislide_patients(cases) and not has_multislide_patients(["x", "y"])


def test_max_takes_the_worst_slide_for_survival_and_regression():
    surv = SurvivalTask("cox")
    rows = np.array([[0.1], [2.0], [0.5]])
    targets = np.array([[5.0, 1.0], [5.0, 1.0], [3.0, 0.0]])
    _, _, r, _ = aggregate_patients(surv, ["p", "p", "q"], ["a", "b", "c"], targets, rows, "max")
    assert r[:, 0].tolist() == [2.0, 0.5]
    reg = RegressionTask()
    _, _, r, _ = aggregate_patients(reg, ["p", "p"], ["a", "b"], np.array([[1.0], [1.0]]), np.array([[3.0], [5.0]]),
                                    "mean")
    assert r[0, 0] == pytest.approx(4.0)


def test_slides_of_one_patient_with_different_targets_are_named():
    task = SurvivalTask("nll")
    with pytest.raises(InputError, match=r"case 'p'.*\['a', 'b'\].*different targets"):
        aggregate_patients(task, ["p", "p"], ["a", "b"], np.array([[5.0, 1.0], [4.0, 1.0]]),
                           np.zeros((2, 5)), "mean")
