"""wsigraph.tasks.losses against hand-computed likelihoods."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsigraph.tasks.losses import cox_partial_nll, discrete_survival_nll, regression_loss


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_discrete_nll_is_the_likelihood_of_each_slide_s_bin():
    logits = torch.tensor([[0.3, -1.0, 0.5, 2.0], [-0.4, 0.2, 0.0, -2.0], [1.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    bins = torch.tensor([2, 1, 0])
    event = torch.tensor([1.0, 0.0, 1.0])
    h = [[_sigmoid(v) for v in row] for row in logits.tolist()]
    # event in bin y: survived bins < y, failed in y; censored in bin y: survived bins <= y
    p0 = (1 - h[0][0]) * (1 - h[0][1]) * h[0][2]
    p1 = (1 - h[1][0]) * (1 - h[1][1])
    p2 = h[2][0]
    unc = [-math.log(p0), 0.0, -math.log(p2)]
    cen = [0.0, -math.log(p1), 0.0]
    for alpha in (0.0, 0.4):
        want = np.mean([(1 - alpha) * (u + c) + alpha * u for u, c in zip(unc, cen)])
        assert float(discrete_survival_nll(logits, bins, event, alpha)) == pytest.approx(want, rel=1e-6)


def test_cox_partial_likelihood_breslow_by_hand():
    r = torch.tensor([0.5, -0.2, 1.0, 0.1], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([3.0, 1.0, 2.0, 1.0])
    e = torch.tensor([1.0, 1.0, 0.0, 1.0])
    ex = [math.exp(v) for v in r.tolist()]
    # risk sets: t >= t_i (ties at t=1 share one set: Breslow)
    terms = [0.5 - math.log(ex[0]), -0.2 - math.log(sum(ex)), 0.1 - math.log(sum(ex))]
    loss = cox_partial_nll(r, t, e)
    assert float(loss) == pytest.approx(-sum(terms) / 3, rel=1e-6)
    loss.backward()
    assert r.grad is not None and bool(torch.isfinite(r.grad).all())
    # no event: zero loss and zero gradient; one slide: zero (it is its own risk set)
    assert float(cox_partial_nll(torch.tensor([0.3, 0.2]), torch.tensor([1.0, 2.0]), torch.zeros(2))) == 0.0
    one = cox_partial_nll(torch.tensor([0.3]), torch.tensor([1.0]), torch.ones(1))
    assert float(one) == pytest.approx(0.0, abs=1e-7)


def test_a_higher_risk_for_the_earlier_event_lowers_the_cox_loss():
    t, e = torch.tensor([1.0, 2.0, 3.0]), torch.ones(3)
    good = cox_partial_nll(torch.tensor([2.0, 1.0, 0.0]), t, e)
    bad = cox_partial_nll(torch.tensor([0.0, 1.0, 2.0]), t, e)
    assert float(good) < float(bad)


def test_regression_losses():
    p, y = torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.5, 2.0, 2.0])
    assert float(regression_loss(p, y, "mse")) == pytest.approx((0.25 + 0 + 9) / 3)
    assert float(regression_loss(p, y, "huber", delta=1.0)) == pytest.approx((0.5 * 0.25 + 0 + (3 - 0.5)) / 3)
    with pytest.raises(ValueError, match="mse.*huber"):
        regression_loss(p, y, "l1")
