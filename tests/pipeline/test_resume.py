"""Resume that knows its parameters: every stage x every parameter that changes its output. A rerun with the
same parameters skips the slide; a rerun with one parameter changed refuses (exit 2) before any work, naming
that parameter, and leaves the outputs as they were; --overwrite recomputes. The graph cache (build-graphs)
is keyed by its parameters instead: another value rebuilds under a new key (the matrix at the end)."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.pipeline.provenance import PROVENANCE_ATTR, read_h5_provenance

SMALL = "CMU-1-Small-Region"
INPUT = 32


@pytest.fixture()
def slide_dir(tmp_path, shared_data) -> Path:
    d = tmp_path / "slides"
    d.mkdir()
    os.symlink(shared_data / "slides" / f"{SMALL}.svs", d / f"{SMALL}.svs")
    return d


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def _refused(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert "made with other parameters" in err, err
    for name in names:
        assert name in err, (name, err)
    return err


# ------------------------------------------------------------------------------------------------ records


# ------------------------------------------------------------------------------------------------ tile


TILE_CHANGES = [
    (["--target-mpp", "1.0"], "tiling.target_mpp: 0.5 -> 1.0"),
    (["--patch-size", "256"], "tiling.patch_size: 224 -> 256"),
    (["--min-tissue", "0.3"], "tiling.min_tissue: 0.5 -> 0.3"),
    (["--threshold", "20"], "tissue.threshold: None -> 20.0"),
    (["--mask-mpp", "16"], "tissue.mask_mpp: 8.0 -> 16.0"),
    (["--exclude-pen"], "tissue.exclude_pen: False -> True"),
    (["--mpp", "0.25"], "mpp: None -> 0.25"),
]


def test_tile_resumes_only_with_the_same_parameters(tmp_path, slide_dir, capsys):
    out = tmp_path / "tiles"
    base = ["tile", str(slide_dir), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    coords = out / "coords" / f"{SMALL}.h5"
    stamp = _mtime(coords)
    assert read_h5_provenance(coords).params["tiling"] == {"min_tissue": 0.5, "patch_size": 224, "target_mpp": 0.5}
    capsys.readouterr()
    assert main(base) == 0
    assert "1 already complete" in capsys.readouterr().out and _mtime(coords) == stamp
    for flags, named in TILE_CHANGES:
        assert main(base + flags) == 2, flags
        _refused(capsys, named, SMALL, "--overwrite")
        assert _mtime(coords) == stamp  # nothing was touched
    assert main(base + ["--patch-size", "256", "--overwrite"]) == 0
    assert read_features(coords, require_features=False).attrs["patch_size"] == 256
    capsys.readouterr()
    assert main(base + ["--patch-size", "256"]) == 0  # the new parameters are now the recorded ones
    assert "1 already complete" in capsys.readouterr().out


def test_tile_refuses_when_a_user_mask_appears_or_the_slide_changes(tmp_path, slide_dir, shared_data, capsys):
    from PIL import Image

    out = tmp_path / "tiles"
    masks = tmp_path / "user_masks"
    masks.mkdir()
    base = ["tile", str(slide_dir), "--out", str(out), "--masks", str(masks), "--no-progress"]
    assert main(base) == 0
    Image.new("L", (222, 297), 255).save(masks / f"{SMALL}.png")  # the slide is 2220 x 2967 px
    assert main(base) == 2
    _refused(capsys, "tissue:", "inputs.user_mask")
    assert main(base + ["--overwrite"]) == 0
    assert read_h5_provenance(out / "coords" / f"{SMALL}.h5").params["tissue"] == "user mask"
    # another file under the slide's name
    (slide_dir / f"{SMALL}.svs").unlink()
    (slide_dir / f"{SMALL}.svs").symlink_to(shared_data / "slides" / "TCGA-CR-7395-01A-01-TS1.svs")
    assert main(base) == 2
    _refused(capsys, "inputs.slide.sha256_ends", "inputs.slide.size")


def test_coords_from_an_older_wsigraph_are_not_taken_as_done(tmp_path, slide_dir, capsys):
    out = tmp_path / "tiles"
    base = ["tile", str(slide_dir), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    with h5py.File(out / "coords" / f"{SMALL}.h5", "a") as f:
        for obj in (f, f["coords"]):
            del obj.attrs[PROVENANCE_ATTR]
    assert main(base) == 2
    _refused(capsys, "no record of the parameters")


def test_segment_resumes_only_with_the_same_parameters(tmp_path, slide_dir, capsys):
    out = tmp_path / "seg"
    base = ["segment", str(slide_dir), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    record = out / "masks" / f"{SMALL}.json"
    stamp = _mtime(record)
    assert main(base) == 0 and _mtime(record) == stamp
    assert main(base + ["--median-um", "12"]) == 2
    _refused(capsys, "tissue.median_um: 24.0 -> 12.0")
    assert main(base + ["--median-um", "12", "--overwrite"]) == 0 and _mtime(record) != stamp


# ------------------------------------------------------------------------------------------------ features


def _encoder_weights(tmp_path: Path) -> Path:
    from wsigraph.features import build_encoder

    enc = build_encoder("resnet50_trunc", random_init=True, seed=7, input_size=INPUT)
    path = tmp_path / "weights.pth"
    torch.save(enc.backbone.state_dict(), path)
    return path


def test_preprocess_resumes_only_with_the_same_encoder_and_tiling(tmp_path, slide_dir, capsys):
    """The defect as reported: --random-init then --weights W into the same folder was 'already complete'."""
    out = tmp_path / "pre"
    base = ["preprocess", str(slide_dir), "--out", str(out), "--encoder", "resnet50_trunc", "--input-size",
            str(INPUT), "--num-workers", "0", "--device", "cpu", "--no-progress"]
    assert main(base + ["--random-init"]) == 0
    feats = out / "features_resnet50_trunc" / f"{SMALL}.h5"
    stamp = _mtime(feats)
    first = read_features(feats).features
    rec = read_h5_provenance(feats)
    assert rec.stage == "preprocess" and rec.params["encoder"]["random_init_seed"] == 0
    assert rec.params["encoder"]["weights_sha256"] is None and rec.params["amp"] == "fp32"
    capsys.readouterr()
    assert main(base + ["--random-init"]) == 0
    assert "1 already complete" in capsys.readouterr().out and _mtime(feats) == stamp
    weights = _encoder_weights(tmp_path)
    changes = [
        (["--weights", str(weights)], "encoder.weights_sha256: None -> '"),
        (["--random-init", "--random-init-seed", "1"], "encoder.random_init_seed: 0 -> 1"),
        (["--random-init", "--float16"], "features_dtype: 'float32' -> 'float16'"),
        (["--random-init", "--patch-size", "256"], "tile.tiling.patch_size: 224 -> 256"),
        (["--random-init", "--threshold", "30"], "tile.tissue.threshold: None -> 30.0"),
        (["--random-init", "--default-mpp", "0.5"], "tile.default_mpp: None -> 0.5"),
    ]
    for flags, named in changes:
        assert main(base + flags) == 2, flags
        _refused(capsys, named)
        assert _mtime(feats) == stamp
    assert main(base + ["--weights", str(weights), "--overwrite"]) == 0
    again = read_features(feats)
    assert again.attrs["encoder_weights"] == "weights.pth" and not np.array_equal(again.features, first)


def test_extract_resumes_only_with_the_same_coords_and_encoder(tmp_path, slide_dir, capsys):
    tiles = tmp_path / "tiles"
    assert main(["tile", str(slide_dir), "--out", str(tiles), "--no-progress"]) == 0
    out = tmp_path / "feats"
    base = ["extract", "--coords", str(tiles / "coords"), "--slides", str(slide_dir), "--out", str(out),
            "--encoder", "resnet50_trunc", "--random-init", "--input-size", str(INPUT), "--num-workers", "0",
            "--device", "cpu", "--no-progress"]
    assert main(base) == 0
    feats = out / f"{SMALL}.h5"
    stamp = _mtime(feats)
    assert main(base) == 0 and _mtime(feats) == stamp
    assert main(base + ["--random-init-seed", "5"]) == 2
    _refused(capsys, "encoder.random_init_seed: 0 -> 5")
    assert main(base + ["--mpp", "0.5"]) == 2
    _refused(capsys, "slide_mpp: None -> 0.5")
    # the coords were redone with other parameters: the features no longer belong to them
    assert main(["tile", str(slide_dir), "--out", str(tiles), "--patch-size", "256", "--overwrite",
                 "--no-progress"]) == 0
    assert main(base) == 2
    _refused(capsys, "inputs.coords.digest")
    assert _mtime(feats) == stamp


# ------------------------------------------------------------------------------------------------ the matrix
# One finished output per stage (module fixtures, built once); each parametrized case reruns the stage with one
# recorded parameter changed and checks that the rerun does not skip: it refuses naming the parameter and
# touches nothing (segment, preprocess, extract, heatmap, predict), or rebuilds under a new key (build-graphs).


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, shared_data) -> Path:
    """A work folder with ``slides/`` (one real slide), ``user_masks/`` (a mask for it) and ``weights.pth``."""
    from PIL import Image

    root = tmp_path_factory.mktemp("matrix")
    (root / "slides").mkdir()
    os.symlink(shared_data / "slides" / f"{SMALL}.svs", root / "slides" / f"{SMALL}.svs")
    (root / "user_masks").mkdir()
    Image.new("L", (222, 297), 255).save(root / "user_masks" / f"{SMALL}.png")
    _encoder_weights(root)
    return root


def _fill(flags: list[str], root: Path) -> list[str]:
    return [f.format(root=root) for f in flags]


def _unchanged(capsys, argv: list[str], output: Path, *named: str) -> None:
    """``argv`` exits 2, naming ``named`` and --overwrite, and leaves ``output`` as it was."""
    stamp = _mtime(output)
    capsys.readouterr()
    assert main(argv) == 2, argv
    _refused(capsys, *named, "--overwrite")
    assert _mtime(output) == stamp


@pytest.fixture(scope="module")
def segmented(matrix) -> list[str]:
    base = ["segment", str(matrix / "slides"), "--out", str(matrix / "seg"), "--no-progress"]
    assert main(base) == 0
    return base


@pytest.mark.parametrize("flags, named", [
    (["--threshold", "20"], "tissue.threshold: None -> 20.0"),
    (["--mask-mpp", "16"], "tissue.mask_mpp: 8.0 -> 16.0"),
    (["--masks", "{root}/user_masks"], "inputs.user_mask"),
])
def test_matrix_segment(matrix, segmented, capsys, flags, named):
    _unchanged(capsys, segmented + _fill(flags, matrix), matrix / "seg" / "masks" / f"{SMALL}.json", named)


PRE = ["--encoder", "resnet50_trunc", "--input-size", str(INPUT), "--num-workers", "0", "--device", "cpu",
       "--no-progress"]


@pytest.fixture(scope="module")
def preprocessed(matrix) -> list[str]:
    base = ["preprocess", str(matrix / "slides"), "--out", str(matrix / "pre"), *PRE]
    assert main(base + ["--random-init"]) == 0
    return base


@pytest.mark.parametrize("flags, named", [
    (["--target-mpp", "1.0"], "tile.tiling.target_mpp: 0.5 -> 1.0"),
    (["--min-tissue", "0.3"], "tile.tiling.min_tissue: 0.5 -> 0.3"),
    (["--threshold", "30"], "tile.tissue.threshold: None -> 30.0"),
    (["--masks", "{root}/user_masks"], "inputs.user_mask"),
])
def test_matrix_preprocess(matrix, preprocessed, capsys, flags, named):
    feats = matrix / "pre" / "features_resnet50_trunc" / f"{SMALL}.h5"
    _unchanged(capsys, preprocessed + ["--random-init"] + _fill(flags, matrix), feats, named)


@pytest.fixture(scope="module")
def extracted(matrix, preprocessed) -> list[str]:
    base = ["extract", "--coords", str(matrix / "pre" / "coords"), "--slides", str(matrix / "slides"), "--out",
            str(matrix / "feats"), *PRE]
    assert main(base + ["--random-init"]) == 0
    return base


@pytest.mark.parametrize("flags, named", [
    (["--weights", "{root}/weights.pth"], "encoder.weights_sha256: None -> '"),
    (["--random-init", "--float16"], "features_dtype: 'float32' -> 'float16'"),
    (["--random-init", "--mpp", "0.5"], "slide_mpp: None -> 0.5"),
])
def test_matrix_extract(matrix, extracted, capsys, flags, named):
    _unchanged(capsys, extracted + _fill(flags, matrix), matrix / "feats" / f"{SMALL}.h5", named)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from wsigraph.data.synthetic import make_synthetic_cohort

    root = tmp_path_factory.mktemp("matrix_synth")
    make_synthetic_cohort(root, n_slides=3, dim=8, grid=(8, 9), seed=4)
    return root


@pytest.fixture(scope="module")
def heatmapped(synthetic) -> list[str]:
    base = ["heatmap", "--scores", str(synthetic / "features"), "--key", "patch_labels", "--out",
            str(synthetic / "maps"), "--max-size", "256", "--no-progress"]
    assert main(base) == 0
    return base


@pytest.mark.parametrize("flags, named", [
    (["--cmap", "viridis"], "cmap: 'jet' -> 'viridis'"),
    (["--blur", "1"], "blur: 0.0 -> 1.0"),
    (["--alpha", "0.3"], "alpha: 0.5 -> 0.3"),
    (["--normalize", "minmax"], "normalize: 'percentile' -> 'minmax'"),
    (["--vmin", "0.1"], "vmin: None -> 0.1"),
    (["--vmax", "0.9"], "vmax: None -> 0.9"),
    (["--max-size", "128"], "max_size: 256 -> 128"),
    (["--top-k", "4"], "top_k: 16 -> 4"),
    (["--bottom-k", "2"], "bottom_k: 0 -> 2"),
    (["--object-type", "tile"], "object_type: 'detection' -> 'tile'"),
    (["--no-geojson"], "geojson: True -> False"),
    (["--mpp", "0.25"], "mpp: None -> 0.25"),
])
def test_matrix_heatmap(synthetic, heatmapped, capsys, flags, named):
    sid = sorted(p.stem for p in (synthetic / "features").glob("*.h5"))[0]
    record = synthetic / "maps" / f"{sid}.heatmap.json"
    argv = list(heatmapped)
    if "--max-size" in flags:  # the base run's --max-size 256 gives way to the case's
        i = argv.index("--max-size")
        del argv[i:i + 2]
    _unchanged(capsys, argv + flags, record, named)


def _checkpoint(path: Path, seed: int) -> Path:
    """An untrained abmil checkpoint for the synthetic features (predict needs no trained weights)."""
    from wsigraph.nn import build_model
    from wsigraph.train.checkpoint import make_metadata, save_checkpoint

    torch.manual_seed(seed)
    model = build_model("abmil", 8, 2, embed_dim=8, attn_dim=4)
    meta = make_metadata("abmil", {"embed_dim": 8, "attn_dim": 4}, 8, 2, ["normal", "tumor"])
    return save_checkpoint(path, model.state_dict(), meta)


@pytest.fixture(scope="module")
def predicted(synthetic) -> list[str]:
    base = ["predict", "--features", str(synthetic / "features"), "--out", str(synthetic / "pred"),
            "--device", "cpu", "--no-progress"]
    assert main(base + ["--checkpoint", str(_checkpoint(synthetic / "fold_0.ckpt", 0))]) == 0
    return base


@pytest.mark.parametrize("fold, flags, named", [
    (1, [], "checkpoint.sha256"),  # fold_1's checkpoint into fold_0's folder
    (0, ["--no-coords"], "no_coords: False -> True"),
])
def test_matrix_predict(synthetic, predicted, capsys, fold, flags, named):
    ckpt = _checkpoint(synthetic / f"fold_{fold}.ckpt", fold)
    sid = sorted(p.stem for p in (synthetic / "features").glob("*.h5"))[0]
    _unchanged(capsys, predicted + ["--checkpoint", str(ckpt), *flags], synthetic / "pred" / "scores" / f"{sid}.h5",
               named)


@pytest.fixture(scope="module")
def graphs(synthetic) -> list[str]:
    base = ["build-graphs", "--features", str(synthetic / "features"), "--cache", str(synthetic / "cache"),
            "--no-progress"]
    assert main(base) == 0
    return base


@pytest.mark.parametrize("flags", [["--k", "4"], ["--mode", "radius", "--radius", "1.5"], ["--window", "3"],
                                   ["--no-self-loops"], ["--edge-attr"]])
def test_matrix_build_graphs_rebuilds_under_the_new_parameters(synthetic, graphs, capsys, flags):
    """The graph cache is keyed by its parameters: another value is another cache file (rebuilt, never refused),
    and the graphs of the old value stay for the runs that use it."""
    cache = synthetic / "cache"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    capsys.readouterr()
    assert main(graphs + flags) == 0
    assert "3 done, 0 already complete" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(after) == len(before) + 3 and all(after[k] == v for k, v in before.items())
    assert main(graphs + flags) == 0
    assert "0 done, 3 already complete" in capsys.readouterr().out


def test_matrix_build_graphs_ignores_what_does_not_change_the_graph(graphs, capsys):
    capsys.readouterr()
    for flags in ([], ["--backend", "kdtree"], ["--k", "4", "--mode", "paper"]):  # k is unused in paper mode
        assert main(graphs + flags) == 0
        assert "0 done, 3 already complete" in capsys.readouterr().out, flags
