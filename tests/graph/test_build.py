"""wsigraph.graph.spatial_graph: definitions, backend agreement, errors.

The oracle is a brute-force O(N^2) implementation of the documented definitions (radius test with the
shared epsilon; k-NN ordered by (distance, index) then symmetrised), run on small inputs.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from wsigraph.errors import ConfigError, InputError, MissingDependencyError
from wsigraph.graph import GraphConfig, choose_backend, spatial_graph
from wsigraph.graph.cluster import torch_cluster_available
from wsigraph.graph.lattice import lattice_knn_graph, lattice_radius_graph, lattice_units
from wsigraph.graph.ops import TorchOps
from wsigraph.graph.params import RADIUS_EPS
from wsigraph.graph.points import prepare_points

BACKENDS = ["lattice", "kdtree", "auto"] + (["torch_cluster"] if torch_cluster_available() else [])


# --------------------------------------------------------------------------------------------------
# oracle and helpers
# --------------------------------------------------------------------------------------------------


def brute_force(coords, *, mode="paper", k=8, radius=None, window=2, self_loops=True, step=1.0):
    c = np.asarray(coords, dtype=np.float64)
    n = len(c)
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    if mode in ("paper", "radius"):
        r = window * 1.42 if mode == "paper" else radius
        adj = d2 <= ((r + RADIUS_EPS) * step) ** 2
    else:
        adj = np.zeros((n, n), dtype=bool)
        kk = min(k, n - 1)
        if kk > 0:
            dd = d2.copy()
            np.fill_diagonal(dd, np.inf)
            idx = np.broadcast_to(np.arange(n), (n, n))
            nearest = np.lexsort((idx, dd), axis=1)[:, :kk]  # by distance, ties to the smaller index
            adj[np.repeat(np.arange(n), kk), nearest.reshape(-1)] = True
        adj |= adj.T
    np.fill_diagonal(adj, self_loops)
    s, t = np.nonzero(adj)  # row-major: sorted by (source, target)
    return torch.from_numpy(np.stack([s, t]).astype(np.int64))


def edge_set(ei):
    return set(map(tuple, ei.t().tolist()))


def lattice_with_holes(rng, shape=(12, 14), keep=0.7, step=224, far_cluster=False, order="shuffled"):
    h, w = shape
    cells = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 2)  # raster order
    cells = cells[rng.random(len(cells)) < keep]
    if far_cluster:  # a second tissue piece far away: dense grid too large relative to N -> sorted keys path
        cells = np.concatenate([cells, cells[: max(1, len(cells) // 4)] + 700])
    if order == "shuffled":
        cells = cells[rng.permutation(len(cells))]
    elif order == "column":
        cells = cells[np.lexsort((cells[:, 1], cells[:, 0]))]
    return cells * step + rng.integers(0, 3 * step, size=2)


def all_backend_graphs(coords, **kw):
    """The graph from every backend, plus the lattice code on torch tensors (the GPU code path) and the
    lattice's sorted-key fallback, when the coordinates are on a lattice."""
    out = {b: spatial_graph(coords, backend=b, **kw) for b in BACKENDS
           if b != "lattice" or lattice_units(prepare_points(coords, kw.get("step"))) is not None}
    pts = prepare_points(torch.as_tensor(coords), kw.get("step"))
    u = lattice_units(pts)
    if u is not None:
        pts.ops, pts.xy = TorchOps("cpu"), torch.as_tensor(pts.xy)
        u = torch.as_tensor(u)
        mode, sl = kw.get("mode", "paper"), kw.get("self_loops", True)
        for dense in (True, False):
            if mode == "knn":
                e = lattice_knn_graph(pts, u, kw["k"], sl, dense=dense)
            else:
                r = 2 * 1.42 if mode == "paper" else kw["radius"]
                e = lattice_radius_graph(pts, u, r, sl, dense=dense)
            out[f"lattice-torch-{'dense' if dense else 'keys'}"] = e
    return out


def assert_all_equal(coords, expected, **kw):
    for name, e in all_backend_graphs(coords, **kw).items():
        assert e.dtype == torch.int64, name
        assert torch.equal(e, expected), f"backend {name} differs: {e.shape} vs {expected.shape}"


