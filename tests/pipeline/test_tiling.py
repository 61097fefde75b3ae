"""``wsigraph segment`` and ``wsigraph tile`` over a cohort (``wsigraph.pipeline.tiling``): a slide without
tissue skipped and reported, resume, user masks. The resume matrix is in test_resume.py; the per-slide
tissue and grid functions in tests/slide/test_tissue_tiling.py."""
from __future__ import annotations

import numpy as np
from PIL import Image

from wsigraph.cli import main
from wsigraph.data.features import read_features

CMU = "CMU-1-Small-Region.svs"


def test_cli_tile_skips_bad_slides_and_resumes(shared_data, tmp_path, capsys):
    cmu = shared_data / "slides" / CMU
    blank = tmp_path / "blank.png"
    Image.new("RGB", (400, 300), (255, 255, 255)).save(blank)  # no tissue
    out = tmp_path / "out"
    mpp_csv = tmp_path / "mpp.csv"
    mpp_csv.write_text("slide_id,mpp\nblank,0.5\n")
    args = ["tile", str(cmu), str(blank), "--out", str(out), "--mpp-csv", str(mpp_csv), "--on-error", "skip",
            "--no-progress"]
    assert main(args) == 1  # finished, with a failure listed in the report
    bag = read_features(out / "coords" / "CMU-1-Small-Region.h5", require_features=False)
    assert bag.num_patches > 0 and (bag.coords % 224 == 0).all()
    for sub in ("masks", "overlays"):
        assert (out / sub / "CMU-1-Small-Region.png").exists()
    report = (out / "tile_report.csv").read_text()
    assert "blank" in report and "no tissue found" in report
    summary = (out / "tiling_summary.csv").read_text()
    assert f"CMU-1-Small-Region,done,{bag.num_patches}," in summary
    capsys.readouterr()
    assert main(args) == 1  # the blank slide still fails; CMU is not redone
    printed = capsys.readouterr().out
    assert "1 already complete" in printed and f"listed in {out / 'tile_report.csv'}" in printed


def test_cli_segment_and_user_masks(shared_data, tmp_path):
    cmu = shared_data / "slides" / CMU
    out = tmp_path / "seg"
    assert main(["segment", str(cmu), "--out", str(out), "--no-progress", "--exclude-pen"]) == 0
    import json

    info = json.loads((out / "masks" / "CMU-1-Small-Region.json").read_text())
    assert 0.25 <= info["tissue_fraction"] <= 0.5 and info["params"]["exclude_pen"] is True
    # a user mask: only the left half of the slide may hold patches
    with Image.open(out / "masks" / "CMU-1-Small-Region.png") as im:
        arr = np.asarray(im).copy()
    arr[:, arr.shape[1] // 2:] = 0
    user = tmp_path / "user"
    user.mkdir()
    Image.fromarray(arr).save(user / "CMU-1-Small-Region.png")
    assert main(["tile", str(cmu), "--out", str(tmp_path / "t"), "--masks", str(user), "--no-progress"]) == 0
    bag = read_features(tmp_path / "t" / "coords" / "CMU-1-Small-Region.h5", require_features=False)
    assert (bag.coords[:, 0] < 2220 / 2).all()
