"""Patch labels from lesion outlines over a feature folder (``wsigraph.pipeline.patch_labels``, ``wsigraph
label-patches``): files gathered by link, slides labelled into small files that link to the originals, the
min-fraction and centre rules, the report of slides without an annotation."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from wsigraph.cli import main
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


STEP = 256  # grid step, level-0 px


SIDE = 4  # 4 x 4 patches


# lesion rectangles (x0, y0, x1, y1), level-0 px: two whole patches, and the left half of patch (3, 3)
TUMOR = [(0, 0, 2 * STEP, STEP), (3 * STEP, 3 * STEP, 3 * STEP + STEP // 2, 4 * STEP)]


OTHER = [(0, 2 * STEP, STEP, 3 * STEP)]  # a region of another group, one whole patch


def _coords() -> np.ndarray:
    iy, ix = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([ix.ravel(), iy.ravel()], axis=1).astype(np.int64) * STEP


def _lesion_fraction(coords: np.ndarray, rects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Exact area fraction of each patch covered by the (disjoint) axis-aligned rectangles."""
    frac = np.zeros(len(coords))
    for x0, y0, x1, y1 in rects:
        w = np.clip(np.minimum(coords[:, 0] + STEP, x1) - np.maximum(coords[:, 0], x0), 0, None)
        h = np.clip(np.minimum(coords[:, 1] + STEP, y1) - np.maximum(coords[:, 1], y0), 0, None)
        frac += w * h / STEP ** 2
    return frac


def _asap_xml(groups: dict[str, list[tuple[int, int, int, int]]]) -> str:
    anns = []
    for group, rects in groups.items():
        for i, (x0, y0, x1, y1) in enumerate(rects):
            pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            coords = "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>' for k, (x, y) in enumerate(pts))
            anns.append(f'<Annotation Name="{group}_{i}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">'
                        f"<Coordinates>{coords}</Coordinates></Annotation>")
    return f"<?xml version=\"1.0\"?><ASAP_Annotations><Annotations>{''.join(anns)}</Annotations></ASAP_Annotations>"


@pytest.fixture
def cohort(tmp_path):
    """features/{tumor_001,normal_001,broken_001}.h5; annotations for tumor_001 (good) and broken_001 (bad)."""
    feat, ann = tmp_path / "features", tmp_path / "annotations"
    ann.mkdir()
    rng = np.random.default_rng(0)
    attrs = dict(patch_size=224, patch_level=0, patch_size_level0=STEP, mpp=0.5 * STEP / 224, encoder="test")
    for sid in ("tumor_001", "normal_001", "broken_001"):
        write_features(feat / f"{sid}.h5", _coords(), rng.normal(size=(SIDE * SIDE, 8)).astype(np.float32),
                       attrs=attrs)
    (ann / "tumor_001.xml").write_text(_asap_xml({"Tumor": TUMOR, "Other": OTHER}))
    (ann / "broken_001.xml").write_text('<ASAP_Annotations><Annotations><Annotation Name="x"')  # truncated
    return feat, ann


def _labels(path) -> np.ndarray:
    bag = read_features(path)
    assert bag.patch_labels is not None, f"{path} has no patch_labels"
    return np.asarray(bag.patch_labels)


def test_labels_from_asap_xml_missing_negative_and_skip_report(tmp_path, cohort):
    feat, ann = cohort
    out, report = tmp_path / "labelled", tmp_path / "failures.csv"
    rc = main(["label-patches", str(feat), str(ann), "--out", str(out), "--classes", "Tumor",
               "--missing", "negative", "--on-error", "skip", "--report", str(report), "--no-progress"])
    assert rc == 1  # finished, with a failure to look at

    coords = _coords()
    expected = (_lesion_fraction(coords, TUMOR) >= 0.5).astype(np.int64)
    assert 0 < expected.sum() < len(expected)
    labels = _labels(out / "tumor_001.h5")
    np.testing.assert_array_equal(labels, expected)  # the "Other" group is left out by --classes
    original = read_features(feat / "tumor_001.h5")
    copy = read_features(out / "tumor_001.h5")
    np.testing.assert_array_equal(copy.coords, original.coords)
    np.testing.assert_array_equal(copy.features, original.features)
    assert original.patch_labels is None  # the input is left untouched

    normal = _labels(out / "normal_001.h5")  # no annotation file: a negative slide
    assert normal.shape == (SIDE * SIDE,) and not normal.any()

    assert not (out / "broken_001.h5").exists()
    failures = pd.read_csv(report).query("status == 'failed'").reset_index()
    assert failures["slide_id"].tolist() == ["broken_001"]
    assert "broken_001.xml" in failures["error"][0] and "malformed XML" in failures["error"][0]


