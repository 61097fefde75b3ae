"""CLAM-SB: clustering-constrained attention MIL, single attention branch.

Lu, Williamson, Chen, Chen, Barbieri, Mahmood, "Data-efficient and weakly supervised computational
pathology on whole-slide images", Nature Biomedical Engineering 5, 555-570 (2021), arXiv 2004.09666.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms, check_choice, check_range
from wsigraph.nn.readout import GatedAttentionReadout


def smooth_top1_svm_loss(scores: Tensor, target: Tensor, alpha: float = 1.0, tau: float = 1.0) -> Tensor:
    """Smooth top-1 multi-class SVM loss (Berrada, Zisserman, Kumar, ICLR 2018, arXiv 1802.07595):
    ``tau * log sum_j exp((alpha * [j != y] + s_j) / tau) - s_y``, averaged over rows.

    Args:
        scores: (M, K) logits. target: (M,) int64. alpha: margin. tau: temperature (> 0).
    """
    margin = torch.full_like(scores, alpha)
    margin.scatter_(1, target.view(-1, 1), 0.0)
    lse = tau * torch.logsumexp((scores + margin) / tau, dim=1)
    return (lse - scores.gather(1, target.view(-1, 1)).squeeze(1)).mean()


class CLAMSB(MILModel):
    """CLAM with one attention branch (CLAM-SB).

    Patch embedding ``h = Dropout(ReLU(Linear(D, 512)(x)))``; gated attention (hidden 256, dropout 0.25)
    over the patches; bag logits ``Linear(512, C)(sum_i a_i h_i)``. Instance-level clustering (training
    only): one ``Linear(512, 2)`` per class; for the true class the ``k_sample`` most attended patches are
    positives and the ``k_sample`` least attended negatives; with ``subtyping`` (mutually exclusive
    classes) the most attended patches are also negatives for every other class's classifier (and the
    summed instance loss is divided by C). ``loss = bag_weight * CE + (1 - bag_weight) * instance``.
    From the paper: sizes 512/256, dropout 0.25, ``k_sample = 8``, ``bag_weight = 0.7``, the smooth top-1
    SVM instance loss (``inst_loss="svm"``; ``"ce"`` is the alternative the reference code offers).
    Slides with fewer than ``2 * k_sample`` patches use ``N // 2`` per side. ``patch_scores`` = attention.

    Args:
        in_dim: D.
        num_classes: C.
        embed_dim: patch embedding width (512).
        attn_dim: attention hidden width (256).
        dropout: dropout of embedding and attention.
        k_sample: patches per side for the instance loss.
        bag_weight: weight of the bag CE in [0, 1].
        inst_loss: ``svm`` (smooth top-1 SVM, alpha = tau = 1) | ``ce``.
        subtyping: also use out-of-class pseudo-labels.
    """

    def __init__(self, in_dim: int, num_classes: int, *, embed_dim: int = 512, attn_dim: int = 256,
                 dropout: float = 0.25, k_sample: int = 8, bag_weight: float = 0.7, inst_loss: str = "svm",
                 subtyping: bool = False):
        super().__init__(in_dim, num_classes)
        check_range("embed_dim", embed_dim, 1)
        check_range("attn_dim", attn_dim, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        check_range("k_sample", k_sample, 1)
        check_range("bag_weight", bag_weight, 0.0, 1.0)
        self.inst_loss = check_choice("inst_loss", inst_loss, ("svm", "ce"))
        self.k_sample, self.bag_weight, self.subtyping = int(k_sample), float(bag_weight), bool(subtyping)
        self.embed = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttentionReadout(embed_dim, attn_dim, dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.instance_classifiers = nn.ModuleList(nn.Linear(embed_dim, 2) for _ in range(num_classes))

    def _bag(self, data: Any) -> tuple[Tensor, Tensor, Tensor]:
        h = self.embed(self.features(data))
        z, a = self.attention(h)
        return self.classifier(z), a, h

    def forward(self, data: Any) -> MILOutput:
        logits, a, _ = self._bag(data)
        return MILOutput(logits, a.detach())

    def _instance_criterion(self, scores: Tensor, target: Tensor) -> Tensor:
        if self.inst_loss == "svm":
            return smooth_top1_svm_loss(scores, target)
        return F.cross_entropy(scores, target)

    def instance_loss(self, a: Tensor, h: Tensor, label: int) -> Tensor:
        """Clustering loss from attention ``a`` (N,) and embeddings ``h`` (N, 512) for class ``label``."""
        n = a.numel()
        k = max(1, min(self.k_sample, n // 2))
        top = torch.topk(a, k).indices
        total = a.new_zeros(())
        for c, clf in enumerate(self.instance_classifiers):
            if c == label:
                bottom = torch.topk(-a, k).indices
                idx = torch.cat([top, bottom])
                target = torch.cat([torch.ones(k, dtype=torch.long, device=a.device),
                                    torch.zeros(k, dtype=torch.long, device=a.device)])
            elif self.subtyping:
                idx, target = top, torch.zeros(k, dtype=torch.long, device=a.device)
            else:
                continue
            total = total + self._instance_criterion(clf(h[idx]), target)
        if self.subtyping:
            total = total / self.num_classes
        return total

    def training_terms(self, data: Any, label: int | None = None) -> TrainingTerms:
        """``bag_weight`` x the task's loss of the bag outputs (``ce``) + ``(1 - bag_weight)`` x the instance
        clustering loss (``instance``) of the label's branch; without a class label (survival, regression)
        only the bag term."""
        logits, a, h = self._bag(data)
        if label is None or not 0 <= int(label) < self.num_classes:
            return TrainingTerms([("ce", logits, 1.0)], [], logits.detach(), ("instance",))
        inst = self.instance_loss(a, h, int(label))
        return TrainingTerms([("ce", logits, float(self.bag_weight))], [("instance", inst, 1.0 - self.bag_weight)],
                             logits.detach())


__all__ = ["CLAMSB", "smooth_top1_svm_loss"]
