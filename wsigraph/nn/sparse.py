"""Sparse graph structure and a memory-lean attention-weighted aggregation.

Why not PyG's ``propagate`` for attention: PyG's ``GATConv`` gathers one message per edge,
``(E, heads, channels)``; on a 100k-patch slide with the 24-neighbourhood (E ~ 2.5 M) that is 2.5 GB per
256-wide layer and 10 GB for the decoder's 1024-wide output layer, and autograd keeps them for the
backward pass. :func:`csr_aggregate` multiplies by the attention matrix instead (``torch.sparse.mm`` on a
CSR matrix per head) and writes its own backward (a transposed sparse product for the features and a
sampled dense-dense product, ``torch.sparse.sampled_addmm``, for the attention values), so memory stays
``O(E * heads + N * channels)``.

:class:`CSRGraph` holds the edges in CSR order by target (PyG's ``adj_t``) plus the permutation to the
transposed order, built once per slide and step. :meth:`CSRGraph.with_supernode` appends SRMIL's
super-node (node ``N``) without sorting again: the augmented structure is written with O(E) index
arithmetic, and the original ``data.edge_index`` is never modified or copied into a new ``Data``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


def _csr(crow: Tensor, col: Tensor, values: Tensor, n_rows: int, n_cols: int) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta" is printed once per process
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col, values, (n_rows, n_cols), check_invariants=False)


def _crow(row: Tensor, num_rows: int) -> Tensor:
    """CSR row pointer (num_rows + 1,) of a row index sorted ascending."""
    counts = torch.bincount(row, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


@dataclass(frozen=True, eq=False)
class CSRGraph:
    """A directed graph on ``num_nodes`` nodes, entries sorted by (target, source).

    Entry ``e`` is the edge ``col[e] -> row[e]``, so a row gathers the messages a node receives (PyG's
    ``adj_t``). ``t_perm`` lists the entries in (source, target) order (the transposed matrix) and
    ``t_crow`` is its row pointer.

    Attributes:
        num_nodes: N.
        crow: (N + 1,) int64 row pointer.
        row: (E,) int64 target node of each entry.
        col: (E,) int64 source node of each entry.
        t_crow: (N + 1,) int64 row pointer of the transpose.
        t_perm: (E,) int64 entries in transposed order.
        t_col: (E,) int64 column of each transposed entry (``row[t_perm]``).
    """

    num_nodes: int
    crow: Tensor
    row: Tensor
    col: Tensor
    t_crow: Tensor
    t_perm: Tensor
    t_col: Tensor

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @property
    def edge_index(self) -> Tensor:
        """(2, E) int64 ``[source, target]`` in CSR order (a new tensor)."""
        return torch.stack([self.col, self.row])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int, *, self_loops: bool = True) -> "CSRGraph":
        """Build from ``edge_index`` (2, E) int64 ``[source, target]``.

        Args:
            edge_index: the slide's edges (not modified).
            num_nodes: N.
            self_loops: give every node exactly one self loop (existing loops are kept when each node
                already has exactly one, else all are removed and one per node added); False keeps the
                edges as given.

        Duplicate edges are dropped. Costs one sort of the edges (skipped if already in CSR order) and one
        argsort for the transposed order.
        """
        n = int(num_nodes)
        src, dst = edge_index[0], edge_index[1]
        if self_loops:
            loop = src == dst
            n_loops = int(loop.sum())
            ok = n_loops == n and bool((torch.bincount(src[loop], minlength=n) == 1).all()) if n_loops else n == 0
            if not ok:
                keep = ~loop
                nodes = torch.arange(n, device=src.device)
                src = torch.cat([src[keep], nodes])
                dst = torch.cat([dst[keep], nodes])
        key = dst * n + src
        if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
            key, order = torch.sort(key)
            src, dst = src[order], dst[order]
            if bool((key[1:] == key[:-1]).any()):
                first = torch.ones_like(key, dtype=torch.bool)
                first[1:] = key[1:] != key[:-1]
                src, dst = src[first], dst[first]
        row, col = dst.contiguous(), src.contiguous()
        t_perm = torch.argsort(col * n + row)
        return cls(n, _crow(row, n), row, col, _crow(col[t_perm], n), t_perm, row[t_perm])

    def with_supernode(self, bidirectional: bool = True, ptr: Tensor | None = None) -> "CSRGraph":
        """This graph plus one node ``S = N`` joined to every node (``i -> S`` always, ``S -> i`` too when
        ``bidirectional``), without a self loop on ``S``.

        ``ptr`` (B + 1,) int64: the graph packs B slides, slide ``j`` holding nodes ``ptr[j] .. ptr[j+1]-1``
        (PyG's ``Batch.ptr``); each gets its own super-node ``S_j = N + j``, joined to its slide's nodes only.

        The super-nodes' incoming entries are the last N entries (sources ``0..N-1`` in order), so their
        attention over the patches is ``alpha[-N:]``. O(E) index arithmetic, no sort.
        """
        n, e = self.num_nodes, self.num_edges
        dev = self.col.device
        nodes = torch.arange(n, device=dev)
        if ptr is None:
            ptr = torch.tensor([0, n], device=dev)
        ptr = ptr.to(device=dev, dtype=torch.long)
        b = ptr.numel() - 1
        sup_of = n + torch.repeat_interleave(torch.arange(b, device=dev), ptr.diff())  # super-node of each node
        row_of_t = self.col[self.t_perm]  # row index of each transposed entry
        if bidirectional:
            total = e + 2 * n
            crow = torch.cat([self.crow + torch.arange(n + 1, device=dev), e + n + ptr[1:]])
            pos = torch.arange(e, device=dev) + self.row          # new position of each old entry
            sup = self.crow[1:] + nodes                           # entry (i <- S) closes row i
            row = torch.empty(total, dtype=torch.long, device=dev)
            col = torch.empty(total, dtype=torch.long, device=dev)
            row[pos], col[pos] = self.row, self.col
            row[sup], col[sup] = nodes, sup_of
            row[e + n:], col[e + n:] = sup_of, nodes
            # transpose: row j < N holds its old entries then (S <- j) stored at e + n + j;
            # row S_k holds the entries (i <- S_k) of its slide's nodes, stored at sup[i]
            t_crow = torch.cat([self.t_crow + torch.arange(n + 1, device=dev), e + n + ptr[1:]])
            t_perm = torch.empty(total, dtype=torch.long, device=dev)
            t_perm[torch.arange(e, device=dev) + row_of_t] = pos[self.t_perm]
            t_perm[self.t_crow[1:] + nodes] = e + n + nodes
            t_perm[e + n:] = sup
        else:
            total = e + n
            crow = torch.cat([self.crow, e + ptr[1:]])
            row = torch.cat([self.row, sup_of])
            col = torch.cat([self.col, nodes])
            # the super-nodes send nothing: their transposed rows are empty
            t_crow = torch.cat([self.t_crow + torch.arange(n + 1, device=dev),
                                torch.full((b,), total, dtype=torch.long, device=dev)])
            t_perm = torch.empty(total, dtype=torch.long, device=dev)
            t_perm[torch.arange(e, device=dev) + row_of_t] = self.t_perm
            t_perm[self.t_crow[1:] + nodes] = e + nodes
        return CSRGraph(n + b, crow, row, col, t_crow, t_perm, row[t_perm])

    # ------------------------------------------------------------------ sparse matrices
    def adj_t(self, values: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Sparse CSR (N, N) matrix, ``[target, source]``; ones of ``dtype`` when ``values`` is None (the
        input of PyG convs)."""
        if values is None:
            values = torch.ones(self.num_edges, dtype=dtype, device=self.col.device)
        return _csr(self.crow, self.col, values, self.num_nodes, self.num_nodes)

    def adj(self, values_in_csr_order: Tensor) -> Tensor:
        """The transpose ``[source, target]`` as sparse CSR, from values given in CSR order."""
        return _csr(self.t_crow, self.t_col, values_in_csr_order[self.t_perm],
                    self.num_nodes, self.num_nodes)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sparse kernels run in float32 for half-precision inputs (e.g. under autocast)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _CSRAggregate(torch.autograd.Function):
    """out[i, h] = sum over entries e of row i of alpha[e, h] * x[col[e], h]."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, graph: CSRGraph) -> Tensor:  # type: ignore[override]
        ctx.graph, ctx.in_dtypes = graph, (x.dtype, alpha.dtype)
        x, alpha = x.to(_compute_dtype(x.dtype)), alpha.to(_compute_dtype(x.dtype))
        ctx.save_for_backward(x, alpha)
        heads = x.size(1)
        with torch.autocast(x.device.type, enabled=False):  # sparse kernels have no bf16/fp16 versions
            outs = [torch.sparse.mm(graph.adj_t(alpha[:, h].contiguous()), x[:, h].contiguous())
                    for h in range(heads)]
        return torch.stack(outs, dim=1).to(ctx.in_dtypes[0])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, alpha = ctx.saved_tensors
        graph: CSRGraph = ctx.graph
        grad = grad.to(x.dtype).contiguous()
        with torch.autocast(x.device.type, enabled=False):
            grad_x, grad_alpha = _csr_aggregate_backward(ctx, x, alpha, grad, graph)
        if grad_x is not None:
            grad_x = grad_x.to(ctx.in_dtypes[0])
        return grad_x, grad_alpha, None


def _csr_aggregate_backward(ctx, x: Tensor, alpha: Tensor, grad: Tensor, graph: CSRGraph):
    """Gradients of :class:`_CSRAggregate` (float32, autocast off) w.r.t. ``x`` and ``alpha``."""
    heads = x.size(1)
    grad_x = grad_alpha = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.stack([torch.sparse.mm(graph.adj(alpha[:, h]), grad[:, h].contiguous())
                              for h in range(heads)], dim=1)
    if ctx.needs_input_grad[1]:
        cols = []
        for h in range(heads):
            pattern = graph.adj_t(alpha[:, h].contiguous())
            sampled = torch.sparse.sampled_addmm(pattern, grad[:, h].contiguous(),
                                                 x[:, h].contiguous().t(), beta=0.0, alpha=1.0)
            cols.append(sampled.values())
        grad_alpha = torch.stack(cols, dim=1).to(ctx.in_dtypes[1])
    return grad_x, grad_alpha


def csr_aggregate(x: Tensor, alpha: Tensor, graph: CSRGraph) -> Tensor:
    """Attention-weighted sum over incoming edges, O(E * H + N * H * C) memory.

    Args:
        x: (N, H, C) source features per head.
        alpha: (E, H) weight of each entry of ``graph`` (CSR order) per head.
        graph: the structure.

    Returns:
        (N, H, C): ``out[i, h] = sum_{e in row i} alpha[e, h] * x[col[e], h]``.
    """
    return _CSRAggregate.apply(x, alpha, graph)


__all__ = ["CSRGraph", "csr_aggregate"]
