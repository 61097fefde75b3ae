"""Feature folders for the harness (wsigraph.pipeline.patch_labels): files gathered by link, slides labelled
into small files that link to the originals."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from wsigraph.data.features import read_features, write_features
from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.patch_labels import gather_feature_files, label_feature_files

ATTRS = {"patch_size": 100, "patch_level": 0, "patch_size_level0": 100, "mpp": 0.5, "encoder": "t"}
# a lesion over the patches whose top-left y is 0 or 100 (rows 0-1 of a 4 x 4 lattice of 100-px patches)
XML = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="_0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58"><Coordinates>
<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="400" Y="0"/>
<Coordinate Order="2" X="400" Y="200"/><Coordinate Order="3" X="0" Y="200"/>
</Coordinates></Annotation></Annotations></ASAP_Annotations>"""


def _bag(path, seed=0):
    ys, xs = np.mgrid[0:4, 0:4] * 100
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    feats = np.random.default_rng(seed).standard_normal((16, 8)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_features(path, coords, feats, attrs=ATTRS)
    return coords, feats


def _clam_pt(root, sid, seed=0):
    """CLAM: pt_files/<sid>.pt (features only) beside h5_files/<sid>.h5 (its coordinates)."""
    torch = pytest.importorskip("torch")
    coords, feats = _bag(root / "h5_files" / f"{sid}.h5", seed)
    (root / "pt_files").mkdir(exist_ok=True)
    torch.save(torch.from_numpy(feats), root / "pt_files" / f"{sid}.pt")
    return coords, feats


def test_gather_links_h5_files_and_writes_pt_bags_as_h5(tmp_path):
    _bag(tmp_path / "LUAD" / "features" / "a.h5")
    _bag(tmp_path / "LUSC" / "features" / "b.h5", seed=1)
    coords, feats = _clam_pt(tmp_path / "clam", "c", seed=2)
    files = {"a": tmp_path / "LUAD" / "features" / "a.h5", "b": tmp_path / "LUSC" / "features" / "b.h5",
             "c": tmp_path / "clam" / "pt_files" / "c.pt"}
    out = gather_feature_files(files, tmp_path / "out")
    assert out == tmp_path / "out" and sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "c.h5"]
    assert (out / "a.h5").is_symlink() and (out / "a.h5").resolve() == files["a"].resolve()
    assert not (out / "c.h5").is_symlink()  # a .pt bag is written as .h5 with the coordinates of h5_files/
    bag = read_features(out / "c.h5")
    np.testing.assert_array_equal(bag.coords, coords)
    np.testing.assert_array_equal(bag.features, feats)
    # again, with b now from another folder: a kept, b's link replaced
    _bag(tmp_path / "other" / "b.h5", seed=3)
    gather_feature_files({**files, "b": tmp_path / "other" / "b.h5"}, out)
    assert (out / "b.h5").resolve() == (tmp_path / "other" / "b.h5").resolve()
    assert (out / "a.h5").resolve() == files["a"].resolve()


def test_gather_refuses_missing_files_and_unsafe_ids(tmp_path):
    with pytest.raises(MissingFileError, match="gone.h5: feature file of slide 'gone'"):
        gather_feature_files({"gone": tmp_path / "gone.h5"}, tmp_path / "out")
    _bag(tmp_path / "a.h5")
    with pytest.raises(InputError, match=r"'\.\./a'"):
        gather_feature_files({"../a": tmp_path / "a.h5"}, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_label_feature_files_labels_chosen_slides_and_links_the_rest(tmp_path):
    feats_dir, ann_dir = tmp_path / "h5_files", tmp_path / "ann"
    ann_dir.mkdir()
    (ann_dir / "test_001.xml").write_text(XML)
    coords, _ = _bag(feats_dir / "test_001.h5")
    for i, sid in enumerate(("test_002", "normal_001"), start=1):
        _bag(feats_dir / f"{sid}.h5", seed=i)
    features = {p.stem: p for p in feats_dir.iterdir()}
    out = tmp_path / "labelled"
    used = label_feature_files(features, ann_dir, ["test_002", "test_001"], out)
    assert used == {"test_001": ann_dir / "test_001.xml", "test_002": None}
    np.testing.assert_array_equal(read_features(out / "test_001.h5").patch_labels,
                                  (coords[:, 1] < 200).astype(np.int8))
    assert read_features(out / "test_002.h5").patch_labels.sum() == 0  # no outline: all negative
    assert (out / "normal_001.h5").is_symlink()  # not chosen: linked as it is
    with h5py.File(out / "test_001.h5", "r") as f:  # a small file linking to the original's datasets
        link = f.get("features", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == str(features["test_001"].resolve())
    # resume: an up-to-date labelled file is kept as it is
    before = (out / "test_001.h5").stat().st_mtime_ns
    assert label_feature_files(features, ann_dir, ["test_001", "test_002"], out) == used
    assert (out / "test_001.h5").stat().st_mtime_ns == before


def test_label_feature_files_labels_a_pt_bag_in_place(tmp_path):
    coords, _ = _clam_pt(tmp_path / "clam", "test_001")
    ann_dir = tmp_path / "ann"
    ann_dir.mkdir()
    (ann_dir / "test_001.xml").write_text(XML)
    out = tmp_path / "labelled"
    label_feature_files({"test_001": tmp_path / "clam" / "pt_files" / "test_001.pt"}, ann_dir, ["test_001"], out)
    bag = read_features(out / "test_001.h5")
    np.testing.assert_array_equal(bag.patch_labels, (coords[:, 1] < 200).astype(np.int8))
    assert bag.features.shape == (16, 8)


def test_label_feature_files_bad_input_is_named(tmp_path):
    _bag(tmp_path / "a.h5")
    (tmp_path / "ann").mkdir()
    with pytest.raises(InputError, match=r"\['b'\] to label have no feature file"):
        label_feature_files({"a": tmp_path / "a.h5"}, tmp_path / "ann", ["a", "b"], tmp_path / "out")
    with pytest.raises(MissingFileError, match="nowhere: annotation folder does not exist"):
        label_feature_files({"a": tmp_path / "a.h5"}, tmp_path / "nowhere", ["a"], tmp_path / "out")
