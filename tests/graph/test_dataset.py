"""GraphDataset (lazy PyG dataset + graph cache): items, cache keys and rebuilds, bad input named. The
``wsigraph build-graphs`` cohort job is tested in tests/pipeline/test_graphs.py."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import wsigraph.graph.dataset as gd
from wsigraph.data.features import write_features
from wsigraph.errors import ConfigError, InputError
from wsigraph.graph import GraphConfig, GraphDataset, spatial_graph

STEP = 448
ATTRS = {"patch_size": 224, "patch_level": 0, "patch_size_level0": STEP, "mpp": 0.5, "encoder": "test"}


def make_slide(path: Path, seed: int, dim: int = 8, with_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(6, 12, size=2)
    cells = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 2)
    cells = cells[rng.random(len(cells)) < 0.75]
    coords = (cells * STEP + STEP * rng.integers(0, 50, size=2)).astype(np.int64)
    feats = rng.standard_normal((len(coords), dim)).astype(np.float32)
    labels = (rng.random(len(coords)) < 0.2).astype(np.int8) if with_labels else None
    write_features(path, coords, feats, attrs=ATTRS, patch_labels=labels)
    return coords, feats


@pytest.fixture()
def cohort_dir(tmp_path):
    feat = tmp_path / "features"
    slides = {f"s{i}": make_slide(feat / f"s{i}.h5", seed=i, with_labels=(i == 0)) for i in range(3)}
    return feat, slides


@pytest.fixture()
def count_builds(monkeypatch):
    calls = []
    real = gd.spatial_graph

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gd, "spatial_graph", counting)
    return calls


def dataset(feat: Path, cache: Path | None, graph=None, labels=(0, 1, -1)) -> GraphDataset:
    paths = [feat / f"s{i}.h5" for i in range(3)]
    return GraphDataset(paths, labels=list(labels), graph=graph, cache_dir=cache)


def test_items(cohort_dir, tmp_path):
    feat, slides = cohort_dir
    ds = dataset(feat, tmp_path / "cache")
    assert len(ds) == 3
    for i, (coords, feats) in enumerate(slides.values()):
        data = ds[i]
        assert data.slide_id == f"s{i}" and data.y.tolist() == [(0, 1, -1)[i]] and data.y.dtype == torch.long
        assert data.x.dtype == torch.float32 and torch.equal(data.x, torch.from_numpy(feats))
        assert torch.allclose(data.pos, torch.from_numpy(coords / STEP).float())
        assert torch.equal(data.edge_index, spatial_graph(coords, step=STEP))  # paper graph
        assert data.num_nodes == len(coords) and "edge_attr" not in data
        assert ("patch_labels" in data) == (i == 0)
    assert ds[0].patch_labels.dtype == torch.int64


def test_cache_is_hit_and_holds_only_graph_tensors(cohort_dir, tmp_path, count_builds):
    feat, slides = cohort_dir
    cache = tmp_path / "cache"
    ds = dataset(feat, cache)
    first = [ds[i] for i in range(3)]
    assert len(count_builds) == 3
    second = [ds[i] for i in range(3)]
    again = [dataset(feat, cache)[i] for i in range(3)]  # a new dataset on the same cache
    assert len(count_builds) == 3
    for a, b, c in zip(first, second, again):
        assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.edge_index, c.edge_index)
        assert torch.equal(a.pos, c.pos)
    files = sorted(cache.glob("*.pt"))
    assert [f.name.split(".")[0] for f in files] == ["s0", "s1", "s2"]
    obj = torch.load(files[0], weights_only=True)
    assert set(obj) == {"edge_index", "pos", "num_nodes"}  # never the features
    assert not list(cache.glob("*.tmp"))


def test_parameter_change_rebuilds_other_changes_do_not(cohort_dir, tmp_path, count_builds):
    feat, slides = cohort_dir
    cache = tmp_path / "cache"
    ds = dataset(feat, cache)
    ds[0]
    assert len(count_builds) == 1
    dataset(feat, cache, graph=GraphConfig(backend="kdtree", k=3))[0]  # same graph: no rebuild
    dataset(feat, cache, labels=(1, 1, 1))[0]
    assert len(count_builds) == 1
    knn = dataset(feat, cache, graph=GraphConfig(mode="knn", k=4))[0]
    assert len(count_builds) == 2
    assert torch.equal(knn.edge_index, spatial_graph(slides["s0"][0], mode="knn", k=4, step=STEP))
    dataset(feat, cache, graph={"mode": "knn", "k": 5})[0]
    dataset(feat, cache, graph=GraphConfig(self_loops=False))[0]
    assert len(count_builds) == 4
    assert len(list(cache.glob("s0.*.pt"))) == 4


def test_touching_the_feature_file_rebuilds(cohort_dir, tmp_path, count_builds):
    feat, _ = cohort_dir
    cache = tmp_path / "cache"
    dataset(feat, cache)[1]
    st = (feat / "s1.h5").stat()
    os.utime(feat / "s1.h5", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    ds = dataset(feat, cache)
    ds[1]
    ds[1]
    assert len(count_builds) == 2


def test_truncated_cache_file_is_rebuilt(cohort_dir, tmp_path, count_builds, caplog):
    feat, slides = cohort_dir
    ds = dataset(feat, tmp_path / "cache")
    good = ds[2].edge_index
    path = ds.cache_path(2)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with caplog.at_level(logging.WARNING, logger="wsigraph"):
        again = ds[2]
    assert len(count_builds) == 2 and torch.equal(again.edge_index, good)
    assert str(path) in caplog.text and "rebuilding" in caplog.text
    # a readable file with the wrong content is caught too
    torch.save({"edge_index": torch.zeros(2, 3, dtype=torch.int64), "pos": torch.zeros(2, 2)}, path)
    assert torch.equal(ds[2].edge_index, good) and len(count_builds) == 3
    assert torch.load(path, weights_only=True)["pos"].shape == (len(slides["s2"][0]), 2)


def test_edge_attr_and_no_cache(cohort_dir):
    feat, slides = cohort_dir
    ds = dataset(feat, None, graph=GraphConfig(mode="radius", radius=1.5, edge_attr=True))
    data = ds[1]
    ei, dist = spatial_graph(slides["s1"][0], mode="radius", radius=1.5, step=STEP, return_distances=True)
    assert torch.equal(data.edge_index, ei)
    assert data.edge_attr.shape == (ei.shape[1], 1) and torch.equal(data.edge_attr[:, 0], dist)
    assert ds.cache_path(1) is None and not ds.is_cached(1)


def test_from_cohort(cohort_dir, tmp_path):
    feat, slides = cohort_dir
    from wsigraph.data.manifest import cohort_from_records

    cohort = cohort_from_records([{"slide_id": "s2", "label": "b"}, {"slide_id": "s0", "label": "a"},
                                  {"slide_id": "s1", "label": ""}], classes=["a", "b"])
    cohort.attach_features(feat)
    ds = GraphDataset.from_cohort(cohort, GraphConfig(mode="knn", k=3), tmp_path / "cache")
    assert ds.slide_ids == ["s2", "s0", "s1"] and ds.labels == [1, 0, -1]
    item = ds[0]
    assert item.slide_id == "s2" and item.y.tolist() == [1]
    assert torch.equal(item.edge_index, spatial_graph(slides["s2"][0], mode="knn", k=3, step=STEP))

    fake = type("C", (), {})()
    fake.table = pd.DataFrame({"slide_id": ["a", "b"], "label_index": [0, 1], "feature_path": [feat / "s0.h5", None]})
    with pytest.raises(InputError, match=r"1 slide\(s\) have no feature file: b"):
        GraphDataset.from_cohort(fake)


def test_bad_input_is_named(cohort_dir, tmp_path):
    feat, _ = cohort_dir
    paths = [feat / "s0.h5", feat / "s1.h5"]
    with pytest.raises(InputError, match=r"labels: 1 value\(s\) for 2 feature file\(s\)"):
        GraphDataset(paths, labels=[0])
    with pytest.raises(InputError, match=r"slide_ids: 3 value\(s\)"):
        GraphDataset(paths, slide_ids=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['neighbours'\]; valid keys"):
        GraphDataset(paths, graph={"neighbours": 8})
    bad = tmp_path / "dup.h5"
    coords = np.array([[0, 0], [448, 0], [0, 0]])
    write_features(bad, coords, np.zeros((3, 4), np.float32), attrs=ATTRS, validate=False)
    ds = GraphDataset([bad], cache_dir=tmp_path / "cache")
    with pytest.raises(InputError, match=rf"{bad}.*duplicate coordinate.* rows 0 and 2"):
        ds.build_cache(0)
    with pytest.raises(InputError, match=rf"{bad}.*duplicate"):
        ds[0]
