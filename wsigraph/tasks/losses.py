"""Slide-level losses of the survival and regression tasks, over a batch of B slides (B >= 1).

* :func:`discrete_survival_nll`: Patch-GCN's discrete-time negative log-likelihood (hazards per time bin).
* :func:`cox_partial_nll`: the Cox partial likelihood (Breslow ties); it compares slides, so it needs
  B >= 2 slides with at least one event per batch (``train.batch_size``).
* :func:`regression_loss`: mean squared error or Huber.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-7


def survival_from_logits(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(hazards (B, K), survival (B, K))``: h_k = sigmoid(logit_k), S_k = prod_{j <= k} (1 - h_j), the
    probability of surviving past the end of bin k."""
    hazards = torch.sigmoid(logits)
    return hazards, torch.cumprod(1.0 - hazards, dim=1)


def discrete_survival_nll(logits: Tensor, bins: Tensor, event: Tensor, alpha: float = 0.0) -> Tensor:
    """Discrete-time survival negative log-likelihood, mean over the batch.

    For a slide whose time falls in bin y: an event contributes ``-log S_{y-1} - log h_y`` (survived the
    bins before, failed in y; S_{-1} = 1), a censored slide ``-log S_y`` (survived bin y). The loss is
    ``(1 - alpha) * (censored + uncensored) + alpha * uncensored`` (Patch-GCN's weighting).

    Args:
        logits: (B, K) hazard logits of K time bins.
        bins: (B,) int64 bin index of each slide's time, in [0, K).
        event: (B,) 1 = event observed, 0 = censored.
        alpha: extra weight of the uncensored terms, in [0, 1].
    """
    hazards, surv = survival_from_logits(logits.float())
    y = bins.view(-1, 1).long()
    e = event.view(-1, 1).to(hazards.dtype)
    padded = torch.cat([torch.ones_like(e), surv], dim=1)  # S_{-1} = 1, S_0 .. S_{K-1}
    uncensored = -e * (torch.log(padded.gather(1, y).clamp(min=EPS)) + torch.log(hazards.gather(1, y).clamp(min=EPS)))
    censored = -(1.0 - e) * torch.log(padded.gather(1, y + 1).clamp(min=EPS))
    return ((1.0 - alpha) * (censored + uncensored) + alpha * uncensored).mean()


def cox_partial_nll(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative Cox partial log-likelihood (Breslow's handling of ties), divided by the number of events.

    ``-sum_{i: event} [r_i - log sum_{j: t_j >= t_i} exp(r_j)] / n_events``; zero (with a gradient of zero)
    when the batch holds no event.

    Args:
        risk: (B,) or (B, 1) log relative hazards.
        time: (B,) follow-up times. event: (B,) 1 = event, 0 = censored.
    """
    r = risk.float().view(-1)
    t = time.to(r.device).view(-1)
    e = event.to(r.device).view(-1).to(r.dtype)
    at_risk = t.view(1, -1) >= t.view(-1, 1)  # (B, B): row i, column j in i's risk set (B slides, not patches)
    log_denominator = torch.logsumexp(r.view(1, -1).masked_fill(~at_risk, float("-inf")), dim=1)
    n_events = e.sum()
    return -((r - log_denominator) * e).sum() / n_events.clamp(min=1.0)


def regression_loss(pred: Tensor, target: Tensor, kind: str = "mse", delta: float = 1.0) -> Tensor:
    """``"mse"`` or ``"huber"`` (quadratic below ``delta``, linear above) of (B,) / (B, 1) predictions."""
    p, t = pred.float().view(-1), target.to(pred.device).float().view(-1)
    if kind == "mse":
        return F.mse_loss(p, t)
    if kind == "huber":
        return F.huber_loss(p, t, delta=delta)
    raise ValueError(f"regression loss must be 'mse' or 'huber', got {kind!r}")


__all__ = ["survival_from_logits", "discrete_survival_nll", "cox_partial_nll", "regression_loss"]
