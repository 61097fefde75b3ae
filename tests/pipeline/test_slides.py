"""Which slides and feature folders a job runs on (wsigraph.pipeline.slides)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from wsigraph.data.features import write_features
from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.slides import (
    SlideJob,
    classify_feature_folder,
    feature_folder,
    find_feature_folders,
    find_pickle_files,
    find_slide_files,
    read_slide_list,
    slide_jobs,
    strip_slide_suffix,
)
from wsigraph.utils.folders import walk_folders


def _bag(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    coords = np.array([[0, 0], [224, 0]], dtype=np.int64)
    write_features(path, coords, np.ones((2, 4), np.float32),
                   attrs={"patch_size": 224, "patch_level": 0, "patch_size_level0": 224, "mpp": 0.5, "encoder": "x"})


def test_feature_folders_of_clam_trident_and_ours_are_found_and_named(tmp_path):
    root = tmp_path / "data"
    _bag(root / "clam" / "h5_files" / "a.h5")
    _bag(root / "trident" / "20x_256px_0px_overlap" / "features_uni_v1" / "b.h5")
    _bag(root / "ours" / "features_resnet50_trunc" / "c.h5")
    _bag(root / "ours" / "masks" / "features" / "d.h5")  # inside a side-output folder: not searched
    (root / "empty" / "features").mkdir(parents=True)     # no feature files: left out
    found = {f.path.relative_to(root).as_posix(): (f.kind, sorted(f.files)) for f in find_feature_folders(root)}
    assert found == {"clam/h5_files": ("clam", ["a"]),
                     "trident/20x_256px_0px_overlap/features_uni_v1": ("trident", ["b"]),
                     "ours/features_resnet50_trunc": ("wsigraph", ["c"])}
    assert find_feature_folders(root, depth=1) == []  # every folder sits two or three levels down
    kept = sorted(f.path.name for f in find_feature_folders(root, exclude=[root / "clam"]))
    assert kept == ["features_resnet50_trunc", "features_uni_v1"]
    assert classify_feature_folder(root / "x" / "pt_files") == "clam"


def test_walk_folders_is_breadth_first_and_bounded(tmp_path):
    for rel in ("a/b/c", "a/.hidden", "d"):
        (tmp_path / rel).mkdir(parents=True)
    got = [p.relative_to(tmp_path).as_posix() for p in walk_folders(tmp_path, 1)]
    assert got == [".", "a", "d"]
    assert "a/b/c" in [p.relative_to(tmp_path).as_posix() for p in walk_folders(tmp_path, 3)]


def test_feature_folder_of_a_named_folder(tmp_path):
    _bag(tmp_path / "20x_256px_0px_overlap" / "features_conch" / "s1.h5")
    ff = feature_folder(tmp_path / "20x_256px_0px_overlap" / "features_conch")
    assert ff.kind == "trident" and sorted(ff.files) == ["s1"] and "(1 slides)" in ff.describe()
    empty = feature_folder(tmp_path / "nowhere")
    assert empty.kind == "wsigraph" and empty.files == {}


@pytest.mark.parametrize("given, stem", [("S001.svs", "S001"), ("S001.SVS", "S001"), ("a.b.ndpi", "a.b"),
                                         ("x.h5", "x"), ("x.pt", "x"), ("x.czi", "x"), ("thumb.png", "thumb"),
                                         ("TCGA-05-4244-01Z-00-DX1.7B0F-4C2D", "TCGA-05-4244-01Z-00-DX1.7B0F-4C2D"),
                                         ("S001.svs.h5", "S001.svs"), ("plain", "plain")])
def test_strip_slide_suffix(given, stem):
    assert strip_slide_suffix(given) == stem


def test_find_pickle_files_bounded_and_excluding(tmp_path):
    for rel in ("C16_R50.pkl", "C16_R50_test.PICKLE", "a/b.pkl", "a/b/c/deep.pkl", "runs/old.pkl", ".cache/x.pkl",
                "notes.txt", "a/features.h5"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "dir.pkl").mkdir()  # a folder is not a pickle
    got = [p.relative_to(tmp_path).as_posix() for p in find_pickle_files(tmp_path, exclude=[tmp_path / "runs"])]
    assert got == ["C16_R50.pkl", "C16_R50_test.PICKLE", "a/b.pkl"]  # sorted, depth 2, hidden folders skipped
    assert "a/b/c/deep.pkl" in [p.relative_to(tmp_path).as_posix() for p in find_pickle_files(tmp_path, 3)]
    assert "runs/old.pkl" in [p.relative_to(tmp_path).as_posix() for p in find_pickle_files(tmp_path)]
    with pytest.raises(MissingFileError, match="nowhere: folder does not exist"):
        find_pickle_files(tmp_path / "nowhere")


def test_find_slide_files_skips_thumbnails_side_folders_and_excluded(tmp_path):
    for rel in ("training/normal/normal_001.tif", "testing/images/test_001.svs", "thumbs/normal_001.png",
                "masks/test_002.tif", "out/test_003.svs", "testing/test_004.ndpi"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = find_slide_files(tmp_path, exclude=[tmp_path / "out"])
    assert {s: p.relative_to(tmp_path).as_posix() for s, p in found.items()} == {
        "normal_001": "training/normal/normal_001.tif", "test_001": "testing/images/test_001.svs",
        "test_004": "testing/test_004.ndpi"}
    assert list(find_slide_files(tmp_path, depth=1)) == ["test_003", "test_004"]  # sorted by id; out/ not excluded
    assert find_slide_files(tmp_path / "thumbs") == {}
    (tmp_path / "testing" / "normal_001.svs").write_bytes(b"")
    with pytest.raises(InputError, match="two slides have the id 'normal_001'"):
        find_slide_files(tmp_path)


def test_slide_jobs_sorted_with_checked_ids(tmp_path):
    jobs = slide_jobs({"b": "slides/b.svs", "a": tmp_path / "a.svs"})
    assert jobs == [SlideJob("a", tmp_path / "a.svs"), SlideJob("b", Path("slides/b.svs"))]
    with pytest.raises(InputError, match=r"x/\.\.svs: slide_id '\.\.'"):
        slide_jobs({"..": "x/..svs"})


def test_slide_manifest(tmp_path, extract_slides):
    shutil.copy(extract_slides["small"], tmp_path / "a.svs")
    (tmp_path / "m.csv").write_text("path,slide_id,mpp\na.svs,case-1,0.25\n")
    jobs = read_slide_list(tmp_path / "m.csv")
    assert [(j.slide_id, j.slide_path, j.mpp) for j in jobs] == [("case-1", tmp_path / "a.svs", 0.25)]
    (tmp_path / "bad.csv").write_text("slide,label\na.svs,x\n")
    with pytest.raises(InputError, match=r"bad.csv.*path column.*\['slide', 'label'\]"):
        read_slide_list(tmp_path / "bad.csv")
    (tmp_path / "badmpp.csv").write_text("path,mpp\na.svs,fast\n")
    with pytest.raises(InputError, match=r"badmpp.csv, row 2: mpp 'fast'"):
        read_slide_list(tmp_path / "badmpp.csv")
