"""Input checks and the definitions every backend shares: edge test, k-NN order, output layout.

Definitions (identical in every backend, so all backends return the same edges):

* Distances are Euclidean, between patch top-left corners. The edge test is done on exact squared
  distances in level-0 pixels (int64 for integer coordinates): ``i ~ j`` iff
  ``d2_px(i, j) <= ((radius + RADIUS_EPS) * step) ** 2``. Backends that search with floating point (k-d
  trees, torch_cluster) only propose candidates with some slack; the decision is always this test.
* k-NN: node ``i``'s neighbours are its ``k`` nearest *other* nodes ordered by (squared distance, node
  index), i.e. distance ties go to the smaller index; the graph is the union of both directions.
* Output: ``edge_index`` (2, E) int64 holding both directions of every undirected edge, without
  duplicates, sorted by (source, target); ``(i, i)`` present iff ``self_loops``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsigraph.errors import InputError
from wsigraph.graph.ops import NumpyOps, TorchOps, ops_for
from wsigraph.graph.params import RADIUS_EPS


@dataclass
class Points:
    """A slide's patch positions, checked and shifted to start at 0.

    Attributes:
        xy: (N, 2) coordinates minus ``origin`` (int64 when the input is integral, else float64), numpy on
            CPU or a torch tensor on the input's (non-CPU) device.
        origin: per-axis minimum of the input, level-0 pixels.
        step: grid step in level-0 pixels (``patch_size_level0``).
        integral: the coordinates are whole numbers.
        device: the input tensor's device (cpu for numpy input); results go back there.
        ops: array primitives for ``xy`` (numpy or torch).
    """

    xy: Any
    origin: tuple[float, float]
    step: float
    integral: bool
    device: torch.device
    ops: NumpyOps | TorchOps

    @property
    def n(self) -> int:
        return int(self.xy.shape[0])

    def original(self, i: int) -> tuple:
        """The input coordinate of row ``i`` (for messages)."""
        x, y = (float(v) for v in self.xy[i].tolist())
        ox, oy = self.origin
        vals = (x + ox, y + oy)
        return tuple(int(v) for v in vals) if self.integral else vals

    def numpy_xy(self) -> np.ndarray:
        return self.xy if isinstance(self.xy, np.ndarray) else self.xy.detach().cpu().numpy()


def prepare_points(coords: Any, step: float | None = None) -> Points:
    """Check ``coords`` ((N, 2) numbers, numpy, torch or nested lists) and resolve the grid ``step``."""
    device = coords.device if isinstance(coords, torch.Tensor) else torch.device("cpu")
    if isinstance(coords, torch.Tensor):
        arr: Any = coords.detach()
        if device.type == "cpu":
            arr = arr.numpy()
    else:
        try:
            arr = np.asarray(coords)
        except (ValueError, TypeError) as e:
            raise InputError(f"coords: cannot be read as an (N, 2) array ({e})") from e
    shape = tuple(arr.shape)
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(f"coords: must have shape (N, 2) (x, y per patch), got shape {shape}")
    if shape[0] == 0:
        raise InputError("coords: empty (0 patches); a graph needs at least one patch")
    ops = ops_for(device)
    is_np = isinstance(arr, np.ndarray)
    kind = arr.dtype.kind if is_np else ("f" if arr.dtype.is_floating_point else
                                         "b" if arr.dtype == torch.bool else
                                         "c" if arr.dtype.is_complex else "i")
    if kind not in "iuf":
        raise InputError(f"coords: must be numbers (integer level-0 pixels), got dtype {arr.dtype}")
    if kind == "f":
        arr = arr.astype(np.float64) if is_np else arr.to(torch.float64)
        finite = np.isfinite(arr).all(axis=1) if is_np else torch.isfinite(arr).all(dim=1)
        if not bool(finite.all()):
            bad = int(ops.nonzero(~finite)[0])
            raise InputError(f"coords: row {bad} is not finite ({arr[bad].tolist()})")
        integral = bool((arr == (np.round(arr) if is_np else torch.round(arr))).all())
        if integral:
            arr = arr.astype(np.int64) if is_np else arr.to(torch.int64)
    else:
        arr = arr.astype(np.int64, copy=False) if is_np else arr.to(torch.int64)
        integral = True
    mins = [arr[:, 0].min(), arr[:, 1].min()]
    origin_vals = [m.item() for m in mins]
    if is_np:
        xy = arr - np.asarray(origin_vals, dtype=arr.dtype)
    else:
        xy = arr - torch.tensor(origin_vals, dtype=arr.dtype, device=device)
    origin = (origin_vals[0], origin_vals[1])
    step_f = _resolve_step(step, xy, shape[0])
    return Points(xy=xy, origin=origin, step=step_f, integral=integral, device=device, ops=ops)


def _resolve_step(step: Any, xy: Any, n: int) -> float:
    if step is None:
        if n == 1:
            return 1.0
        from wsigraph.data.features import infer_grid_step

        xy_np = xy if isinstance(xy, np.ndarray) else xy.detach().cpu().numpy()
        try:
            return float(infer_grid_step(xy_np, where="coords"))
        except InputError as e:
            raise InputError(f"{e}; or pass step= (the grid step in level-0 pixels)") from None
    if isinstance(step, torch.Tensor):
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
        raise InputError(f"step: must be a number > 0 (level-0 pixels per patch step), got {step!r}")
    step = float(step)
    if not math.isfinite(step) or step <= 0:
        raise InputError(f"step: must be a number > 0 (level-0 pixels per patch step), got {step!r}")
    return step


# --------------------------------------------------------------------------------------------------
# the shared definitions
# --------------------------------------------------------------------------------------------------


def radius_threshold_px2(radius: float, step: float) -> float:
    """Largest squared level-0 distance of an edge: ``((radius + RADIUS_EPS) * step) ** 2``."""
    return ((float(radius) + RADIUS_EPS) * float(step)) ** 2


def pair_d2(points: Points, i: Any, j: Any, xy: Any = None) -> Any:
    """Exact squared level-0 distances between rows ``i`` and ``j`` (int64 or float64, same shape)."""
    xy = points.xy if xy is None else xy
    dx = xy[:, 0][j] - xy[:, 0][i]
    dy = xy[:, 1][j] - xy[:, 1][i]
    return dx * dx + dy * dy


def as_float64(points: Points, a: Any) -> Any:
    return points.ops.astype(a, points.ops.float64)


def find_duplicate(points: Points) -> tuple[int, int] | None:
    """Rows ``(i, j)``, ``i < j``, of one repeated coordinate, or None. One sort of N keys."""
    ops, xy, n = points.ops, points.xy, points.n
    if n < 2:
        return None
    if points.integral:
        height = int(xy[:, 1].max()) + 1
        width = int(xy[:, 0].max()) + 1
        if width * height < 2 ** 62:
            key = xy[:, 0] * height + xy[:, 1]
            order = ops.argsort(key, stable=True)
            sk = ops.take(key, order)
            same = sk[1:] == sk[:-1]
            if not bool(same.any()):
                return None
            pos = int(ops.nonzero(same)[0])
            i, j = int(order[pos]), int(order[pos + 1])
            return (min(i, j), max(i, j))
    from wsigraph.data.features import first_duplicate_coord

    return first_duplicate_coord(points.numpy_xy())


def raise_duplicate(points: Points, pair: tuple[int, int]) -> None:
    i, j = pair
    raise InputError(f"coords: duplicate coordinate {points.original(i)} at rows {i} and {j}; "
                     "each patch position must appear once")


def check_no_duplicates(points: Points) -> None:
    dup = find_duplicate(points)
    if dup is not None:
        raise_duplicate(points, dup)


def finalise_edges(ops: NumpyOps | TorchOps, src: Any, dst: Any, n: int, self_loops: bool) -> Any:
    """Directed candidate pairs -> the output layout (symmetric, unique, sorted, self loops as asked).

    ``src``/``dst`` may hold both or one direction of each edge, duplicates and ``(i, i)`` pairs.
    """
    src = ops.astype(src, ops.int64)
    dst = ops.astype(dst, ops.int64)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    parts = [src * n + dst, dst * n + src]
    if self_loops:
        ar = ops.arange(n)
        parts.append(ar * n + ar)
    key = ops.unique(ops.concat(parts))
    return ops.edge_index(key // n, key % n)


def edge_lengths(points: Points, edge_index: Any) -> Any:
    """(E,) float32 edge lengths in patch steps, on the same array type as ``edge_index``."""
    ops = points.ops
    xy = points.xy
    if isinstance(edge_index, torch.Tensor) and isinstance(xy, np.ndarray):
        xy = torch.from_numpy(xy).to(edge_index.device)
        d2 = pair_d2(points, edge_index[0], edge_index[1], xy=xy).to(torch.float64)
        return (torch.sqrt(d2) / points.step).to(torch.float32)
    d2 = pair_d2(points, edge_index[0], edge_index[1])
    d = ops.sqrt(ops.astype(d2, ops.float64)) / points.step
    return ops.astype(d, np.float32 if isinstance(d, np.ndarray) else torch.float32)


def select_knn(ops: NumpyOps | TorchOps, cand: Any, d2: Any, k: int, n: int | None = None) -> tuple[Any, Any]:
    """Order each row's candidates by (d2, index) and keep the first ``k``.

    Args:
        cand: (M, K) int64 candidate node indices, -1 for none (the query node itself must be removed).
        d2: (M, K) squared distances (any value where ``cand`` is -1); int64 (exact, with ``n`` given: one
            row sort of ``d2 * n + index``) or float64 (two stable sorts).
        k: neighbours wanted (K >= k).
        n: number of nodes (enables the single-sort path for integer ``d2``).
    Returns:
        (chosen (M, k) int64 with -1 where a row has fewer than k, kth_d2 (M,) float64, inf when short).
    """
    valid = cand >= 0
    inf = float("inf")
    is_int = np.issubdtype(d2.dtype, np.integer) if isinstance(d2, np.ndarray) else not d2.dtype.is_floating_point
    if is_int and n is not None and int(cand.shape[0]) > 0:
        big = 2 ** 62
        dmax = int(ops.where(valid, d2, 0).max())
        if dmax < big // max(n, 1) - 1:
            key = ops.sort_rows(ops.where(valid, d2 * n + cand, big))[:, :k]
            short = key == big
            chosen = ops.where(short, -1, key % n)
            kth = ops.where(short[:, k - 1], inf, ops.astype(key[:, k - 1] // n, ops.float64))
            return chosen, kth
    d2 = ops.where(valid, ops.astype(d2, ops.float64), inf)
    order = ops.argsort_rows_lex(d2, ops.where(valid, cand, 2 ** 62))[:, :k]
    chosen = ops.take_along_rows(ops.where(valid, cand, -1), order)
    kth = ops.take_along_rows(d2, order[:, k - 1:k])[:, 0]
    return chosen, kth
