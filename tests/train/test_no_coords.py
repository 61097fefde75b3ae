"""Bags without coordinates (plain ``.pt`` tensors): set-based models train, evaluate and predict on them with
``--no-coords`` (``graph.mode: none``); graph models are refused with a clear error; nothing reads coordinates."""
from __future__ import annotations

from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.errors import InputError
from wsigraph.graph import GraphConfig, GraphDataset


@pytest.fixture(scope="module")
def pt_cohort(tmp_path_factory) -> Path:
    """A synthetic cohort whose feature files are bare (N, D) tensors, with no coordinates anywhere."""
    from wsigraph.data.synthetic import make_synthetic_cohort

    root = tmp_path_factory.mktemp("nocoords")
    make_synthetic_cohort(root / "h5", n_slides=16, dim=8, grid=(8, 10), lesion_strength=4.0, seed=2)
    (root / "pt").mkdir()
    for f in sorted((root / "h5" / "features").glob("*.h5")):
        with h5py.File(f, "r") as h:
            torch.save(torch.from_numpy(h["features"][()]).float(), root / "pt" / f"{f.stem}.pt")
    (root / "manifest.csv").write_text((root / "h5" / "manifest.csv").read_text())
    return root


def test_reader_refuses_a_bare_tensor_unless_coordinates_are_not_needed(pt_cohort):
    path = next((pt_cohort / "pt").glob("*.pt"))
    with pytest.raises(InputError, match=r"no coordinates.*--no-coords"):
        read_features(path)
    bag = read_features(path, require_coords=False)
    assert bag.coords is None and bag.features.shape[1] == 8 and bag.num_patches == bag.features.shape[0]
    item = GraphDataset([path], labels=[1], graph=GraphConfig(mode="none"), cache_dir=pt_cohort / "cache")[0]
    assert item.x.shape == bag.features.shape and item.edge_index.shape == (2, 0) and item.y.tolist() == [1]
    assert not (pt_cohort / "cache").exists()  # no graph, nothing cached


def _config(tmp_path: Path, cohort: Path, model: str, params: str) -> Path:
    cfg = tmp_path / f"{model}.yaml"
    cfg.write_text(f"data: {{manifest: {cohort / 'manifest.csv'}, feature_dir: {cohort / 'pt'}, n_folds: 2}}\n"
                   f"model: {{name: {model}, params: {params}}}\n"
                   f"train: {{epochs: 2, bootstrap: 0, progress_bar: false}}\noutput_dir: {tmp_path / model}\n")
    return cfg


def test_set_model_trains_evaluates_and_predicts_without_coordinates(tmp_path, pt_cohort, capsys):
    cfg = _config(tmp_path, pt_cohort, "abmil", "{embed_dim: 8, attn_dim: 4}")
    assert main(["train", "--config", str(cfg), "--fold", "0"]) == 2  # coordinates are looked for by default
    assert "--no-coords" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--fold", "0", "--no-coords"]) == 0
    ckpt = tmp_path / "abmil" / "fold_0" / "best.ckpt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(pt_cohort / "manifest.csv"),
                 "--features", str(pt_cohort / "pt"), "--out", str(tmp_path / "eval"), "--bootstrap", "0",
                 "--no-coords", "--no-progress"]) == 0
    assert (tmp_path / "eval" / "metrics.json").exists()
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--features", str(pt_cohort / "pt"), "--out", str(out),
                 "--no-coords", "--no-progress"]) == 0
    pred = pd.read_csv(out / "predictions.csv")
    assert sorted(pred["slide_id"]) == sorted(p.stem for p in (pt_cohort / "pt").glob("*.pt"))
    sid = pred["slide_id"].iloc[0]
    with h5py.File(out / "scores" / f"{sid}.h5", "r") as f:  # attention per patch, no coordinates invented
        assert "coords" not in f and f["scores"].shape[0] == torch.load(pt_cohort / "pt" / f"{sid}.pt").shape[0]


def test_graph_models_are_refused_without_coordinates(tmp_path, pt_cohort, capsys):
    cfg = _config(tmp_path, pt_cohort, "srmil", "{hidden: 8, heads: 2}")
    assert main(["train", "--config", str(cfg), "--no-coords"]) == 2
    err = capsys.readouterr().err
    assert "model 'srmil' needs the spatial graph" in err and "abmil" in err
    assert not (tmp_path / "srmil").exists()  # refused before anything was written
