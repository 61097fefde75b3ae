"""Nystrom self-attention, O(n * m) memory for n tokens and m landmarks.

Xiong et al., "Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention", AAAI 2021,
arXiv 2102.03902. Landmarks are the means of m nearly equal consecutive segments of the queries and keys
(no zero padding, so every landmark is a mean of real tokens); the pseudo-inverse of the landmark kernel
uses the paper's iterative Moore-Penrose scheme. Up to m tokens the attention is computed exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def iterative_pinv(a: Tensor, iterations: int = 6) -> Tensor:
    """Approximate Moore-Penrose inverse of (..., m, m) matrices (Razavi et al. 2014 iteration, as in the
    Nystromformer paper): ``Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4`` from
    ``Z0 = A^T / (max row sum * max column sum)``."""
    absa = a.abs()
    z = a.transpose(-1, -2) / (absa.sum(-1).max() * absa.sum(-2).max())
    eye = torch.eye(a.size(-1), device=a.device, dtype=a.dtype)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention with the Nystrom approximation.

    Args:
        dim: token width.
        heads: attention heads.
        dim_head: width per head.
        num_landmarks: m.
        pinv_iterations: Moore-Penrose iterations.
        residual_kernel: kernel length of the depth-wise convolution on the values added to the output
            (Nystromformer's skip connection; 0 disables it).
        dropout: dropout after the output projection.

    Shapes:
        x (n, dim) -> (n, dim); optionally the first token's attention over all tokens (n,), averaged over
        heads.
    """

    def __init__(self, dim: int = 512, heads: int = 8, dim_head: int = 64, num_landmarks: int = 256,
                 pinv_iterations: int = 6, residual_kernel: int = 33, dropout: float = 0.1):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.num_landmarks, self.pinv_iterations = num_landmarks, pinv_iterations
        self.scale = dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))
        self.res_conv = (nn.Conv2d(heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0),
                                   groups=heads, bias=False) if residual_kernel > 0 else None)

    def _landmarks(self, t: Tensor, seg: Tensor, counts: Tensor) -> Tensor:
        m = counts.numel()
        sums = t.new_zeros(t.size(0), m, t.size(2)).index_add(1, seg, t)
        return sums / counts.view(1, m, 1)

    def forward(self, x: Tensor, return_first_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        n = x.size(0)
        q, k, v = self.to_qkv(x).view(n, 3, self.heads, self.dim_head).permute(1, 2, 0, 3)  # (H, n, d) each
        q = q * self.scale
        first = None
        if n <= self.num_landmarks:
            attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (H, n, n), n <= m
            out = attn @ v
            if return_first_attention:
                first = attn[:, 0]
        else:
            m = self.num_landmarks
            seg = torch.div(torch.arange(n, device=x.device) * m, n, rounding_mode="floor")
            counts = torch.bincount(seg, minlength=m).to(q.dtype)
            q_l, k_l = self._landmarks(q, seg, counts), self._landmarks(k, seg, counts)
            k1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)     # (H, n, m)
            k2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)   # (H, m, m)
            k3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)     # (H, m, n)
            z = iterative_pinv(k2, self.pinv_iterations)
            out = (k1 @ z) @ (k3 @ v)
            if return_first_attention:
                first = ((k1[:, :1] @ z) @ k3)[:, 0]
        if self.res_conv is not None:
            out = out + self.res_conv(v.unsqueeze(0)).squeeze(0)
        out = self.to_out(out.permute(1, 0, 2).reshape(n, self.heads * self.dim_head))
        return out, (None if first is None else first.mean(0))


__all__ = ["NystromAttention", "iterative_pinv"]
