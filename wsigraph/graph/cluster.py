"""torch_cluster backend: radius / k-NN search on the input's device (the GPU path for irregular points).

``torch_cluster`` is optional (``pip install --no-build-isolation torch-cluster``). Its searches only
propose candidates: the radius search is repeated with a larger ``max_num_neighbors`` while any node is
saturated, k-NN queries extra candidates, and the shared exact definitions of ``points.py`` decide.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch

from wsigraph.errors import MissingDependencyError
from wsigraph.graph.ops import NumpyOps, TorchOps
from wsigraph.graph.points import (Points, check_no_duplicates, finalise_edges, pair_d2,
                                   radius_threshold_px2, select_knn)

INSTALL_HINT = "pip install --no-build-isolation torch-cluster"
SEARCH_SLACK = 1e-9


@functools.lru_cache(maxsize=1)
def torch_cluster_available() -> bool:
    """Whether ``torch_cluster`` imports (a build for another torch version fails to load: False)."""
    try:
        import torch_cluster  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def import_torch_cluster() -> Any:
    try:
        import torch_cluster
    except (ImportError, OSError) as e:
        raise MissingDependencyError(
            f"backend 'torch_cluster' needs the torch-cluster package, which is not importable ({e}); "
            f"install it with `{INSTALL_HINT}`, or use backend 'auto', 'lattice' or 'kdtree'") from e
    return torch_cluster


def _tensor_xy(points: Points) -> torch.Tensor:
    xy = points.xy
    return torch.from_numpy(xy) if not isinstance(xy, torch.Tensor) else xy


def _finalise(points: Points, src: torch.Tensor, dst: torch.Tensor, self_loops: bool) -> Any:
    if points.device.type == "cpu":
        return finalise_edges(NumpyOps(), src.cpu().numpy(), dst.cpu().numpy(), points.n, self_loops)
    return finalise_edges(TorchOps(points.device), src, dst, points.n, self_loops)


def cluster_radius_graph(points: Points, radius: float, self_loops: bool) -> Any:
    """Edges within ``radius`` patch steps with ``torch_cluster.radius``. Returns (2, E) int64."""
    tc = import_torch_cluster()
    check_no_duplicates(points)
    n = points.n
    xy = _tensor_xy(points)
    x = xy.to(torch.float64)
    thr = radius_threshold_px2(radius, points.step)
    r_query = math.sqrt(thr) * (1 + SEARCH_SLACK) + SEARCH_SLACK
    max_nb = min(n, 64)
    while True:
        pairs = tc.radius(x, x, r_query, max_num_neighbors=max_nb)
        if max_nb >= n or pairs.shape[1] == 0:
            break
        if int(torch.bincount(pairs[0], minlength=n).max()) < max_nb:
            break
        max_nb = min(n, max_nb * 4)  # some node was cut at max_nb: search again
    i, j = pairs[0].to(torch.int64), pairs[1].to(torch.int64)
    keep = pair_d2(points, i, j, xy=xy).to(torch.float64) <= thr
    return _finalise(points, i[keep], j[keep], self_loops)


def cluster_knn_graph(points: Points, k: int, self_loops: bool) -> Any:
    """k-NN graph (definition in ``points.py``) with ``torch_cluster.knn``. Returns (2, E) int64."""
    tc = import_torch_cluster()
    check_no_duplicates(points)
    n, device = points.n, points.device
    ops = TorchOps(device)
    kk = min(int(k), n - 1)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if kk == 0:
        return _finalise(points, empty, empty, self_loops)
    xy = _tensor_xy(points)
    x = xy.to(torch.float64)
    rows = torch.arange(n, device=device)
    n_cand = min(n, kk + 1 + max(1, kk // 4))  # self + k + a few for ties; rows cut at a tie retry
    srcs, dsts = [], []
    while rows.numel():
        m = rows.numel()
        pairs = tc.knn(x, x[rows], n_cand)
        q, c = pairs[0].to(torch.int64), pairs[1].to(torch.int64)
        order = torch.argsort(q, stable=True)
        q, c = q[order], c[order]
        counts = torch.bincount(q, minlength=m)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(q.numel(), device=device) - start[q]
        cand = torch.full((m, n_cand), -1, dtype=torch.int64, device=device)
        cand[q, slot] = c
        cand = torch.where(cand == rows[:, None], -1, cand)
        d2 = pair_d2(points, rows[:, None], cand.clamp(min=0), xy=xy)
        chosen, kth = select_knn(ops, cand, d2, kk, n)
        far = torch.where(cand >= 0, d2, -1).max(dim=1).values.to(torch.float64)
        done = (kth < far) | (n_cand >= n)
        srcs.append(torch.repeat_interleave(rows[done], kk))
        dsts.append(chosen[done].reshape(-1))
        rows = rows[~done]
        n_cand = min(n, 2 * n_cand)
    return _finalise(points, torch.cat(srcs), torch.cat(dsts), self_loops)
