"""``train_experiment`` for survival and regression (data.task): outputs, metrics, resume, and the errors
a bad manifest or config gets (naming the line and column)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.errors import ConfigError, InputError
from wsigraph.train.config import load_experiment_config
from wsigraph.train.runner import train_experiment


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tasks")
    make_synthetic_cohort(d, n_slides=24, dim=8, grid=(10, 12), seed=0)
    return d


def config(cohort: Path, out: Path, task: str, manifest: Path | None = None, **data):
    return load_experiment_config({
        "data": {"manifest": str(manifest or cohort / "manifest.csv"), "feature_dir": str(cohort / "features"),
                 "task": task, "n_folds": 3, **data},
        "model": {"name": "srmil", "hidden": 16, "heads": 2, "cls_hidden": 8},
        "train": {"epochs": 2, "bootstrap": 20, "progress_bar": False, "accelerator": "cpu"},
        "output_dir": str(out)})


def test_survival_run_writes_risks_curves_and_survival_metrics(cohort, tmp_path):
    cfg = config(cohort, tmp_path / "run", "survival")
    assert cfg.train.select_metric == "c_index" and cfg.train.select_tiebreak is None
    result = train_experiment(cfg, folds=[0])
    fold = tmp_path / "run" / "fold_0"
    res = json.loads((fold / "results.json").read_text())
    test = res["metrics"]["test"]
    assert res["task"] == "survival" and {"c_index", "c_index_ci95", "td_auc", "mean_td_auc", "ibs"} <= set(test)
    assert 0.0 <= test["c_index"] <= 1.0 and len(test["c_index_ci95"]) == 2
    val_risk = pd.read_csv(fold / "predictions_val.csv")["risk"]
    assert test["risk_threshold"] == pytest.approx(float(np.median(val_risk)))  # cut where it was chosen
    assert "logrank_p" in test
    for name in ("km_val.png", "km_test.png", "training_curves.png"):
        assert (fold / "plots" / name).stat().st_size > 5000, name
    pred = pd.read_csv(fold / "predictions_test.csv")
    assert list(pred.columns) == ["slide_id", "case_id", "time", "event", "risk", "surv_bin0", "surv_bin1", "surv_bin2",
                                  "surv_bin3"]
    manifest = pd.read_csv(cohort / "manifest.csv").set_index("slide_id")
    assert np.allclose(pred["time"], manifest.loc[pred["slide_id"], "time"])  # each row's own target
    curves = pred[[f"surv_bin{k}" for k in range(4)]].to_numpy()
    assert (np.diff(curves, axis=1) <= 1e-9).all() and np.allclose(pred["risk"], -curves.sum(axis=1), atol=1e-4)
    hist = pd.read_csv(fold / "history.csv")
    assert {"train_nll_full", "train_nll_masked", "train_recon", "val_c_index"} <= set(hist.columns)
    assert "test_c_index" in result["summary"]["metrics"]
    # splits keep events in proportion, grouped by patient
    splits = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert set(splits["label"]) == {"event", "censored"}
    # resume: the finished fold is not rerun
    again = train_experiment(cfg, folds=[0])
    assert again["folds"][0]["metrics"]["test"]["c_index"] == test["c_index"]


def test_cox_needs_several_slides_per_step_and_then_trains(cohort, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        config(cohort, tmp_path / "cox", "survival", survival={"loss": "cox"})
    raw = {"data": {"manifest": str(cohort / "manifest.csv"), "feature_dir": str(cohort / "features"),
                    "task": "survival", "n_folds": 3, "survival": {"loss": "cox"}},
           "model": {"name": "abmil", "embed_dim": 16, "attn_dim": 8},
           "train": {"epochs": 2, "bootstrap": 0, "progress_bar": False, "accelerator": "cpu", "batch_size": 11},
           "output_dir": str(tmp_path / "cox")}
    cfg = load_experiment_config(raw)
    import wsigraph.train.runner as runner

    steps = []
    make_loader = runner.make_loader

    def spy(dataset, **kw):  # the training loader's steps: none of one slide, which a Cox loss cannot use
        loader = make_loader(dataset, **kw)
        if kw.get("batch_size", 1) > 1:
            steps.append([len(b) for b in loader])
        return loader

    monkeypatch.setattr(runner, "make_loader", spy)
    train_experiment(cfg, folds=[0])
    assert steps[0] == [12]  # 12 training slides in steps of 11: the 1 left over joins the step before
    pred = pd.read_csv(tmp_path / "cox" / "fold_0" / "predictions_test.csv")
    assert list(pred.columns) == ["slide_id", "case_id", "time", "event", "risk"]
    m = json.loads((tmp_path / "cox" / "fold_0" / "results.json").read_text())["metrics"]["test"]
    assert np.isfinite(m["c_index"]) and "ibs" in m  # Breslow curves from the training fold's risks


def test_regression_run_predicts_on_the_target_scale(cohort, tmp_path):
    cfg = config(cohort, tmp_path / "reg", "regression", regression={"loss": "huber"})
    assert cfg.train.select_metric == "pearson"
    train_experiment(cfg, folds=[0])
    pred = pd.read_csv(tmp_path / "reg" / "fold_0" / "predictions_test.csv")
    assert list(pred.columns) == ["slide_id", "case_id", "target", "pred"]
    assert (tmp_path / "reg" / "fold_0" / "plots" / "scatter_test.png").exists()
    m = json.loads((tmp_path / "reg" / "fold_0" / "results.json").read_text())["metrics"]["test"]
    assert {"pearson", "spearman", "pearson_ci95", "mae", "rmse", "r2"} <= set(m)
    manifest = pd.read_csv(cohort / "manifest.csv")
    assert abs(pred["pred"].mean() - manifest["target"].mean()) < 3 * manifest["target"].std()


@pytest.mark.parametrize("column, value, message", [
    ("time", "-1", r"line 4: column 'time' of slide 'syn_002' is -1: follow-up times must be >= 0"),
    ("time", "", r"line 4: column 'time' of slide 'syn_002' is empty"),
    ("event", "2", r"line 4: column 'event' of slide 'syn_002' is 2: the event indicator must be 1"),
    ("event", "yes", r"line 4: column 'event' of slide 'syn_002' is 'yes', not a number"),
    ("target", "high", r"line 4: column 'target' of slide 'syn_002' is 'high', not a number"),
])
def test_bad_targets_are_refused_naming_line_and_column(cohort, tmp_path, column, value, message):
    df = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[2, column] = value
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    task = "regression" if column == "target" else "survival"
    with pytest.raises(InputError, match=message):
        train_experiment(config(cohort, tmp_path / "out", task, manifest=path))
    assert not (tmp_path / "out").exists()  # nothing written before the checks


def test_missing_columns_and_a_fold_without_events(cohort, tmp_path):
    df = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    path = tmp_path / "noevent.csv"
    df.drop(columns=["event"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"needs the column 'event'"):
        train_experiment(config(cohort, tmp_path / "o1", "survival", manifest=path))
    df["event"] = "0"
    df.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"event|no slide in the training split"):
        train_experiment(config(cohort, tmp_path / "o2", "survival", manifest=path))
    with pytest.raises(ConfigError, match="not a survival metric"):
        load_experiment_config({"data": {"manifest": "m.csv", "task": "survival"}, "train": {"select_metric": "auc"}})


def test_cli_init_config_task_then_train_then_evaluate(cohort, tmp_path, capsys):
    from wsigraph.cli import main

    cfg = tmp_path / "surv.yaml"
    assert main(["init-config", "--task", "survival", "--model", "abmil", "--manifest", str(cohort / "manifest.csv"),
                 "--features", str(cohort / "features"), "--out", str(cfg)]) == 0
    manifest = pd.read_csv(cohort / "manifest.csv")
    events = int(manifest.groupby("case_id")["event"].max().sum())  # a patient's event counts once
    assert f"24 slides of {manifest['case_id'].nunique()} patients, {events} events" in capsys.readouterr().err
    text = cfg.read_text()
    assert "task: survival" in text and "select_metric: c_index" in text
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--fold", "0", "train.epochs=1", "data.n_folds=3",
                 "train.bootstrap=0", "train.progress_bar=false", "model.embed_dim=16", "model.attn_dim=8",
                 f"output_dir={out}"]) == 0
    best = out / "fold_0" / "best.ckpt"
    assert best.exists()
    printed = capsys.readouterr().out  # the survival run's own metrics, not classification's
    assert "test_c_index: " in printed and "test_ibs: " in printed and "auc:" not in printed.replace("td_auc:", "")
    assert main(["evaluate", "--checkpoint", str(best), "--cohort", str(cohort / "manifest.csv"), "--features",
                 str(cohort / "features"), "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["task"] == "survival" and m["n"] == 24 and {"c_index", "c_index_ci95", "mean_td_auc", "ibs"} <= set(m)
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert {"time", "event", "risk", "surv_bin0"} <= set(pred.columns)
    assert (tmp_path / "ev" / "plots" / "km_evaluate.png").exists()


def test_patients_with_several_slides_get_metrics_beside_the_slides(cohort, tmp_path):
    df = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    df["case_id"] = [f"p{i // 2}" for i in range(len(df))]  # two slides per patient, one outcome each
    for col in ("time", "event"):
        df[col] = df[col].iloc[::2].repeat(2).to_numpy()[: len(df)]
    path = tmp_path / "paired.csv"
    df.to_csv(path, index=False)
    cfg = config(cohort, tmp_path / "pat", "survival", manifest=path)
    train_experiment(cfg, folds=[0])
    fold = tmp_path / "pat" / "fold_0"
    res = json.loads((fold / "results.json").read_text())
    assert {"test", "test_patient"} <= set(res["metrics"])
    slides, patients = pd.read_csv(fold / "predictions_test.csv"), pd.read_csv(fold / "predictions_test_patients.csv")
    assert res["metrics"]["test_patient"]["n"] == len(patients) == len(slides) // 2
    assert (patients["n_slides"] == 2).all()
    # the patient's risk is the mean of its slides' risks
    slides["case_id"] = df.set_index("slide_id").loc[slides["slide_id"], "case_id"].to_numpy()
    assert np.allclose(patients.set_index("case_id")["risk"], slides.groupby("case_id")["risk"].mean()
                       .loc[patients["case_id"]].to_numpy(), atol=1e-5)
    summary = pd.read_csv(tmp_path / "pat" / "summary.csv")
    assert "test_patient_c_index" in summary.columns and "test_c_index" in summary.columns


def test_predict_and_heatmap_of_a_survival_model(cohort, tmp_path):
    from wsigraph.cli import main
    from wsigraph.data.scores import load_scores

    cfg = config(cohort, tmp_path / "run", "survival")
    train_experiment(cfg, folds=[0])
    best = tmp_path / "run" / "fold_0" / "best.ckpt"
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(best), "--features", str(cohort / "features"), "--out", str(out),
                 "--no-progress"]) == 0
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["slide_id", "risk", "surv_bin0", "surv_bin1", "surv_bin2", "surv_bin3"]
    assert len(pred) == 24 and pred["risk"].between(-4, 0).all()
    sid = pred["slide_id"].iloc[0]
    attrs = load_scores(out / "scores" / f"{sid}.h5").attrs
    assert attrs["task"] == "survival" and float(attrs["risk"]) == pytest.approx(pred["risk"].iloc[0], rel=1e-5)
    # a rerun resumes (same checkpoint): the same table, from the stored rows
    assert main(["predict", "--checkpoint", str(best), "--features", str(cohort / "features"), "--out", str(out),
                 "--no-progress"]) == 0
    assert pd.read_csv(out / "predictions.csv").equals(pred)
    # the per-patch scores of a survival model draw as heatmaps, the title naming the risk
    assert main(["heatmap", "--scores", str(out / "scores" / f"{sid}.h5"), "--out",
                 str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 1000
