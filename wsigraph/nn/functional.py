"""Memory-lean autograd functions for large graphs (100k patches, 2.5 M edges).

* :func:`mask_dropout`: dropout that keeps a 1-byte boolean mask for the backward pass (PyTorch's CPU
  dropout keeps a float noise tensor as large as its input).
* :func:`edge_softmax`: GAT attention weights ``softmax_{j -> i}(LeakyReLU(a_src[j] + a_dst[i]))`` over the
  incoming entries of each row of a :class:`~wsigraph.nn.sparse.CSRGraph`, keeping only the (E, H)
  weights for backward instead of the half-dozen (E, H) intermediates of the composed ops.
"""
from __future__ import annotations

import torch
from torch import Tensor

from wsigraph.nn.sparse import CSRGraph


class _MaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # type: ignore[override]
        keep = torch.empty_like(x, dtype=torch.bool).bernoulli_(1.0 - p)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def mask_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout (zero with probability ``p``, scale the rest by ``1 / (1 - p)``); identity when not
    ``training`` or ``p == 0``. Same shape as ``x``."""
    if not training or p <= 0.0:
        return x
    return _MaskDropout.apply(x, float(p))


def _segment_sum(values: Tensor, crow: Tensor) -> Tensor:
    return torch.segment_reduce(values, "sum", offsets=crow, axis=0)


class _EdgeSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a_src: Tensor, a_dst: Tensor, graph: CSRGraph, slope: float) -> Tensor:  # type: ignore[override]
        ctx.in_dtypes = (a_src.dtype, a_dst.dtype)
        if a_src.dtype in (torch.float16, torch.bfloat16):  # softmax statistics in float32
            a_src, a_dst = a_src.float(), a_dst.float()
        e = a_src.index_select(0, graph.col).add_(a_dst.index_select(0, graph.row))
        e = torch.nn.functional.leaky_relu_(e, slope)
        row_max = torch.segment_reduce(e, "max", offsets=graph.crow, axis=0)
        e.sub_(row_max.index_select(0, graph.row)).exp_()
        row_sum = _segment_sum(e, graph.crow)
        alpha = e.div_(row_sum.index_select(0, graph.row))
        ctx.graph, ctx.slope = graph, slope
        ctx.save_for_backward(a_src, a_dst, alpha)
        return alpha

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a_src, a_dst, alpha = ctx.saved_tensors
        graph: CSRGraph = ctx.graph
        ga = alpha * grad
        ge = ga.sub_(alpha * _segment_sum(ga, graph.crow).index_select(0, graph.row))
        pre = a_src.index_select(0, graph.col).add_(a_dst.index_select(0, graph.row))
        ge = torch.where(pre > 0, ge, ge * ctx.slope)
        del pre
        grad_src = torch.zeros_like(a_src).index_add_(0, graph.col, ge)
        grad_dst = _segment_sum(ge, graph.crow)
        return grad_src.to(ctx.in_dtypes[0]), grad_dst.to(ctx.in_dtypes[1]), None, None


def edge_softmax(a_src: Tensor, a_dst: Tensor, graph: CSRGraph, negative_slope: float = 0.2) -> Tensor:
    """GAT attention weights per entry of ``graph``.

    Args:
        a_src: (N, H) source term of each node.
        a_dst: (N, H) target term of each node.
        graph: the structure (entries sorted by target).
        negative_slope: LeakyReLU slope.

    Returns:
        (E, H) weights in CSR order (float32 for half-precision inputs); each row's weights sum to 1 per
        head.
    """
    return _EdgeSoftmax.apply(a_src, a_dst, graph, float(negative_slope))


__all__ = ["mask_dropout", "edge_softmax"]
