"""Slide ids as file names (wsigraph.pipeline.paths): the rule, and a traversal attempt in every command that
takes a manifest or names an output after a slide id. Each attempt must end with exit status 2, a message
naming the row, and no file written outside the folders given."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from wsigraph.cli import main
from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.errors import InputError
from wsigraph.pipeline.paths import check_slide_id, slide_file, slide_id_problem

BAD_IDS = ["../../evil", "/tmp/evil", "a/b", "a\\b", "..", ".", ".hidden", "", " pad", "tab\tid", "nul\x00id",
           "x" * 201]
GOOD_IDS = ["TCGA-A7-A0CE-01Z-00-DX1.E8A4", "slide 01", "test_001", "ünïcode-slide", "a..b", "x" * 200]


@pytest.mark.parametrize("sid", BAD_IDS)
def test_unsafe_slide_ids_are_refused_naming_the_source(sid):
    assert slide_id_problem(sid) is not None
    with pytest.raises(InputError, match="manifest.csv, line 7"):
        check_slide_id(sid, "manifest.csv, line 7")
    with pytest.raises(InputError):
        slide_file("/data/out", sid, ".h5")


@pytest.mark.parametrize("sid", GOOD_IDS)
def test_plain_slide_ids_name_a_file_directly_in_the_folder(sid, tmp_path):
    assert check_slide_id(sid) == sid
    path = slide_file(tmp_path, sid, ".h5")
    assert path.parent == tmp_path and path.name == f"{sid}.h5"


def test_non_text_ids_are_refused():
    with pytest.raises(InputError, match="not text"):
        check_slide_id(12)


# ------------------------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cohort")
    make_synthetic_cohort(d, n_slides=6, dim=8, grid=(8, 10), seed=0)
    return d


def _evil_manifest(cohort: Path, work: Path, sid: str) -> Path:
    """The cohort's manifest with the fifth row's slide_id replaced by ``sid`` (CSV line 6)."""
    df = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[4, "slide_id"] = sid
    path = work / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def sandbox(tmp_path):
    """(work folder, a function asserting that nothing was written outside it since the fixture began)."""
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    before = _files(tmp_path)

    def nothing_outside() -> None:
        outside = {p for p in _files(tmp_path) - before if work not in p.parents}
        assert not outside, f"written outside the output folder: {sorted(outside)}"
        assert not Path("/tmp/evil.h5").exists()

    return work, nothing_outside


EVIL = ["../../evil", "/tmp/evil"]


@pytest.mark.parametrize("sid", EVIL)
def test_split_refuses_a_traversing_slide_id(cohort, sandbox, capsys, sid):
    work, nothing_outside = sandbox
    manifest = _evil_manifest(cohort, work, sid)
    assert main(["split", str(manifest), "-o", str(work / "splits.csv")]) == 2
    err = capsys.readouterr().err
    assert "line 6" in err and repr(sid) in err
    assert not (work / "splits.csv").exists()
    nothing_outside()


@pytest.mark.parametrize("sid", EVIL)
def test_build_graphs_refuses_a_traversing_slide_id(cohort, sandbox, capsys, sid):
    work, nothing_outside = sandbox
    manifest = _evil_manifest(cohort, work, sid)
    rc = main(["build-graphs", "--features", str(cohort / "features"), "--manifest", str(manifest),
               "--cache", str(work / "cache"), "--no-progress"])
    assert rc == 2 and "line 6" in capsys.readouterr().err
    nothing_outside()


@pytest.mark.parametrize("sid", EVIL)
def test_train_refuses_a_traversing_slide_id(cohort, sandbox, capsys, sid):
    work, nothing_outside = sandbox
    manifest = _evil_manifest(cohort, work, sid)
    cfg = {"data": {"manifest": str(manifest), "feature_dir": str(cohort / "features")},
           "model": {"name": "mean"}, "train": {"epochs": 1, "progress_bar": False}, "output_dir": str(work / "run")}
    (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(work / "cfg.yaml")]) == 2
    assert "line 6" in capsys.readouterr().err
    nothing_outside()


def test_bench_refuses_a_traversing_slide_id(cohort, sandbox, capsys):
    work, nothing_outside = sandbox
    manifest = _evil_manifest(cohort, work, "../../evil")
    cfg = {"output_dir": str(work / "bench"), "seeds": [0], "reference": "mean",
           "cohorts": [{"name": "c", "manifest": str(manifest), "feature_dir": str(cohort / "features")}],
           "models": [{"name": "mean"}], "train": {"epochs": 1}}
    (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", "--config", str(work / "bench.yaml"), "--no-progress"]) == 2
    assert "line 6" in capsys.readouterr().err
    nothing_outside()


@pytest.mark.parametrize("sid", EVIL)
def test_preprocess_refuses_a_traversing_slide_id(sandbox, capsys, sid, shared_data):
    work, nothing_outside = sandbox
    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    manifest = work / "slides.csv"
    pd.DataFrame({"path": [str(slide), str(slide)], "slide_id": ["fine", sid]}).to_csv(manifest, index=False)
    rc = main(["preprocess", str(manifest), "--out", str(work / "out"), "--encoder", "resnet50_trunc",
               "--random-init", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "row 3" in err and repr(sid) in err
    assert not (work / "out").exists()  # refused before anything ran
    nothing_outside()


def test_heatmap_refuses_a_traversing_slide_id(cohort, sandbox, capsys):
    work, nothing_outside = sandbox
    feats = sorted((cohort / "features").glob("*.h5"))[0]
    rc = main(["heatmap", "--scores", str(feats), "--key", "patch_labels", "--features", str(feats),
               "--slide-id", "../../evil", "--out", str(work / "maps")])
    assert rc == 2 and "--slide-id" in capsys.readouterr().err
    nothing_outside()


def test_graph_cache_and_annotation_lookup_refuse_traversing_ids(cohort, tmp_path):
    from wsigraph.data.annotations import find_annotation
    from wsigraph.graph.dataset import GraphDataset

    feats = sorted((cohort / "features").glob("*.h5"))[0]
    ds = GraphDataset([feats], None, ["../evil"], cache_dir=tmp_path / "cache")
    with pytest.raises(InputError, match="slide_id '../evil'"):
        ds.cache_path(0)
    (tmp_path / "evil.xml").write_text("<ASAP_Annotations/>")
    (tmp_path / "ann").mkdir()
    with pytest.raises(InputError):
        find_annotation(tmp_path / "ann", "../evil")


def _checkpoint(path: Path, dim: int = 8) -> Path:
    """An untrained ``mean`` checkpoint for the synthetic cohort (these commands refuse before inference)."""
    from wsigraph.nn import build_model
    from wsigraph.train.checkpoint import make_metadata, save_checkpoint

    model = build_model("mean", dim, 2)
    return save_checkpoint(path, model.state_dict(), make_metadata("mean", {}, dim, 2, ["normal", "tumor"]))


@pytest.mark.parametrize("sid", ["../../x", "/tmp/evil", "a/b"])
def test_evaluate_refuses_a_traversing_slide_id(cohort, sandbox, capsys, sid):
    work, nothing_outside = sandbox
    manifest = _evil_manifest(cohort, work, sid)
    ckpt = _checkpoint(work / "best.ckpt")
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(manifest), "--features",
               str(cohort / "features"), "--out", str(work / "ev"), "--bootstrap", "0", "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "line 6" in err and repr(sid) in err, err
    assert not (work / "ev").exists()  # refused before anything was written
    nothing_outside()


def _srmil_pickle(path: Path, names: list[str]) -> Path:
    import pickle

    import torch
    from torch_geometric.data import Data

    items = []
    for i, name in enumerate(names):
        pos = torch.tensor([[0.0, 0.0], [224.0, 0.0], [0.0, 224.0]]) + 224 * i
        items.append(Data(x=torch.randn(3, 4), pos=pos, graph_y=torch.tensor([[1.0, 0.0]]), slide_index=name))
    with open(path, "wb") as fh:
        pickle.dump(items, fh)
    return path


def test_import_srmil_keeps_path_like_slide_names_inside_its_folder(sandbox):
    """SRMIL pickles often name a slide by its path: only the base name is used, so every file lands in
    OUT/features/ whatever the name says."""
    work, nothing_outside = sandbox
    pkl = _srmil_pickle(work / "C16.pkl", ["../../x", "/tmp/evil", "a/b.tif"])
    assert main(["import-srmil", str(pkl), str(work / "out"), "--trust-pickle", "--no-progress"]) == 0
    assert sorted(p.name for p in (work / "out" / "features").iterdir()) == ["b.h5", "evil.h5", "x.h5"]
    assert list(pd.read_csv(work / "out" / "manifest.csv")["slide_id"]) == ["x", "evil", "b"]
    nothing_outside()


@pytest.mark.parametrize("name", ["a/..", "x/.hidden", "tab\tid"])
def test_import_srmil_refuses_a_slide_name_that_is_no_file_name(sandbox, capsys, name):
    work, nothing_outside = sandbox
    pkl = _srmil_pickle(work / "C16.pkl", ["fine", name])
    assert main(["import-srmil", str(pkl), str(work / "out"), "--trust-pickle", "--on-error", "raise",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "C16.pkl, item 1" in err and repr(name) in err, err
    assert not (work / "out" / "features").exists()  # the ids are checked before any item is converted
    nothing_outside()


# File names cannot hold '/', but a slide id taken from a file name can still be no plain name: a backslash
# (a separator on Windows), surrounding white space, a control character, a leading dot (a file given by path).
UNSAFE_FILE_STEMS = ["a\\b", " pad", "tab\tid"]


def _feature_folder_with(cohort: Path, work: Path, stem: str) -> Path:
    import shutil

    feats = work / "features"
    shutil.copytree(cohort / "features", feats)
    first = sorted(feats.glob("*.h5"))[0]
    first.rename(feats / f"{stem}.h5")
    return feats


@pytest.mark.parametrize("stem", UNSAFE_FILE_STEMS)
def test_label_patches_refuses_an_unsafe_slide_id_naming_its_file(cohort, sandbox, capsys, stem):
    work, nothing_outside = sandbox
    feats = _feature_folder_with(cohort, work, stem)
    (work / "ann").mkdir()
    rc = main(["label-patches", str(feats), str(work / "ann"), "--out", str(work / "labelled"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(feats / f"{stem}.h5") in err and repr(stem) in err, err
    assert not (work / "labelled").exists()
    nothing_outside()


def test_label_patches_names_its_outputs_with_the_slide_file_rule(cohort, tmp_path):
    from wsigraph.pipeline.patch_labels import label_feature_folder

    (tmp_path / "ann").mkdir()
    report = label_feature_folder(cohort / "features", tmp_path / "ann", tmp_path / "out", progress=False)
    assert sorted(report.done) == sorted(p.stem for p in (cohort / "features").glob("*.h5"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{s}.h5" for s in report.done)


@pytest.mark.parametrize("stem", UNSAFE_FILE_STEMS + [".hidden"])
def test_predict_refuses_an_unsafe_slide_id_naming_its_file(cohort, sandbox, capsys, stem):
    work, nothing_outside = sandbox
    feats = _feature_folder_with(cohort, work, stem)
    ckpt = _checkpoint(work / "best.ckpt")
    # a folder (hidden files are not listed there) or the file itself
    given = [str(feats / f"{stem}.h5")] if stem.startswith(".") else [str(feats)]
    rc = main(["predict", "--checkpoint", str(ckpt), "--features", *given, "--out", str(work / "pred"),
               "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(feats / f"{stem}.h5") in err and repr(stem) in err, err
    assert not (work / "pred").exists()
    nothing_outside()
