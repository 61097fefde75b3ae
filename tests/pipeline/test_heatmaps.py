"""The heatmap stage (wsigraph.pipeline.heatmaps, ``wsigraph heatmap``): a folder of score files drawn slide by
slide with resume that knows its options, skip-and-report, slide images found only in the folders given."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsigraph.cli import main
from wsigraph.data.features import write_features
from wsigraph.data.scores import write_scores
from wsigraph.errors import InputError
from wsigraph.pipeline.heatmaps import HeatmapOptions, heatmap_cohort, heatmap_jobs, read_predictions
from wsigraph.pipeline.runner import StaleOutputError

STEP = 224
CMU = "CMU-1-Small-Region.svs"


def _lattice(n_side: int = 12) -> np.ndarray:
    jj, ii = np.mgrid[0:n_side, 0:n_side]
    return np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.int64) * STEP


def _cohort(tmp_path, n: int = 3):
    """Feature files (no coords in the score files) and score files of ``n`` slides."""
    feats, scores = tmp_path / "features", tmp_path / "scores"
    feats.mkdir()
    scores.mkdir()
    coords = _lattice()
    rng = np.random.default_rng(0)
    attrs = {"patch_size": 224, "patch_level": 0, "patch_size_level0": STEP, "mpp": 0.5, "encoder": "test"}
    for i in range(n):
        write_features(feats / f"s{i}.h5", coords, rng.normal(size=(len(coords), 4)).astype(np.float32), attrs=attrs)
        np.save(scores / f"s{i}.scores.npy", rng.random(len(coords)))
    return feats, scores


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_cohort_resume_refuses_other_options_and_reports_failures(tmp_path):
    feats, scores = _cohort(tmp_path)
    (scores / "bad.npy").write_bytes(b"not an array")
    out = tmp_path / "maps"
    report = heatmap_cohort(scores, out, features=feats, progress=False)
    assert sorted(report.done) == ["s0", "s1", "s2"] and list(report.failed) == ["bad"]
    for i in range(3):
        for suffix in (".heatmap.png", ".geojson", ".heatmap.json"):
            assert (out / f"s{i}{suffix}").stat().st_size > 0
        record = json.loads((out / f"s{i}.heatmap.json").read_text())
        assert record["provenance"]["params"]["normalize"] == "percentile"
    table = pd.read_csv(out / "heatmap_report.csv")
    assert dict(zip(table.slide_id, table.status)) == {"bad": "failed", "s0": "done", "s1": "done", "s2": "done"}
    assert "bad.npy" in table.set_index("slide_id").loc["bad", "error"]

    before = _mtimes(out)
    (scores / "bad.npy").unlink()
    again = heatmap_cohort(scores, out, features=feats, progress=False)
    assert sorted(again.resumed) == ["s0", "s1", "s2"] and not again.done and not again.failed
    assert {k: v for k, v in _mtimes(out).items() if k != "heatmap_report.csv"} == \
        {k: v for k, v in before.items() if k != "heatmap_report.csv"}
    assert set(pd.read_csv(out / "heatmap_report.csv").status) == {"already complete"}  # "bad" is gone

    with pytest.raises(StaleOutputError, match=r"cmap: 'jet' -> 'viridis'"):
        heatmap_cohort(scores, out, features=feats, options=HeatmapOptions(cmap="viridis"), progress=False)
    np.save(scores / "s1.scores.npy", np.zeros(144))  # a changed score file is an input that differs
    with pytest.raises(StaleOutputError, match=r"s1: inputs\.scores"):
        heatmap_cohort(scores, out, features=feats, progress=False)
    redone = heatmap_cohort(scores, out, features=feats, options=HeatmapOptions(cmap="viridis"), overwrite=True,
                            progress=False)
    assert sorted(redone.done) == ["s0", "s1", "s2"]
    (out / "s2.geojson").unlink()  # an output gone: the slide is drawn again, the others resume
    last = heatmap_cohort(scores, out, features=feats, options=HeatmapOptions(cmap="viridis"), progress=False)
    assert last.done == ["s2"] and sorted(last.resumed) == ["s0", "s1"]


def test_percentile_is_the_default_so_colours_rank_the_patches(tmp_path):
    feats, scores = _cohort(tmp_path, n=1)
    s = np.random.default_rng(1).random(144)
    for name, values in (("a", s), ("b", 10 * s + 5)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "s0.npy", values)
        heatmap_cohort(tmp_path / name / "s0.npy", tmp_path / f"out_{name}", features=feats / "s0.h5",
                       progress=False)
    a = np.asarray(Image.open(tmp_path / "out_a" / "s0.heatmap.png").convert("RGB"))
    b = np.asarray(Image.open(tmp_path / "out_b" / "s0.heatmap.png").convert("RGB"))
    assert a.std() > 10 and np.array_equal(a, b)  # a monotone rescaling leaves a percentile map unchanged
    heatmap_cohort(tmp_path / "b" / "s0.npy", tmp_path / "out_raw", features=feats / "s0.h5",
                   options=HeatmapOptions(normalize="none"), progress=False)
    raw = np.asarray(Image.open(tmp_path / "out_raw" / "s0.heatmap.png").convert("RGB"))
    assert not np.array_equal(raw, b)  # the colour bar now reads 5..15


def test_slide_images_come_only_from_the_folders_given(shared_data, tmp_path):
    from wsigraph.slide import open_slide, tile_slide

    slides = shared_data / "slides"
    with open_slide(slides / CMU) as s:
        coords, attrs = tile_slide(s)
    scores = tmp_path / "scores"
    scores.mkdir()
    values = np.linspace(0, 1, len(coords))
    # predict's score files name the slide image; the slide id need not be the image's name
    write_scores(scores / "case1.h5", values, coords, patch_size_level0=attrs["patch_size_level0"],
                 attrs={"slide_file": CMU, "pred": "tumor", "classes": ["normal", "tumor"], "probs": [0.2, 0.8]})
    # a recorded path is never opened by itself: only its name is looked up, in --slides
    write_scores(scores / "case2.h5", values, coords, patch_size_level0=attrs["patch_size_level0"],
                 attrs={"slide_file": str(slides / CMU)})
    jobs = dict(heatmap_jobs(scores))
    assert jobs["case1"].slide is None and jobs["case2"].slide is None
    jobs = dict(heatmap_jobs(scores, slides=slides))
    assert jobs["case1"].slide == slides / CMU and jobs["case2"].slide == slides / CMU

    out = tmp_path / "maps"
    report = heatmap_cohort(scores, out, slides=slides, options=HeatmapOptions(top_k=4), progress=False)
    assert sorted(report.done) == ["case1", "case2"]
    assert (out / "case1.topk.png").exists() and (out / "case2.topk.png").exists()
    record = json.loads((out / "case1.heatmap.json").read_text())
    assert record["provenance"]["inputs"]["slide"]["file"] == CMU
    alone = heatmap_cohort(scores, tmp_path / "canvas", progress=False)  # no --slides: canvas, no gallery
    assert sorted(alone.done) == ["case1", "case2"] and not list((tmp_path / "canvas").glob("*.topk.png"))


def test_predictions_table_and_single_file_arguments(tmp_path):
    feats, scores = _cohort(tmp_path, n=2)
    csv = tmp_path / "predictions.csv"
    csv.write_text("slide_id,label,pred,prob_a,prob_b\ns0,a,b,0.3,0.7\ns1,,a,0.9,0.1\n")
    rows = read_predictions(csv)
    assert rows["s0"]["pred"] == "b" and rows["s1"]["label"] is None
    jobs = dict(heatmap_jobs(scores, features=feats, predictions=csv))
    assert jobs["s0"].prediction["prob_b"] == pytest.approx(0.7) and jobs["s1"].features == feats / "s1.h5"
    csv.write_text("slide_id,pred\ns0,a\ns0,b\n")
    with pytest.raises(InputError, match=r"predictions\.csv, line 3: slide_id 's0' appears twice"):
        read_predictions(csv)
    with pytest.raises(InputError, match="slide, slide_id and title name one slide"):
        heatmap_jobs(scores, slide_id="x")
    with pytest.raises(InputError, match="features must be a folder"):
        heatmap_jobs(scores, features=feats / "s0.h5")
    with pytest.raises(InputError, match="normalize must be one of"):
        HeatmapOptions(normalize="log")


def test_cli_heatmap_over_a_folder(tmp_path, capsys):
    feats, scores = _cohort(tmp_path)
    out = tmp_path / "maps"
    assert main(["heatmap", "--scores", str(scores), "--features", str(feats), "--out", str(out),
                 "--no-progress"]) == 0
    assert "heatmap: 3 done, 0 already complete (skipped), 0 failed" in capsys.readouterr().out
    np.save(scores / "broken.npy", np.ones(3))  # 3 scores for 144 patches
    write_features(feats / "broken.h5", _lattice(), np.zeros((144, 4), np.float32),
                   attrs={"patch_size": 224, "patch_level": 0, "patch_size_level0": STEP, "mpp": 0.5, "encoder": "t"})
    assert main(["heatmap", "--scores", str(scores), "--features", str(feats), "--out", str(out),
                 "--no-progress"]) == 1  # a folder: the broken slide is skipped and reported
    assert "1 slide(s) failed" in capsys.readouterr().out
    assert main(["heatmap", "--scores", str(scores / "broken.npy"), "--features", str(feats / "broken.h5"),
                 "--out", str(tmp_path / "one")]) == 2  # one file: its error is the answer
    assert "3 scores but" in capsys.readouterr().err
    assert main(["heatmap", "--scores", str(scores), "--out", str(out), "--cmap", "magma", "--no-progress"]) == 2
    assert "other parameters" in capsys.readouterr().err
