"""Tests of wsigraph.data.annotations: ASAP XML / GeoJSON lesion outlines -> patch labels and lesion ids."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from scipy import ndimage

from wsigraph.data.annotations import (
    AnnotationPolygon,
    add_patch_labels,
    lesion_components,
    lesion_fraction,
    patch_labels_from_polygons,
    read_annotations,
    read_asap_xml,
    read_geojson_annotations,
)
from wsigraph.data.features import read_features, write_features
from wsigraph.errors import InputError, MissingFileError

STEP = 100
# a 10 x 10 lattice of 100-px patches; lesion square [120, 680)^2 with an exclusion square [320, 480)^2
LESION = [(120, 120), (680, 120), (680, 680), (120, 680)]
HOLE = [(320, 320), (480, 320), (480, 480), (320, 480)]


def _lattice(n: int = 10, step: int = STEP) -> np.ndarray:
    ys, xs = np.mgrid[0:n, 0:n] * step
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)


def _expected_fraction(coords, step, per_side, lesion=(120, 680), hole=(320, 480)):
    """Oracle for axis-aligned squares: sample points tested by inequalities (half-open intervals)."""
    off = (np.arange(per_side) + 0.5) / per_side * step
    px = coords[:, 0, None, None] + off[None, None, :]
    py = coords[:, 1, None, None] + off[None, :, None]
    inside = (px >= lesion[0]) & (px < lesion[1]) & (py >= lesion[0]) & (py < lesion[1])
    in_hole = (px >= hole[0]) & (px < hole[1]) & (py >= hole[0]) & (py < hole[1])
    return (inside & ~in_hole).reshape(len(coords), -1).mean(axis=1)


def _asap_xml(annotations: list[tuple[str, str, str, list]]) -> str:
    """ASAP XML text; each annotation is (name, type, group, [(x, y), ...]) with string or number coordinates."""
    parts = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "  <Annotations>"]
    for name, kind, group, pts in annotations:
        parts.append(f'    <Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">')
        parts.append("      <Coordinates>")
        parts += [f'        <Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(pts)]
        parts += ["      </Coordinates>", "    </Annotation>"]
    parts += ["  </Annotations>", "  <AnnotationGroups>", '    <Group Name="Tumor" PartOfGroup="None" Color="#00F">',
              "      <Attributes />", "    </Group>", "  </AnnotationGroups>", "</ASAP_Annotations>"]
    return "\n".join(parts) + "\n"


@pytest.fixture
def camelyon_xml(tmp_path):
    path = tmp_path / "tumor_001.xml"
    path.write_text(_asap_xml([
        ("_0", "Polygon", "Tumor", LESION),
        ("_1", "Polygon", "_2", HOLE),
        ("dot", "Dot", "None", [(5, 5)]),
    ]))
    return path


def _geojson_feature(rings, cls="Tumor", name=None, kind="Polygon"):
    props = {"objectType": "annotation", "classification": {"name": cls, "color": [200, 0, 0]}}
    if name:
        props["name"] = name
    return {"type": "Feature", "id": "x", "geometry": {"type": kind, "coordinates": rings}, "properties": props}


def _closed(pts):
    return [list(map(float, p)) for p in pts] + [list(map(float, pts[0]))]


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def test_read_asap_xml_groups_exclusions_and_skips_dots(camelyon_xml):
    polys = read_asap_xml(camelyon_xml)
    assert [(p.name, p.group, p.exclude) for p in polys] == [("_0", "Tumor", False), ("_1", "_2", True)]
    np.testing.assert_array_equal(polys[0].exterior, np.array(LESION, dtype=float))
    assert polys[0].bounds == (120.0, 120.0, 680.0, 680.0)
    assert polys[0].area == pytest.approx(560.0 ** 2)
    assert polys[0].holes == ()


def test_read_asap_xml_sorts_by_order_drops_closing_vertex_and_accepts_decimal_commas(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text("""<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
  <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor"><Coordinates>
    <Coordinate Order="2" X="10,5" Y="20,25"/>
    <Coordinate Order="0" X="0" Y="0"/>
    <Coordinate Order="1" X="20.0" Y="1e1"/>
    <Coordinate Order="3" X="0" Y="0"/>
  </Coordinates></Annotation>
