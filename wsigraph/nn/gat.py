"""Graph attention layer (Velickovic et al., ICLR 2018, arXiv 1710.10903) on a :class:`CSRGraph`.

Same parameters and arithmetic as PyG's ``GATConv(in, out, heads, concat, negative_slope, dropout,
add_self_loops=False)`` (``lin``, ``att_src``, ``att_dst``, ``bias``): the unit tests check the outputs
match. The attention weights come from :func:`~wsigraph.nn.functional.edge_softmax` and the aggregation goes
through :func:`~wsigraph.nn.sparse.csr_aggregate` instead of per-edge messages, so a 100k-patch slide
needs no ``(E, heads, channels)`` tensor (see ``sparse.py``).
Self loops are the graph's business (:meth:`CSRGraph.from_edge_index`), never added here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from wsigraph.nn.base import check_choice
from wsigraph.nn.functional import edge_softmax, mask_dropout
from wsigraph.nn.sparse import CSRGraph, csr_aggregate

ATT_INITS = ("heads", "xavier")


class GATLayer(nn.Module):
    """Multi-head graph attention.

    .. math::
        \\alpha_{ij}^h = \\mathrm{softmax}_{j \\in \\mathcal{N}(i)}\\big(\\mathrm{LeakyReLU}(
        a_{src}^h \\cdot W^h x_j + a_{dst}^h \\cdot W^h x_i)\\big), \\quad
        x_i' = \\Vert_h \\sum_j \\alpha_{ij}^h W^h x_j + b

    Args:
        in_dim: input channels.
        out_dim: output channels per head.
        heads: attention heads.
        concat: concatenate the heads (output ``heads * out_dim``) or average them (``out_dim``).
        negative_slope: LeakyReLU slope of the attention logits.
        attn_drop: dropout on the attention weights.
        bias: add a learnable bias.
        att_init: init of the attention vectors ``a_src``, ``a_dst`` (shape ``(1, heads, out_dim)``, ReLU
            gain): ``"heads"`` draws them with the fan of a ``(heads, out_dim)`` matrix, std
            ``gain * sqrt(2 / (heads + out_dim))``; ``"xavier"`` is ``nn.init.xavier_normal_`` on the 3-d
            tensor as the SRMIL reference does, std ``gain * sqrt(2 / ((heads + 1) * out_dim))`` (2.2x
            smaller at 4 x 64, 1.4x at 1 x 1024).

    Shapes:
        x (N, in_dim) -> (N, heads * out_dim | out_dim); attention (E, heads) in CSR order.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, attn_drop: float = 0.0, bias: bool = True, att_init: str = "heads"):
        super().__init__()
        self.att_init = check_choice("att_init", att_init, ATT_INITS)
        self.in_dim, self.out_dim, self.heads, self.concat = in_dim, out_dim, heads, concat
        self.negative_slope, self.attn_drop = negative_slope, attn_drop
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_dim))
        self.bias = nn.Parameter(torch.empty(heads * out_dim if concat else out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights with the ReLU gain (as the SRMIL reference's GAT), attention vectors as
        ``att_init`` says, zero bias."""
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.lin.weight, gain=gain)
        for att in (self.att_src, self.att_dst):
            if self.att_init == "xavier":
                nn.init.xavier_normal_(att, gain=gain)
            else:  # fan computed as for a (heads, out_dim) matrix
                nn.init.normal_(att, 0.0, gain * math.sqrt(2.0 / (self.heads + self.out_dim)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def output_dim(self) -> int:
        return self.heads * self.out_dim if self.concat else self.out_dim

    def forward(self, x: Tensor, graph: CSRGraph, return_attention: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """Returns ``(out, attention)``; attention (E, heads) before dropout, or None unless asked."""
        h, c = self.heads, self.out_dim
        z = self.lin(x).view(-1, h, c)
        a_src = (z * self.att_src).sum(-1)
        a_dst = (z * self.att_dst).sum(-1)
        alpha = edge_softmax(a_src, a_dst, graph, self.negative_slope)
        weights = mask_dropout(alpha, self.attn_drop, self.training)
        out = csr_aggregate(z, weights, graph)
        out = out.flatten(1) if self.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias
        return out, (alpha if return_attention else None)

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, heads={self.heads}, concat={self.concat}"


__all__ = ["GATLayer", "ATT_INITS"]
