"""Tissue masks and patch grids on the real slides and on images made in the test."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from wsigraph.data.features import is_complete_feature_file, read_features
from wsigraph.errors import InputError
from wsigraph.slide import (TissueMask, open_slide, otsu_threshold, segment_tissue, tile_slide,
                            tissue_fraction_grid, tissue_mask_from_rgb, write_coords)
from wsigraph.slide.tissue import fill_small_holes, remove_small_objects

CMU = "CMU-1-Small-Region.svs"
TCGA = "TCGA-CR-7395-01A-01-TS1.svs"
DAPI = "hamamatsu-test3-DAPI-2-387.ndpi"
TRITC = "hamamatsu-test3-TRITC-2-560.ndpi"
TCGA_MPP = 0.25  # the file has none; any plausible override works for these tests


@pytest.fixture(scope="module")
def slides(shared_data):
    d = shared_data / "slides"
    out = {CMU: open_slide(d / CMU), TCGA: open_slide(d / TCGA, mpp=TCGA_MPP), DAPI: open_slide(d / DAPI),
           TRITC: open_slide(d / TRITC)}
    yield out
    for s in out.values():
        s.close()


@pytest.fixture(scope="module")
def masks(slides):
    return {name: segment_tissue(s) for name, s in slides.items()}


def _blank_png(path, size=(400, 300)):
    Image.new("RGB", size, (255, 255, 255)).save(path)
    return path


def _pink_blobs(w=400, h=300, blobs=((40, 30, 120, 110), (250, 180, 370, 280))):
    """White image with pink 'tissue' rectangles (x0, y0, x1, y1) and a little noise."""
    rng = np.random.default_rng(0)
    a = np.full((h, w, 3), 245, np.float64) + rng.normal(0, 2, (h, w, 3))
    for x0, y0, x1, y1 in blobs:
        a[y0:y1, x0:x1] = (220, 120, 170)
    return np.clip(a, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ real slides


def test_tissue_fraction_of_real_slides(masks):
    # Ranges from looking at the overlays (tissue outlined correctly in each):
    # CMU: a strip of skin over white glass, ~36% of the area; TCGA: one section filling ~64% of the frame;
    # the two fluorescence scans: tissue fills the frame except black corners (~81-87%).
    assert masks[CMU].mode == "brightfield" and 0.25 <= masks[CMU].tissue_fraction <= 0.50
    assert masks[TCGA].mode == "brightfield" and 0.50 <= masks[TCGA].tissue_fraction <= 0.80
    for name in (DAPI, TRITC):
        assert masks[name].mode == "fluorescence"  # auto: dark background
        assert 0.65 <= masks[name].tissue_fraction <= 0.95
    # DAPI and TRITC are two channels of one section: their masks must agree
    a, b = masks[DAPI].mask, masks[TRITC].mask
    assert a.shape == b.shape
    assert (a & b).sum() / (a | b).sum() > 0.8


def test_mask_geometry_and_resolution_independence(slides, masks):
    m = masks[CMU]
    W, H = slides[CMU].dimensions
    assert m.level0_size == (W, H)
    assert m.mpp == pytest.approx(8.0, rel=0.02)  # default mask resolution
    assert m.downsample == pytest.approx(8.0 / 0.499, rel=0.02)
    # sizes and areas are in micrometres, so a mask at twice the resolution finds the same tissue
    fine = segment_tissue(slides[CMU], mask_mpp=4.0)
    assert fine.mask.shape[0] == pytest.approx(2 * m.mask.shape[0], abs=1)
    assert abs(fine.tissue_fraction - m.tissue_fraction) < 0.03


def test_mode_can_be_forced(slides, masks):
    forced = segment_tissue(slides[TRITC], mode="brightfield")
    assert forced.mode == "brightfield"
    # saturation of red-on-black finds only the brightest spots: far less than the section
    assert forced.tissue_fraction < 0.5 * masks[TRITC].tissue_fraction


def test_mask_and_overlay_pngs(slides, masks, tmp_path):
    m = masks[TCGA]
    thumb = slides[TCGA].thumbnail(300)
    m.save_png(tmp_path / "mask.png")
    m.save_overlay(tmp_path / "overlay.png", thumb)
    with Image.open(tmp_path / "mask.png") as im:
        arr = np.asarray(im)
    assert arr.shape == m.mask.shape and set(np.unique(arr)) == {0, 255}
    assert np.array_equal(arr == 255, m.mask)
    with Image.open(tmp_path / "overlay.png") as im:
        assert im.size == thumb.size
        ov = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(ov - np.asarray(thumb).astype(int)).sum() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "overlay.png"]  # no temp files left
    back = TissueMask.from_png(tmp_path / "mask.png", m.level0_size, TCGA_MPP)
    assert np.array_equal(back.mask, m.mask) and back.mpp == pytest.approx(m.mpp, rel=1e-3)
    with pytest.raises(InputError, match="mask.png.*aspect"):
        TissueMask.from_png(tmp_path / "mask.png", (m.level0_size[0] * 2, m.level0_size[1]))


def test_tile_cmu(slides, masks):
    s, m = slides[CMU], masks[CMU]
    coords, attrs, frac = tile_slide(s, m, target_mpp=0.5, patch_size=224, min_tissue=0.5, return_fraction=True)
    step = round(224 * 0.5 / 0.499)
    assert attrs["patch_size_level0"] == step == 224
    assert attrs["patch_level"] == 0 and attrs["patch_size"] == 224
    assert attrs["mpp"] == pytest.approx(step * 0.499 / 224)
    assert attrs["level0_magnification"] == 20.0 and attrs["name"] == "CMU-1-Small-Region"
    assert attrs["level0_width"] == 2220 and attrs["level0_height"] == 2967
    assert coords.dtype == np.int64 and coords.shape[1] == 2
    assert (coords % step == 0).all()  # the global grid from (0, 0)
    assert (coords[:, 0] < 2220).all() and (coords[:, 1] < 2967).all() and (coords >= 0).all()
    assert (frac >= 0.5).all()
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    assert np.array_equal(order, np.arange(len(coords)))  # row-major
    # the lattice has ceil(2220/224) * ceil(2967/224) = 140 cells; about tissue_fraction of them hold tissue
    expected = m.tissue_fraction * math.ceil(2220 / step) * math.ceil(2967 / step)
    assert 0.6 * expected <= len(coords) <= 1.4 * expected
    patch = s.read_patch(coords[0], step, 224)
    assert patch.size == (224, 224)
    lax = tile_slide(s, m, min_tissue=0.0)[0]
    assert len(lax) > len(coords) and set(map(tuple, coords)) <= set(map(tuple, lax))


def test_tile_fluorescence_and_override(slides, masks):
    coords, attrs = tile_slide(slides[DAPI], masks[DAPI])
    step = round(224 * 0.5 / 0.22818)  # 491
    assert attrs["patch_size_level0"] == step and attrs["patch_level"] == 1
    assert (coords % step == 0).all()
    assert slides[DAPI].read_patch(coords[-1], step, 224).size == (224, 224)
    coords, attrs = tile_slide(slides[TCGA], masks[TCGA])
    assert attrs["patch_size_level0"] == 448 and attrs["patch_level"] == 1 and attrs["mpp_source"] == "override"


def test_tile_without_mpp_and_too_coarse(shared_data):
    d = shared_data / "slides"
    with pytest.raises(InputError, match="TCGA-CR-7395-01A-01-TS1.svs.*mpp"):
        tile_slide(open_slide(d / TCGA))
    boxes = open_slide(d / "openslide-python-fixtures/boxes.tiff")  # 352.78 um/px per its tags
    with pytest.raises(InputError, match="boxes.tiff.*too coarse"):
        tile_slide(boxes)
    boxes = open_slide(d / "openslide-python-fixtures/boxes.tiff", mpp=1.0)
    coords, attrs = tile_slide(boxes, target_mpp=2.0, patch_size=16, min_tissue=0.5, min_object_um2=100)
    assert attrs["patch_size_level0"] == 32 and attrs["patch_level"] == 1  # level 1 is 2 um/px
    assert len(coords) > 0 and (coords % 32 == 0).all()
    assert (coords[:, 0] < 300).all() and (coords[:, 1] < 250).all()


def test_write_coords_roundtrip(slides, masks, tmp_path):
    coords, attrs = tile_slide(slides[CMU], masks[CMU])
    path = write_coords(tmp_path / "CMU.h5", coords, attrs)
    assert is_complete_feature_file(path, require_features=False)
    assert not is_complete_feature_file(path)  # no features yet
    bag = read_features(path, require_features=False)
    assert np.array_equal(bag.coords, coords) and bag.features is None
    assert bag.patch_size_level0 == 224 and bag.attrs["mpp"] == pytest.approx(attrs["mpp"])
    assert bag.attrs["level0_magnification"] == 20.0


def test_coords_carry_clams_level_attributes(slides, masks, tmp_path):
    """CLAM reads ``patch_size`` px at ``patch_level``; ``read_size`` says what that must be to cover a patch."""
    import h5py

    for name, read_size in ((TCGA, 224), (DAPI, 246)):  # TCGA: level 1 is 0.5 um/px; DAPI: 0.456 um/px
        coords, attrs = tile_slide(slides[name], masks[name])
        level = attrs["patch_level"]
        assert attrs["level_dim"] == list(slides[name].level_dimensions[level])
        w0, h0 = slides[name].dimensions
        assert attrs["downsample"] == pytest.approx([w0 / attrs["level_dim"][0], h0 / attrs["level_dim"][1]])
        assert attrs["read_size"] == read_size
        path = write_coords(tmp_path / f"{name}.h5", coords, attrs)
        with h5py.File(path, "r") as f:  # CLAM and TRIDENT read the attributes on the coords dataset
            assert list(f["coords"].attrs["downsample"]) == pytest.approx(attrs["downsample"])
            assert f["coords"].attrs["read_size"] == read_size
        # CLAM's own reading of the footprint (read size x level downsample) gives the lattice step
        clam = tmp_path / f"{name}_clam.h5"
        with h5py.File(clam, "w") as f:
            ds = f.create_dataset("coords", data=coords.astype(np.int32))
            ds.attrs.update({"patch_size": read_size, "patch_level": level, "downsample": attrs["downsample"]})
        assert abs(read_features(clam, require_features=False).patch_size_level0 - attrs["patch_size_level0"]) <= 1


# ------------------------------------------------------------------------------------------------ made-up images


def test_blank_slide_has_no_tissue(tmp_path):
    path = _blank_png(tmp_path / "blank.png")
    s = open_slide(path, mpp=0.5)
    m = segment_tissue(s)
    assert m.is_empty and m.tissue_fraction == 0.0  # segmenting alone does not raise
    with pytest.raises(InputError, match="no tissue found in .*blank.png"):
        tile_slide(s, m)
    with pytest.raises(InputError, match="no tissue found in .*blank.png"):
        tile_slide(s)


def test_global_grid_across_separate_pieces(tmp_path):
    Image.fromarray(_pink_blobs()).save(tmp_path / "two.png")
    s = open_slide(tmp_path / "two.png", mpp=1.0)
    coords, attrs = tile_slide(s, target_mpp=1.0, patch_size=32, min_tissue=0.9, mask_mpp=2.0, min_object_um2=100)
    assert attrs["patch_size_level0"] == 32
    assert (coords % 32 == 0).all()  # not offset to each blob's bounding box (blobs start at 40 and 250)
    # fully covered cells only: blob 1 spans x 40..120 -> cells at 64 (64..96) only; y 30..110 -> 32, 64
    xs1 = sorted({int(x) for x, y in coords if x < 200})
    assert xs1 == [64]
    assert sorted({int(y) for x, y in coords if x < 200}) == [32, 64]
    with pytest.raises(InputError, match="two.png.*tissue fraction of at least 1"):
        tile_slide(s, target_mpp=1.0, patch_size=512, min_tissue=1.0, mask_mpp=2.0)


def test_tissue_fraction_grid_matches_brute_force():
    rng = np.random.default_rng(1)
    mask = rng.random((37, 53)) > 0.6
    W, H = 530 * 3, 370 * 3  # 30 level-0 px per mask px
    m = TissueMask(mask=mask, level0_size=(W, H))
    step = 77  # not a multiple of the mask pixel
    frac = tissue_fraction_grid(m, step)
    ny, nx = math.ceil(H / step), math.ceil(W / step)
    assert frac.shape == (ny, nx)
    full = np.zeros((ny * step, nx * step), bool)
    full[:H, :W] = np.repeat(np.repeat(mask, 30, axis=0), 30, axis=1)
    brute = full.reshape(ny, step, nx, step).mean(axis=(1, 3))
    np.testing.assert_allclose(frac, brute, atol=1e-9)


def test_pen_marks_are_removed_on_request():
    rgb = _pink_blobs(blobs=((40, 40, 200, 200),))
    rgb[220:240, 20:380] = (30, 60, 200)  # a blue pen stroke below the tissue
    keep = tissue_mask_from_rgb(rgb, 2.0, min_object_um2=100)[0]
    drop = tissue_mask_from_rgb(rgb, 2.0, min_object_um2=100, exclude_pen=True)[0]
    assert keep[230, 200] and not drop[230, 200]
    assert keep[120, 120] and drop[120, 120]  # the tissue stays


def test_areas_are_in_square_micrometres():
    mask = np.zeros((100, 100), bool)
    mask[10:20, 10:20] = True  # 100 px
    mask[40:80, 40:80] = True  # 1600 px, with a 4-px and a 100-px hole
    mask[50:52, 50:52] = False
    mask[60:70, 60:70] = False
    for mpp in (1.0, 2.0):
        px = mpp * mpp  # um^2 per pixel
        kept = remove_small_objects(mask, 500 / px)  # objects: 100 px and 1496 px
        assert not kept[15, 15] and kept[45, 45]
        filled = fill_small_holes(mask, 50 / px)
        assert filled[51, 51] == (4 * px < 50) and not filled[65, 65]


def test_median_threshold_equals_thresholded_median():
    from scipy import ndimage as ndi

    from wsigraph.slide.tissue import median_threshold

    v = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    for k in (1, 3, 5, 9):
        assert np.array_equal(median_threshold(v, 100, k), ndi.median_filter(v, size=k) > 100)


def test_otsu_threshold_splits_two_modes():
    rng = np.random.default_rng(0)
    low = rng.normal(30, 5, 5000).clip(0, 255).astype(np.uint8)
    high = rng.normal(150, 10, 3000).clip(0, 255).astype(np.uint8)
    t = otsu_threshold(np.concatenate([low, high]))
    assert (low > t).mean() < 0.01 and (high > t).mean() > 0.99
    assert otsu_threshold(np.zeros(0, np.uint8)) == 0.0


def test_segmentation_argument_errors(slides):
    with pytest.raises(InputError, match="mode must be one of"):
        segment_tissue(slides[CMU], mode="dark")
    with pytest.raises(InputError, match="needs a threshold"):
        segment_tissue(slides[CMU], method="threshold")
    with pytest.raises(InputError, match="min_tissue must be in"):
        tile_slide(slides[CMU], min_tissue=2)
    rgb = _pink_blobs(blobs=((40, 40, 200, 200),))  # the image-level entry checks the same options
    with pytest.raises(InputError, match="mode must be one of"):
        tissue_mask_from_rgb(rgb, 2.0, mode="dark")
    with pytest.raises(InputError, match=r"unknown tissue segmentation option\(s\) \['median_px'\]"):
        tissue_mask_from_rgb(rgb, 2.0, median_px=3)
