"""Heatmaps, GeoJSON for QuPath, top-k galleries, synthetic slide images, score files, `wsigraph heatmap`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wsigraph.cli import main
from wsigraph.errors import InputError
from wsigraph.slide import open_slide, tile_slide, write_coords
from wsigraph.data.scores import load_scores, write_scores
from wsigraph.viz import (blur_on_lattice, build_lattice, draw_patches, normalize_scores, read_geojson_patches,
                          render_heatmap, render_synthetic_slide, top_k_indices, topk_gallery, write_geojson)

STEP = 224


def _lattice_coords(nx=12, ny=9, step=STEP, drop=((3, 4), (0, 0))):
    xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
    cells = np.stack([xx.ravel(), yy.ravel()], axis=1)
    keep = ~np.isin(cells[:, 0] * 1000 + cells[:, 1], [x * 1000 + y for x, y in drop])
    return (cells[keep] * step).astype(np.int64)


@pytest.fixture(scope="module")
def cmu(shared_data):
    s = open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs")
    coords, attrs = tile_slide(s)
    yield s, coords, attrs
    s.close()


def test_heatmap_png_colours_follow_scores(tmp_path):
    coords = _lattice_coords()
    scores = coords[:, 0].astype(float)  # increases left to right
    W, H = 12 * STEP, 9 * STEP
    out = tmp_path / "hm.png"
    img = render_heatmap(coords, scores, STEP, level0_size=(W, H), out_path=out, cmap="jet", alpha=1.0,
                         max_size=240, title="test")
    assert img.size == (240, 180)
    a = np.asarray(img).astype(int)
    cell = 240 / 12
    lo = a[int(4.5 * cell), int(0.5 * cell)]  # leftmost column: lowest score -> blue end of jet
    hi = a[int(4.5 * cell), int(11.5 * cell)]  # rightmost: highest -> red end
    assert lo[2] > lo[0] + 50 and hi[0] > hi[2] + 50
    assert (a[int(4.5 * cell), int(3.5 * cell)] == 255).all()  # the dropped cell (3, 4) stays background
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 240  # room for the colour bar
        px = np.asarray(png.convert("RGB"))
    assert px.reshape(-1, 3).std(axis=0).max() > 10
    assert [p.name for p in tmp_path.iterdir()] == ["hm.png"]  # written atomically, no temp file left


def test_heatmap_over_a_real_thumbnail(cmu, tmp_path):
    s, coords, attrs = cmu
    scores = np.linspace(0, 1, len(coords))
    thumb = s.thumbnail(256)
    img = render_heatmap(coords, scores, attrs["patch_size_level0"], background=thumb, level0_size=s.dimensions,
                         out_path=tmp_path / "cmu.png", blur=1.0, normalize="percentile")
    assert img.size == thumb.size
    diff = np.abs(np.asarray(img).astype(int) - np.asarray(thumb).astype(int)).sum(axis=2)
    assert (diff > 0).mean() > 0.1  # the patches are drawn...
    assert diff[0:5, 0:5].max() == 0  # ...and the top-left corner (glass, no patch) is untouched
    with pytest.raises(InputError, match="level0_size"):
        render_heatmap(coords, scores, 224, background=thumb)


def test_heatmap_bad_input():
    coords = _lattice_coords()
    with pytest.raises(InputError, match="3 scores for 106 patches"):
        render_heatmap(coords, np.ones(3), STEP)
    with pytest.raises(InputError, match="every score is NaN"):
        render_heatmap(coords, np.full(len(coords), np.nan), STEP)
    with pytest.raises(InputError, match="unknown colour map"):
        render_heatmap(coords, np.ones(len(coords)), STEP, cmap="nope")


def test_blur_on_lattice_keeps_holes_and_constants():
    grid = np.where(np.indices((20, 20)).sum(axis=0) % 2 == 0, 1.0, 0.0)  # checkerboard
    grid[5, 5] = np.nan
    out = blur_on_lattice(grid, 1.5)
    assert np.isnan(out[5, 5]) and np.isfinite(out[~np.isnan(grid)]).all()
    assert np.nanstd(out) < 0.2 * np.nanstd(grid)
    const = np.full((6, 7), 3.0)
    const[0, :3] = np.nan
    np.testing.assert_allclose(blur_on_lattice(const, 2.0)[~np.isnan(const)], 3.0)
    assert blur_on_lattice(grid, 0) is grid


def test_normalize_scores():
    s = np.array([5.0, 1.0, np.nan, 3.0, 3.0])
    p = normalize_scores(s, "percentile")
    np.testing.assert_allclose(p[[1, 3, 4, 0]], [0, 0.5, 0.5, 1.0])
    assert np.isnan(p[2])
    np.testing.assert_allclose(normalize_scores(s, "minmax")[[0, 1, 3]], [1, 0, 0.5])
    with pytest.raises(InputError, match="normalize"):
        normalize_scores(s, "zscore")


def test_lattice_snaps_offset_grids():
    coords = _lattice_coords(4, 3) + np.array([17, 5])  # a grid offset as a whole (CLAM contour grids)
    lat = build_lattice(coords, STEP)
    assert lat.shape == (3, 4) and lat.origin == (17.0, 5.0)
    assert np.array_equal(lat.index * STEP + np.array([17, 5]), coords)


def test_geojson_for_qupath(tmp_path):
    coords = _lattice_coords(5, 4)
    n = len(coords)
    scores = np.linspace(-1, 1, n)
    scores[3] = np.nan
    labels = np.where(np.arange(n) % 2 == 0, "Tumor", "Stroma")
    path = write_geojson(tmp_path / "s.geojson", coords, scores, STEP, properties={"tissue": np.full(n, 0.75)},
                         classification=labels)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == n
    polys = np.array([f["geometry"]["coordinates"][0] for f in data["features"]])  # (n, 5, 2)
    x, y = coords[:, 0, None], coords[:, 1, None]
    np.testing.assert_array_equal(polys[:, :, 0], np.hstack([x, x + STEP, x + STEP, x, x]))
    np.testing.assert_array_equal(polys[:, :, 1], np.hstack([y, y, y + STEP, y + STEP, y]))
    props = [f["properties"] for f in data["features"]]
    assert {p["objectType"] for p in props} == {"detection"}
    assert "score" not in props[3]["measurements"] and props[3]["measurements"]["tissue"] == 0.75
    got = np.array([p["measurements"].get("score", np.nan) for p in props])
    np.testing.assert_allclose(got, scores, rtol=1e-5, equal_nan=True)
    assert [p["classification"]["name"] for p in props] == labels.tolist()
    assert props[0]["classification"]["color"] != props[1]["classification"]["color"]
    back, cols = read_geojson_patches(path)
    np.testing.assert_array_equal(back, coords)
    with pytest.raises(InputError, match=f"s2.geojson.*2 values for {n} patches"):
        write_geojson(tmp_path / "s2.geojson", coords, scores[:2], STEP)
    with pytest.raises(InputError, match="object_type"):
        write_geojson(tmp_path / "s3.geojson", coords, scores, STEP, object_type="cell")


def test_topk_gallery(cmu, tmp_path):
    s, coords, attrs = cmu
    scores = np.arange(len(coords), dtype=float)
    idx = top_k_indices(scores, 4)
    assert idx.tolist() == list(range(len(coords) - 1, len(coords) - 5, -1))
    assert top_k_indices(scores, 2, largest=False).tolist() == [0, 1]
    img = topk_gallery(s, coords, scores, attrs["patch_size_level0"], k=4, out_path=tmp_path / "top.png",
                       patch_px=64)
    assert img.size == (2 * (64 + 4) + 4, 2 * (64 + 14 + 4) + 4)
    first = np.asarray(img)[4:68, 4:68]
    expected = np.asarray(s.read_patch(coords[idx[0]], attrs["patch_size_level0"], 64))
    np.testing.assert_array_equal(first, expected)  # the best patch comes first, read from the slide
    with Image.open(tmp_path / "top.png") as png:
        assert png.size == img.size
    with pytest.raises(InputError, match="every score is NaN"):
        topk_gallery(s, coords, np.full(len(coords), np.nan), 224, k=3)
    with pytest.raises(InputError, match="k must be at least 1"):
        topk_gallery(s, coords, scores, 224, k=0)


def test_synthetic_slide_and_patch_outline():
    coords = _lattice_coords()
    labels = (coords[:, 0] >= 6 * STEP).astype(int)  # right half "tumour"
    img = render_synthetic_slide(coords, labels, STEP, level0_size=(12 * STEP, 9 * STEP), max_size=240)
    assert img.size == (240, 180)
    a = np.asarray(img).astype(float)
    cell = 20
    left = a[4 * cell:5 * cell, 1 * cell:2 * cell].mean(axis=(0, 1))
    right = a[4 * cell:5 * cell, 10 * cell:11 * cell].mean(axis=(0, 1))
    assert right.sum() < left.sum() - 60  # tumour drawn darker (purple) than stroma (pink)
    hole = a[4 * cell + 8, 3 * cell + 8]
    assert hole.min() > 200  # the missing patch is glass
    out = np.asarray(draw_patches(img, coords[:5], STEP, (12 * STEP, 9 * STEP))).astype(int)
    changed = np.abs(out - a.astype(int)).sum(axis=2) > 0
    assert changed[:cell, cell:6 * cell].all() and not changed[2 * cell:, :].any()


# ------------------------------------------------------------------------------------------------ score files


def test_load_scores_formats(tmp_path):
    coords = _lattice_coords(3, 2)
    n = len(coords)
    two = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(float)
    np.save(tmp_path / "a.npy", two)
    with pytest.raises(InputError, match="a.npy: scores have 2 columns"):
        load_scores(tmp_path / "a.npy")
    np.testing.assert_array_equal(load_scores(tmp_path / "a.npy", column="1").scores, -np.arange(n))
    write_scores(tmp_path / "b.scores.h5", two, coords, patch_size_level0=STEP, class_names=["normal", "tumor"])
    ps = load_scores(tmp_path / "b.scores.h5", column="tumor")
    np.testing.assert_array_equal(ps.scores, -np.arange(n))
    assert np.array_equal(ps.coords, coords) and ps.attrs["patch_size_level0"] == STEP and "tumor" in ps.name
    (tmp_path / "c.csv").write_text("x,y,attention\n" + "".join(f"{x},{y},{i}\n" for i, (x, y) in enumerate(coords)))
    ps = load_scores(tmp_path / "c.csv")
    assert np.array_equal(ps.coords, coords) and ps.name == "attention"
    import torch

    torch.save(torch.arange(n, dtype=torch.float32), tmp_path / "d.pt")
    np.testing.assert_array_equal(load_scores(tmp_path / "d.pt").scores, np.arange(n))
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(InputError, match="e.json: unknown score file type"):
        load_scores(tmp_path / "e.json")


def test_cli_heatmap(cmu, tmp_path, capsys):
    s, coords, attrs = cmu
    coords_h5 = write_coords(tmp_path / "CMU-1-Small-Region.h5", coords, attrs)
    np.save(tmp_path / "CMU-1-Small-Region.scores.npy", np.linspace(0, 1, len(coords)))
    out = tmp_path / "out"
    assert main(["heatmap", "--scores", str(tmp_path / "CMU-1-Small-Region.scores.npy"), "--features",
                 str(coords_h5), "--slide", str(s.path), "--out", str(out), "--top-k", "4", "--blur", "1"]) == 0
    for name in ("CMU-1-Small-Region.heatmap.png", "CMU-1-Small-Region.geojson", "CMU-1-Small-Region.topk.png"):
        assert (out / name).stat().st_size > 0
    assert len(json.loads((out / "CMU-1-Small-Region.geojson").read_text())["features"]) == len(coords)
    # no slide: a synthetic background drawn from the patches
    assert main(["heatmap", "--scores", str(tmp_path / "CMU-1-Small-Region.scores.npy"), "--features",
                 str(coords_h5), "--out", str(tmp_path / "out2"), "--no-geojson"]) == 0
    with Image.open(tmp_path / "out2" / "CMU-1-Small-Region.heatmap.png") as im:
        assert np.asarray(im.convert("RGB")).std() > 10
    np.save(tmp_path / "short.npy", np.ones(3))
    assert main(["heatmap", "--scores", str(tmp_path / "short.npy"), "--features", str(coords_h5),
                 "--out", str(out)]) == 2
    assert f"3 scores but {coords_h5} has {len(coords)} patches" in capsys.readouterr().err
    assert main(["heatmap", "--scores", str(tmp_path / "short.npy"), "--out", str(out)]) == 2
    assert "has no coords" in capsys.readouterr().err


def test_tissue_outlines_for_qupath(tmp_path):
    from wsigraph.viz.geojson import tissue_contours, write_tissue_geojson

    mask = np.zeros((40, 60), bool)
    mask[5:25, 5:25] = True      # a piece with a hole
    mask[12:18, 12:18] = False
    mask[30:36, 40:56] = True    # a second piece
    mask[0, 59] = True           # one pixel: too small to outline
    polys = tissue_contours(mask, (10.0, 10.0))
    assert len(polys) == 2 and sorted(len(p) for p in polys) == [1, 2]  # outer rings, one with its hole
    with_hole = next(p for p in polys if len(p) == 2)
    outer = np.asarray(with_hole[0])
    assert outer[0].tolist() == outer[-1].tolist()  # closed ring
    # boundary pixel centres, scaled to level-0 px: x and y from 5.5 to 24.5 mask px
    assert outer.min(axis=0).tolist() == [55.0, 55.0] and outer.max(axis=0).tolist() == [245.0, 245.0]
    path = write_tissue_geojson(tmp_path / "t.geojson", mask, (10.0, 10.0), mpp=0.5)
    fc = json.loads(path.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    f = next(f for f in fc["features"] if len(f["geometry"]["coordinates"]) == 2)
    assert f["properties"]["objectType"] == "annotation" and f["properties"]["classification"]["name"] == "Tissue"
    # outer ring: a 19 x 19 mask-px square through the boundary pixels' centres; the hole's ring runs through
    # the centres of the tissue pixels around it (7 x 7) with its 4 corners cut by a diagonal (8-connectivity);
    # x 10 px per mask px, x 0.25 um^2 per level-0 px^2
    assert f["properties"]["measurements"]["area_um2"] == pytest.approx((190 ** 2 - (70 ** 2 - 4 * 10 ** 2 / 2)) * 0.25)
    assert tissue_contours(np.zeros((4, 4), bool), (1.0, 1.0)) == []


def test_segment_writes_tissue_outlines(shared_data, tmp_path):
    from wsigraph.cli import main as cli

    slide = shared_data / "slides" / "CMU-1-Small-Region.svs"
    assert cli(["segment", str(slide), "--out", str(tmp_path / "seg"), "--no-progress"]) == 0
    fc = json.loads((tmp_path / "seg" / "masks" / "CMU-1-Small-Region.geojson").read_text())
    assert fc["features"] and all(f["geometry"]["type"] == "Polygon" for f in fc["features"])
    pts = np.concatenate([np.asarray(r) for f in fc["features"] for r in f["geometry"]["coordinates"]])
    assert pts.min() >= 0 and pts[:, 0].max() <= 2220 and pts[:, 1].max() <= 2967  # level-0 px of the slide
    rec = json.loads((tmp_path / "seg" / "masks" / "CMU-1-Small-Region.json").read_text())
    area = sum(f["properties"]["measurements"]["area_um2"] for f in fc["features"]) / 1e6
    assert area == pytest.approx(rec["tissue_area_mm2"], rel=0.15)  # outlines enclose the mask's tissue
