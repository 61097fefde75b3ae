"""Feature extraction: one real slide, cohorts (resume, skip-and-report, shards) and the CLI commands."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.errors import InputError
from wsigraph.features import build_encoder, extract_features
from wsigraph.pipeline.extract import extract_cohort
from wsigraph.pipeline.slides import SlideJob, read_slide_list
from wsigraph.pipeline.runner import StaleOutputError
from wsigraph.slide import open_slide, segment_tissue, tile_slide, write_coords

SMALL = "CMU-1-Small-Region"
INPUT = 32  # tiny encoder input: the tests check the plumbing, not the features


@pytest.fixture(scope="module")
def slides(shared_data) -> dict[str, Path]:
    d = shared_data / "slides"
    return {"small": d / f"{SMALL}.svs", "unreadable": d / "openslide-python-fixtures" / "unreadable.svs"}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("resnet50_trunc", random_init=True, input_size=INPUT)


@pytest.fixture(scope="module")
def coords_dir(tmp_path_factory, slides) -> Path:
    """Coords files made by the slide stage: the real small slide tiled at 0.5 µm/px, and one patch of
    the corrupt fixture (it opens, but its pixels cannot be decoded)."""
    d = tmp_path_factory.mktemp("coords")
    with open_slide(slides["small"]) as s:
        coords, attrs = tile_slide(s, segment_tissue(s), target_mpp=0.5, patch_size=224)
    write_coords(d / f"{SMALL}.h5", coords, attrs)
    write_coords(d / "unreadable.h5", np.array([[0, 0]]),
                 dict(patch_size=16, patch_level=0, patch_size_level0=16, mpp=0.499))
    return d


@pytest.fixture
def slide_dir(tmp_path, slides) -> Path:
    d = tmp_path / "slides"
    d.mkdir()
    os.symlink(slides["small"], d / f"{SMALL}.svs")
    os.symlink(slides["unreadable"], d / "unreadable.svs")
    return d


# ---------------------------------------------------------------------------------------------- one slide


@pytest.mark.parametrize("num_workers", [0, 2])
def test_extract_real_slide(tmp_path, slides, coords_dir, encoder, num_workers):
    out = tmp_path / f"{SMALL}.h5"
    res = extract_features(slides["small"], coords_dir / f"{SMALL}.h5", out, encoder, batch_size=16,
                           num_workers=num_workers, device="cpu")
    coords = read_features(coords_dir / f"{SMALL}.h5", require_features=False)
    bag = read_features(out)
    n = coords.num_patches
    assert res.n_patches == n > 10
    assert bag.features.shape == (n, 1024) and bag.features.dtype == np.float32
    np.testing.assert_array_equal(bag.coords, coords.coords)
    for key in ("patch_size", "patch_level", "patch_size_level0", "mpp", "target_mpp"):
        assert bag.attrs[key] == coords.attrs[key]
    assert bag.attrs["encoder"] == "resnet50_trunc" and bag.attrs["encoder_weights"] == "random-init"
    assert "encoder_weights_sha256" not in bag.attrs  # no weights file, no digest (random init is seeded)
    assert bag.attrs["encoder_input_size"] == INPUT
    # the stored row of a patch is the encoder's output on that patch read directly from the slide
    k = n // 2
    step = int(bag.attrs["patch_size_level0"])
    with open_slide(slides["small"]) as s:
        x = encoder.transform(s.read_patch(tuple(bag.coords[k]), step, encoder.read_size))
    with torch.inference_mode():
        direct = encoder(x[None])[0].numpy()
    np.testing.assert_allclose(bag.features[k], direct, rtol=1e-4, atol=1e-4)
    assert not np.allclose(bag.features[0], bag.features[k])  # patches differ, so features differ


def test_float16_output(tmp_path, slides, coords_dir, encoder):
    out = tmp_path / "f16.h5"
    extract_features(slides["small"], coords_dir / f"{SMALL}.h5", out, encoder, num_workers=0,
                     features_dtype="float16")
    assert read_features(out).features.dtype == np.float16


def test_coords_of_another_slide_are_refused(tmp_path, slides, encoder):
    coords = tmp_path / "far.h5"
    write_coords(coords, np.array([[0, 0], [50_000, 0]]),
                 dict(patch_size=224, patch_level=0, patch_size_level0=224, mpp=0.5))
    with pytest.raises(InputError) as e:
        extract_features(slides["small"], coords, tmp_path / "o.h5", encoder, num_workers=0)
    msg = str(e.value)
    assert "far.h5" in msg and "row 1" in msg and "(50000, 0)" in msg
    assert not (tmp_path / "o.h5").exists()


def test_unreadable_slide_error_is_clean_with_workers(tmp_path, slides, coords_dir, encoder):
    with pytest.raises(InputError) as e:
        extract_features(slides["unreadable"], coords_dir / "unreadable.h5", tmp_path / "u.h5", encoder,
                         num_workers=1)
    msg = str(e.value)
    assert "unreadable.svs" in msg and "(0, 0)" in msg and "Traceback" not in msg
    assert not (tmp_path / "u.h5").exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------- cohorts


def _jobs(slides, coords_dir) -> list[SlideJob]:
    return [SlideJob(SMALL, slides["small"], coords_dir / f"{SMALL}.h5"),
            SlideJob("unreadable", slides["unreadable"], coords_dir / "unreadable.h5")]


def test_cohort_skips_and_reports_a_broken_slide_then_resumes(tmp_path, slides, coords_dir, encoder):
    out = tmp_path / "features"
    report = extract_cohort(_jobs(slides, coords_dir), out, encoder, num_workers=0, device="cpu", progress=False)
    assert report.done == [SMALL]
    assert list(report.failed) == ["unreadable"] and "unreadable.svs" in report.failed["unreadable"]
    failures = pd.read_csv(out / "extract_report.csv").query("status == 'failed'")
    assert failures["slide_id"].tolist() == ["unreadable"]
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["done"] == 1 and summary["failed"] == 1 and summary["patches"] == report.results[SMALL]["n_patches"]
    assert read_features(out / f"{SMALL}.h5").features.shape[1] == 1024

    mtime = (out / f"{SMALL}.h5").stat().st_mtime_ns
    again = extract_cohort(_jobs(slides, coords_dir), out, encoder, num_workers=0, progress=False)
    assert again.resumed == [SMALL] and again.done == []
    assert (out / f"{SMALL}.h5").stat().st_mtime_ns == mtime  # not rewritten


def test_cohort_never_overwrites_features_of_another_encoder(tmp_path, slides, coords_dir, encoder):
    out = tmp_path / "features"
    jobs = _jobs(slides, coords_dir)[:1]
    extract_cohort(jobs, out, encoder, num_workers=0, progress=False)
    other = build_encoder("timm:test_vit", random_init=True)
    with pytest.raises(StaleOutputError, match=r"encoder\.name: 'resnet50_trunc' -> 'timm:test_vit'"):
        extract_cohort(jobs, out, other, num_workers=0, progress=False)
    assert read_features(out / f"{SMALL}.h5").attrs["encoder"] == "resnet50_trunc"
    report = extract_cohort(jobs, out, other, num_workers=0, progress=False, overwrite=True)
    assert report.done == [SMALL]
    assert read_features(out / f"{SMALL}.h5").attrs["encoder"] == "timm:test_vit"


def test_cohort_shards_split_the_work(tmp_path, slides, coords_dir, encoder):
    jobs = _jobs(slides, coords_dir)
    out = tmp_path / "features"
    r0 = extract_cohort(jobs, out, encoder, shard="0/2", num_workers=0, progress=False)
    r1 = extract_cohort(jobs, out, encoder, shard=(1, 2), num_workers=0, progress=False)
    assert (r0.done, list(r0.failed)) == ([SMALL], [])  # sorted ids: CMU... first, unreadable second
    assert (r1.done, list(r1.failed)) == ([], ["unreadable"])
    assert (out / "extract_report.shard-1-of-2.csv").exists()
    assert (out / "extract_summary.shard-0-of-2.json").exists()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_extract_skips_and_reports(tmp_path, slide_dir, coords_dir):
    out = tmp_path / "features"
    rc = main(["extract", "--coords", str(coords_dir), "--slides", str(slide_dir), "--out", str(out),
               "--encoder", "resnet50_trunc", "--random-init", "--input-size", str(INPUT), "--num-workers", "2",
               "--batch-size", "16", "--device", "cpu", "--no-progress"])
    assert rc == 1  # finished, with a failure to look at
    assert read_features(out / f"{SMALL}.h5").features.shape[1] == 1024
    failures = pd.read_csv(out / "extract_report.csv").query("status == 'failed'").reset_index()
    assert failures["slide_id"].tolist() == ["unreadable"]
    assert "unreadable.svs" in failures["error"][0]


def test_cli_bad_encoder_and_weights_exit_2(tmp_path, slide_dir, coords_dir, capsys):
    base = ["extract", "--coords", str(coords_dir), "--slides", str(slide_dir), "--out", str(tmp_path / "f")]
    assert main(base + ["--encoder", "resnet_fifty", "--random-init"]) == 2
    assert "unknown encoder 'resnet_fifty'" in capsys.readouterr().err
    assert main(base + ["--encoder", "uni"]) == 2
    assert "needs weights" in capsys.readouterr().err
    bad = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, bad)
    assert main(base + ["--encoder", "resnet50_trunc", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "wrong.pth" in err and "conv1.weight: file (2, 2) vs model (64, 3, 7, 7)" in err


def test_cli_preprocess_end_to_end_and_resume(tmp_path, slide_dir):
    out = tmp_path / "run"
    args = ["preprocess", str(slide_dir), "--out", str(out), "--encoder", "resnet50_trunc", "--random-init",
            "--input-size", str(INPUT), "--num-workers", "1", "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    coords = read_features(out / "coords" / f"{SMALL}.h5", require_features=False)
    bag = read_features(out / "features_resnet50_trunc" / f"{SMALL}.h5")
    np.testing.assert_array_equal(bag.coords, coords.coords)
    assert bag.attrs["target_mpp"] == 0.5 and bag.attrs["patch_size"] == 224
    assert Image.open(out / "masks" / f"{SMALL}.png").size[0] > 0
    failures = pd.read_csv(out / "preprocess_report.csv").query("status == 'failed'").reset_index()
    assert failures["slide_id"].tolist() == ["unreadable"]
    assert "tissue/tiling" in failures["error"][0] and "unreadable.svs" in failures["error"][0]

    assert main(args) == 1  # the broken slide fails again; the finished one is not redone
    summary = json.loads((out / "preprocess_summary.json").read_text())
    assert summary["already_complete"] == 1 and summary["done"] == 0 and summary["failed"] == 1


def test_slide_manifest(tmp_path, slides):
    shutil.copy(slides["small"], tmp_path / "a.svs")
    (tmp_path / "m.csv").write_text("path,slide_id,mpp\na.svs,case-1,0.25\n")
    jobs = read_slide_list(tmp_path / "m.csv")
    assert [(j.slide_id, j.slide_path, j.mpp) for j in jobs] == [("case-1", tmp_path / "a.svs", 0.25)]
    (tmp_path / "bad.csv").write_text("slide,label\na.svs,x\n")
    with pytest.raises(InputError, match=r"bad.csv.*path column.*\['slide', 'label'\]"):
        read_slide_list(tmp_path / "bad.csv")
    (tmp_path / "badmpp.csv").write_text("path,mpp\na.svs,fast\n")
    with pytest.raises(InputError, match=r"badmpp.csv, row 2: mpp 'fast'"):
        read_slide_list(tmp_path / "badmpp.csv")


def test_clam_coords_without_mpp(tmp_path, slides, encoder):
    """CLAM patch files keep patch_size/patch_level/downsample on the coords dataset and no resolution:
    the grid step comes from them and the mpp from the slide."""
    import h5py

    path = tmp_path / f"{SMALL}.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]], dtype=np.int64))
        ds.attrs.update(patch_size=512, patch_level=0, downsample=[1.0, 1.0])
    out = tmp_path / "out.h5"
    extract_features(slides["small"], path, out, encoder, num_workers=0)
    bag = read_features(out)
    with open_slide(slides["small"]) as s:
        slide_mpp = s.mpp
    assert bag.features.shape == (3, 1024)
    assert bag.attrs["patch_size_level0"] == 512 and bag.attrs["mpp"] == pytest.approx(slide_mpp)
