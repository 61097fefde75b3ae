"""Slide reading: every file in shared/data/slides, plain images, resolution rules, bad input."""
from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
from PIL import Image

from wsigraph.cli import main
from wsigraph.errors import InputError, MissingFileError
from wsigraph.slide import Slide, find_slides, open_slide, read_mpp_csv

# What OpenSlide 4.0.1 reports for each file, as listed in shared/data/SOURCES.md (checked there
# independently of this code): (width, height), downsamples, mpp, objective power.
EXPECTED = {
    "CMU-1-Small-Region.svs": ((2220, 2967), (1.0,), 0.499, 20.0),
    "TCGA-CR-7395-01A-01-TS1.svs": ((4443, 3567), (1.0, 2.001), None, None),
    "hamamatsu-test3-DAPI-2-387.ndpi": ((3968, 4864), (1, 2, 4, 8, 16, 32, 64), 0.22818, 40.0),
    "hamamatsu-test3-TRITC-2-560.ndpi": ((3968, 4864), (1, 2, 4, 8, 16, 32, 64), 0.22818, 40.0),
    "openslide-python-fixtures/small.svs": ((16, 16), (1.0,), 0.499, 20.0),
    "openslide-python-fixtures/boxes.tiff": ((300, 250), (1, 2, 4.016, 8.086), 352.78, None),
    "openslide-python-fixtures/boxes_0.dcm": ((16, 16), (1.0,), 0.499, 20.0),
    "openslide-python-fixtures/boxes_1.dcm": ((16, 16), (1.0,), 0.499, 20.0),
    "openslide-python-fixtures/unreadable.svs": ((16, 16), (1.0,), 0.499, 20.0),
}
UNOPENABLE = {"openslide-python-fixtures/unopenable.tiff"}


@pytest.fixture(scope="module")
def slides_dir(shared_data):
    return shared_data / "slides"


