"""``wsigraph.pipeline.extract`` and ``wsigraph extract``: the extract stage over a cohort (a broken
slide skipped and reported, resume, shards, never overwriting another encoder's features)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.features import build_encoder
from wsigraph.pipeline.extract import extract_cohort
from wsigraph.pipeline.slides import SlideJob
from wsigraph.pipeline.runner import StaleOutputError

SMALL = "CMU-1-Small-Region"  # the slides are the conftest's extract_slides
INPUT = 32  # tiny encoder input: the tests check the plumbing, not the features


def _jobs(extract_slides, extract_coords) -> list[SlideJob]:
    return [SlideJob(SMALL, extract_slides["small"], extract_coords / f"{SMALL}.h5"),
            SlideJob("unreadable", extract_slides["unreadable"], extract_coords / "unreadable.h5")]


def test_cohort_skips_and_reports_a_broken_slide_then_resumes(tmp_path, extract_slides, extract_coords, tiny_encoder):
    out = tmp_path / "features"
    report = extract_cohort(_jobs(extract_slides, extract_coords), out, tiny_encoder, num_workers=0, device="cpu",
                            progress=False)
    assert report.done == [SMALL]
    assert list(report.failed) == ["unreadable"] and "unreadable.svs" in report.failed["unreadable"]
    failures = pd.read_csv(out / "extract_report.csv").query("status == 'failed'")
    assert failures["slide_id"].tolist() == ["unreadable"]
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["done"] == 1 and summary["failed"] == 1 and summary["patches"] == report.results[SMALL]["n_patches"]
    assert read_features(out / f"{SMALL}.h5").features.shape[1] == 1024

    mtime = (out / f"{SMALL}.h5").stat().st_mtime_ns
    again = extract_cohort(_jobs(extract_slides, extract_coords), out, tiny_encoder, num_workers=0, progress=False)
    assert again.resumed == [SMALL] and again.done == []
    assert (out / f"{SMALL}.h5").stat().st_mtime_ns == mtime  # not rewritten


def test_cohort_never_overwrites_features_of_another_encoder(tmp_path, extract_slides, extract_coords, tiny_encoder):
    out = tmp_path / "features"
    jobs = _jobs(extract_slides, extract_coords)[:1]
    extract_cohort(jobs, out, tiny_encoder, num_workers=0, progress=False)
    other = build_encoder("timm:test_vit", random_init=True)
    with pytest.raises(StaleOutputError, match=r"encoder\.name: 'resnet50_trunc' -> 'timm:test_vit'"):
        extract_cohort(jobs, out, other, num_workers=0, progress=False)
    assert read_features(out / f"{SMALL}.h5").attrs["encoder"] == "resnet50_trunc"
    report = extract_cohort(jobs, out, other, num_workers=0, progress=False, overwrite=True)
    assert report.done == [SMALL]
    assert read_features(out / f"{SMALL}.h5").attrs["encoder"] == "timm:test_vit"


def test_cohort_shards_split_the_work(tmp_path, extract_slides, extract_coords, tiny_encoder):
    jobs = _jobs(extract_slides, extract_coords)
    out = tmp_path / "features"
    r0 = extract_cohort(jobs, out, tiny_encoder, shard="0/2", num_workers=0, progress=False)
    r1 = extract_cohort(jobs, out, tiny_encoder, shard=(1, 2), num_workers=0, progress=False)
    assert (r0.done, list(r0.failed)) == ([SMALL], [])  # sorted ids: CMU... first, unreadable second
    assert (r1.done, list(r1.failed)) == ([], ["unreadable"])
    assert (out / "extract_report.shard-1-of-2.csv").exists()
    assert (out / "extract_summary.shard-0-of-2.json").exists()


def test_cli_extract_skips_and_reports(tmp_path, extract_slide_dir, extract_coords):
    out = tmp_path / "features"
    rc = main(["extract", "--coords", str(extract_coords), "--slides", str(extract_slide_dir), "--out", str(out),
               "--encoder", "resnet50_trunc", "--random-init", "--input-size", str(INPUT), "--num-workers", "2",
               "--batch-size", "16", "--device", "cpu", "--no-progress"])
    assert rc == 1  # finished, with a failure to look at
    assert read_features(out / f"{SMALL}.h5").features.shape[1] == 1024
    failures = pd.read_csv(out / "extract_report.csv").query("status == 'failed'").reset_index()
    assert failures["slide_id"].tolist() == ["unreadable"]
    assert "unreadable.svs" in failures["error"][0]


def test_cli_bad_encoder_and_weights_exit_2(tmp_path, extract_slide_dir, extract_coords, capsys):
    base = ["extract", "--coords", str(extract_coords), "--slides", str(extract_slide_dir), "--out",
            str(tmp_path / "f")]
    assert main(base + ["--encoder", "resnet_fifty", "--random-init"]) == 2
    assert "unknown encoder 'resnet_fifty'" in capsys.readouterr().err
    assert main(base + ["--encoder", "uni"]) == 2
    assert "needs weights" in capsys.readouterr().err
    bad = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, bad)
    assert main(base + ["--encoder", "resnet50_trunc", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "wrong.pth" in err and "conv1.weight: file (2, 2) vs model (64, 3, 7, 7)" in err
