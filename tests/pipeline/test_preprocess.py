"""``wsigraph preprocess`` (``wsigraph.pipeline.preprocess``): segment, tile and extract as one cohort job,
its report and resume."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from wsigraph.cli import main
from wsigraph.data.features import read_features

SMALL = "CMU-1-Small-Region"  # the slides are the conftest's extract_slides
INPUT = 32  # tiny encoder input: the tests check the plumbing, not the features


def test_cli_preprocess_end_to_end_and_resume(tmp_path, extract_slide_dir):
    out = tmp_path / "run"
    args = ["preprocess", str(extract_slide_dir), "--out", str(out), "--encoder", "resnet50_trunc", "--random-init",
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