def test_table_covers_every_file(slides_dir):
    files = {str(p.relative_to(slides_dir)) for p in slides_dir.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    assert files == set(EXPECTED) | UNOPENABLE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metadata_of_every_slide(slides_dir, name):
    (dims, downsamples, mpp, power) = EXPECTED[name]
    with open_slide(slides_dir / name) as s:
        assert s.backend == "openslide"
        assert s.dimensions == dims
        assert s.level_count == len(downsamples)
        assert s.level_dimensions[0] == dims
        np.testing.assert_allclose(s.level_downsamples, downsamples, rtol=1e-3)
        # each level's size matches its downsample
        for (w, h), ds in zip(s.level_dimensions, s.level_downsamples):
            assert abs(w * ds - dims[0]) <= ds + 1 and abs(h * ds - dims[1]) <= ds + 1
        assert s.objective_power == power
        if mpp is None:
            assert not s.has_mpp
        else:
            assert s.mpp == pytest.approx(mpp, rel=1e-4)
            assert s.mpp_source == "openslide.mpp-x"
            np.testing.assert_allclose([s.level_mpp(i) for i in range(s.level_count)],
                                       np.asarray(s.level_downsamples) * mpp, rtol=1e-4)
        assert s.name == name.split("/")[-1].rsplit(".", 1)[0]


def test_slide_without_mpp_needs_override(slides_dir):
    path = slides_dir / "TCGA-CR-7395-01A-01-TS1.svs"
    s = open_slide(path)
    with pytest.raises(InputError, match="TCGA-CR-7395-01A-01-TS1.svs.*mpp"):
        _ = s.mpp
    assert s.info()["mpp"] is None  # info never raises
    s2 = open_slide(path, mpp=0.25)
    assert s2.mpp == 0.25 and s2.mpp_source == "override"
    assert s2.level_mpp(1) == pytest.approx(0.25 * 2.0005, rel=1e-3)
    s3 = open_slide(path, default_mpp=0.5)
    assert s3.mpp == 0.5 and s3.mpp_source == "default"
    # default_mpp never replaces a value the file has
    assert open_slide(slides_dir / "CMU-1-Small-Region.svs", default_mpp=0.25).mpp == pytest.approx(0.499)
    with pytest.raises(InputError, match="mpp must be a positive"):
        open_slide(path, mpp=-1)


def test_implausible_mpp_is_accepted_with_a_warning(slides_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="wsigraph"):
        s = open_slide(slides_dir / "openslide-python-fixtures/boxes.tiff")
    assert s.mpp == pytest.approx(352.78, rel=1e-4)
    assert any("352.8" in r.getMessage() and "boxes.tiff" in r.getMessage() for r in caplog.records)


def test_best_level_for_mpp(slides_dir):
    s = open_slide(slides_dir / "hamamatsu-test3-DAPI-2-387.ndpi")  # 0.22818 um/px, downsamples 1..64
    level, scale = s.best_level_for_mpp(0.5)  # level 1 = 0.456 um/px is the coarsest at least as fine
    assert level == 1 and scale == pytest.approx(0.22818 * 2 / 0.5, rel=1e-3)
    assert s.best_level_for_mpp(0.9127)[0] == 2  # an exact level
    assert s.best_level_for_mpp(0.93)[0] == 2  # within tolerance of level 2... and not level 3
    assert s.best_level_for_mpp(100.0)[0] == 6
    level, scale = s.best_level_for_mpp(0.1)  # finer than level 0: read level 0 and upsample
    assert level == 0 and scale > 2
    boxes = open_slide(slides_dir / "openslide-python-fixtures/boxes.tiff", mpp=1.0)
    assert boxes.best_level_for_mpp(4.02)[0] == 2  # downsample 4.016 is not an exact power of two
    assert boxes.best_level_for_mpp(3.9)[0] == 1
    with pytest.raises(InputError, match="target mpp"):
        s.best_level_for_mpp(0)


def test_read_patch_reads_the_right_level(slides_dir, monkeypatch):
    s = open_slide(slides_dir / "hamamatsu-test3-DAPI-2-387.ndpi")
    calls = []
    orig = Slide.read_region

    def spy(self, xy, level, size):
        calls.append((tuple(xy), level, tuple(size)))
        return orig(self, xy, level, size)

    monkeypatch.setattr(Slide, "read_region", spy)
    step = round(224 * 0.5 / s.mpp)  # 491 level-0 px per 224-px patch at 0.5 um/px
    img = s.read_patch((982, 1473), step, 224)
    assert img.size == (224, 224) and img.mode == "RGB"
    assert calls == [((982, 1473), 1, (round(step / 2), round(step / 2)))]
    calls.clear()
    img = s.read_patch((0, 0), 64 * 4, 4)  # 64x down: the top level, no resize needed
    assert calls[0][1] == 6 and img.size == (4, 4)


def test_read_region_outside_the_slide_is_white(slides_dir):
    s = open_slide(slides_dir / "CMU-1-Small-Region.svs")
    W, H = s.dimensions
    img = np.asarray(s.read_region((W - 10, H - 10), 0, (30, 20)))
    assert img.shape == (20, 30, 3)
    assert (img[:, 10:] == 255).all() and (img[10:, :] == 255).all()  # beyond the slide
    assert not (img[:10, :10] == 255).all()  # the last real pixels are image content


def test_thumbnail_and_pickle(slides_dir):
    s = open_slide(slides_dir / "TCGA-CR-7395-01A-01-TS1.svs", mpp=0.25)
    th = s.thumbnail(200)
    assert max(th.size) == 200 and th.mode == "RGB"
    assert th.size[1] == round(200 * 3567 / 4443)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.mpp == 0.25 and s2.dimensions == s.dimensions
    assert np.array_equal(np.asarray(s2.read_region((100, 100), 1, (8, 8))),
                          np.asarray(s.read_region((100, 100), 1, (8, 8))))
    with pytest.raises(InputError, match="level 5 does not exist"):
        s.read_region((0, 0), 5, (4, 4))


# ------------------------------------------------------------------------------------------------ plain images


def test_png_with_alpha_is_composited_on_white(tmp_path):
    a = np.zeros((20, 30, 4), np.uint8)
    a[..., 0] = 200
    a[:10, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "img.png")
    s = open_slide(tmp_path / "img.png", mpp=0.5)
    assert s.backend == "image" and s.level_count == 1 and s.dimensions == (30, 20)
    px = np.asarray(s.read_region((0, 0), 0, (30, 20)))
    assert (px[:10] == (200, 0, 0)).all() and (px[10:] == 255).all()
    assert s.read_patch((0, 0), 10, 5).size == (5, 5)
    out = np.asarray(s.read_region((25, 15), 0, (10, 10)))  # partly outside: white padding
    assert (out[5:] == 255).all() and (out[:, 5:] == 255).all()


def test_png_resolution_rules(tmp_path):
    img = Image.new("RGB", (8, 8), (200, 100, 150))
    img.save(tmp_path / "nodpi.png")
    with pytest.raises(InputError, match="nodpi.png.*--mpp"):
        _ = open_slide(tmp_path / "nodpi.png").mpp
    img.save(tmp_path / "dpi72.png", dpi=(72, 72))  # 352.8 um/px: a software default, not used
    with pytest.raises(InputError, match="dpi72.png.*software default"):
        _ = open_slide(tmp_path / "dpi72.png").mpp
    img.save(tmp_path / "res.tif", resolution=20000.0, resolution_unit=3)  # pixels/cm -> 0.5 um/px
    s = open_slide(tmp_path / "res.tif")
    assert s.mpp == pytest.approx(0.5) and s.mpp_source == "tiff resolution tags"


def test_tiff_that_pillow_cannot_read_goes_through_tifffile(tmp_path):
    import tifffile

    arr = np.zeros((12, 10, 3), np.float32)
    arr[:, 5:] = 1.0
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, arr, photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
    s = open_slide(path)
    px = np.asarray(s.read_region((0, 0), 0, (10, 12)))
    assert (px[:, :5] == 0).all() and (px[:, 5:] == 255).all()
    assert s.mpp == pytest.approx(0.25)


def test_real_histology_png(shared_data):
    s = open_slide(shared_data / "images" / "skimage-ihc.png", mpp=0.5)
    assert s.dimensions == (512, 512) and s.read_patch((0, 0), 224, 224).size == (224, 224)


# ------------------------------------------------------------------------------------------------ bad input


def test_unopenable_and_unreadable_fixtures(slides_dir):
    bad = slides_dir / "openslide-python-fixtures/unopenable.tiff"
    with pytest.raises(InputError, match="unopenable.tiff.*Unsupported TIFF compression"):
        open_slide(bad)
    s = open_slide(slides_dir / "openslide-python-fixtures/unreadable.svs")  # header fine, tiles corrupt
    with pytest.raises(InputError, match="unreadable.svs.*Bogus marker length"):
        s.read_region((0, 0), 0, (16, 16))


def test_truncated_svs_and_non_slide_files(slides_dir, tmp_path):
    trunc = tmp_path / "truncated.svs"
    trunc.write_bytes((slides_dir / "CMU-1-Small-Region.svs").read_bytes()[:10_000])
    with pytest.raises(InputError, match="truncated.svs.*truncated or corrupt"):
        open_slide(trunc)
    text = tmp_path / "notes.txt"
    text.write_text("this is not a slide\n")
    with pytest.raises(InputError, match="notes.txt: not a slide or image"):
        open_slide(text)
    with pytest.raises(MissingFileError, match="nope.svs"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(InputError, match="is a folder"):
        open_slide(tmp_path)


# ------------------------------------------------------------------------------------------------ finding slides


def test_find_slides(slides_dir, tmp_path):
    found = dict(find_slides([slides_dir / "openslide-python-fixtures"]))
    # boxes_0.dcm and boxes_1.dcm are two files of one DICOM slide (same SeriesInstanceUID): listed once
    assert "boxes_0" in found and "boxes_1" not in found
    assert {"small", "boxes", "unopenable", "unreadable"} <= set(found)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        Image.new("RGB", (4, 4)).save(tmp_path / d / "same.png")
    with pytest.raises(InputError, match="two slides have the id 'same'"):
        find_slides([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(MissingFileError, match="missing_dir"):
        find_slides([tmp_path / "missing_dir"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no slide files found"):
        find_slides([tmp_path / "empty"])
    assert find_slides([tmp_path / "empty"], allow_empty=True) == []


def test_find_slides_searches_sub_folders_to_the_depth_asked(tmp_path):
    root = tmp_path / "data"
    for rel in ("top.svs", "LUAD/x/deep.ndpi", "LUAD/x/y/too_deep.svs", "masks/mask.svs", ".hidden/h.svs",
                "out/mine.svs", "LUAD/thumb.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    assert [sid for sid, _ in find_slides([root])] == ["top"]  # depth 0: the folder only
    found = dict(find_slides([root], depth=2, suffixes=(".svs", ".ndpi"), skip_dirs={"masks"},
                             exclude=[root / "out"]))
    assert sorted(found) == ["deep", "top"] and found["deep"] == root / "LUAD" / "x" / "deep.ndpi"
    assert "too_deep" in dict(find_slides([root], depth=3))
    (root / "LUAD" / "top.svs").write_bytes(b"")
    with pytest.raises(InputError, match="two slides have the id 'top'"):
        find_slides([root], depth=1)


def test_read_mpp_csv(tmp_path):
    p = tmp_path / "mpp.csv"
    p.write_text("wsi,mpp\nTCGA-AB.1234.svs,0.25\nplain-id.v2,0.5\n")
    assert read_mpp_csv(p) == {"TCGA-AB.1234": 0.25, "plain-id.v2": 0.5}
    p.write_text("slide_id,mpp\nx,0.25\ny,abc\n")
    with pytest.raises(InputError, match="mpp.csv, row 3"):
        read_mpp_csv(p)
    p.write_text("name,res\nx,0.25\n")
    with pytest.raises(InputError, match="needs columns"):
        read_mpp_csv(p)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_slide_info(slides_dir, capsys):
    assert main(["slide-info", str(slides_dir / "CMU-1-Small-Region.svs"),
                 str(slides_dir / "TCGA-CR-7395-01A-01-TS1.svs")]) == 0
    out = capsys.readouterr().out
    assert "0.499 um/px" in out and "unknown (the file does not record it: pass --mpp)" in out
    assert main(["slide-info", "--json", "--mpp", "0.25", str(slides_dir / "TCGA-CR-7395-01A-01-TS1.svs")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[0]["mpp"] == 0.25 and info[0]["level_count"] == 2
    assert main(["slide-info", "--check", str(slides_dir / "openslide-python-fixtures/unreadable.svs")]) == 2
    assert "unreadable.svs" in capsys.readouterr().err
