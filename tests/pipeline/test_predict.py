"""``wsigraph predict`` resumes only what the same checkpoint made (wsigraph.pipeline.predict): each scores file
records the checkpoint's SHA-256, its classes, the graph settings, no_coords and the feature file's
fingerprint; a rerun with another checkpoint into the same folder refuses naming the parameter, and
--overwrite recomputes."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from wsigraph.cli import main
from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.pipeline.provenance import file_sha256, read_h5_provenance

DIM = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("predict_cohort")
    make_synthetic_cohort(d, n_slides=3, dim=DIM, grid=(8, 9), seed=2)
    return d


def make_checkpoint(path: Path, seed: int, classes=("normal", "tumor"), graph=None) -> Path:
    """An untrained abmil checkpoint (no training run needed: predict only reads weights and metadata)."""
    from wsigraph.nn import build_model
    from wsigraph.train.checkpoint import make_metadata, save_checkpoint

    torch.manual_seed(seed)
    params = {"embed_dim": 8, "attn_dim": 4}
    model = build_model("abmil", DIM, len(classes), **params)
    meta = make_metadata("abmil", params, DIM, len(classes), list(classes), graph=graph or {})
    return save_checkpoint(path, model.state_dict(), meta)


def _predict(ckpt: Path, cohort: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--checkpoint", str(ckpt), "--features", str(cohort / "features"), "--out", str(out),
                 "--device", "cpu", "--no-progress", *extra])


def test_predict_with_another_checkpoint_is_refused_then_overwritten(cohort, tmp_path, capsys):
    """The defect as reported: fold_0's checkpoint then fold_1's into one folder was 'already complete'."""
    fold0 = make_checkpoint(tmp_path / "fold_0.ckpt", seed=0)
    fold1 = make_checkpoint(tmp_path / "fold_1.ckpt", seed=1)
    out = tmp_path / "pred"
    assert _predict(fold0, cohort, out) == 0
    scores = sorted((out / "scores").glob("*.h5"))
    assert len(scores) == 3
    rec = read_h5_provenance(scores[0])
    assert rec.stage == "predict" and rec.params["checkpoint"]["sha256"] == file_sha256(fold0)
    assert rec.params["classes"] == ["normal", "tumor"] and rec.params["no_coords"] is False
    assert rec.params["graph"]["mode"] == "paper" and "sha256_ends" in rec.inputs["features"]
    stamps = [p.stat().st_mtime_ns for p in scores]
    first = pd.read_csv(out / "predictions.csv")
    capsys.readouterr()

    assert _predict(fold0, cohort, out) == 0  # same checkpoint: resume
    assert "3 already complete" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in scores] == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), first)  # read back from the scores files

    assert _predict(fold1, cohort, out) == 2  # another checkpoint: refused before any work
    err = capsys.readouterr().err
    assert "made with other parameters" in err and "checkpoint.sha256" in err and "--overwrite" in err
    assert [p.stat().st_mtime_ns for p in scores] == stamps

    assert _predict(fold1, cohort, out, "--overwrite") == 0
    assert read_h5_provenance(scores[0]).params["checkpoint"]["sha256"] == file_sha256(fold1)
    again = pd.read_csv(out / "predictions.csv")
    assert not np.allclose(again["prob_tumor"], first["prob_tumor"])  # fold_1's predictions, not fold_0's


@pytest.mark.parametrize("change, named", [
    ({"classes": ("benign", "malignant")}, "classes[0]: 'normal' -> 'benign'"),
    ({"graph": {"mode": "knn", "k": 4}}, "graph.mode: 'paper' -> 'knn'"),
])
def test_predict_refuses_other_classes_or_graph_settings(cohort, tmp_path, capsys, change, named):
    out = tmp_path / "pred"
    assert _predict(make_checkpoint(tmp_path / "a.ckpt", seed=0), cohort, out) == 0
    capsys.readouterr()
    assert _predict(make_checkpoint(tmp_path / "b.ckpt", seed=0, **change), cohort, out) == 2
    err = capsys.readouterr().err
    assert named in err, err


def test_a_changed_feature_file_or_a_missing_record_is_not_taken_as_done(cohort, tmp_path, capsys):
    import shutil

    feats = tmp_path / "cohort"
    shutil.copytree(cohort, feats)
    ckpt = make_checkpoint(tmp_path / "a.ckpt", seed=0)
    out = tmp_path / "pred"
    assert _predict(ckpt, feats, out) == 0
    victim = sorted((feats / "features").glob("*.h5"))[0]
    with h5py.File(victim, "a") as f:
        f["features"][0, 0] += 1.0
    capsys.readouterr()
    assert _predict(ckpt, feats, out) == 2
    assert "inputs.features.sha256_ends" in capsys.readouterr().err
    assert _predict(ckpt, feats, out, "--overwrite") == 0
    with h5py.File(out / "scores" / victim.name, "a") as f:  # as an older wsigraph wrote it: no record
        del f.attrs["wsigraph_provenance"]
    capsys.readouterr()
    assert _predict(ckpt, feats, out) == 2
    assert "no record of the parameters" in capsys.readouterr().err


def test_predict_skips_a_broken_slide_exit_1_and_labels_the_heatmap(cohort, tmp_path, capsys):
    from wsigraph.data.scores import load_scores

    good = sorted((cohort / "features").glob("*.h5"))[0]
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file")
    out = tmp_path / "pred"
    ckpt = make_checkpoint(tmp_path / "a.ckpt", seed=0)
    assert main(["predict", "--checkpoint", str(ckpt), "--features", str(good), str(broken), "--out", str(out),
                 "--on-error", "skip", "--no-progress"]) == 1
    assert f"listed in {out / 'predict_report.csv'}" in capsys.readouterr().out
    assert pd.read_csv(out / "predict_report.csv").query("status == 'failed'")["slide_id"].tolist() == ["broken"]
    assert pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})["slide_id"].tolist() == [good.stem]
    scores = load_scores(out / "scores" / f"{good.stem}.h5")  # what `wsigraph heatmap` reads
    assert scores.name == "abmil patch score" and scores.attrs["pred"] in scores.attrs["classes"]


def test_predict_with_a_file_that_is_no_checkpoint_exits_2_naming_it(cohort, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert _predict(bad, cohort, tmp_path / "o") == 2
    assert "bad.ckpt" in capsys.readouterr().err
