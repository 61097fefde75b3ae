"""k-d tree backend (scipy ``cKDTree``): any coordinates, CPU.

The tree proposes candidates; the edge test and the k-NN order are the shared exact definitions of
``points.py``, so this backend returns the same edges as the others.
"""
from __future__ import annotations

import math

import numpy as np

from wsigraph.graph.ops import NumpyOps
from wsigraph.graph.points import (Points, check_no_duplicates, finalise_edges, pair_d2,
                                   radius_threshold_px2, select_knn)

#: Relative slack of the search radius over the exact threshold (the exact test decides).
SEARCH_SLACK = 1e-9


def _tree(xy: np.ndarray):
    from scipy.spatial import cKDTree

    return cKDTree(xy.astype(np.float64, copy=False))


def kdtree_radius_graph(points: Points, radius: float, self_loops: bool) -> np.ndarray:
    """Edges within ``radius`` patch steps. Returns (2, E) int64 numpy."""
    check_no_duplicates(points)
    ops, n = NumpyOps(), points.n
    xy = points.numpy_xy()
    thr = radius_threshold_px2(radius, points.step)
    r_query = math.sqrt(thr) * (1 + SEARCH_SLACK) + SEARCH_SLACK
    pairs = _tree(xy).query_pairs(r_query, output_type="ndarray")
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    d2 = pair_d2(points, i, j, xy=xy)
    keep = d2.astype(np.float64) <= thr
    return finalise_edges(ops, i[keep], j[keep], n, self_loops)


def kdtree_knn_graph(points: Points, k: int, self_loops: bool) -> np.ndarray:
    """k-NN graph (definition in ``points.py``). Returns (2, E) int64 numpy.

    The tree returns the K nearest in arbitrary tie order, so K > k candidates are queried; a row is
    exact when its k-th neighbour is strictly closer than its farthest candidate (every node at the
    k-th distance is then among the candidates) or when the candidates are all nodes. Other rows are
    queried again with twice as many candidates.
    """
    check_no_duplicates(points)
    ops, n = NumpyOps(), points.n
    kk = min(int(k), n - 1)
    empty = np.zeros(0, dtype=np.int64)
    if kk == 0:
        return finalise_edges(ops, empty, empty, n, self_loops)
    xy = points.numpy_xy()
    pts = xy.astype(np.float64, copy=False)
    tree = _tree(xy)
    rows = np.arange(n, dtype=np.int64)
    n_cand = min(n, kk + 1 + max(1, kk // 4))  # self + k + a few for ties; rows cut at a tie retry
    srcs, dsts = [], []
    while rows.size:
        _, idx = tree.query(pts[rows], k=n_cand)
        idx = np.asarray(idx, dtype=np.int64).reshape(rows.size, n_cand)
        cand = np.where((idx == rows[:, None]) | (idx >= n), -1, idx)
        d2 = pair_d2(points, rows[:, None], np.maximum(cand, 0), xy=xy)
        chosen, kth = select_knn(ops, cand, d2, kk, n)
        far = np.where(cand >= 0, d2, -1).max(axis=1).astype(np.float64)
        done = (kth < far) | (n_cand >= n)
        srcs.append(np.repeat(rows[done], kk))
        dsts.append(chosen[done].reshape(-1))
        rows = rows[~done]
        n_cand = min(n, 2 * n_cand)
    return finalise_edges(ops, np.concatenate(srcs), np.concatenate(dsts), n, self_loops)
