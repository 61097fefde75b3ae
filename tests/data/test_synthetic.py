"""Synthetic cohorts: layout, ground truth, determinism, and that contiguity mode leaks nothing but space."""
from __future__ import annotations

import json
from pathlib import Path

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
from wsigraph.data.synthetic_checks import cohort_report, generate_arrays, neighbourhood_mean
from wsigraph.errors import ConfigError

SMALL = dict(grid=(20, 30), dim=8)
REPO = Path(__file__).resolve().parents[2]


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
    with pytest.raises(ConfigError, match=r"latent_dim=64: must be <= dim \(32\)"):
        SyntheticConfig(latent_dim=64)
    with pytest.raises(ConfigError, match=r"stain_shift=0.5: only with latent_dim > 0"):
        SyntheticConfig(stain_shift=0.5)
    with pytest.raises(ConfigError, match=r"micro_fraction=1.5"):
        SyntheticConfig(mode="camelyon", micro_fraction=1.5)
    with pytest.raises(ConfigError, match=r"micro_size=\(8, 4\)"):
        SyntheticConfig(mode="camelyon", micro_size=(8, 4))


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


def shipped_synthetic(name: str, cohort: int = 0) -> dict:
    """The synthetic parameters of a shipped bench config's cohort (benchmarks/configs/<name>)."""
    import yaml

    raw = yaml.safe_load((REPO / "benchmarks" / "configs" / name).read_text())
    return dict(raw["cohorts"][cohort]["synthetic"])


def realistic_small(name: str, **over) -> dict:
    """A shipped realistic cohort's feature and lesion parameters on 40 smaller slides (cheap tests)."""
    params = shipped_synthetic(name)
    params.update({"n_slides": 40, "grid": (24, 34), "seed": 5, **over})
    return params


@pytest.mark.parametrize("regions", [{}, {"grid": (30, 40), "lesion_fraction": (0.08, 0.15), "lesion_regions": (1, 2)},
                                     "realistic"],
                         ids=["small-clusters", "bench-regions", "realistic-1024d"])
def test_contiguity_mode_separates_only_by_space(regions):
    """Set-level summaries stay near chance; a neighbourhood statistic separates the classes. Checked on
    the default cluster sizes, on the larger regions of the accuracy benchmark's ``contiguity`` cohort and
    on the 1024-d latent features of ``realistic_contiguity.yaml`` (stain effects, ambient noise).

    Positive control: the same instrument on a strong lesion-mode cohort does find the signal.
    """
    if regions == "realistic":
        cfg = SyntheticConfig(**realistic_small("realistic_contiguity.yaml", n_slides=60, seed=11))
    else:
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


@pytest.mark.parametrize("params, n, n_lesion, n_like, first_last, total", [
    ({}, 1733, 195, 211, [[-1.0557870864868164, -1.4682492017745972, -0.45239177346229553],
                          [-0.0029627191834151745, 0.30863577127456665, 1.0237098932266235]], 2443.344936987367),
    ({"mode": "contiguity", "seed": 3}, 1852, 192, 192,
     [[-3.0527901649475098, -0.7057965993881226, 2.565294027328491],
      [1.1198478937149048, -3.3302903175354004, -0.11032058298587799]], 1199.6880684710886),
], ids=["lesion", "contiguity"])
def test_existing_modes_are_unchanged(params, n, n_lesion, n_like, first_last, total):
    """Slide 1 of the default lesion cohort and of a contiguity cohort, as generated before the latent
    geometry and the camelyon mode were added: new parameters must not change the old cohorts (shipped
    results and cohorts on disk depend on them)."""
    s = generate_slide(SyntheticConfig(**params), 1, 1)
    assert (len(s.coords), int(s.patch_labels.sum()), int(s.lesion_like.sum())) == (n, n_lesion, n_like)
    np.testing.assert_allclose(s.features[[0, -1], :3], first_last, rtol=0, atol=1e-6)
    assert float(s.features.astype(np.float64).sum()) == pytest.approx(total, abs=1e-3)


