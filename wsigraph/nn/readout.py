"""Bag readouts: patch embeddings (N, H) -> one slide embedding (1, H) and a score per patch; ``pool`` does
the same for the rows of several packed slides at once.

``attention`` and ``gated_attention`` follow Ilse et al., "Attention-based Deep Multiple Instance
Learning", ICML 2018 (arXiv 1802.04712), eqs. 8-9. SRMIL's default super-node readout is not here: the
super-node is a node of the graph, handled inside :class:`~wsigraph.nn.srmil.SRMIL`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from wsigraph.nn.base import check_choice

READOUTS = ("attention", "gated_attention", "mean", "max")


class AttentionReadout(nn.Module):
    """Attention pooling, ``a = softmax_i(w^T tanh(V h_i))``, embedding ``sum_i a_i h_i``.

    Args:
        in_dim: H.
        hidden: attention width (the paper's L).
        dropout: dropout on the attention hidden layer (0 in the paper).

    Shapes:
        h (N, H) -> (embedding (1, H), weights (N,) summing to 1).
    """

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1)

    def logits(self, h: Tensor) -> Tensor:
        """(N, H) -> (N,) unnormalised attention."""
        return self.w(self.v(h)).squeeze(-1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.softmax(self.logits(h), dim=0)
        return (a.unsqueeze(0) @ h), a

    def pool(self, h: Tensor, index: Tensor, size: int) -> Tensor:
        """Packed slides: (N, H) rows of ``size`` slides (``index`` (N,) their slide) -> (size, H), the
        softmax taken within each slide."""
        a = softmax(self.logits(h), index, num_nodes=size)
        return scatter(a.unsqueeze(-1) * h, index, dim=0, dim_size=size, reduce="sum")


class GatedAttentionReadout(AttentionReadout):
    """Gated attention pooling, ``a = softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i)))``.

    Args and shapes as :class:`AttentionReadout` (dropout applies to both branches, as CLAM does).
    """

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0):
        super().__init__(in_dim, hidden, dropout)
        self.u = nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))

    def logits(self, h: Tensor) -> Tensor:
        return self.w(self.v(h) * self.u(h)).squeeze(-1)


class MeanReadout(nn.Module):
    """Mean over patches; no per-patch score (returns None)."""

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        return h.mean(0, keepdim=True), None

    def pool(self, h: Tensor, index: Tensor, size: int) -> Tensor:
        return scatter(h, index, dim=0, dim_size=size, reduce="mean")


class MaxReadout(nn.Module):
    """Channel-wise max over patches; a patch's score is the share of channels whose max it holds."""

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        emb, idx = h.max(0)
        share = torch.bincount(idx, minlength=h.size(0)).to(h.dtype) / h.size(1)
        return emb.unsqueeze(0), share

    def pool(self, h: Tensor, index: Tensor, size: int) -> Tensor:
        return scatter(h, index, dim=0, dim_size=size, reduce="max")


def build_readout(name: str, in_dim: int, hidden: int = 128, dropout: float = 0.0) -> nn.Module:
    """Readout module by name (:data:`READOUTS`); ``hidden``/``dropout`` used by the attention ones."""
    name = check_choice("readout", name, READOUTS)
    if name == "attention":
        return AttentionReadout(in_dim, hidden, dropout)
    if name == "gated_attention":
        return GatedAttentionReadout(in_dim, hidden, dropout)
    return MeanReadout() if name == "mean" else MaxReadout()


__all__ = ["AttentionReadout", "GatedAttentionReadout", "MeanReadout", "MaxReadout", "build_readout",
           "READOUTS"]
