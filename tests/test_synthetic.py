"""Synthetic cohorts: layout, ground truth, determinism, and that contiguity mode leaks nothing but space."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.data.manifest import read_manifest
from wsigraph.data.synthetic import (
    SyntheticConfig,
    _assign_labels,
    _make_space,
    generate_slide,
    make_synthetic_cohort,
)
from wsigraph.errors import ConfigError

SMALL = dict(grid=(20, 30), dim=8)


def lattice_image(coords: np.ndarray, values: np.ndarray, step: int) -> np.ndarray:
    """Scatter per-patch values onto a (H, W) lattice image (0 where no patch)."""
    lat = coords // step
    lat = lat - lat.min(axis=0)
    img = np.zeros((lat[:, 1].max() + 1, lat[:, 0].max() + 1), dtype=values.dtype)
    img[lat[:, 1], lat[:, 0]] = values
    return img


def neighbour_counts(coords: np.ndarray, mask: np.ndarray, step: int) -> np.ndarray:
    """For each patch, how many of its 8 lattice neighbours have ``mask`` set."""
    img = lattice_image(coords, mask.astype(np.int64), step)
    k = np.ones((3, 3), dtype=np.int64)
    k[1, 1] = 0
    counts = ndimage.convolve(img, k, mode="constant")
    lat = coords // step
    lat = lat - lat.min(axis=0)
    return counts[lat[:, 1], lat[:, 0]]


def test_cohort_layout_attrs_and_ground_truth(tmp_path):
    cohort = make_synthetic_cohort(tmp_path, n_slides=10, seed=1, **SMALL)
    assert len(cohort) == 10 and cohort.classes == ["normal", "tumor"]
    assert cohort.class_counts() == {"normal": 5, "tumor": 5}
    assert (tmp_path / "manifest.csv").exists()
    assert json.loads((tmp_path / "synthetic.json").read_text())["seed"] == 1
    again = read_manifest(tmp_path / "manifest.csv", classes=["normal", "tumor"], feature_dir=tmp_path / "features")
    assert again.slide_ids == cohort.slide_ids and again.label_indices == cohort.label_indices
    for sid, li, path in zip(cohort.slide_ids, cohort.label_indices, cohort.feature_paths):
        assert path == tmp_path / "features" / f"{sid}.h5"
        bag = read_features(path)  # validates: no NaN, no duplicate coords, lengths match
        assert bag.features.dtype == np.float32 and bag.dim == 8
        assert {k: bag.attrs[k] for k in ("patch_size", "patch_level", "patch_size_level0", "mpp", "encoder")} == {
            "patch_size": 224, "patch_level": 0, "patch_size_level0": 224, "mpp": 0.5, "encoder": "synthetic"}
        assert bag.attrs["synthetic_mode"] == "lesion"
        assert np.all(bag.coords % 224 == 0)  # global grid
        assert 20 * 20 * 0.2 < bag.num_patches < 30 * 30 * 0.7
        with h5py.File(path) as f:
            tissue = f["tissue_type"][()]
            lesion_like = f["lesion_like"][()]
        assert tissue.shape == (bag.num_patches,) and tissue.max() < 4
        lesion = bag.patch_labels.astype(bool)
        assert np.all(lesion_like[lesion] == 1)  # every lesion patch carries the signal
        if li == 1:
            assert lesion.sum() >= 1
            # lesions are contiguous regions: nearly every lesion patch touches another one
            touching = neighbour_counts(bag.coords, lesion, 224)[lesion] > 0
            assert touching.mean() > 0.9
        else:
            assert lesion.sum() == 0
        # decoys (lesion-like but not lesion) are isolated singletons
        decoy = lesion_like.astype(bool) & ~lesion
        assert np.all(neighbour_counts(bag.coords, lesion_like.astype(bool), 224)[decoy] == 0)


def test_tissue_is_irregular_coherent_and_sized(tmp_path):
    cfg = SyntheticConfig(n_slides=6, seed=5)
    sizes, fragments = [], []
    for i in range(6):
        s = generate_slide(cfg, i, i % 2)
        sizes.append(len(s.coords))
        img = lattice_image(s.coords, np.ones(len(s.coords), bool), 224)
        fragments.append(ndimage.label(img)[1])
        # tissue types are spatially coherent: most neighbours share the type
        same = 0
        for t in range(cfg.n_tissue_types):
            same += (neighbour_counts(s.coords, s.tissue_type == t, 224) * (s.tissue_type == t)).sum()
        assert same / neighbour_counts(s.coords, np.ones(len(s.coords), bool), 224).sum() > 0.7
    assert 300 < min(sizes) and max(sizes) < 4000  # a few hundred to a few thousand patches
    assert max(fragments) >= 2  # some slides come in several pieces


def test_deterministic_per_seed(tmp_path):
    a = make_synthetic_cohort(tmp_path / "a", n_slides=6, seed=7, mode="contiguity", **SMALL)
    b = make_synthetic_cohort(tmp_path / "b", n_slides=6, seed=7, mode="contiguity", **SMALL)
    c = make_synthetic_cohort(tmp_path / "c", n_slides=6, seed=8, mode="contiguity", **SMALL)
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    differs = False
    for pa, pb, pc in zip(a.feature_paths, b.feature_paths, c.feature_paths):
        with h5py.File(pa) as fa, h5py.File(pb) as fb, h5py.File(pc) as fc:
            assert set(fa) == set(fb)
            for k in fa:
                assert fa[k][()].tobytes() == fb[k][()].tobytes(), k
            differs |= fa["features"].shape != fc["features"].shape or not np.array_equal(fa["features"][()][:5],
                                                                                          fc["features"][()][:5])
    assert differs


def test_parameters_patch_step_float16_cases_and_multiclass(tmp_path):
    cohort = make_synthetic_cohort(tmp_path, n_slides=21, classes=("benign", "dcis", "invasive"), dim=5,
                                   patch_size_level0=448, feature_dtype="float16", paired_case_fraction=0.4,
                                   seed=2, grid=(16, 24))
    assert cohort.classes == ["benign", "dcis", "invasive"]
    counts = cohort.class_counts()
    n_pos = round(0.5 * 21)  # positive_fraction 0.5, spread evenly over the positive classes
    assert counts["benign"] == 21 - n_pos and abs(counts["dcis"] - counts["invasive"]) <= 1
    bag = read_features(cohort.feature_paths[0])
    assert bag.features.dtype == np.float16 and bag.dim == 5
    assert bag.patch_size_level0 == 448 and np.all(bag.coords % 448 == 0)
    # a few cases hold two slides, of the same class
    t = cohort.table
    shared = t.groupby("case_id")["slide_id"].count()
    assert (shared == 2).sum() >= 2 and shared.max() == 2
    assert (t.groupby("case_id")["label"].nunique() == 1).all()


def test_config_errors_name_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['n_slide'\]"):
        make_synthetic_cohort(tmp_path, n_slide=3)
    with pytest.raises(ConfigError, match=r"mode='blob'"):
        SyntheticConfig(mode="blob")
    with pytest.raises(ConfigError, match=r"classes=.*exactly two"):
        SyntheticConfig(mode="contiguity", classes=("a", "b", "c"))
    with pytest.raises(ConfigError, match=r"grid=\(30, 20\)"):
        SyntheticConfig(grid=(30, 20))
    with pytest.raises(ConfigError, match="lesion_fraction"):
        SyntheticConfig(mode="contiguity", lesion_fraction=(0.1, 0.3))


def _slide_stats(cfg: SyntheticConfig):
    """Per slide: mean feature, mean over the lesion-like patches, lesion-like fraction, clustering score."""
    space, labels = _make_space(cfg), _assign_labels(cfg)
    mean_feat, mean_lesion_like, frac, clustering = [], [], [], []
    for i, lab in enumerate(labels):
        s = generate_slide(cfg, i, int(lab), space)
        ll = s.lesion_like.astype(bool)
        mean_feat.append(s.features.mean(axis=0))
        frac.append(ll.mean())
        if ll.any():  # lesion mode: a negative slide may have no decoy
            mean_lesion_like.append(s.features[ll].mean(axis=0))
            clustering.append(neighbour_counts(s.coords, ll, cfg.patch_size_level0)[ll].mean())
        else:
            mean_lesion_like.append(np.zeros(cfg.dim))
            clustering.append(0.0)
        if lab == 0 and cfg.mode == "contiguity":
            assert neighbour_counts(s.coords, ll, cfg.patch_size_level0)[ll].max() == 0  # isolated
    return labels, np.array(mean_feat), np.array(mean_lesion_like), np.array(frac), np.array(clustering)


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    p = cross_val_predict(LogisticRegression(max_iter=2000), x, y, method="predict_proba",
                          cv=StratifiedKFold(5, shuffle=True, random_state=0))[:, 1]
    return roc_auc_score(y, p)


@pytest.mark.parametrize("regions", [{}, {"grid": (30, 40), "lesion_fraction": (0.08, 0.15), "lesion_regions": (1, 2)}],
                         ids=["small-clusters", "bench-regions"])
def test_contiguity_mode_separates_only_by_space(regions):
    """Set-level summaries stay near chance; a neighbourhood statistic separates the classes. Checked on
    the default cluster sizes and on the larger regions of the accuracy benchmark's ``contiguity`` cohort.

    Positive control: the same instrument on a strong lesion-mode cohort does find the signal.
    """
    cfg = SyntheticConfig(mode="contiguity", n_slides=60, seed=11, dim=16, **{"grid": (24, 40), **regions})
    y, mean_feat, mean_ll, frac, clustering = _slide_stats(cfg)
    assert _cv_auc(mean_feat, y) < 0.75  # mean pooling: chance
    assert _cv_auc(mean_ll, y) < 0.75  # even oracle attention on the lesion-like patches
    assert 0.25 < roc_auc_score(y, frac) < 0.75  # same count distribution in both classes
    assert roc_auc_score(y, clustering) == 1.0  # spatial contiguity separates perfectly

    control = SyntheticConfig(mode="lesion", n_slides=60, seed=11, dim=16, grid=(24, 40), slide_shift=0.0,
                              lesion_strength=4.0, lesion_fraction=(0.1, 0.2))
    y, mean_feat, *_ = _slide_stats(control)
    assert _cv_auc(mean_feat, y) > 0.9


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synth", str(out), "--n-slides", "4", "--mode", "contiguity", "--dim", "6",
                 "--grid", "16", "20", "--seed", "3", "--patch-size-level0", "448"]) == 0
    assert "wrote 4 slides" in capsys.readouterr().out
    cohort = read_manifest(out / "manifest.csv", feature_dir=out / "features")
    bag = read_features(cohort.feature_paths[0])
    assert bag.dim == 6 and bag.patch_size_level0 == 448 and bag.attrs["synthetic_mode"] == "contiguity"
    assert main(["synth", str(out), "--n-slides", "1"]) == 2
    assert "n_slides=1" in capsys.readouterr().err
