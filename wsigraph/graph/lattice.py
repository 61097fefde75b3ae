"""Lattice backend: neighbours by index arithmetic on the patch grid, no distance computations.

Patches of one slide sit on a lattice (``coords = origin + step * (i, j)``). Node indices are written
into a dense index grid over the lattice's bounding box (``-1`` = no patch); the neighbours of every node
at a lattice offset ``(dx, dy)`` are then one gather, and the whole radius graph is one gather per
offset within the radius, O(H * W + N * n_offsets). When the box is too large for a dense grid (sparse
or far-apart tissue), the same lookups go through sorted integer keys ``y * W + x`` and a binary search.

k-NN grows square-disc "rings" of offsets: a node with at least ``k`` patches within lattice radius R
knows its exact k nearest (every patch within R is seen); the others retry with a larger R.

The code runs on numpy (CPU) or on torch tensors of the input's device (CUDA), see ``ops.py``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from wsigraph.graph.ops import NumpyOps, TorchOps
from wsigraph.graph.params import RADIUS_EPS
from wsigraph.graph.points import (Points, finalise_edges, radius_threshold_px2, raise_duplicate,
                                   select_knn)

#: A dense grid is used while its cells <= DENSE_CELLS_PER_NODE * N + DENSE_CELLS_EXTRA (and the cap).
DENSE_CELLS_PER_NODE = 8
DENSE_CELLS_EXTRA = 1_000_000
DENSE_CELLS_MAX = 2 ** 26
#: Rows x offsets gathered at once (bounds the (rows, offsets) work arrays to ~128 MB of int64).
CHUNK_ELEMENTS = 2 ** 24
_INT32_MAX = 2 ** 31 - 1


def lattice_units(points: Points) -> Any | None:
    """(N, 2) int64 lattice positions ``(coords - origin) / step``, or None when not all on one lattice.

    The origin is the per-axis minimum, so the test is "every shifted coordinate is a multiple of the
    (integral) step". CLAM's per-contour grids fail it (contours have different offsets).
    """
    if not points.integral:
        return None
    step = points.step
    if not float(step).is_integer():
        return None
    s = int(step)
    xy = points.xy
    if bool((xy % s != 0).any()):
        return None
    return xy // s


def dense_fits(n: int, width: int, height: int) -> bool:
    """Whether a dense ``height x width`` index grid is allowed for ``n`` nodes."""
    cells = width * height
    return cells <= min(DENSE_CELLS_PER_NODE * n + DENSE_CELLS_EXTRA, DENSE_CELLS_MAX)


def box_size(u: Any) -> tuple[int, int]:
    """(width, height) of the lattice bounding box (positions start at 0)."""
    return int(u[:, 0].max()) + 1, int(u[:, 1].max()) + 1


class LatticeIndex:
    """Node lookup by lattice position, padded by ``pad`` cells on every side.

    Args:
        u: (N, 2) int64 lattice positions, each axis starting at 0.
        pad: margin so that ``lookup_padded`` may step up to ``pad`` cells outside the box.
        dense: use a dense grid (else sorted keys); None: decide with :func:`dense_fits`.
    """

    def __init__(self, points: Points, u: Any, pad: int = 0, dense: bool | None = None):
        ops = points.ops
        self.ops, self.points, self.n, self.pad = ops, points, int(u.shape[0]), int(pad)
        w, h = box_size(u)
        self.box = (w, h)
        self.width, self.height = w + 2 * pad, h + 2 * pad
        self.dense = dense_fits(self.n, self.width, self.height) if dense is None else dense
        self.ux, self.uy = u[:, 0], u[:, 1]
        self.key = (self.uy + pad) * self.width + (self.ux + pad)
        self.idx_dtype = ops.int32 if self.n < _INT32_MAX else ops.int64
        nodes = ops.arange(self.n, dtype=self.idx_dtype)
        if self.dense:
            self.grid = ops.full(self.width * self.height, -1, self.idx_dtype)
            self.grid[self.key] = nodes
            winner = ops.take(self.grid, self.key)
            lost = winner != nodes
            if bool(lost.any()):  # two rows wrote the same cell
                i = int(ops.nonzero(lost)[0])
                j = int(winner[i])
                raise_duplicate(points, (min(i, j), max(i, j)))
        else:
            self.order = ops.astype(ops.argsort(self.key), self.idx_dtype)
            self.sorted_key = ops.take(self.key, self.order)
            same = self.sorted_key[1:] == self.sorted_key[:-1]
            if bool(same.any()):
                p = int(ops.nonzero(same)[0])
                i, j = int(self.order[p]), int(self.order[p + 1])
                raise_duplicate(points, (min(i, j), max(i, j)))

    def _find(self, q: Any) -> Any:
        """Node index at flat (padded) keys ``q`` (any shape), -1 where none."""
        ops = self.ops
        if self.dense:
            return ops.take(self.grid, q)
        pos = ops.searchsorted(self.sorted_key, q)
        pos = ops.where(pos >= self.n, self.n - 1, pos)
        hit = ops.take(self.sorted_key, pos) == q
        return ops.where(hit, ops.take(self.order, pos), -1)

    def lookup_padded(self, rows: Any, flat_offsets: Any) -> Any:
        """(M, O) neighbours of ``rows`` at flat offsets ``dy * width + dx`` with ``|dx|, |dy| <= pad``."""
        q = self.ops.take(self.key, rows)[:, None] + flat_offsets[None, :]
        return self._find(q)

    def lookup(self, rows: Any, dx: Any, dy: Any) -> Any:
        """(M, O) neighbours of ``rows`` at offsets ``(dx, dy)`` (any size; outside the box -> -1)."""
        ops = self.ops
        qx = ops.take(self.ux, rows)[:, None] + dx[None, :]
        qy = ops.take(self.uy, rows)[:, None] + dy[None, :]
        w, h = self.box
        inside = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
        q = (qy + self.pad) * self.width + (qx + self.pad)
        q = ops.where(inside, q, 0)
        return ops.where(inside, self._find(q), -1)


def _offsets_within(d2_max_units: float, include_zero: bool) -> np.ndarray:
    """(O, 2) integer offsets (dx, dy) with dx^2 + dy^2 <= d2_max_units, sorted by (d2, dy, dx)."""
    r = int(math.isqrt(int(math.floor(d2_max_units))))
    ax = np.arange(-r, r + 1, dtype=np.int64)
    dy, dx = np.meshgrid(ax, ax, indexing="ij")
    dx, dy = dx.ravel(), dy.ravel()
    d2 = dx * dx + dy * dy
    keep = d2 <= d2_max_units
    if not include_zero:
        keep &= d2 > 0
    dx, dy, d2 = dx[keep], dy[keep], d2[keep]
    order = np.lexsort((dx, dy, d2))
    return np.stack([dx[order], dy[order]], axis=1)


def _chunks(n_rows: int, n_cols: int):
    size = max(1, CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, size):
        yield start, min(n_rows, start + size)


def lattice_radius_graph(points: Points, u: Any, radius: float, self_loops: bool,
                         dense: bool | None = None) -> Any:
    """Edges within ``radius`` patch steps; ``u`` from :func:`lattice_units`. Returns (2, E) int64.

    Rows come out sorted without a sort when the nodes are in raster (row-major) or column-major
    order, as tilers write them; otherwise each row of ~``n_offsets`` targets is sorted.
    """
    ops, n, s = points.ops, points.n, int(points.step)
    thr = radius_threshold_px2(radius, points.step)
    pad = int(math.floor(radius + RADIUS_EPS))
    cand = _offsets_within(float(pad * pad * 2), include_zero=True)
    d2_px = (cand[:, 0] * s) ** 2 + (cand[:, 1] * s) ** 2
    keep = d2_px.astype(np.float64) <= thr
    if not self_loops:
        keep &= (cand[:, 0] != 0) | (cand[:, 1] != 0)
    offs = cand[keep]
    index = LatticeIndex(points, u, pad=pad, dense=dense)
    if n == 1:
        row_sorted, col_major = True, False
    else:
        dk = index.key[1:] - index.key[:-1]
        row_sorted = bool((dk > 0).all())
        col_major = False
        if not row_sorted:
            key_t = index.ux * index.height + index.uy
            col_major = bool((key_t[1:] > key_t[:-1]).all())
    # order the offsets so that, for sorted node orders, each row's targets come out ascending
    if col_major:
        offs = offs[np.lexsort((offs[:, 1], offs[:, 0]))]
    else:
        offs = offs[np.lexsort((offs[:, 0], offs[:, 1]))]
    flat = ops.asarray(offs[:, 1] * index.width + offs[:, 0], dtype=ops.int64)
    need_sort = not (row_sorted or col_major)
    srcs, dsts = [], []
    for a, b in _chunks(n, len(offs)):
        rows = ops.arange(b - a) + a if a or b < n else ops.arange(n)
        nb = index.lookup_padded(rows, flat)
        if need_sort:
            nb = ops.sort_rows_neg_last(nb)
        mask = nb >= 0
        dsts.append(nb[mask])
        srcs.append(ops.repeat(ops.astype(rows, index.idx_dtype), ops.count_rows(mask)))
    src = srcs[0] if len(srcs) == 1 else ops.concat(srcs)
    dst = dsts[0] if len(dsts) == 1 else ops.concat(dsts)
    return ops.edge_index(src, dst)


def lattice_knn_graph(points: Points, u: Any, k: int, self_loops: bool, dense: bool | None = None) -> Any:
    """k-NN graph (see ``points.py`` for the definition) on lattice positions ``u``. Returns (2, E) int64."""
    ops, n = points.ops, points.n
    index = LatticeIndex(points, u, pad=0, dense=dense)
    kk = min(int(k), n - 1)
    if kk == 0:
        return finalise_edges(ops, ops.arange(0), ops.arange(0), n, self_loops)
    w, h = index.box
    d2_all = float((w - 1) ** 2 + (h - 1) ** 2)  # a disc this large sees every node from everywhere
    # first disc: the smallest holding >= 2k offsets (absorbs a few holes), then 4x the area per round
    d2_max = 1.0
    while len(_offsets_within(d2_max, include_zero=False)) < 2 * kk and d2_max < d2_all:
        d2_max += 1.0
    rows_left = ops.arange(n)
    srcs, dsts = [], []
    while int(rows_left.shape[0]) > 0:
        if math.pi * d2_max >= n or d2_max >= d2_all:
            # the disc would hold about as many offsets as there are nodes: test the remaining rows
            # against every node instead (bounds the work for isolated patches far from the rest)
            src, dst = _knn_all_pairs(ops, u, rows_left, kk, n)
            srcs.append(src)
            dsts.append(dst)
            break
        offs = _offsets_within(d2_max, include_zero=False)
        shell = np.unique(offs[:, 0] ** 2 + offs[:, 1] ** 2, return_inverse=True)[1].reshape(-1)
        dx = ops.asarray(offs[:, 0], dtype=ops.int64)
        dy = ops.asarray(offs[:, 1], dtype=ops.int64)
        rank = ops.asarray(shell.astype(np.int64), dtype=ops.int64)
        pending = []
        for a, b in _chunks(int(rows_left.shape[0]), len(offs)):
            rows = rows_left[a:b]
            nb = ops.astype(index.lookup(rows, dx, dy), ops.int64)
            valid = nb >= 0
            done = ops.count_rows(valid) >= kk
            key = ops.where(valid, rank[None, :] * n + nb, 2 ** 62)
            chosen = ops.sort_rows(key[done])[:, :kk] % n
            srcs.append(ops.repeat(rows[done], kk))
            dsts.append(chosen.reshape(-1))
            pending.append(rows[~done])
        rows_left = ops.concat(pending) if pending else ops.arange(0)
        d2_max *= 4.0
    return finalise_edges(ops, ops.concat(srcs), ops.concat(dsts), n, self_loops)


def _knn_all_pairs(ops: NumpyOps | TorchOps, u: Any, rows: Any, kk: int, n: int) -> tuple[Any, Any]:
    """k-NN of ``rows`` against all ``n`` nodes (exact lattice squared distances), in row chunks."""
    srcs, dsts = [], []
    every = ops.arange(n)
    for a, b in _chunks(int(rows.shape[0]), n):
        r = rows[a:b]
        dx = u[:, 0][None, :] - ops.take(u[:, 0], r)[:, None]
        dy = u[:, 1][None, :] - ops.take(u[:, 1], r)[:, None]
        cand = ops.where(every[None, :] == r[:, None], -1, every[None, :])
        chosen, _ = select_knn(ops, cand, dx * dx + dy * dy, kk, n)
        srcs.append(ops.repeat(r, kk))
        dsts.append(chosen.reshape(-1))
    return ops.concat(srcs), ops.concat(dsts)
