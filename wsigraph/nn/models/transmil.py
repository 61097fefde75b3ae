"""TransMIL: transformer-based correlated MIL.

Shao, Bian, Chen, Wang, Zhang, Ji, Zhang, "TransMIL: Transformer based Correlated Multiple Instance
Learning for Whole Slide Image Classification", NeurIPS 2021, arXiv 2106.00908.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from wsigraph.errors import ConfigError
from wsigraph.nn.base import MILModel, MILOutput, check_range
from wsigraph.nn.models.nystrom import NystromAttention


class PPEG(nn.Module):
    """Pyramid position encoding generator: depth-wise 7x7, 5x5 and 3x3 convolutions of the patch tokens
    laid out on a ``side x side`` grid, added to the tokens; the class token passes through.

    Shapes: (1 + side**2, dim) -> same.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: Tensor, side: int) -> Tensor:
        cls, tokens = x[:1], x[1:]
        grid = tokens.t().reshape(1, -1, side, side)
        out = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, out.reshape(x.size(1), -1).t()])


class TransLayer(nn.Module):
    """``x + NystromAttention(LayerNorm(x))``."""

    def __init__(self, dim: int, heads: int, num_landmarks: int, pinv_iterations: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim, heads, dim // heads, num_landmarks, pinv_iterations, 33, dropout)

    def forward(self, x: Tensor, return_first_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        out, first = self.attn(self.norm(x), return_first_attention)
        return x + out, first


class TransMIL(MILModel):
    """TPT module: ``Linear(D, 512) -> ReLU``; the sequence is squared by repeating its first tokens up to
    ``ceil(sqrt(N))**2``; a class token is prepended; Nystrom transformer layer; PPEG on the square grid;
    second transformer layer; LayerNorm; ``Linear(512, C)`` on the class token.

    From the paper: the TPT layout (2 layers + PPEG with 7/5/3 depth-wise kernels), 512 wide, 8 heads,
    Nystrom attention with 256 landmarks and 6 pseudo-inverse iterations, dropout 0.1. The PPEG grid is
    the sequence order (as in the paper), not the patch positions. Memory is O(N * m) (see
    :mod:`~wsigraph.nn.models.nystrom`). ``patch_scores`` = the class token's (approximate) attention over
    the patches in the last layer, averaged over heads, with repeated tokens folded back onto their
    originals.

    Args:
        in_dim: D.
        num_classes: C.
        dim: token width.
        heads: attention heads (``dim`` must divide by it).
        num_landmarks: Nystrom landmarks m.
        pinv_iterations: Moore-Penrose iterations.
        dropout: attention output dropout.
    """

    def __init__(self, in_dim: int, num_classes: int, *, dim: int = 512, heads: int = 8, num_landmarks: int = 256,
                 pinv_iterations: int = 6, dropout: float = 0.1):
        super().__init__(in_dim, num_classes)
        check_range("dim", dim, 1)
        check_range("heads", heads, 1)
        check_range("num_landmarks", num_landmarks, 1)
        check_range("pinv_iterations", pinv_iterations, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        if dim % heads:
            raise ConfigError(f"model argument 'heads': dim={dim} does not split over {heads} heads")
        self.fc = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, dim))
        self.layer1 = TransLayer(dim, heads, num_landmarks, pinv_iterations, dropout)
        self.ppeg = PPEG(dim)
        self.layer2 = TransLayer(dim, heads, num_landmarks, pinv_iterations, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, data: Any) -> MILOutput:
        h = self.fc(self.features(data))
        n = h.size(0)
        side = math.isqrt(n)
        side += int(side * side < n)
        repeat = torch.arange(side * side - n, device=h.device) % n
        h = torch.cat([self.cls_token.to(h.dtype), h, h.index_select(0, repeat)])
        h, _ = self.layer1(h)
        h = self.ppeg(h, side)
        h, first = self.layer2(h, return_first_attention=True)
        logits = self.head(self.norm(h[:1]))
        assert first is not None
        scores = first[1:n + 1].index_add(0, repeat, first[n + 1:])
        return MILOutput(logits, scores.detach())


__all__ = ["TransMIL", "PPEG", "TransLayer"]