def test_min_fraction_all_classes_and_default_report(tmp_path, cohort):
    feat, ann = cohort
    (ann / "broken_001.xml").unlink()
    out = tmp_path / "labelled"
    rc = main(["label-patches", str(feat), str(ann), "--out", str(out), "--min-fraction", "0.75",
               "--missing", "skip", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["tumor_001.h5"]  # --missing skip leaves the others out
    expected = (_lesion_fraction(_coords(), TUMOR + OTHER) >= 0.75).astype(np.int64)
    np.testing.assert_array_equal(_labels(out / "tumor_001.h5"), expected)

    (ann / "broken_001.xml").write_text("<ASAP_Annotations>")
    rc = main(["label-patches", str(feat), str(ann), "--out", str(out), "--on-error", "skip", "--no-progress"])
    assert rc == 1
    assert pd.read_csv(out / "label_patches_report.csv").query("status == 'failed'")["slide_id"].tolist() == ["broken_001"]


def test_link_writes_small_files_that_read_like_copies(tmp_path, cohort):
    import h5py

    from wsigraph.pipeline.patch_labels import label_feature_folder
    from wsigraph.errors import InputError

    feat, ann = cohort
    (ann / "broken_001.xml").unlink()
    copies, links = tmp_path / "copies", tmp_path / "links"
    assert main(["label-patches", str(feat), str(ann), "--out", str(copies), "--no-progress"]) == 0
    assert main(["label-patches", str(feat), str(ann), "--out", str(links), "--link", "--no-progress"]) == 0
    for sid in ("tumor_001", "normal_001", "broken_001"):
        a, b = read_features(copies / f"{sid}.h5"), read_features(links / f"{sid}.h5")
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.patch_labels, b.patch_labels)
        with h5py.File(links / f"{sid}.h5", "r") as f:
            assert f.get("features", getlink=True).filename == str((feat / f"{sid}.h5").resolve())
    with pytest.raises(InputError, match="out_dir"):
        label_feature_folder(feat, ann, None, link=True)


def test_center_rule(tmp_path, cohort):
    feat, ann = cohort
    out = tmp_path / "labelled"
    (ann / "broken_001.xml").unlink()
    assert main(["label-patches", str(feat), str(ann), "--out", str(out), "--min-fraction", "center",
                 "--classes", "Tumor", "--no-progress"]) == 0
    coords = _coords()
    centre = coords + STEP // 2
    inside = np.zeros(len(coords), dtype=bool)
    for x0, y0, x1, y1 in TUMOR:  # half-open rectangles, like pixels
        inside |= (centre[:, 0] >= x0) & (centre[:, 0] < x1) & (centre[:, 1] >= y0) & (centre[:, 1] < y1)
    np.testing.assert_array_equal(_labels(out / "tumor_001.h5"), inside.astype(np.int64))


def test_errors_name_the_slide_or_folder(tmp_path, cohort, capsys):
    feat, ann = cohort
    out = tmp_path / "labelled"
    # with --on-error raise the malformed file stops the run, naming the file
    assert main(["label-patches", str(feat), str(ann), "--out", str(out), "--on-error", "raise",
                 "--no-progress"]) == 2
    assert "broken_001.xml" in capsys.readouterr().err
    (ann / "broken_001.xml").unlink()
    assert main(["label-patches", str(feat), str(ann), "--out", str(out), "--missing", "error",
                 "--no-progress"]) == 1  # skipped (the default) and reported
    report = pd.read_csv(out / "label_patches_report.csv").set_index("slide_id")
    assert report.loc["broken_001", "status"] == "failed"
    assert "no annotation file" in report.loc["broken_001", "error"]
    assert main(["label-patches", str(feat), str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["label-patches", str(feat), str(ann), "--out", str(out), "--min-fraction", "1.5"])
    assert e.value.code == 2
    assert "--min-fraction" in capsys.readouterr().err
