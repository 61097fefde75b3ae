"""Which slides and feature folders a job runs on (wsigraph.pipeline.slides)."""
from __future__ import annotations

import numpy as np

from wsigraph.data.features import write_features
from wsigraph.pipeline.slides import classify_feature_folder, find_feature_folders
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
