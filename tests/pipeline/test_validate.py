"""Feature files checked before any work, and their source carried to the checkpoint (wsigraph.pipeline.validate):
random-init features refused unless allowed, mixed encoders refused, a broken test slide refused before the
first epoch with nothing written, predict/evaluate refusing features of another encoder."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from wsigraph.cli import main
from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.errors import InputError
from wsigraph.pipeline.validate import FeatureSource, validate_feature_files
from wsigraph.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def base_cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cohort")
    make_synthetic_cohort(d, n_slides=12, dim=8, grid=(8, 10), seed=0)
    return d


@pytest.fixture()
def cohort(base_cohort, tmp_path) -> Path:
    d = tmp_path / "cohort"
    shutil.copytree(base_cohort, d)
    return d


def _set_attrs(path: Path, **attrs) -> None:
    with h5py.File(path, "a") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
            f["coords"].attrs[k] = v


def _files(cohort: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((cohort / "features").glob("*.h5"))}


def test_a_clean_cohort_gives_its_source(cohort):
    src = validate_feature_files(_files(cohort), where="m.csv")
    assert src.encoder == "synthetic" and src.dim == 8 and not src.random_init


def test_random_init_features_are_refused_unless_allowed(cohort, caplog):
    files = _files(cohort)
    for p in files.values():
        _set_attrs(p, encoder="resnet50_trunc", encoder_weights="random-init")
    with pytest.raises(InputError, match=r"m\.csv: the features of 12 of 12 slide\(s\) come from a randomly "
                                         r"initialised encoder.*allow_random_features"):
        validate_feature_files(files, where="m.csv")
    assert validate_feature_files(files, where="m.csv", allow_random_features=True).random_init
    assert "randomly initialised" in caplog.text


def test_train_and_bench_refuse_random_init_features_unless_the_flag_says(cohort, tmp_path, capsys):
    for p in _files(cohort).values():
        _set_attrs(p, encoder="resnet50_trunc", encoder_weights="random-init")
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(cohort, out))]) == 2
    assert "--allow-random-features" in capsys.readouterr().err and not (out / "config.yaml").exists()
    assert main(["train", "--config", str(_config(cohort, out)), "--allow-random-features"]) == 0
    assert (out / "fold_1" / "best.ckpt").exists()
    # the flag gates the run but changes no result: resuming without it is not "a different configuration"
    assert main(["train", "--config", str(_config(cohort, out)), "--allow-random-features"]) == 0
    bench = {"output_dir": str(tmp_path / "bench"), "seeds": [0], "localization": False, "reference": "mean",
             "cohorts": [{"name": "rand", "manifest": str(cohort / "manifest.csv"),
                          "feature_dir": str(cohort / "features"), "n_folds": 2, "folds": [0]}],
             "models": [{"name": "mean", "params": {"hidden": 8}}],
             "train": {"epochs": 1, "bootstrap": 0, "progress_bar": False}}
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(bench))
    assert main(["bench", "--config", str(cfg), "--no-progress"]) == 2
    assert "randomly initialised" in capsys.readouterr().err
    assert main(["bench", "--config", str(cfg), "--no-progress", "--allow-random-features"]) == 0
    runs = pd.read_csv(tmp_path / "bench" / "runs.csv")
    assert len(runs) == 1 and runs["test_auc"].notna().all()


def test_two_encoders_in_one_cohort_are_refused_naming_both_slides(cohort):
    files = _files(cohort)
    first, last = list(files)[0], list(files)[-1]
    _set_attrs(files[last], encoder="uni", encoder_weights="pytorch_model.bin")
    with pytest.raises(InputError, match=rf"slides '{first}' .* and '{last}' .*different encoders.*"
                                         r"encoder: 'synthetic' -> 'uni'"):
        validate_feature_files(files, where="m.csv")


@pytest.mark.parametrize("attrs, first_attrs, message", [
    # two weights files of one name (every Hugging Face checkpoint is pytorch_model.bin): the digest tells
    ({"encoder_weights_sha256": "b" * 64}, {"encoder_weights_sha256": "a" * 64},
     "weights_sha256: 'aaaa.*' -> 'bbbb.*'"),
    ({"encoder_mpp": 1.0}, {"encoder_mpp": 0.5}, "encoder_mpp: 0.5 -> 1.0"),  # 20x and 10x in one cohort
])
def test_one_encoder_with_other_weights_or_resolution_is_refused(cohort, attrs, first_attrs, message):
    files = _files(cohort)
    names = list(files)
    for sid in names:
        _set_attrs(files[sid], encoder_weights="pytorch_model.bin", **first_attrs)
    _set_attrs(files[names[-1]], **attrs)
    with pytest.raises(InputError, match=rf"'{names[-1]}' .*different encoders or resolutions.*{message}"):
        validate_feature_files(files, where="m.csv")
    _set_attrs(files[names[-1]], **first_attrs)  # put back: one source, accepted with it recorded
    src = validate_feature_files(files, where="m.csv")
    assert src.as_dict() == {**src.as_dict(), **{k.replace("encoder_weights_", "weights_"): v
                                                   for k, v in first_attrs.items()}}
    assert validate_feature_files({names[0]: files[names[0]]}, where="m.csv").weights == "pytorch_model.bin"


def _config(cohort: Path, out: Path, **data) -> Path:
    cfg = {"data": {"manifest": str(cohort / "manifest.csv"), "feature_dir": str(cohort / "features"),
                    "n_folds": 2, "classes": ["normal", "tumor"], **data},
           "model": {"name": "mean", "hidden": 8}, "output_dir": str(out),
           "train": {"epochs": 1, "progress_bar": False, "bootstrap": 0}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_broken_slide_fails_train_before_the_first_epoch_and_writes_nothing(cohort, tmp_path, capsys):
    files = _files(cohort)
    victim = list(files)[-1]
    with h5py.File(files[victim], "a") as f:
        f["features"][3, 2] = np.nan
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(cohort, out))]) == 2
    err = capsys.readouterr().err
    assert f"slide '{victim}'" in err and "NaN or inf (first at row 3)" in err
    assert not out.exists()  # no config.yaml: the corrected rerun is not refused as another configuration
    with h5py.File(files[victim], "a") as f:
        f["features"][3, 2] = 0.0
    assert main(["train", "--config", str(_config(cohort, out))]) == 0


def test_checkpoint_records_its_features_and_predict_evaluate_refuse_others(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(cohort, out))]) == 0
    ckpt = out / "fold_0" / "best.ckpt"
    rec = FeatureSource.from_dict(load_checkpoint(ckpt).extra["features"])
    assert rec.encoder == "synthetic" and rec.dim == 8
    other = tmp_path / "other"
    shutil.copytree(cohort / "features", other)
    for p in other.glob("*.h5"):
        _set_attrs(p, encoder="uni", encoder_weights="pytorch_model.bin")
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--features", str(other), "--out", str(pred),
                 "--no-progress"]) == 1
    report = pd.read_csv(pred / "predict_report.csv")
    assert set(report["status"]) == {"failed"}
    assert "encoder: 'synthetic' -> 'uni'" in report["error"][0]
    assert main(["predict", "--checkpoint", str(ckpt), "--features", str(other), "--out", str(pred),
                 "--allow-feature-mismatch", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(cohort / "manifest.csv"), "--features",
                 str(other), "--out", str(tmp_path / "ev"), "--bootstrap", "0", "--no-progress"]) == 2
    assert "--allow-feature-mismatch" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(cohort / "manifest.csv"), "--features",
                 str(cohort / "features"), "--out", str(tmp_path / "ev"), "--bootstrap", "0", "--no-progress"]) == 0


def test_init_config_writes_the_classes_so_a_typo_label_is_refused(cohort, tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    assert main(["init-config", "--model", "mean", "--manifest", str(cohort / "manifest.csv"), "--features",
                 str(cohort / "features"), "--out", str(cfg_path)]) == 0
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["data"]["classes"] == ["normal", "tumor"]
    df = pd.read_csv(cohort / "manifest.csv", dtype=str)
    df.loc[2, "label"] = "tumour"
    df.to_csv(cohort / "manifest.csv", index=False)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg_path), f"output_dir={tmp_path / 'run'}", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "line 4" in err and "'tumour'" in err and "['normal', 'tumor']" in err
    assert not (tmp_path / "run").exists()
