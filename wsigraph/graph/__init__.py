"""Spatial graphs of patches: ``spatial_graph`` (lattice / k-d tree / torch_cluster backends),
``GraphConfig`` and ``GraphDataset`` (PyG dataset with an on-disk graph cache)."""
from wsigraph.graph.build import choose_backend, spatial_graph
from wsigraph.graph.params import BACKENDS, MODES, NO_GRAPH, PAPER_RADIUS_FACTOR, GraphConfig, paper_radius

__all__ = ["spatial_graph", "choose_backend", "GraphConfig", "GraphDataset", "MODES", "NO_GRAPH", "BACKENDS",
           "PAPER_RADIUS_FACTOR", "paper_radius"]


def __getattr__(name: str):
    if name == "GraphDataset":  # imports torch_geometric: only when asked for
        from wsigraph.graph.dataset import GraphDataset

        return GraphDataset
    raise AttributeError(f"module 'wsigraph.graph' has no attribute {name!r}")