def test_latent_features_low_dimensional_with_slide_stains():
    """Latent geometry (realistic_contiguity.yaml's): nearly half the variance in latent_dim of the 1024
    directions and isotropic ambient noise in the rest, per-slide stain effects, the same slides (layout and
    ground truth) as the isotropic cohort of that seed, deterministic."""
    shipped = realistic_small("realistic_contiguity.yaml", n_slides=6, grid=(20, 28), seed=4)
    latent = {k: shipped.pop(k) for k in ("latent_dim", "ambient_noise", "stain_shift", "stain_mix")}
    common = shipped
    assert latent["latent_dim"] == 32 and shipped["dim"] == 1024
    iso = generate_arrays(SyntheticConfig(**common))
    lat = generate_arrays(SyntheticConfig(**common, **latent))
    again = generate_arrays(SyntheticConfig(**common, **latent))
    flat = generate_arrays(SyntheticConfig(**common, latent_dim=32, ambient_noise=0.3))  # no stain effects

    x = np.concatenate([s.features for s in lat]).astype(np.float64)
    x -= x.mean(axis=0)
    basis = _make_space(SyntheticConfig(**common, **latent)).basis  # (32, 1024), orthonormal rows
    np.testing.assert_allclose(basis @ basis.T, np.eye(32), atol=1e-10)
    inside = (x @ basis.T) @ basis
    share = (inside ** 2).sum() / (x ** 2).sum()
    assert share > 0.4  # nearly half the variance in 32 of the 1024 directions ...
    assert share / 32 > 20 * (1 - share) / (1024 - 32)  # ... each of them carrying > 20x an ambient one
    off = (x - inside).var(axis=0)
    assert off.mean() == pytest.approx(latent["ambient_noise"] ** 2, rel=0.05)  # the rest: ambient noise
    assert off.max() < 2 * off.mean()  # in every direction alike
    for a, b, c in zip(iso, lat, again):
        assert np.array_equal(a.coords - a.coords.min(axis=0), b.coords - b.coords.min(axis=0))
        for key in ("patch_labels", "lesion_like", "tissue_type"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
        assert b.features.shape == (len(b.coords), 1024)
        assert np.array_equal(b.features, c.features)

    def spread_of_slide_means(slides):  # over the slides, of the mean over each slide's type-0 patches
        means = [s.features[s.tissue_type == 0].astype(np.float64).mean(axis=0) for s in slides]
        return float(np.var(np.stack(means), axis=0).sum())

    assert spread_of_slide_means(lat) > 3 * spread_of_slide_means(flat)


def test_realistic_contiguity_per_patch_oracle():
    """The per-patch oracle of realistic_contiguity.yaml's cohort (40 smaller slides): a logistic regression
    trained on patch features with the lesion-like labels of half the slides finds lesion-like patches on
    the other half (patch AUC > 0.95), and its probabilities combined over the spatial graph (largest 3 x 3
    neighbourhood mean) separate the held-out slides (AUC > 0.95), while the set statistics do not: mean
    features, the count and the largest probability of lesion-like patches."""
    rep = cohort_report(generate_arrays(SyntheticConfig(**realistic_small("realistic_contiguity.yaml"))))
    assert rep["oracle_patch_auc"] > 0.95
    assert rep["oracle_slide_auc"] > 0.95
    assert rep["mean_features_auc"] < 0.75
    assert 0.2 < rep["oracle_count_auc"] < 0.8 and 0.2 < rep["true_count_auc"] < 0.8
    assert rep["oracle_max_auc"] < 0.8


def test_neighbourhood_mean_counts_missing_cells_as_zero():
    coords = np.array([[0, 0], [224, 0], [448, 0], [0, 224]]) + 224 * 5
    got = neighbourhood_mean(coords, np.array([1.0, 1.0, 0.0, 1.0]), 224)
    np.testing.assert_allclose(got, [3 / 9, 3 / 9, 1 / 9, 3 / 9])


def test_camelyon_mode_macro_micro_lesions_and_decoys(tmp_path):
    """Camelyon mode on realistic_camelyon.yaml's parameters (smaller slides): positives hold 1-3 lesions
    apart from each other, macro or micro (about half micro), of the configured sizes; negatives none;
    every slide has isolated decoys; the files carry lesion_kind and the ground truth follows it."""
    params = realistic_small("realistic_camelyon.yaml", n_slides=16, dim=64, latent_dim=16, seed=3)
    cohort = make_synthetic_cohort(tmp_path, **params)
    cfg = SyntheticConfig(**params)
    kinds_of_lesions, per_slide, decoys_in = [], [], {0: 0, 1: 0}
    for li, path in zip(cohort.label_indices, cohort.feature_paths):
        bag = read_features(path)
        with h5py.File(path) as f:
            kind, like = f["lesion_kind"][()], f["lesion_like"][()]
        assert bag.features.dtype == np.float16 and bag.dim == 64
        assert np.array_equal(bag.patch_labels, ((kind == 1) | (kind == 2)).astype(np.int8))
        assert np.array_equal(like, (kind > 0).astype(np.int8))
        decoy = kind == 3
        assert np.all(neighbour_counts(bag.coords, kind > 0, 224)[decoy] == 0)  # decoys: isolated singletons
        decoys_in[li] += int(decoy.sum())
        img = lattice_image(bag.coords, kind.astype(np.int64), 224)
        comp, n = ndimage.label(np.isin(img, (1, 2)), structure=np.ones((3, 3)))
        if li == 0:
            assert n == 0
            continue
        per_slide.append(n)
        for c in range(1, n + 1):
            k = np.unique(img[comp == c])
            assert len(k) == 1  # a lesion is all macro or all micro: lesions never touch
            size = int((comp == c).sum())
            lo, hi = cfg.micro_size if k[0] == 2 else cfg.lesion_size
            assert size <= hi
            kinds_of_lesions.append(int(k[0]))
    assert 1 <= min(per_slide) and max(per_slide) <= 3 + 1  # a lesion grown around a hole may split once
    assert 0.25 < np.mean(np.array(kinds_of_lesions) == 2) < 0.75  # about half are micro lesions
    assert decoys_in[0] > 0 and decoys_in[1] > 0  # in negative and positive slides alike


def test_camelyon_per_patch_oracle_macro_strong_micro_weak_but_contiguous():
    """The per-patch oracle on realistic_camelyon.yaml's cohort (smaller slides): macro-lesion patches are
    plain to see one by one, micro-lesion patches much less so; for the slides whose lesions are all micro,
    the oracle's neighbourhood statistic (contiguity) does better than its largest patch probability."""
    rep = cohort_report(generate_arrays(SyntheticConfig(**realistic_small("realistic_camelyon.yaml", n_slides=80))),
                        target="patch_labels")
    assert rep["macro_patch_auc"] > 0.95
    assert rep["micro_patch_auc"] < rep["macro_patch_auc"] - 0.1
    assert rep["micro_only_oracle_slide_auc"] > rep["micro_only_oracle_max_auc"] + 0.1
