"""``wsigraph build-graphs`` (``wsigraph.pipeline.graphs``): the graph cache of a cohort built ahead of
training, resumed per graph parameters, broken files skipped and reported, every cached file it counts as
done validated. The cache itself (keys, rebuilds) is tested in tests/graph/test_dataset.py."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from wsigraph.cli import main
from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.graph import GraphConfig, GraphDataset


@pytest.fixture()
def features(tmp_path) -> Path:
    make_synthetic_cohort(tmp_path / "c", n_slides=3, dim=4, grid=(8, 10), seed=0)
    return tmp_path / "c" / "features"


def _cached(features: Path, cache: Path, graph: GraphConfig | None = None) -> list[bool]:
    ds = GraphDataset(sorted(features.glob("*.h5")), graph=graph, cache_dir=cache)
    return [ds.is_cached(i) for i in range(len(ds))]


def test_build_graphs_resumes_per_graph_parameters_and_reports_a_broken_file(features, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["build-graphs", "--features", str(features), "--cache", str(cache), "--no-progress"]
    assert main(args) == 0
    assert "3 done" in capsys.readouterr().out
    assert len(list(cache.glob("*.pt"))) == 3 and all(_cached(features, cache))
    assert main(args) == 0
    assert "0 done, 3 already complete" in capsys.readouterr().out
    # graph options -> another key; knn inferred from --k
    assert main(args + ["--k", "4", "--edge-attr"]) == 0
    assert all(_cached(features, cache, GraphConfig(mode="knn", k=4, edge_attr=True)))
    # a broken file: raise -> exit 2 naming it; skip (the default) -> report
    (features / "broken.h5").write_bytes(b"not an hdf5 file")
    assert main(args + ["--on-error", "raise"]) == 2
    assert "broken.h5" in capsys.readouterr().err
    report = tmp_path / "report.csv"
    assert main(args + ["--on-error", "skip", "--report", str(report)]) == 1  # finished, one slide failed
    out = capsys.readouterr().out
    assert "1 failed" in out and str(report) in out
    rep = pd.read_csv(report).query("status == 'failed'").reset_index()
    assert rep["slide_id"].tolist() == ["broken"] and "broken.h5" in rep["error"][0]
    assert main(args + ["--mode", "paper", "--radius", "2"]) == 2
    assert "radius" in capsys.readouterr().err


def test_build_graphs_of_a_manifests_slides_reports_one_without_features(features, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("slide_id,label\nsyn_000,a\nsyn_002,b\nmissing_slide,a\n")
    cache = tmp_path / "cache"
    report = tmp_path / "report.csv"
    code = main(["build-graphs", "--features", str(features), "--manifest", str(manifest), "--cache", str(cache),
                 "--no-progress", "--on-error", "skip", "--report", str(report)])
    assert code == 1  # missing_slide has no feature file: a failure, listed in the report
    assert sorted(f.name.split(".")[0] for f in cache.glob("*.pt")) == ["syn_000", "syn_002"]
    rep = pd.read_csv(report)
    assert rep.query("status == 'failed'")["slide_id"].tolist() == ["missing_slide"]
    assert rep.query("status == 'done'")["slide_id"].tolist() == ["syn_000", "syn_002"]


def test_build_graphs_checks_the_features_and_the_cache_files_it_counts_as_done(features, tmp_path, capsys):
    """Defects: a file with 60 feature rows and 50 coords was cached, and a truncated cache file counted as
    complete."""
    files = sorted(features.glob("*.h5"))
    with h5py.File(files[0], "a") as f:
        x = f["features"][:]
        del f["features"]
        f["features"] = np.concatenate([x, x[:10]])  # 10 feature rows more than coords
    cache = tmp_path / "cache"
    args = ["build-graphs", "--features", str(features), "--cache", str(cache), "--no-progress"]
    assert main(args) == 1
    rep = pd.read_csv(cache / "build_graphs_report.csv").set_index("slide_id")
    assert rep.loc[files[0].stem, "status"] == "failed" and "rows but 'coords' has" in rep.loc[files[0].stem, "error"]
    cached = sorted(cache.glob(f"{files[1].stem}.*.pt"))
    assert len(cached) == 1
    cached[0].write_bytes(cached[0].read_bytes()[:40])  # truncated
    capsys.readouterr()
    assert main(args) == 1
    rep = pd.read_csv(cache / "build_graphs_report.csv").set_index("slide_id")
    assert rep.loc[files[1].stem, "status"] == "done"  # rebuilt, not counted as complete
    assert rep.loc[files[2].stem, "status"] == "already complete"
