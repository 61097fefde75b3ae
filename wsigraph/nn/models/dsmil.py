"""DSMIL: dual-stream MIL.

Li, Li, Eliceiri, "Dual-stream Multiple Instance Learning Network for Whole Slide Image Classification
with Self-supervised Contrastive Learning", CVPR 2021, arXiv 2011.08939.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms, check_range


class DSMIL(MILModel):
    """Max-pooling stream + critical-instance attention stream.

    Stream 1: instance classifier ``c_i = W_0 x_i`` (C scores per patch), bag score
    ``c_m = max_i c_i`` per class. Stream 2: the critical instance of each class ``m_c = argmax_i c_i[c]``;
    queries ``q_i = W_q x_i`` (``Linear(D, 128) -> ReLU -> Linear(128, 128) -> Tanh``, the non-linear
    variant), attention ``U(i, c) = softmax_i(<q_i, q_{m_c}> / sqrt(128))``, bag representation
    ``b_c = sum_i U(i, c) v_i`` with ``v_i = x_i`` (``passing_v=True``: ``ReLU(W_v x_i)``), bag scores by a
    1-D convolution over ``b`` (kernel D, C -> C channels). Loss ``0.5 * CE(c_m) + 0.5 * CE(bag)`` as in the
    paper (cross-entropy for single-label classes where the authors' multi-label code uses BCE).
    ``forward`` returns the bag-stream logits; ``patch_scores`` = ``U(., 1)`` for two classes (attention to
    the positive class's critical instance, whatever the prediction), else ``U(., predicted class)``; sums to 1.

    Args:
        in_dim: D.
        num_classes: C.
        q_dim: query width (128).
        nonlinear_q: the paper's non-linear query network (False: one Linear).
        passing_v: learn ``v_i = ReLU(W_v x_i)`` instead of ``v_i = x_i``.
        dropout_v: dropout before ``W_v``.
        max_weight: weight of the max-instance CE (the bag CE gets ``1 - max_weight``).
    """

    def __init__(self, in_dim: int, num_classes: int, *, q_dim: int = 128, nonlinear_q: bool = True,
                 passing_v: bool = False, dropout_v: float = 0.0, max_weight: float = 0.5):
        super().__init__(in_dim, num_classes)
        check_range("q_dim", q_dim, 1)
        check_range("dropout_v", dropout_v, 0.0, 1.0, high_open=True)
        check_range("max_weight", max_weight, 0.0, 1.0)
        self.max_weight = float(max_weight)
        self.instance = nn.Linear(in_dim, num_classes)
        if nonlinear_q:
            self.q: nn.Module = nn.Sequential(nn.Linear(in_dim, q_dim), nn.ReLU(), nn.Linear(q_dim, q_dim), nn.Tanh())
        else:
            self.q = nn.Linear(in_dim, q_dim)
        self.v: nn.Module = (nn.Sequential(nn.Dropout(dropout_v), nn.Linear(in_dim, in_dim), nn.ReLU())
                             if passing_v else nn.Identity())
        self.bag_conv = nn.Conv1d(num_classes, num_classes, kernel_size=in_dim)
        self.scale = 1.0 / math.sqrt(q_dim)

    def streams(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(max-instance logits (1, C), bag logits (1, C), attention U (N, C))``."""
        c = self.instance(x)                              # (N, C)
        critical = c.argmax(0)                            # (C,)
        q = self.q(x)                                     # (N, q)
        u = torch.softmax((q @ q.index_select(0, critical).t()) * self.scale, dim=0)  # (N, C)
        b = u.t() @ self.v(x)                             # (C, D)
        bag = self.bag_conv(b.unsqueeze(0)).view(1, -1)   # (1, C)
        return c.max(0, keepdim=True).values, bag, u

    def forward(self, data: Any) -> MILOutput:
        _, bag, u = self.streams(self.features(data))
        col = 1 if u.shape[1] == 2 else int(bag.argmax(-1))
        return MILOutput(bag, u[:, col].detach())

    def training_terms(self, data: Any, label: int | None = None) -> TrainingTerms:
        """``max_weight`` x the task's loss of the max-instance outputs (``ce_max``) + ``(1 - max_weight)`` x
        that of the bag outputs (``ce_bag``)."""
        top, bag, _ = self.streams(self.features(data))
        return TrainingTerms([("ce_max", top, float(self.max_weight)), ("ce_bag", bag, 1.0 - self.max_weight)], [],
                             bag.detach())


__all__ = ["DSMIL"]
