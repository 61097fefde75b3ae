"""``wsigraph label-patches`` (a thin layer over ``label_feature_folder``) and the shared CLI option groups."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wsigraph.cli import build_parser, main
from wsigraph.data.features import read_features, write_features

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


# ------------------------------------------------------------------------------ shared option groups


def test_shared_tissue_and_mpp_flags_mean_the_same_everywhere():
    from wsigraph.cli._options import mpp_resolver, tiling_kwargs, tissue_kwargs

    flags = ["--mode", "brightfield", "--threshold", "20", "--mask-mpp", "4", "--min-object-um2", "500",
             "--max-hole-um2", "900", "--exclude-pen", "--target-mpp", "0.25", "--patch-size", "256",
             "--min-tissue", "0.3", "--mpp", "0.5", "--default-mpp", "0.25"]
    parser = build_parser()
    parsed = {cmd: parser.parse_args([cmd, *pre, *flags]) for cmd, pre in (
        ("tile", ["s.svs", "--out", "o"]),
        ("preprocess", ["s", "--out", "o", "--encoder", "resnet50_trunc"]))}
    tissue = {cmd: tissue_kwargs(a) for cmd, a in parsed.items()}
    assert tissue["tile"] == tissue["preprocess"]
    import inspect

    from wsigraph.slide import segment_tissue

    lib = {k: v.default for k, v in inspect.signature(segment_tissue).parameters.items()}
    untouched = {k: lib[k] for k in ("median_um", "close_um", "exclude_background")}  # library defaults
    assert tissue["tile"] == dict(mode="brightfield", method="threshold", threshold=20.0, mask_mpp=4.0,
                                  min_object_um2=500.0, max_hole_um2=900.0, exclude_pen=True, **untouched)
    assert tiling_kwargs(parsed["tile"]) == tiling_kwargs(parsed["preprocess"]) == dict(
        target_mpp=0.25, patch_size=256, min_tissue=0.3)
    segment = parser.parse_args(["segment", "s.svs", "--out", "o", *flags[:11]])
    assert tissue_kwargs(segment) == tissue["tile"]
    for cmd in ("tile", "preprocess"):
        resolve = mpp_resolver(parsed[cmd])
        assert (resolve("a"), resolve("a", 0.3), parsed[cmd].default_mpp) == (0.5, 0.3, 0.25)
    ext = parser.parse_args(["extract", "--coords", "c", "--slides", "s", "--out", "o", "--encoder", "x",
                             "--mpp", "0.5"])
    assert mpp_resolver(ext)("a") == 0.5 and (ext.on_error, ext.shard) == ("skip", None)


def test_mpp_csv_overrides_mpp_and_errors_name_the_row(tmp_path):
    from wsigraph.cli._options import mpp_resolver
    from wsigraph.errors import InputError

    table = tmp_path / "mpp.csv"
    table.write_text("slide_id,mpp\na,0.25\nb,-1\n")
    parser = build_parser()
    args = parser.parse_args(["slide-info", "x.svs", "--mpp", "0.5", "--mpp-csv", str(table)])
    with pytest.raises(InputError, match=r"mpp\.csv, row 3"):
        mpp_resolver(args)
    table.write_text("slide_id,mpp\na,0.25\n")
    resolve = mpp_resolver(args)
    assert (resolve("a"), resolve("a", 0.3), resolve("b"), resolve("b", 0.3)) == (0.25, 0.25, 0.5, 0.3)