</Annotations></ASAP_Annotations>""")
    (poly,) = read_asap_xml(path)
    np.testing.assert_array_equal(poly.exterior, [[0, 0], [20, 10], [10.5, 20.25]])


def test_read_asap_xml_group_filter_keeps_exclusions(tmp_path):
    path = tmp_path / "g.xml"
    path.write_text(_asap_xml([("a", "Polygon", "Tumor", LESION), ("b", "Polygon", "Stroma", LESION),
                               ("c", "Polygon", "Exclusion", HOLE)]))
    assert [p.name for p in read_asap_xml(path, groups=["tumor"])] == ["a", "c"]
    assert [p.name for p in read_annotations(path)] == ["a", "b", "c"]


def test_read_geojson_holes_multipolygon_and_class_filter(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        _geojson_feature([_closed(LESION), _closed(HOLE)], name="lesion"),
        _geojson_feature([[_closed([(0, 0), (50, 0), (50, 50)])], [_closed([(900, 900), (950, 900), (950, 950)])]],
                         kind="MultiPolygon"),
        _geojson_feature([_closed([(0, 0), (10, 0), (10, 10)])], cls="Stroma"),
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}},
    ]}
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(fc))
    polys = read_geojson_annotations(path, classes=["Tumor"])
    assert [p.name for p in polys] == ["lesion", "feature 1 [0]", "feature 1 [1]"]
    assert len(polys[0].holes) == 1 and not polys[0].exclude
    np.testing.assert_array_equal(polys[0].holes[0], np.array(HOLE, dtype=float))
    assert polys[0].area == pytest.approx(560.0 ** 2 - 160.0 ** 2)
    assert len(read_geojson_annotations(path)) == 4  # no filter: the Stroma polygon too


def test_read_geojson_qupath_feature_list_and_exclusion_class(tmp_path):
    path = tmp_path / "slide.json"  # older QuPath exports a bare list of features
    path.write_text(json.dumps([_geojson_feature([_closed(LESION)]),
                                _geojson_feature([_closed(HOLE)], cls="Ignore*")]))
    polys = read_annotations(path, classes=["Tumor"])
    assert [(p.group, p.exclude) for p in polys] == [("Tumor", False), ("Ignore*", True)]


# ----------------------------------------------------------------------------------------------------
# patch labels
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_fraction,per_side,n_expected", [(0.5, 4, 32), (0.75, 4, 28), (0.5, 2, 32)])
def test_labels_from_xml_match_independent_oracle(camelyon_xml, min_fraction, per_side, n_expected):
    coords = _lattice()
    labels = patch_labels_from_polygons(coords, STEP, read_asap_xml(camelyon_xml), min_fraction=min_fraction,
                                        samples_per_side=per_side)
    assert labels.dtype == np.int8 and labels.shape == (100,)
    expected = (_expected_fraction(coords, STEP, per_side) >= min_fraction).astype(np.int8)
    np.testing.assert_array_equal(labels, expected)
    assert labels.sum() == n_expected
    grid = labels.reshape(10, 10)  # [row (y), col (x)]
    assert grid[3, 3] == grid[4, 4] == 0  # mostly excluded: 7 of 16 sample points are lesion
    assert grid[1, 1] == (1 if min_fraction <= 9 / 16 else 0)  # lesion corner: 9 of 16
    assert grid[0].sum() == grid[:, 0].sum() == grid[7:].sum() == 0


def test_lesion_fraction_values(camelyon_xml):
    coords = _lattice()
    frac = lesion_fraction(coords, STEP, read_asap_xml(camelyon_xml))
    np.testing.assert_allclose(frac, _expected_fraction(coords, STEP, 4))
    grid = frac.reshape(10, 10)
    assert (grid[2, 2], grid[3, 3], grid[1, 2], grid[1, 1]) == (1.0, 7 / 16, 12 / 16, 9 / 16)


def test_center_labels(camelyon_xml):
    coords = _lattice()
    labels = patch_labels_from_polygons(coords, STEP, read_asap_xml(camelyon_xml), min_fraction="center")
    cx, cy = coords[:, 0] + 50, coords[:, 1] + 50
    expected = ((cx >= 120) & (cx < 680) & (cy >= 120) & (cy < 680)
                & ~((cx >= 320) & (cx < 480) & (cy >= 320) & (cy < 480)))
    np.testing.assert_array_equal(labels, expected.astype(np.int8))


def test_geojson_hole_gives_the_same_labels_as_xml_exclusion(tmp_path, camelyon_xml):
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [_geojson_feature([_closed(LESION), _closed(HOLE)])]}))
    coords = _lattice()
    a = patch_labels_from_polygons(coords, STEP, read_geojson_annotations(path))
    b = patch_labels_from_polygons(coords, STEP, read_asap_xml(camelyon_xml))
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 32


def test_exclusions_argument_and_plain_arrays():
    coords = _lattice()
    with_hole = patch_labels_from_polygons(coords, STEP, [np.array(LESION)], exclusions=[np.array(HOLE)])
    without = patch_labels_from_polygons(coords, STEP, [np.array(LESION)])
    np.testing.assert_array_equal(with_hole, (_expected_fraction(coords, STEP, 4) >= 0.5).astype(np.int8))
    np.testing.assert_array_equal(without, (_expected_fraction(coords, STEP, 4, hole=(0, 0)) >= 0.5).astype(np.int8))
    assert without.sum() - with_hole.sum() == 4


def test_boundaries_are_half_open_like_pixels():
    """A square exactly on patch borders covers those patches fully and nothing of their neighbours."""
    coords = _lattice(6)
    square = np.array([(100, 100), (300, 100), (300, 300), (100, 300)], dtype=float)
    frac = lesion_fraction(coords, STEP, [square], samples_per_side=2)  # samples at 25 and 75: off the border
    centre = patch_labels_from_polygons(coords, 200, [square], min_fraction="center")  # centres at x0 + 100
    expected = ((coords >= 100) & (coords < 300)).all(axis=1)
    np.testing.assert_array_equal(frac, expected.astype(np.float32))
    # with 200-px patches the centres (x0 + 100) fall exactly on the square's edges at 100 and 300:
    # x = 100 is inside (closed side), x = 300 is not (open side)
    c = coords + 100
    np.testing.assert_array_equal(centre, ((c >= 100) & (c < 300)).all(axis=1).astype(np.int8))


def test_random_polygon_with_hole_matches_matplotlib():
    rng = np.random.default_rng(3)

    def star(cx, cy, r, m):
        a = np.sort(rng.uniform(0, 2 * np.pi, m))
        rr = r * rng.uniform(0.4, 1.0, m)
        return np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], axis=1)

    outer, hole, cut = star(2500, 2500, 2000, 60), star(2500, 2500, 500, 20), star(3500, 1500, 700, 30)
    coords = _lattice(50, 97) + rng.integers(0, 40, size=(2500, 2))  # off-grid, CLAM-like offsets
    poly = AnnotationPolygon(outer, (hole,), "x", "Tumor")
    frac = lesion_fraction(coords, 97, [poly, AnnotationPolygon(cut, exclude=True)], samples_per_side=3)
    off = (np.arange(3) + 0.5) / 3 * 97
    pts = np.stack(np.broadcast_arrays(coords[:, 0, None, None] + off[None, None, :],
                                       coords[:, 1, None, None] + off[None, :, None]), axis=-1).reshape(-1, 2)
    inside = (MplPath(outer).contains_points(pts) & ~MplPath(hole).contains_points(pts)
              & ~MplPath(cut).contains_points(pts))
    np.testing.assert_allclose(frac, inside.reshape(-1, 9).mean(axis=1), atol=1e-6)
    assert 0.2 < (frac > 0).mean() < 0.8  # the test exercises both classes


def test_shared_scanlines_of_offset_overlapping_patches_match_matplotlib():
    """Patches on a 50-px grid with 100-px size: sample rows of different patches coincide."""
    rng = np.random.default_rng(1)
    coords = np.unique(rng.integers(0, 20, size=(3000, 2)) * 50, axis=0)
    a = np.sort(rng.uniform(0, 2 * np.pi, 40))
    r = 400 * rng.uniform(0.4, 1.0, 40)
    poly = np.stack([500.3 + r * np.cos(a), 500.7 + r * np.sin(a)], axis=1)
    frac = lesion_fraction(coords, 100, [poly], samples_per_side=2)
    off = np.array([25.0, 75.0])
    pts = np.stack(np.broadcast_arrays(coords[:, 0, None, None] + off[None, None, :],
                                       coords[:, 1, None, None] + off[None, :, None]), axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(frac, MplPath(poly).contains_points(pts).reshape(-1, 4).mean(axis=1))
    assert 0.1 < (frac > 0).mean() < 0.9


def test_overlapping_lesions_are_a_union_not_even_odd():
    coords = _lattice(4)
    a = np.array([(0, 0), (300, 0), (300, 100), (0, 100)], dtype=float)
    labels = patch_labels_from_polygons(coords, STEP, [a, a + [100, 0]], min_fraction=1.0)
    np.testing.assert_array_equal(labels.reshape(4, 4)[0], [1, 1, 1, 1])
    assert labels.sum() == 4


def test_no_patches_and_exclusions_only():
    assert patch_labels_from_polygons(np.zeros((0, 2), np.int64), STEP, [np.array(LESION)]).shape == (0,)
    labels = patch_labels_from_polygons(_lattice(), STEP, [AnnotationPolygon(np.array(HOLE, float), exclude=True)])
    assert labels.sum() == 0


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, "middle"])
def test_invalid_min_fraction(bad):
    with pytest.raises(InputError, match="min_fraction"):
        patch_labels_from_polygons(_lattice(), STEP, [np.array(LESION)], min_fraction=bad)


def test_invalid_patch_size_and_coords():
    with pytest.raises(InputError, match="patch_size_level0"):
        patch_labels_from_polygons(_lattice(), 0, [np.array(LESION)])
    with pytest.raises(InputError, match=r"shape \(N, 2\)"):
        patch_labels_from_polygons(np.zeros((3, 3)), STEP, [np.array(LESION)])


# ----------------------------------------------------------------------------------------------------
# lesion components
# ----------------------------------------------------------------------------------------------------


def test_lesion_components_by_hand():
    grid = np.array([
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],  # diagonal neighbour of (0, 1): same lesion (8-connectivity)
        [0, 0, 0, 0, 1],
        [1, 0, 0, 0, 1],
    ])
    coords = _lattice(5)[:20]  # rows 0..3
    ids = lesion_components(coords, grid.ravel(), STEP).reshape(4, 5)
    expected = np.array([
        [0, 0, -1, -1, -1],
        [-1, -1, 0, -1, -1],
        [-1, -1, -1, -1, 1],
        [2, -1, -1, -1, 1],
    ])
    np.testing.assert_array_equal(ids, expected)


def test_lesion_components_match_ndimage_label_on_random_lattice():
    rng = np.random.default_rng(0)
    grid = rng.random((30, 40)) < 0.3
    tissue = rng.random((30, 40)) < 0.9  # patches missing from the slide (background)
    grid &= tissue
    ys, xs = np.nonzero(tissue)
    perm = rng.permutation(ys.size)  # any patch order
    coords = np.stack([xs, ys], axis=1)[perm] * 256 + 1000
    labels = grid[ys, xs][perm]
    ids = lesion_components(coords, labels, 256)
    ref, n = ndimage.label(grid, structure=np.ones((3, 3)))
    ref_ids = ref[ys, xs][perm] - 1
    assert ids.max() + 1 == n
    assert np.array_equal(ids < 0, ref_ids < 0)
    pos = ids >= 0
    # same partition: a one-to-one map between our ids and ndimage's
    pairs = np.unique(np.stack([ids[pos], ref_ids[pos]], axis=1), axis=0)
    assert len(pairs) == n == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))
    first = np.unique(ids[pos], return_index=True)[1]
    assert np.all(np.diff(np.flatnonzero(pos)[first]) > 0)  # numbered by first patch


def test_lesion_components_lattice_units_and_empty():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    np.testing.assert_array_equal(lesion_components(coords, [1, 1, 1], 1.0), [0, 0, 1])
    np.testing.assert_array_equal(lesion_components(coords, [0, 0, 0], 1.0), [-1, -1, -1])
    with pytest.raises(InputError, match="patch_labels has 2 entries"):
        lesion_components(coords, [1, 0], 1.0)


# ----------------------------------------------------------------------------------------------------
# feature files
# ----------------------------------------------------------------------------------------------------

ATTRS = {"patch_size": 100, "patch_level": 0, "patch_size_level0": STEP, "mpp": 0.5, "encoder": "test"}


def _feature_file(path, n=10):
    coords = _lattice(n)
    feats = np.random.default_rng(0).standard_normal((len(coords), 4)).astype(np.float16)
    write_features(path, coords, feats, attrs=ATTRS, extra={"tissue_type": np.arange(len(coords)) % 3})
    return coords, feats


def test_add_patch_labels_writes_a_copy(tmp_path, camelyon_xml):
    src = tmp_path / "features" / "tumor_001.h5"
    coords, feats = _feature_file(src)
    before = src.read_bytes()
    out = tmp_path / "labelled" / "tumor_001.h5"
    labels = add_patch_labels(src, camelyon_xml, out)
    assert src.read_bytes() == before  # the input is untouched
    bag = read_features(out)
    np.testing.assert_array_equal(bag.patch_labels, labels)
    np.testing.assert_array_equal(labels, (_expected_fraction(coords, STEP, 4) >= 0.5).astype(np.int8))
    np.testing.assert_array_equal(bag.features, feats)
    assert bag.features.dtype == np.float16
    np.testing.assert_array_equal(bag.coords, coords)
    assert {k: bag.attrs[k] for k in ATTRS} == ATTRS
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["tissue_type"][()], np.arange(100) % 3)  # extra datasets kept
        assert f["patch_labels"].dtype == np.int8
        assert f["patch_labels"].attrs["source"] == "tumor_001.xml"
    assert [p.name for p in out.parent.iterdir()] == ["tumor_001.h5"]  # no temp file left


def test_add_patch_labels_linked_reads_like_a_copy_without_copying(tmp_path, camelyon_xml):
    src = tmp_path / "features" / "tumor_001.h5"
    _feature_file(src, 60)  # 3,600 patches: a copy would hold their features
    copy = tmp_path / "copy" / "tumor_001.h5"
    linked = tmp_path / "linked" / "tumor_001.h5"
    a = add_patch_labels(src, camelyon_xml, copy)
    b = add_patch_labels(src, camelyon_xml, linked, link=True)
    np.testing.assert_array_equal(a, b)
    x, y = read_features(copy), read_features(linked)
    for field in ("coords", "features", "patch_labels"):
        np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    assert x.attrs == y.attrs
    with h5py.File(linked, "r") as f:
        assert isinstance(f.get("features", getlink=True), h5py.ExternalLink)
        np.testing.assert_array_equal(f["tissue_type"][()], np.arange(3600) % 3)  # extra datasets linked
    assert linked.stat().st_size < src.stat().st_size / 4
    with pytest.raises(InputError, match="another output file"):
        add_patch_labels(src, camelyon_xml, src, link=True)
    src.rename(tmp_path / "moved.h5")
    with pytest.raises(InputError, match=r"linked.*tumor_001\.h5.*'coords' links to .*tumor_001\.h5.*moved or deleted"):
        read_features(linked)


def test_add_patch_labels_in_place_replaces_earlier_labels(tmp_path, camelyon_xml):
    src = tmp_path / "s.h5"
    _feature_file(src)
    first = add_patch_labels(src, camelyon_xml, min_fraction=0.75)
    second = add_patch_labels(src, camelyon_xml, min_fraction="center")
    assert first.sum() == 28 and second.sum() == 32
    np.testing.assert_array_equal(read_features(src).patch_labels, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "tumor_001.xml"]


def test_add_patch_labels_without_annotation_is_negative(tmp_path):
    src = tmp_path / "normal_001.h5"
    _feature_file(src, 3)
    labels = add_patch_labels(src, None)
    assert labels.shape == (9,) and labels.sum() == 0
    np.testing.assert_array_equal(read_features(src).patch_labels, np.zeros(9, np.int8))


def test_add_patch_labels_clam_coords_file_without_mpp(tmp_path, camelyon_xml):
    """CLAM patch files have no mpp/encoder attributes; the copy keeps their layout."""
    src = tmp_path / "clam.h5"
    coords = _lattice().astype(np.int32)
    with h5py.File(src, "w") as f:
        ds = f.create_dataset("coords", data=coords)
        ds.attrs["patch_size"] = 50
        ds.attrs["patch_level"] = 1
        ds.attrs["downsample"] = [2.0, 2.0]
    labels = add_patch_labels(src, camelyon_xml, tmp_path / "out.h5")
    assert labels.sum() == 32
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["coords"].dtype == np.int32 and list(f["coords"].attrs["downsample"]) == [2.0, 2.0]


def test_add_patch_labels_bad_inputs(tmp_path, camelyon_xml):
    with pytest.raises(MissingFileError, match="missing.h5"):
        add_patch_labels(tmp_path / "missing.h5", camelyon_xml)
    pt = tmp_path / "bag.pt"
    pt.write_bytes(b"")
    with pytest.raises(InputError, match=r"bag\.pt.*\.h5"):
        add_patch_labels(pt, camelyon_xml)
    src = tmp_path / "s.h5"
    _feature_file(src, 3)
    with pytest.raises(MissingFileError, match="nope.xml"):
        add_patch_labels(src, tmp_path / "nope.xml")
    with h5py.File(src, "r") as f:
        assert "patch_labels" not in f


def test_label_feature_folder(tmp_path, camelyon_xml):
    from wsigraph.pipeline.patch_labels import label_feature_folder

    feat_dir, ann_dir = tmp_path / "features", tmp_path / "ann"
    ann_dir.mkdir()
    camelyon_xml.rename(ann_dir / "tumor_001.xml")
    _feature_file(feat_dir / "tumor_001.h5")
    _feature_file(feat_dir / "normal_001.h5", 3)
    report = label_feature_folder(feat_dir, ann_dir, tmp_path / "out", progress=False)
    assert report.results == {"normal_001": 0, "tumor_001": 32}
    assert read_features(tmp_path / "out" / "tumor_001.h5").patch_labels.sum() == 32

    skipped = label_feature_folder(feat_dir, ann_dir, tmp_path / "out2", missing="skip", progress=False)
    assert list(skipped.results) == ["tumor_001"]

    failures = tmp_path / "failures.csv"
    strict = label_feature_folder(feat_dir, ann_dir, tmp_path / "out3", missing="error", on_error="skip",
                                  report_path=failures, progress=False)
    assert list(strict.failed) == ["normal_001"]
    assert "no annotation file for slide 'normal_001'" in failures.read_text()
    with pytest.raises(InputError, match="missing must be"):
        label_feature_folder(feat_dir, ann_dir, missing="zeros")


def test_collect_annotations_from_zip_uses_base_names_only(tmp_path):
    """A zip entry's folders (``..``, absolute, Windows separators) are dropped: nothing lands outside ``out``."""
    import zipfile

    from wsigraph.data.annotations import collect_annotations

    src, out = tmp_path / "src", tmp_path / "work" / "out"
    src.mkdir()
    with zipfile.ZipFile(src / "lesion_annotations.zip", "w") as z:
        z.writestr("lesion_annotations/test_001.xml", "<a/>")
        z.writestr("../../evil.xml", "<evil/>")
        z.writestr("/abs/test_002.geojson", "{}")
        z.writestr("..\\..\\win.json", "[]")
        z.writestr("__MACOSX/lesion_annotations/._test_001.xml", "resource fork")
        z.writestr(".hidden.xml", "<h/>")
        z.writestr("notes.txt", "not an outline")
        z.writestr("folder/", "")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert collect_annotations([src / "lesion_annotations.zip"], out) == out
    assert sorted(p.name for p in out.iterdir()) == ["evil.xml", "test_001.xml", "test_002.geojson", "win.json"]
    assert (out / "evil.xml").read_text() == "<evil/>" and (out / "test_001.xml").read_text() == "<a/>"
    added = sorted(set(str(p) for p in tmp_path.rglob("*")) - set(before))
    assert added == sorted([str(out.parent), str(out)] + [str(p) for p in out.iterdir()])
    assert not (tmp_path / "evil.xml").exists() and not (tmp_path.parent / "evil.xml").exists()