# --------------------------------------------------------------------------------------------------
# hand-made lattices
# --------------------------------------------------------------------------------------------------


def grid(w, h, step=100, origin=(0, 0)):
    return np.array([[origin[0] + x * step, origin[1] + y * step] for y in range(h) for x in range(w)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_3x3_grid_8_neighbourhood(backend):
    coords = grid(3, 3)
    ei = spatial_graph(coords, mode="radius", radius=1.5, self_loops=False, step=100, backend=backend)
    pos = [(x, y) for y in range(3) for x in range(3)]
    expected = {(i, j) for i in range(9) for j in range(9)
                if i != j and max(abs(pos[i][0] - pos[j][0]), abs(pos[i][1] - pos[j][1])) == 1}
    assert edge_set(ei) == expected
    assert ei.shape == (2, 40)  # 4 corners x 3 + 4 edges x 5 + centre 8
    deg = torch.bincount(ei[0], minlength=9)
    assert deg[4] == 8 and deg[0] == 3 and deg[1] == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_3x4_grid_4_neighbourhood(backend):
    coords = grid(3, 4, step=512, origin=(1000, 37))
    ei = spatial_graph(coords, mode="radius", radius=1, self_loops=False, backend=backend)
    pos = [(x, y) for y in range(4) for x in range(3)]
    expected = {(i, j) for i in range(12) for j in range(12)
                if abs(pos[i][0] - pos[j][0]) + abs(pos[i][1] - pos[j][1]) == 1}
    assert edge_set(ei) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_mode_is_the_5x5_neighbourhood_with_self_loops(backend):
    coords = grid(7, 7, step=224)
    ei = spatial_graph(coords, backend=backend)  # paper: radius 2 * 1.42 = 2.84 >= sqrt(8) = 2.828
    deg = torch.bincount(ei[0], minlength=49)
    centre = 3 * 7 + 3
    assert deg[centre] == 25  # 24 neighbours + itself
    assert deg[0] == 9  # corner: its 3 x 3 quadrant of the 5 x 5 window
    nbrs = set(ei[1][ei[0] == centre].tolist())
    assert nbrs == {y * 7 + x for y in range(1, 6) for x in range(1, 6)}
    assert (0 + 0 * 7, 2 * 7 + 2) in edge_set(ei)  # the (2, 2) diagonal at 2.828 steps is in


@pytest.mark.parametrize("backend", BACKENDS)
def test_radius_boundary_uses_the_same_epsilon(backend):
    coords = grid(4, 4, step=10)
    r5 = spatial_graph(coords, mode="radius", radius=math.sqrt(5), self_loops=False, step=10, backend=backend)
    r2 = spatial_graph(coords, mode="radius", radius=2.0, self_loops=False, step=10, backend=backend)
    # (0,0)-(2,1) is at sqrt(5): in with radius sqrt(5), out with radius 2; (0,0)-(2,0) in both
    assert (0, 1 * 4 + 2) in edge_set(r5) and (0, 1 * 4 + 2) not in edge_set(r2)
    assert (0, 2) in edge_set(r2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_ties_go_to_the_smaller_index(backend):
    # node 4 in the middle of a diamond of nodes 0..3 (all at distance 100 from it)
    coords = np.array([[200, 100], [100, 200], [0, 100], [100, 0], [100, 100]])
    ei = spatial_graph(coords, mode="knn", k=2, self_loops=False, step=100, backend=backend)
    # directed choices: 4->{0,1}; each outer node -> 4 and the smaller-index of its two diagonal neighbours:
    # 0->1 (1 < 3), 1->0 (0 < 2), 2->1 (1 < 3), 3->0 (0 < 2); then symmetrised
    undirected = {(4, 0), (4, 1), (0, 1), (2, 4), (2, 1), (3, 4), (3, 0)}
    expected = undirected | {(b, a) for a, b in undirected}
    assert edge_set(ei) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_loops_on_and_off(backend):
    coords = lattice_with_holes(np.random.default_rng(3), shape=(6, 7))
    on = spatial_graph(coords, mode="knn", k=4, self_loops=True, step=224, backend=backend)
    off = spatial_graph(coords, mode="knn", k=4, self_loops=False, step=224, backend=backend)
    n = len(coords)
    assert int((on[0] == on[1]).sum()) == n and int((off[0] == off[1]).sum()) == 0
    assert edge_set(on) - edge_set(off) == {(i, i) for i in range(n)}


def test_single_patch_and_no_neighbours():
    for backend in BACKENDS:
        ei = spatial_graph(np.array([[448, 896]]), backend=backend)
        assert ei.tolist() == [[0], [0]]
        assert spatial_graph(np.array([[448, 896]]), self_loops=False, backend=backend).shape == (2, 0)
    far = np.array([[0, 0], [10 * 224, 0]])  # two patches 10 steps apart: no radius edge, one knn edge
    assert spatial_graph(far, step=224, self_loops=False).shape == (2, 0)
    assert spatial_graph(far, step=224, mode="knn", k=3, self_loops=False).tolist() == [[0, 1], [1, 0]]


def test_knn_on_a_lattice_reaches_isolated_patches():
    coords = np.concatenate([grid(3, 3, step=224), [[40 * 224, 35 * 224]]])  # one patch far away
    expected = brute_force(coords, mode="knn", k=3, step=224)
    assert_all_equal(coords, expected, mode="knn", k=3, step=224)
    assert (9, 8) in edge_set(expected)  # its nearest is the grid's corner (2, 2), node 8


# --------------------------------------------------------------------------------------------------
# all backends agree with the definitions
# --------------------------------------------------------------------------------------------------


def test_knn_rings_on_a_larger_lattice_with_many_holes():
    # ~560 patches on a 40 x 40 box: rows near holes need second and third rings, stragglers all pairs
    coords = lattice_with_holes(np.random.default_rng(21), shape=(40, 40), keep=0.35, step=224)
    for k in (8, 13):
        expected = brute_force(coords, mode="knn", k=k, step=224)
        assert_all_equal(coords, expected, mode="knn", k=k, step=224)


@pytest.mark.parametrize("seed", range(6))
def test_backends_agree_on_random_lattices_with_holes(seed):
    rng = np.random.default_rng(seed)
    step = int(rng.choice([224, 448, 512]))
    order = ["shuffled", "raster", "column"][seed % 3]
    coords = lattice_with_holes(rng, shape=tuple(rng.integers(3, 16, size=2)), keep=rng.uniform(0.4, 0.95),
                                step=step, far_cluster=seed % 2 == 1, order=order)
    for kw in ({"mode": "paper"}, {"mode": "radius", "radius": float(rng.choice([1.0, 1.5, 3.3]))},
               {"mode": "knn", "k": int(rng.integers(1, 13))}):
        for self_loops in (True, False):
            expected = brute_force(coords, step=step, self_loops=self_loops, **kw)
            assert_all_equal(coords, expected, step=step, self_loops=self_loops, **kw)


@pytest.mark.parametrize("seed", range(4))
def test_backends_agree_on_irregular_points(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 400))
    coords = np.unique(rng.integers(0, 20 * 224, size=(n, 2)), axis=0)
    coords = coords[rng.permutation(len(coords))]
    if seed == 3:  # non-integral (e.g. cell centroids)
        coords = coords + rng.random(coords.shape)
    assert choose_backend(coords, step=224) in ("kdtree", "torch_cluster")
    for kw in ({"mode": "paper"}, {"mode": "radius", "radius": 1.0}, {"mode": "knn", "k": 8}, {"mode": "knn", "k": 1}):
        expected = brute_force(coords, step=224, **kw)
        assert_all_equal(coords, expected, step=224, **kw)


def test_output_layout_invariants():
    rng = np.random.default_rng(7)
    coords = lattice_with_holes(rng, shape=(20, 20), step=256)
    for backend in BACKENDS:
        ei = spatial_graph(coords, backend=backend, step=256)
        key = ei[0] * len(coords) + ei[1]
        assert bool((key[1:] > key[:-1]).all()), "sorted by (source, target), no duplicates"
        assert edge_set(ei) == {(b, a) for a, b in edge_set(ei)}, "both directions"


def test_distances():
    coords = grid(5, 5, step=448, origin=(448 * 3, 0))
    ei, dist = spatial_graph(coords, return_distances=True)
    assert dist.dtype == torch.float32 and dist.shape == (ei.shape[1],)
    c = torch.as_tensor(coords, dtype=torch.float64)
    expected = (c[ei[0]] - c[ei[1]]).norm(dim=1) / 448
    assert torch.allclose(dist.double(), expected, atol=1e-6)
    assert bool((dist[ei[0] == ei[1]] == 0).all())
    assert abs(float(dist.max()) - math.sqrt(8)) < 1e-6
    for backend in BACKENDS:
        ei_b, dist_b = spatial_graph(coords, return_distances=True, backend=backend)
        assert torch.equal(ei_b, ei) and torch.equal(dist_b, dist)


def test_inputs_torch_lists_and_inferred_step():
    coords = lattice_with_holes(np.random.default_rng(11), shape=(8, 9), step=224)
    ref = spatial_graph(coords, step=224)
    assert torch.equal(spatial_graph(coords), ref)  # step inferred from the coordinates
    t = torch.as_tensor(coords, dtype=torch.int32)
    out = spatial_graph(t, step=224.0)
    assert out.device == t.device and torch.equal(out, ref)
    assert torch.equal(spatial_graph(coords.astype(np.float32), step=224), ref)
    assert torch.equal(spatial_graph(coords.tolist(), step=224), ref)


def test_auto_choice():
    lat = lattice_with_holes(np.random.default_rng(1), shape=(10, 10), step=224)
    assert choose_backend(lat, step=224) == "lattice"
    assert choose_backend(lat + np.array([[0, 7]] + [[0, 0]] * (len(lat) - 1)), step=224) != "lattice"
    # a few patches scattered over a huge box: radius still uses the lattice (sorted keys), knn does not
    sparse = np.array([[0, 0], [224, 0], [224 * 5000, 224 * 4000], [224 * 5001, 224 * 4000]])
    assert choose_backend(sparse, mode="paper") == "lattice"
    assert choose_backend(sparse, mode="knn") in ("kdtree", "torch_cluster")
    assert torch.equal(spatial_graph(sparse, mode="knn", k=1, backend="lattice"),
                       brute_force(sparse, mode="knn", k=1, step=224))


def test_real_clam_coordinates(shared_data):
    """CLAM's per-contour grids are not one lattice: auto must not use the lattice backend there."""
    from wsigraph.data.features import read_features

    files = sorted((shared_data / "features" / "clam-tcga-lihc-coords").glob("*.h5"))
    assert len(files) == 5
    kinds = set()
    for f in files:
        bag = read_features(f, require_features=False)
        step = bag.patch_size_level0
        shifted = bag.coords - bag.coords.min(axis=0)
        on_one_lattice = bool((shifted % int(step) == 0).all())
        kinds.add(on_one_lattice)
        chosen = choose_backend(bag.coords, step=step)
        assert (chosen == "lattice") == on_one_lattice, f.name
        ref = spatial_graph(bag.coords, step=step, backend="kdtree")
        assert torch.equal(spatial_graph(bag.coords, step=step), ref)
        if on_one_lattice:
            assert torch.equal(spatial_graph(bag.coords, step=step, backend="lattice"), ref)
        else:
            with pytest.raises(InputError, match="one lattice"):
                spatial_graph(bag.coords, step=step, backend="lattice")
        if len(bag.coords) < 2000:
            assert torch.equal(ref, brute_force(bag.coords, step=step))
            knn = spatial_graph(bag.coords, step=step, mode="knn", k=8)
            assert torch.equal(knn, brute_force(bag.coords, step=step, mode="knn", k=8))
    assert kinds == {True, False}, "the set holds both single-lattice and per-contour files"


def test_torch_cluster_radius_saturation():
    pytest.importorskip("torch_cluster")
    # a dense irregular cloud: many nodes have more than 64 neighbours within the radius
    rng = np.random.default_rng(5)
    coords = np.unique(rng.integers(0, 2000, size=(600, 2)), axis=0)
    for kw in ({"mode": "radius", "radius": 3.0}, {"mode": "knn", "k": 20}):
        expected = brute_force(coords, step=100, **kw)
        assert torch.equal(spatial_graph(coords, step=100, backend="torch_cluster", **kw), expected)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def test_bad_coords_shape_and_empty():
    with pytest.raises(InputError, match=r"coords: must have shape \(N, 2\).*\(4, 3\)"):
        spatial_graph(np.zeros((4, 3)))
    with pytest.raises(InputError, match=r"coords: empty"):
        spatial_graph(np.zeros((0, 2), dtype=np.int64))
    with pytest.raises(InputError, match="row 2 is not finite"):
        spatial_graph(np.array([[0.0, 0.0], [1.0, 0.0], [np.nan, 1.0]]), step=1)
    with pytest.raises(InputError, match="step"):
        spatial_graph(grid(2, 2), step=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_duplicate_coordinates_named(backend, sparse):
    coords = grid(4, 4, step=224, origin=(224, 448))
    if sparse:
        coords = np.concatenate([coords, [[224 * 9000, 448]]])
    coords = np.concatenate([coords[:5], coords[2:3], coords[5:]])  # row 5 repeats row 2
    x, y = coords[2]
    for mode in ("paper", "knn"):
        with pytest.raises(InputError, match=rf"duplicate coordinate \({x}, {y}\) at rows 2 and 5"):
            spatial_graph(coords, step=224, mode=mode, backend=backend)


def test_bad_arguments_name_the_argument():
    coords = grid(3, 3)
    with pytest.raises(ConfigError, match=r"mode: unknown graph mode 'grid'; valid modes: paper, radius, knn"):
        spatial_graph(coords, mode="grid")
    with pytest.raises(ConfigError, match=r"backend: unknown.*'faiss'.*auto, lattice, kdtree, torch_cluster"):
        spatial_graph(coords, backend="faiss")
    for k in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match=r"k: must be an integer >= 1"):
            spatial_graph(coords, mode="knn", k=k)
    for r in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"radius: must be a number > 0"):
            spatial_graph(coords, mode="radius", radius=r)
    with pytest.raises(ConfigError, match=r"radius: mode='radius' needs a radius"):
        spatial_graph(coords, mode="radius")
    with pytest.raises(ConfigError, match=r"radius: only used with mode='radius'"):
        spatial_graph(coords, mode="paper", radius=2.0)
    with pytest.raises(ConfigError, match="window"):
        spatial_graph(coords, window=0)


def test_missing_torch_cluster(monkeypatch):
    torch_cluster_available.cache_clear()
    monkeypatch.setitem(sys.modules, "torch_cluster", None)  # import fails as if not installed
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install --no-build-isolation torch-cluster"):
            spatial_graph(grid(3, 3), backend="torch_cluster")
        assert choose_backend(torch.as_tensor(np.random.default_rng(0).integers(0, 999, (50, 2))),
                              step=100) == "kdtree"
    finally:
        torch_cluster_available.cache_clear()


def test_graph_config_validation_and_cache_fields():
    with pytest.raises(ConfigError, match="graph config: mode"):
        GraphConfig(mode="delaunay")
    with pytest.raises(ConfigError, match="graph config: k"):
        GraphConfig(mode="knn", k=0)
    with pytest.raises(ConfigError, match="graph config: edge_attr"):
        GraphConfig(edge_attr="yes")
    base = GraphConfig()
    assert GraphConfig(backend="kdtree", k=3).cache_fields() == base.cache_fields()  # unused/irrelevant
    assert GraphConfig(window=3).cache_fields() != base.cache_fields()
    assert GraphConfig(mode="knn", k=4).cache_fields() != GraphConfig(mode="knn", k=5).cache_fields()
    assert GraphConfig(self_loops=False).cache_fields() != base.cache_fields()
