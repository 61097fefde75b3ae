"""``spatial_graph``: patch coordinates -> ``edge_index``, with backend dispatch.

Backends (all return the same edges for the same input; the definitions are in ``points.py``):

* ``lattice``: index arithmetic on the patch grid, numpy on CPU / torch on the input's device; needs all
  coordinates on one lattice of the grid step.
* ``torch_cluster``: optional package, runs on the input's device; the GPU choice for irregular points.
* ``kdtree``: scipy ``cKDTree``, CPU; any coordinates.
* ``auto``: ``lattice`` when the coordinates sit on one lattice (for k-NN: and the lattice's box is dense
  enough for an index grid), else ``torch_cluster`` for CUDA tensors when it is installed, else ``kdtree``.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from wsigraph.errors import InputError
from wsigraph.graph.cluster import (cluster_knn_graph, cluster_radius_graph, import_torch_cluster,
                                    torch_cluster_available)
from wsigraph.graph.kdtree import kdtree_knn_graph, kdtree_radius_graph
from wsigraph.graph.lattice import (box_size, dense_fits, lattice_knn_graph, lattice_radius_graph,
                                    lattice_units)
from wsigraph.graph.params import check_graph_args, paper_radius
from wsigraph.graph.points import Points, edge_lengths, prepare_points

log = logging.getLogger("wsigraph")


def _auto_backend(points: Points, u: Any, mode: str) -> str:
    if u is not None:
        if mode != "knn" or dense_fits(points.n, *box_size(u)):
            return "lattice"
    if points.device.type != "cpu" and torch_cluster_available():
        return "torch_cluster"
    return "kdtree"


def choose_backend(coords: Any, *, mode: str = "paper", step: float | None = None) -> str:
    """The backend ``backend="auto"`` would use for ``coords`` ((N, 2) level-0 pixels)."""
    points = prepare_points(coords, step)
    return _auto_backend(points, lattice_units(points), mode)


def spatial_graph(
    coords: Any,
    *,
    mode: str = "paper",
    k: int = 8,
    radius: float | None = None,
    window: float = 2,
    self_loops: bool = True,
    step: float | None = None,
    backend: str = "auto",
    return_distances: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Spatial graph of a slide's patches.

    Args:
        coords: (N, 2) integer level-0 pixels (x, y of each patch's top-left), numpy or torch (any device).
        mode: ``"paper"`` (radius ``window * 1.42`` steps: 24-neighbourhood for ``window=2``),
            ``"radius"`` (edge when the distance is <= ``radius`` steps) or ``"knn"`` (``k`` nearest other
            patches, distance ties to the smaller index, then symmetrised).
        k: neighbours per node for ``knn``.
        radius: patch steps, only for ``mode="radius"``.
        window: the paper's window, only for ``mode="paper"``.
        self_loops: include ``(i, i)`` for every node.
        step: grid step in level-0 pixels (``patch_size_level0``); None: inferred from the coordinates.
        backend: ``"auto"``, ``"lattice"``, ``"kdtree"`` or ``"torch_cluster"``.
        return_distances: also return the edge lengths.

    Returns:
        edge_index (2, E) int64 on the device of ``coords`` (CPU for numpy): both directions of every
        undirected edge, no duplicates, sorted by (source, target); with ``return_distances`` also
        (E,) float32 lengths in patch steps (0 for self loops).

    Raises:
        InputError: coords not (N, 2), empty, non-finite or with a duplicated position (named with its
            rows); a bad argument (``ConfigError``); ``backend="lattice"`` on coordinates off one lattice.
        MissingDependencyError: ``backend="torch_cluster"`` without the package.
    """
    check_graph_args(mode, k, radius, window, self_loops, backend)
    points = prepare_points(coords, step)
    if backend == "torch_cluster":
        import_torch_cluster()
    u = lattice_units(points) if backend in ("auto", "lattice") else None
    if backend == "lattice" and u is None:
        raise InputError(
            f"coords: backend 'lattice' needs every coordinate on one lattice of step {points.step:g} px from "
            f"the origin {points.origin} (coordinates minus the origin must be multiples of the step); these "
            "are not (e.g. CLAM's per-contour grids). Use backend 'auto' or 'kdtree'")
    chosen = _auto_backend(points, u, mode) if backend == "auto" else backend
    log.debug("spatial_graph: %d nodes, mode %s, backend %s", points.n, mode, chosen)
    r = paper_radius(window) if mode == "paper" else radius
    if mode == "knn":
        fn = {"lattice": lambda: lattice_knn_graph(points, u, k, self_loops),
              "kdtree": lambda: kdtree_knn_graph(points, k, self_loops),
              "torch_cluster": lambda: cluster_knn_graph(points, k, self_loops)}[chosen]
    else:
        fn = {"lattice": lambda: lattice_radius_graph(points, u, r, self_loops),
              "kdtree": lambda: kdtree_radius_graph(points, r, self_loops),
              "torch_cluster": lambda: cluster_radius_graph(points, r, self_loops)}[chosen]
    native = fn()
    edge_index = (native if isinstance(native, torch.Tensor) else torch.from_numpy(native)).to(points.device)
    if not return_distances:
        return edge_index
    return edge_index, edge_lengths(points, edge_index)