def test_collect_annotations_from_folders_and_files(tmp_path, caplog):
    from wsigraph.data.annotations import collect_annotations

    a, b = tmp_path / "training" / "lesion_annotations", tmp_path / "testing"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "tumor_001.xml").write_text("<t1/>")
    (a / "._tumor_001.xml").write_text("fork")
    (a / ".git").mkdir()
    (a / ".git" / "tumor_009.xml").write_text("<hidden folder/>")
    (a / "readme.md").write_text("no")
    b.mkdir()
    (b / "test_001.GEOJSON").write_text("{}")
    (b / "tumor_001.xml").write_text("<t1 again/>")
    single = tmp_path / "test_002.json"
    single.write_text("[]")
    out = collect_annotations([a, single, b], tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["test_001.GEOJSON", "test_002.json", "tumor_001.xml"]
    assert (out / "tumor_001.xml").read_text() == "<t1 again/>"  # the later source wins, with a warning
    assert "tumor_001.xml" in caplog.text and str(a / "sub" / "tumor_001.xml") in caplog.text
    assert collect_annotations([tmp_path / "out"], tmp_path / "out") == out  # out itself as a source: no-op
    with pytest.raises(MissingFileError, match="nowhere.zip: annotation folder or archive does not exist"):
        collect_annotations([tmp_path / "nowhere.zip"], out)
    with pytest.raises(InputError, match="readme.md: not a folder, a .zip archive or an outline file"):
        collect_annotations([a / "readme.md"], out)


# ----------------------------------------------------------------------------------------------------
# bad annotation files: the message names the file and the element / feature at fault
# ----------------------------------------------------------------------------------------------------


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_xml_malformed(tmp_path):
    p = _write(tmp_path, "bad.xml", "<ASAP_Annotations><Annotations><Annotation></Annotations>")
    with pytest.raises(InputError, match=r"bad\.xml: malformed XML.*line 1"):
        read_asap_xml(p)


def test_xml_doctype_refused(tmp_path):
    p = _write(tmp_path, "dtd.xml", '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n'
               "<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    with pytest.raises(InputError, match=r"dtd\.xml: XML with a DTD"):
        read_asap_xml(p)


def test_xml_wrong_root_and_no_annotations_block(tmp_path):
    with pytest.raises(InputError, match=r"other\.xml: root element is <Annotations>"):
        read_asap_xml(_write(tmp_path, "other.xml", "<Annotations/>"))
    with pytest.raises(InputError, match=r"empty\.xml: no <Annotations> element"):
        read_asap_xml(_write(tmp_path, "empty.xml", "<ASAP_Annotations/>"))


def test_xml_too_few_points_names_the_annotation(tmp_path):
    p = _write(tmp_path, "few.xml", _asap_xml([("ok", "Polygon", "Tumor", LESION),
                                               ("Annotation 7", "Polygon", "Tumor", [(0, 0), (5, 5)])]))
    with pytest.raises(InputError, match=r"few\.xml: annotation 1 \(Name='Annotation 7'\).*at least 3 points, got 2"):
        read_asap_xml(p)


def test_xml_repeated_points_count_as_too_few(tmp_path):
    p = _write(tmp_path, "dup.xml", _asap_xml([("d", "Polygon", "Tumor", [(0, 0), (5, 5), (5, 5), (0, 0)])]))
    with pytest.raises(InputError, match=r"dup\.xml: annotation 0 \(Name='d'\).*3 distinct points"):
        read_asap_xml(p)


def test_xml_bad_number_names_the_coordinate(tmp_path):
    p = _write(tmp_path, "num.xml", _asap_xml([("a", "Polygon", "Tumor", [(0, 0), (10, "ten"), (0, 10)])]))
    with pytest.raises(InputError, match=r"num\.xml: annotation 0 \(Name='a'\), coordinate 1: Y='ten' is not a number"):
        read_asap_xml(p)
    p = _write(tmp_path, "noy.xml", _asap_xml([("a", "Polygon", "Tumor", LESION)]).replace(' Y="680" />', " />", 1))
    with pytest.raises(InputError, match=r"noy\.xml: annotation 0 \(Name='a'\), coordinate 2: Y is missing"):
        read_asap_xml(p)
    p = _write(tmp_path, "nan.xml", _asap_xml([("a", "Polygon", "Tumor", [(0, 0), ("nan", 1), (0, 10)])]))
    with pytest.raises(InputError, match=r"nan\.xml: annotation 0 \(Name='a'\), coordinate 1: X='nan' is not finite"):
        read_asap_xml(p)


def test_xml_without_polygons(tmp_path):
    p = _write(tmp_path, "dots.xml", _asap_xml([("d", "Dot", "None", [(1, 1)])]))
    with pytest.raises(InputError, match=r"dots\.xml: no polygon annotations.*Dot"):
        read_asap_xml(p)
    p = _write(tmp_path, "other_group.xml", _asap_xml([("a", "Polygon", "Stroma", LESION)]))
    with pytest.raises(InputError, match=r"other_group\.xml: no polygon annotations in groups \['Tumor'\]"):
        read_asap_xml(p, groups=["Tumor"])


def test_geojson_malformed_json(tmp_path):
    with pytest.raises(InputError, match=r"broken\.geojson: malformed JSON.*line 1"):
        read_geojson_annotations(_write(tmp_path, "broken.geojson", '{"type": "FeatureCollection", "features": ['))


def test_geojson_feature_errors_name_the_feature(tmp_path):
    ok = _geojson_feature([_closed(LESION)])
    cases = {
        "nogeom.geojson": ([ok, {"type": "Feature", "properties": {}}], r"feature 1: no 'geometry'"),
        "short.geojson": ([ok, ok, _geojson_feature([[[0, 0], [1, 1], [0, 0]]])],
                          r"feature 2, outer ring: a polygon needs at least 3 distinct points"),
        "hole.geojson": ([_geojson_feature([_closed(LESION), [[1, 1], [2, 2]]])],
                         r"feature 0, ring 1: a polygon needs at least 3 distinct points"),
        "ragged.geojson": ([_geojson_feature([[[0, 0], [1], [2, 2]]])], r"feature 0, outer ring: coordinates are not"),
        "strings.geojson": ([_geojson_feature([[[0, 0], ["a", 1], [2, 2]]])], r"feature 0, outer ring: coordinates are not"),
        "notfeature.geojson": ([ok, 3], r"feature 1: expected a GeoJSON Feature object, got int"),
        "nocoords.geojson": ([{"type": "Feature", "geometry": {"type": "Polygon"}, "properties": {}}],
                             r"feature 0: Polygon geometry without 'coordinates'"),
    }
    for name, (features, pattern) in cases.items():
        p = _write(tmp_path, name, json.dumps({"type": "FeatureCollection", "features": features}))
        with pytest.raises(InputError, match=name.replace(".", r"\.") + ": " + pattern):
            read_geojson_annotations(p)


def test_geojson_without_polygons(tmp_path):
    p = _write(tmp_path, "points.geojson", json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}}]}))
    with pytest.raises(InputError, match=r"points\.geojson: no Polygon/MultiPolygon features \(1 features read\)"):
        read_geojson_annotations(p)
    p = _write(tmp_path, "wrong.geojson", json.dumps({"type": "Topology"}))
    with pytest.raises(InputError, match=r"wrong\.geojson: expected a GeoJSON FeatureCollection.*'Topology'"):
        read_geojson_annotations(p)


def test_read_annotations_dispatch_errors(tmp_path):
    with pytest.raises(InputError, match=r"ann\.txt: unknown annotation file type '\.txt'"):
        read_annotations(tmp_path / "ann.txt")
    with pytest.raises(MissingFileError, match=r"gone\.xml: annotation file does not exist"):
        read_annotations(tmp_path / "gone.xml")
    with pytest.raises(MissingFileError, match=r"gone\.geojson: annotation file does not exist"):
        read_annotations(tmp_path / "gone.geojson")
