"""Instance-level mean and max pooling MIL (mi-Net).

Wang, Yan, Tang, Bai, Liu, "Revisiting multiple instance neural networks", Pattern Recognition 74 (2018),
arXiv 1610.02501: each patch gets class scores from a shared network, the bag score is their mean or max.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from wsigraph.nn.base import MILModel, MILOutput, check_range


class _InstancePoolMIL(MILModel):
    """Shared part: ``Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, C)`` per patch."""

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.25):
        super().__init__(in_dim, num_classes)
        check_range("hidden", hidden, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        self.instance = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_classes))

    def pool(self, scores: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, data: Any) -> MILOutput:
        scores = self.instance(self.features(data))  # (N, C)
        logits = self.pool(scores)
        if scores.shape[1] == 2:  # evidence for the positive class, whatever the prediction
            patch = scores[:, 1] - scores[:, 0]
        else:
            patch = scores[:, int(logits.argmax(-1))]
        return MILOutput(logits, patch.detach())


class MeanPoolMIL(_InstancePoolMIL):
    """Bag logits = mean of patch logits (with the linear last layer this equals classifying the mean
    embedding). ``patch_scores`` = each patch's positive-minus-negative logit for two classes (so a
    positive slide predicted negative still points at its lesion), else its logit for the predicted class.

    Args:
        in_dim: D.
        num_classes: C.
        hidden: instance network width.
        dropout: instance network dropout.
    """

    def pool(self, scores: Tensor) -> Tensor:
        return scores.mean(0, keepdim=True)


class MaxPoolMIL(_InstancePoolMIL):
    """Bag logit of class c = max over patches of their logit for c. ``patch_scores`` as in
    :class:`MeanPoolMIL`. Args as :class:`MeanPoolMIL`."""

    def pool(self, scores: Tensor) -> Tensor:
        return scores.max(0, keepdim=True).values


__all__ = ["MeanPoolMIL", "MaxPoolMIL"]
