"""``wsigraph view`` (wsigraph.viewer) in a real headless Chromium: tiles of the real slides load at two
zoom levels, the score overlay changes the pixels where the scores are high, a synthetic cohort without
images shows its overlays, and requests for anything outside the listed slides are refused."""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from wsigraph.data.scores import write_scores
from wsigraph.errors import InputError
from wsigraph.viewer.catalog import build_catalog
from wsigraph.viewer.server import ViewerServer, check_host
from wsigraph.viewer.tiles import TileGeometry, TileStore

CMU = "CMU-1-Small-Region"
DAPI = "hamamatsu-test3-DAPI-2-387"


def _chromium() -> str | None:
    return os.environ.get("WSIGRAPH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright: Debian's chromium (Playwright cannot download its own here)."""
    required = os.environ.get("WSIGRAPH_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install playwright): the browser tests need it")
    exe = _chromium()
    if exe is None:
        if required:
            pytest.fail("WSIGRAPH_REQUIRE_BROWSER=1 but no chromium binary (set WSIGRAPH_CHROMIUM)")
        pytest.skip("no chromium binary found (apt-get install chromium, or set WSIGRAPH_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def slide_cohort(shared_data, tmp_path_factory):
    """The real slides, and scores for CMU: 1 on the left half of its patches, NaN (not drawn) elsewhere."""
    from wsigraph.slide import open_slide, tile_slide

    root = tmp_path_factory.mktemp("view")
    slides = root / "slides"
    slides.mkdir()
    for name in (f"{CMU}.svs", f"{DAPI}.ndpi"):
        (slides / name).symlink_to(shared_data / "slides" / name)
    with open_slide(slides / f"{CMU}.svs") as s:
        coords, attrs = tile_slide(s, target_mpp=1.0, patch_size=112)
        width = s.dimensions[0]
    scores = root / "scores"
    scores.mkdir()
    values = np.where(coords[:, 0] < np.median(coords[:, 0]), 1.0, np.nan).astype(np.float32)
    write_scores(scores / f"{CMU}.h5", values, coords, patch_size_level0=attrs["patch_size_level0"],
                 attrs={"slide_file": f"{CMU}.svs"})
    return root, coords, attrs["patch_size_level0"], width


def _serve(catalog):
    return ViewerServer(catalog, port=0).start()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _wait_for_tiles(page, seen, zoom, timeout_ms=15000):
    waited = 0
    while not any(z == zoom and status == 200 for z, status in seen) and waited < timeout_ms:
        page.wait_for_timeout(250)
        waited += 250
    return [s for z, s in seen if z == zoom]


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    seen: list[tuple[int, int]] = []

    def on_response(r):
        if "/tiles/" in r.url:
            seen.append((int(r.url.split("/tiles/")[1].split("/")[1]), r.status))
    page.on("response", on_response)
    page.goto(url)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=20000)
    return page, seen


def test_tile_geometry_and_store(shared_data):
    g = TileGeometry.of(2220, 2967)  # CMU: deep zoom max level 12, zoom 0 = level 8
    assert (g.zoom_levels, g.first_level, g.world) == (4, 8, 4096)
    store = TileStore()
    try:
        path = shared_data / "slides" / f"{CMU}.svs"
        assert store.geometry(path) == g
        top = store.tile_jpeg(path, 0, 0, 0)
        assert top[:2] == b"\xff\xd8"  # a JPEG
        assert store.tile_jpeg(path, 4, 8, 11) is not None and store.tile_jpeg(path, 4, 9, 0) is None
        assert store.tile_jpeg(path, 5, 0, 0) is None and store.tile_jpeg(path, -1, 0, 0) is None
    finally:
        store.close()


def test_tiles_load_at_two_zoom_levels_and_scores_change_the_pixels(browser, slide_cohort):
    root, coords, step, width = slide_cohort
    catalog = build_catalog(slides=root / "slides", scores=root / "scores")
    assert sorted(catalog) == [CMU, DAPI] and catalog[CMU].image.name == f"{CMU}.svs"
    server = _serve(catalog)
    try:
        page, seen = _open(browser, server.url + f"slide/{CMU}")
        first = _wait_for_tiles(page, seen, 2)  # the whole slide in a 960 x 720 view: zoom 2
        assert 200 in first, seen
        plot = page.locator(".bk-Canvas").first
        plot.wait_for()
        page.wait_for_timeout(800)
        on = np.asarray(_png(plot.screenshot()), dtype=np.int16)
        # switch the score layer off: the page's checkbox for "scores"
        page.get_by_text("scores", exact=True).click()
        page.wait_for_timeout(800)
        off = np.asarray(_png(plot.screenshot()), dtype=np.int16)
        diff = np.abs(on - off).sum(axis=2)
        # sample the screenshots at the centres of the scored patches and of the unscored (NaN) ones
        sx, sy = _screen_xy(page, coords[:, 0] + step / 2, -(coords[:, 1] + step / 2))
        inside = (sx >= 0) & (sx < diff.shape[1]) & (sy >= 0) & (sy < diff.shape[0])
        scored = coords[:, 0] < np.median(coords[:, 0])
        high = diff[sy[inside & scored], sx[inside & scored]].mean()
        unscored = diff[sy[inside & ~scored], sx[inside & ~scored]].mean()
        assert (inside & scored).sum() > 10 and high > 30 and unscored < 3, (high, unscored)
        # zoom in to 1/16 of the width: tiles of a deeper zoom level are asked for and served
        page.evaluate("""() => { const p = Bokeh.documents[0].get_model_by_name('slide');
                                 p.x_range.setv({start: 200, end: 200 + %d}); p.y_range.setv({start: -600, end: -600 + %d}); }"""
                      % (width // 16, width // 16))
        deeper = _wait_for_tiles(page, seen, 4) + _wait_for_tiles(page, seen, 5, 0)
        assert 200 in deeper, seen
        page.close()
        # the second real slide (7-level NDPI) serves tiles too
        page, seen = _open(browser, server.url + f"slide/{DAPI}")
        assert 200 in _wait_for_tiles(page, seen, 2) + _wait_for_tiles(page, seen, 3, 0), seen
        page.close()
    finally:
        server.stop()


def _png(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def _screen_xy(page, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canvas pixels of data points (level-0 x, y = -row), from the plot's ranges and frame box."""
    xs, xe, ys, ye, bx, by, bw, bh = page.evaluate("""() => {
        const p = Bokeh.documents[0].get_model_by_name('slide'); const b = Bokeh.index.get_one(p).frame.bbox;
        return [p.x_range.start, p.x_range.end, p.y_range.start, p.y_range.end, b.x, b.y, b.width, b.height]; }""")
    px = bx + (np.asarray(x) - xs) / (xe - xs) * bw
    py = by + (ye - np.asarray(y)) / (ye - ys) * bh
    return np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)


def test_synthetic_cohort_without_images_shows_its_overlays(browser, tmp_path):
    from wsigraph.data.synthetic import make_synthetic_cohort

    cohort = make_synthetic_cohort(tmp_path / "synth", n_slides=2, dim=4, grid=(12, 16), seed=0)
    catalog = build_catalog(features=tmp_path / "synth" / "features")
    sid = cohort.slide_ids[0]
    assert catalog[sid].image is None and catalog[sid].features is not None
    server = _serve(catalog)
    try:
        status, body = _get(server.url)
        assert status == 200 and sid in body.decode()
        page, seen = _open(browser, server.url + f"slide/{sid}")
        page.locator(".bk-Canvas").first.wait_for()
        assert not seen  # no image: no tile requests
        shown = page.evaluate("() => Bokeh.documents[0].get_model_by_name('slide').renderers.length")
        assert shown >= 2  # canvas + graph edges layer
        page.close()
    finally:
        server.stop()


def test_paths_outside_the_listed_slides_are_refused(slide_cohort, tmp_path):
    root, *_ = slide_cohort
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    server = _serve(build_catalog(slides=root / "slides", scores=root / "scores"))
    try:
        assert _get(server.url + f"slide/{CMU}")[0] == 200
        assert _get(server.url + "static/js/bokeh.min.js")[0] == 200
        for path in ("slide/..%2F..%2Fetc%2Fpasswd", "slide/%2Fetc%2Fpasswd", "slide/unknown",
                     f"tiles/..%2F{CMU}/0/0/0.jpeg", "tiles/unknown/0/0/0.jpeg", f"tiles/{CMU}/0/0/0.png",
                     "static/..%2F..%2F..%2Fsecret.txt", "static/%2Fetc%2Fpasswd", "static/../../etc/passwd",
                     f"..%2F{tmp_path.name}%2Fsecret.txt", "etc/passwd"):
            status, body = _get(server.url + path)
            assert status == 404 and b"do not serve" not in body and b"root:" not in body, path
    finally:
        server.stop()
    with pytest.raises(InputError, match="--allow-remote"):
        check_host("0.0.0.0", allow_remote=False)
    assert check_host("0.0.0.0", allow_remote=True) == "0.0.0.0"


def test_catalog_pairs_predictions_annotations_and_masks(slide_cohort, tmp_path):
    root, *_ = slide_cohort
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / f"{CMU}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [600, 100], [600, 600], [100, 100]]]}}]}))
    preds = tmp_path / "predictions.csv"
    preds.write_text(f"slide_id,label,pred,prob_normal,prob_tumor\n{CMU},tumor,tumor,0.1,0.9\n")
    catalog = build_catalog(slides=root / "slides", scores=root / "scores", annotations=ann, predictions=preds)
    e = catalog[CMU]
    assert e.annotation == ann / f"{CMU}.geojson" and (e.label, e.pred, e.prob) == ("tumor", "tumor", 0.9)
    server = _serve(catalog)
    try:
        status, body = _get(server.url + f"slide/{CMU}")
        assert status == 200 and b"predicted tumor (p = 0.90)" in body and b"annotations" in body
        status, body = _get(server.url)
        assert b"tumor" in body and b"annotations" in body
    finally:
        server.stop()
    with pytest.raises(InputError, match="nothing to show"):
        build_catalog(features=tmp_path / "ann")


def test_catalog_takes_true_labels_from_a_manifest(tmp_path):
    from wsigraph.data.synthetic import make_synthetic_cohort

    cohort = make_synthetic_cohort(tmp_path / "synth", n_slides=4, dim=4, grid=(8, 8), seed=0)
    a, b = cohort.slide_ids[:2]
    preds = tmp_path / "predictions.csv"
    preds.write_text(f"slide_id,pred,prob_normal,prob_tumor\n{a},tumor,0.2,0.8\n")  # predict without labels
    catalog = build_catalog(features=tmp_path / "synth" / "features", predictions=preds,
                            manifest=tmp_path / "synth" / "manifest.csv")
    truth = dict(zip(cohort.slide_ids, cohort.table["label"]))
    assert [catalog[s].label for s in cohort.slide_ids] == [truth[s] for s in cohort.slide_ids]
    assert catalog[a].pred == "tumor" and catalog[b].pred is None
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,diagnosis\nx,tumor\n")
    with pytest.raises(InputError, match=r"bad\.csv: manifest has no column slide_id, label"):
        build_catalog(features=tmp_path / "synth" / "features", manifest=bad)
    with pytest.raises(InputError, match="manifest not found"):
        build_catalog(features=tmp_path / "synth" / "features", manifest=tmp_path / "nope.csv")


def test_stamp_micrometre_coords_are_placed_in_level0_pixels_without_a_browser(shared_data, tmp_path):
    """STAMP coords (micrometres) drawn over a slide are scaled with the slide's level-0 µm/px, so they line up
    with its tiles; where that resolution is unknown the page is refused naming the file, not drawn misplaced."""
    import h5py

    from wsigraph.viewer.catalog import SlideEntry
    from wsigraph.viewer.page import load_slide_data

    size_um, size_px = 112.0, 224  # tiles of 224 px at 0.5 µm/px
    jj, ii = np.mgrid[0:4, 0:3]
    lattice = np.stack([ii.ravel(), jj.ravel()], axis=1)
    feats = tmp_path / f"{CMU}.h5"
    with h5py.File(feats, "w") as f:
        f["feats"] = np.zeros((len(lattice), 4), np.float32)
        f["coords"] = (lattice * size_um + 224.0).astype(np.float64)  # µm from the slide's corner
        f.attrs.update({"unit": "um", "tile_size_um": size_um, "tile_size_px": size_px})
    slide = shared_data / "slides" / f"{CMU}.svs"  # level 0: 0.499 µm/px
    data = load_slide_data(SlideEntry(CMU, image=slide, features=feats), TileGeometry.of(2220, 2967))
    level0_um = lattice * size_um + 224.0
    np.testing.assert_allclose(data.coords, level0_um / 0.499, atol=1.0)  # µm / (µm/px) = level-0 px
    assert data.step == pytest.approx(size_um / 0.499)
    # an explicit level-0 resolution wins over the image's
    given = load_slide_data(SlideEntry(CMU, image=slide, features=feats), None, level0_mpp=0.25)
    np.testing.assert_allclose(given.coords, level0_um / 0.25, atol=1.0)
    # a score file that carries the coords (predict's, from a STAMP feature file) is converted the same way
    scores = tmp_path / "scores.h5"
    write_scores(scores, np.arange(len(lattice), dtype=np.float32), (level0_um / (size_um / size_px)).round(),
                 patch_size_level0=size_px, attrs={"coords_mpp": size_um / size_px, "coords_unit": "pixels at 0.5"})
    from_scores = load_slide_data(SlideEntry(CMU, image=slide, scores=scores), None)
    np.testing.assert_allclose(from_scores.coords, level0_um / 0.499, atol=1.0)
    # unknown level-0 resolution: no image, or an image that records none
    with pytest.raises(InputError, match=rf"{CMU}\.h5: coordinates are in .*micrometres.*no slide image"):
        load_slide_data(SlideEntry(CMU, features=feats), None)
    plain = shared_data / "images" / "skimage-ihc.png"
    with pytest.raises(InputError, match=r"skimage-ihc\.png records no resolution"):
        load_slide_data(SlideEntry(CMU, image=plain, features=feats), None)
    # level-0 coords (every other layout) are left as they are
    level0 = tmp_path / "level0.h5"
    write_scores(level0, np.ones(len(lattice), np.float32), lattice * 224, patch_size_level0=224)
    same = load_slide_data(SlideEntry(CMU, image=slide, scores=level0), None)
    np.testing.assert_array_equal(same.coords, lattice * 224)
    assert same.step == 224.0
