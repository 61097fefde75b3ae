"""Training on a tiny synthetic cohort with the real SRMIL model: outputs, resume, checkpoints, bad input."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from wsigraph.cli import main
from wsigraph.data.features import read_features, write_features
from wsigraph.data.splits import read_splits_csv
from wsigraph.data.synthetic import make_synthetic_cohort
from wsigraph.errors import ConfigError, InputError
from wsigraph.train.checkpoint import load_checkpoint
from wsigraph.train.config import load_experiment_config
from wsigraph.train.inference import evaluate
from wsigraph.train.runner import class_weights, train_experiment
from wsigraph.train.selection import ModelSelection

CLASSES = ["normal", "tumor"]
SMALL = {"model": {"name": "srmil", "hidden": 16, "heads": 2},
         "train": {"progress_bar": False, "bootstrap": 100}}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cohort")
    make_synthetic_cohort(d, n_slides=12, dim=8, grid=(10, 14), seed=0)
    return d


def experiment(cohort_dir: Path, out: Path, manifest: Path | None = None, **sections) -> dict:
    cfg = {"data": {"manifest": str(manifest or cohort_dir / "manifest.csv"),
                    "feature_dir": str(cohort_dir / "features"), "classes": CLASSES},
           "model": dict(SMALL["model"]), "train": dict(SMALL["train"]), "output_dir": str(out)}
    for key, value in sections.items():
        cfg[key].update(value)
    return cfg


def split_manifest(cohort_dir: Path, path: Path, train_classes=None, unlabeled: int = 0) -> Path:
    """The cohort's manifest with a split column: per class, slides go train, train, val, test, train, ...;
    classes outside ``train_classes`` get no training slide; the first ``unlabeled`` training slides lose
    their label."""
    df = pd.read_csv(cohort_dir / "manifest.csv", dtype=str, keep_default_na=False)
    df["case_id"] = df["slide_id"]
    pattern = ["train", "train", "val", "test", "train", "val", "test", "train"]
    df["split"] = ""
    for _, rows in df.groupby("label"):
        df.loc[rows.index, "split"] = [pattern[i % len(pattern)] for i in range(len(rows))]
    if train_classes is not None:
        df.loc[(df["split"] == "train") & ~df["label"].isin(train_classes), "split"] = "test"
    df.loc[df.index[df["split"] == "train"][:unlabeled], "label"] = ""
    df.to_csv(path, index=False)
    return path


class EpochCounter(Callback):
    def __init__(self):
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(int(trainer.current_epoch))


class KillAt(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


@pytest.fixture(scope="module")
def cv_run(cohort_dir, tmp_path_factory) -> Path:
    """2-fold CV, 3 epochs, run through the CLI."""
    base = tmp_path_factory.mktemp("cv")
    out = base / "run"
    cfg_path = base / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(experiment(cohort_dir, out)))
    assert main(["train", "--config", str(cfg_path), "train.epochs=3", "data.n_folds=2", "data.split_mode=kfold"]) == 0
    return out


def test_cv_run_outputs(cv_run, cohort_dir):
    splits = read_splits_csv(cv_run / "splits.csv")
    assert len(splits.folds) == 2
    all_test = sorted(s for f in splits.folds for s in f["test"])
    assert all_test == sorted(pd.read_csv(cohort_dir / "manifest.csv", dtype=str)["slide_id"])
    per_fold_acc = []
    for k, fold in enumerate(splits.folds):
        d = cv_run / f"fold_{k}"
        res = json.loads((d / "results.json").read_text())
        assert res["fold"] == k and res["seed"] == 0 and res["classes"] == CLASSES
        assert res["selected_epoch"] in (2, 3)  # 1-based epochs after 60% of 3
        assert res["config"]["train"]["epochs"] == 3
        for part in ("val", "test"):
            pred = pd.read_csv(d / f"predictions_{part}.csv", dtype={"slide_id": str})
            assert sorted(pred["slide_id"]) == sorted(fold[part])
            probs = pred[[f"prob_{c}" for c in CLASSES]].to_numpy()
            assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
            assert list(pred["pred"]) == [CLASSES[i] for i in probs.argmax(1)]
            m = res["metrics"][part]
            assert m["n"] == len(fold[part])
            assert m["accuracy"] == pytest.approx(float((pred["pred"] == pred["label"]).mean()))
            lo, hi = m["accuracy_ci95"]
            assert lo <= m["accuracy"] <= hi
        per_fold_acc.append(res["metrics"]["test"]["accuracy"])
        hist = pd.read_csv(d / "history.csv")
        assert list(hist["epoch"]) == [1, 2, 3] and np.isfinite(hist["train_loss"]).all()
        assert (d / "plots" / "training_curves.png").stat().st_size > 0
        for part in ("val", "test"):
            both = pd.read_csv(d / f"predictions_{part}.csv")["label"].nunique() == 2
            assert (d / "plots" / f"confusion_{part}.png").exists()
            assert (d / "plots" / f"roc_pr_{part}.png").exists() == both
            assert (d / "plots" / f"calibration_{part}.png").exists() == both
        assert {"train_recon", "val_accuracy", "lr"} <= set(hist.columns)
        # SRMIL's super-node attention is a distribution; the synthetic slides carry lesion labels
        assert ((hist["val_attn_eff_frac"] > 0) & (hist["val_attn_eff_frac"] <= 1)).all()
        assert ((hist["val_attn_lesion_mass"] >= 0) & (hist["val_attn_lesion_mass"] <= 1)).all()
        assert ((hist["val_lesion_frac"] > 0) & (hist["val_lesion_frac"] < 1)).all()
    summary = json.loads((cv_run / "summary.json").read_text())
    assert summary["metrics"]["test_accuracy"]["mean"] == pytest.approx(np.mean(per_fold_acc))
    assert summary["metrics"]["test_accuracy"]["std"] == pytest.approx(np.std(per_fold_acc, ddof=1))
    table = pd.read_csv(cv_run / "summary.csv", dtype={"fold": str})
    assert list(table["fold"]) == ["0", "1", "mean", "std"]
    assert load_experiment_config(cv_run / "config.yaml").train.epochs == 3


def test_summary_covers_folds_finished_by_earlier_calls(cv_run):
    before = json.loads((cv_run / "summary.json").read_text())
    cfg = load_experiment_config(cv_run / "config.yaml")
    run = train_experiment(cfg, folds=[1])  # finished earlier: loaded, not retrained
    assert [r["fold"] for r in run["folds"]] == [1]
    after = json.loads((cv_run / "summary.json").read_text())
    assert after["n_folds"] == 2 and after["folds"] == [0, 1]
    assert after["metrics"]["test_auc"] == before["metrics"]["test_auc"]


def test_checkpoint_weights_only_and_evaluate_matches_predictions(cv_run, cohort_dir, tmp_path):
    best = cv_run / "fold_0" / "best.ckpt"
    raw = torch.load(best, map_location="cpu", weights_only=True)
    assert raw["format"] == "wsigraph-checkpoint" and raw["model"]["in_dim"] == 8
    assert raw["model"]["params"]["mask_rate"] == 0.7 and raw["graph"]["mode"] == "paper"
    assert torch.load(cv_run / "fold_0" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    expected = pd.read_csv(cv_run / "fold_0" / "predictions_test.csv", dtype={"slide_id": str})
    manifest = pd.read_csv(cohort_dir / "manifest.csv", dtype=str)
    sub = tmp_path / "test_manifest.csv"
    manifest[manifest["slide_id"].isin(expected["slide_id"])].to_csv(sub, index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(best), "--cohort", str(sub), "--features",
                 str(cohort_dir / "features"), "--out", str(out), "--bootstrap", "50", "--no-progress"]) == 0
    got = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str}).set_index("slide_id")
    exp = expected.set_index("slide_id").loc[got.index]
    assert np.allclose(got["prob_tumor"], exp["prob_tumor"], atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "plots" / "confusion_evaluate.png").exists()
    res = json.loads((cv_run / "fold_0" / "results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(res["metrics"]["test"]["accuracy"])


def test_resume_after_kill_continues_exactly(cohort_dir, tmp_path):
    manifest = split_manifest(cohort_dir, tmp_path / "m.csv", unlabeled=1)
    common = dict(train={"epochs": 4, "select_after": 0.0, "select_metric": "loss"})
    killed = load_experiment_config(experiment(cohort_dir, tmp_path / "killed", manifest, **common))
    straight = load_experiment_config(experiment(cohort_dir, tmp_path / "straight", manifest, **common))
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_experiment(killed, callbacks=[KillAt(2)])
    assert (tmp_path / "killed" / "fold_0" / "last.ckpt").exists()
    assert not (tmp_path / "killed" / "fold_0" / "results.json").exists()
    resumed = EpochCounter()
    train_experiment(killed, callbacks=[resumed])
    assert resumed.epochs == [2, 3]  # continued, not restarted
    train_experiment(straight)
    a = load_checkpoint(tmp_path / "killed" / "fold_0" / "best.ckpt")
    b = load_checkpoint(tmp_path / "straight" / "fold_0" / "best.ckpt")
    assert a.epoch == b.epoch
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in b.state_dict)
    ha = pd.read_csv(tmp_path / "killed" / "fold_0" / "history.csv")
    hb = pd.read_csv(tmp_path / "straight" / "fold_0" / "history.csv")
    assert list(ha["epoch"]) == [1, 2, 3, 4]
    assert np.allclose(ha["train_loss"], hb["train_loss"])
    # Lightning's CSV logger: the killed start and the resumed one each keep their own version of the log
    logs = [pd.read_csv(tmp_path / "killed" / "fold_0" / "logs" / f"version_{v}" / "metrics.csv") for v in (0, 1)]
    assert [list(d["step"]) for d in logs] == [[1, 2], [3, 4]]
    assert np.allclose(pd.concat(logs)["train_recon"], ha["train_recon"])  # every loss part, as history.csv
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    n_train_labeled = int(((table["split"] == "train") & (table["label"] != "")).sum())
    res = json.loads((tmp_path / "killed" / "fold_0" / "results.json").read_text())
    assert res["n_slides"]["train"] == n_train_labeled  # the unlabeled training slide is left out
    assert torch.are_deterministic_algorithms_enabled() is False  # Lightning's global flag is restored
    again = EpochCounter()
    before = (tmp_path / "killed" / "fold_0" / "results.json").read_text()
    train_experiment(killed, callbacks=[again])
    assert again.epochs == []  # a finished fold is not rerun
    assert (tmp_path / "killed" / "fold_0" / "results.json").read_text() == before
    changed = load_experiment_config(experiment(cohort_dir, tmp_path / "killed", manifest,
                                                train={"epochs": 4, "lr": 1e-3}))
    with pytest.raises(InputError, match=r"train\.lr"):
        train_experiment(changed)


def test_a_folder_moved_with_its_data_resumes(cohort_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cohort_dir, old / "cohort")
    manifest = split_manifest(old / "cohort", old / "cohort" / "split.csv")
    common = dict(train={"epochs": 1})
    train_experiment(load_experiment_config(experiment(old / "cohort", old / "run", manifest, **common)))
    new = tmp_path / "new"
    old.rename(new)
    moved = load_experiment_config(experiment(new / "cohort", new / "run", new / "cohort" / "split.csv", **common))
    again = EpochCounter()
    train_experiment(moved, callbacks=[again])  # same data relative to the run: resumes, nothing retrained
    assert again.epochs == []
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(new / "cohort", elsewhere)
    other = load_experiment_config(experiment(elsewhere, new / "run", elsewhere / "split.csv", **common))
    with pytest.raises(InputError, match=r"data\.manifest"):
        train_experiment(other)  # other data: refused


def test_a_changed_model_default_is_not_resumed(cohort_dir, tmp_path):
    """config.yaml records every constructor argument, defaults included: a run made when a default was
    different (SRMIL's variant was twopass until 2026-12-07) is refused, not resumed under the new one."""
    import yaml

    manifest = split_manifest(cohort_dir, tmp_path / "m.csv")
    cfg = load_experiment_config(experiment(cohort_dir, tmp_path / "run", manifest, train={"epochs": 1}))
    assert "variant" not in cfg.model.params
    train_experiment(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["variant"] == "reference" and saved["model"]["mask_rate"] == 0.7  # defaults written
    again = EpochCounter()
    train_experiment(cfg, callbacks=[again])  # same config, given or written out: resumes
    assert again.epochs == []
    # the folder as a run of the earlier default would have left it
    saved["model"]["variant"] = "twopass"
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(InputError, match=r"model\.variant: 'twopass' -> 'reference'"):
        train_experiment(cfg)
    # a folder written before defaults were recorded (given arguments only) still resumes
    del saved["model"]["variant"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(
        {**saved, "model": {k: saved["model"][k] for k in ("name", "hidden", "heads")}}))
    train_experiment(cfg, callbacks=[again])
    assert again.epochs == []


def test_three_ordinal_classes(tmp_path):
    classes = ["grade1", "grade2", "grade3"]
    make_synthetic_cohort(tmp_path / "c3", n_slides=12, dim=8, grid=(8, 12), classes=tuple(classes),
                          positive_fraction=0.67, seed=2)
    manifest = split_manifest(tmp_path / "c3", tmp_path / "m3.csv")
    cfg = experiment(tmp_path / "c3", tmp_path / "run", manifest, train={"epochs": 2, "class_weights": "balanced"})
    cfg["data"].update(classes=classes, ordinal=True)
    res = train_experiment(load_experiment_config(cfg))["folds"][0]
    test = res["metrics"]["test"]
    assert test["kappa_weights"] == "quadratic" and set(test["auc_per_class"]) == set(classes)
    assert np.array(test["confusion_matrix"]).shape == (3, 3)
    pred = pd.read_csv(tmp_path / "run" / "fold_0" / "predictions_test.csv")
    assert [c for c in pred.columns if c.startswith("prob_")] == [f"prob_{c}" for c in classes]


def test_checkpoint_mismatch_errors(cv_run, tmp_path):
    best = cv_run / "fold_0" / "best.ckpt"
    with pytest.raises(InputError) as e:
        load_checkpoint(best, expect_in_dim=1024)
    assert str(best) in str(e.value) and "feature dimension" in str(e.value) and "1024" in str(e.value)
    with pytest.raises(InputError, match="'abmil'"):
        load_checkpoint(best, expect_model="abmil")
    with pytest.raises(InputError, match="num_classes"):
        load_checkpoint(best, expect_num_classes=3)
    # Lightning's training checkpoint carries the same metadata and rebuilds the same model
    last = load_checkpoint(cv_run / "fold_0" / "last.ckpt")
    assert last.model_name == "srmil" and last.build_model() is not None
    raw = torch.load(best, map_location="cpu", weights_only=True)
    other = tmp_path / "other_model.ckpt"
    torch.save({**raw, "model": {**raw["model"], "name": "abmil", "params": {}}}, other)
    with pytest.raises(InputError) as e:
        load_checkpoint(other).build_model()
    assert str(other) in str(e.value) and "do not fit" in str(e.value)
    wrong_dim = tmp_path / "wrong_dim.ckpt"
    torch.save({**raw, "model": {**raw["model"], "in_dim": 16}}, wrong_dim)
    with pytest.raises(InputError, match="wrong_dim.ckpt"):
        load_checkpoint(wrong_dim).build_model()
    # a checkpoint from before SRMIL's `variant` argument rebuilds the computation it was trained with
    assert raw["model"]["params"]["variant"] == "reference"  # the default, written out
    old = tmp_path / "old.ckpt"
    old_params = {k: v for k, v in raw["model"]["params"].items()
                  if k not in ("variant", "recon_pass", "residual_mode", "att_init")}
    torch.save({**raw, "model": {**raw["model"], "params": old_params}}, old)
    assert load_checkpoint(old).build_model().variant == "twopass"
    ref = tmp_path / "ref.ckpt"
    torch.save({**raw, "model": {**raw["model"], "params": {**old_params, "variant": "reference"}}}, ref)
    rebuilt = load_checkpoint(ref).build_model()
    assert rebuilt.variant == "reference" and rebuilt.encoder.layers[1].res is None
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(InputError, match="not a wsigraph checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"format": "wsigraph-checkpoint", "obj": SimpleNamespace(a=1)}, pickled)
    with pytest.raises(InputError, match="weights_only=True"):
        load_checkpoint(pickled)


def test_feature_dimension_mismatch(cv_run, cohort_dir, tmp_path):
    other = make_synthetic_cohort(tmp_path / "d16", n_slides=4, dim=16, grid=(8, 10), seed=1)
    bad_slide = other.slide_ids[0]
    with pytest.raises(InputError) as e:
        evaluate(cv_run / "fold_0" / "best.ckpt", tmp_path / "d16" / "manifest.csv", tmp_path / "d16" / "features",
                 progress=False)
    msg = str(e.value)
    assert bad_slide in msg and "16" in msg and "best.ckpt" in msg and "8" in msg
    # a cohort mixing two encoders is refused before training, naming the odd slide
    feats = tmp_path / "mixed"
    feats.mkdir()
    for p in sorted((cohort_dir / "features").glob("*.h5")):
        (feats / p.name).write_bytes(p.read_bytes())
    odd = sorted(feats.glob("*.h5"))[5]
    bag = read_features(odd)
    write_features(odd, bag.coords, np.zeros((bag.num_patches, 16), np.float32), attrs=bag.attrs)
    cfg = load_experiment_config(experiment(cohort_dir, tmp_path / "run", train={"epochs": 1}))
    cfg.data.feature_dir = str(feats)
    with pytest.raises(InputError) as e:
        train_experiment(cfg)
    assert odd.stem in str(e.value) and "feature dimension 16" in str(e.value)


def test_class_missing_from_training_split(cohort_dir, tmp_path):
    manifest = split_manifest(cohort_dir, tmp_path / "m.csv", train_classes=["normal"])
    cfg = load_experiment_config(experiment(cohort_dir, tmp_path / "run", manifest, train={"epochs": 1}))
    with pytest.raises(InputError) as e:
        train_experiment(cfg)
    assert "fold 0" in str(e.value) and "'tumor'" in str(e.value) and "training split" in str(e.value)
    assert not (tmp_path / "run" / "fold_0").exists()


def test_predict_writes_scores_and_resumes(cv_run, cohort_dir, tmp_path):
    out = tmp_path / "pred"
    best = cv_run / "fold_0" / "best.ckpt"
    assert main(["predict", "--checkpoint", str(best), "--features", str(cohort_dir / "features"),
                 "--out", str(out), "--no-progress"]) == 0
    pred = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})
    feature_files = sorted((cohort_dir / "features").glob("*.h5"))
    assert sorted(pred["slide_id"]) == [p.stem for p in feature_files]
    assert "label" not in pred.columns
    assert np.allclose(pred[["prob_normal", "prob_tumor"]].sum(axis=1), 1.0, atol=1e-4)
    ref = pd.read_csv(cv_run / "fold_0" / "predictions_test.csv", dtype={"slide_id": str}).set_index("slide_id")
    same = pred.set_index("slide_id").loc[ref.index]
    assert np.allclose(same["prob_tumor"], ref["prob_tumor"], atol=1e-5)
    for p in feature_files:
        bag = read_features(p)
        with h5py.File(out / "scores" / f"{p.stem}.h5", "r") as f:
            assert f["coords"].dtype == np.int64 and np.array_equal(f["coords"][()], bag.coords)
            assert f["scores"].dtype == np.float32 and f["scores"].shape == (bag.num_patches,)
            assert np.isfinite(f["scores"][()]).all()
            assert f.attrs["slide_id"] == p.stem and f.attrs["model"] == "srmil"
            assert f.attrs["patch_size_level0"] == pytest.approx(bag.patch_size_level0)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "scores").iterdir()}
    assert main(["predict", "--checkpoint", str(best), "--features", str(cohort_dir / "features"),
                 "--out", str(out), "--no-progress"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scores").iterdir()} == stamps  # resumed, not redone
    again = pd.read_csv(out / "predictions.csv", dtype={"slide_id": str})
    assert np.allclose(again["prob_tumor"], pred["prob_tumor"])


class FakeTrainer(SimpleNamespace):
    pass


def run_selection(sel: ModelSelection, history: list[dict]) -> FakeTrainer:
    trainer = FakeTrainer(sanity_checking=False, is_global_zero=True, max_epochs=len(history), should_stop=False,
                          current_epoch=0)
    module = SimpleNamespace(model=torch.nn.Linear(2, 2), last_val_metrics={})
    for epoch, metrics in enumerate(history):
        trainer.current_epoch = epoch
        module.last_val_metrics = metrics
        sel.on_validation_end(trainer, module)
        if trainer.should_stop:
            break
    return trainer


def test_selection_rule_accuracy_then_auc_after_60_percent(tmp_path):
    acc = [0.95, 0.95, 0.9, 0.95, 0.5, 0.6, 0.8, 0.9, 0.9, 0.9]  # the early 0.95s are outside the window
    auc = [0.99, 0.99, 0.9, 0.99, 0.5, 0.6, 0.7, 0.6, 0.8, 0.8]  # epoch 8 wins the tie; 9 only equals it
    history = [{"accuracy": a, "auc": u, "loss": 1.0} for a, u in zip(acc, auc)]
    sel = ModelSelection(tmp_path / "best.ckpt", {"model": "m"}, select_after=0.6)
    run_selection(sel, history)
    assert sel.best_epoch == 8
    saved = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert saved["epoch"] == 8 and saved["metrics"]["auc"] == 0.8
    # restored state continues the same way
    sel2 = ModelSelection(tmp_path / "b2.ckpt", {}, select_after=0.6)
    sel2.load_state_dict(sel.state_dict())
    assert sel2.best_epoch == 8 and sel2.best_key == sel.best_key


def test_reference_selection_rule_window_and_later_ties(tmp_path):
    """The SRMIL reference: 0-based ``epoch > 0.6 * E`` and a full tie goes to the later epoch."""
    acc = [0.5] * 6 + [0.9, 0.8, 0.8, 0.8]   # epoch 6 (0-based) is in wsigraph's window, not the reference's
    auc = [0.5] * 6 + [0.9, 0.7, 0.8, 0.8]   # epochs 8 and 9 tie fully
    history = [{"accuracy": a, "auc": u} for a, u in zip(acc, auc)]
    ours = ModelSelection(tmp_path / "a.ckpt", {}, select_after=0.6)
    run_selection(ours, history)
    assert ours.best_epoch == 6
    ref = ModelSelection(tmp_path / "b.ckpt", {}, select_after=0.6, epoch_base=0, ties="later")
    run_selection(ref, history)
    assert ref.best_epoch == 9
    assert [ref.eligible(e, 100) for e in (60, 61)] == [False, True]
    assert [ours.eligible(e, 100) for e in (59, 60)] == [False, True]
    earlier = ModelSelection(tmp_path / "c.ckpt", {}, select_after=0.6, epoch_base=0)
    run_selection(earlier, history)
    assert earlier.best_epoch == 8


def test_attention_stats():
    from wsigraph.train.lightning_module import attention_stats

    uniform = torch.full((10,), 0.1)
    labels = torch.tensor([1, 1] + [0] * 8)
    assert attention_stats(uniform, labels) == pytest.approx((1.0, 0.2, 0.2))
    peaked = torch.tensor([0.5, 0.5] + [0.0] * 8)
    assert attention_stats(peaked, labels) == pytest.approx((0.2, 1.0, 0.2))
    eff, mass, frac = attention_stats(peaked, torch.zeros(10, dtype=torch.long))  # no lesion patch
    assert eff == pytest.approx(0.2) and np.isnan(mass) and np.isnan(frac)
    assert all(np.isnan(v) for v in attention_stats(torch.randn(10), labels))  # logits, not a distribution
    assert all(np.isnan(v) for v in attention_stats(None, labels))


def test_accumulating_two_steps_equals_one_step_of_two_slides(cohort_dir, tmp_path):
    """train.accumulate=2 with one slide per step and train.batch_size=2 take the same optimiser steps (the
    mean of the two slides' losses), so without dropout they end at the same weights."""
    manifest = split_manifest(cohort_dir, tmp_path / "m.csv")  # 6 training slides: three pairs
    weights = {}
    for name, train in (("batch2", {"batch_size": 2}), ("accumulate2", {"accumulate": 2}), ("plain", {})):
        cfg = load_experiment_config({
            "data": {"manifest": str(manifest), "feature_dir": str(cohort_dir / "features"), "classes": CLASSES},
            "model": {"name": "mean", "hidden": 16, "dropout": 0.0},  # not packed: the same slides, one by one
            "train": {"epochs": 2, "bootstrap": 0, "progress_bar": False, "accelerator": "cpu", "select_after": 0.5,
                      **train},
            "output_dir": str(tmp_path / name)})
        train_experiment(cfg)
        weights[name] = load_checkpoint(tmp_path / name / "fold_0" / "best.ckpt").state_dict
    for key, w in weights["batch2"].items():
        torch.testing.assert_close(weights["accumulate2"][key], w, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(weights["plain"][k], w) for k, w in weights["batch2"].items())
    with pytest.raises(ConfigError, match="accumulate must be >= 1"):
        load_experiment_config({"data": {"manifest": "m.csv"}, "train": {"accumulate": 0}})


def test_shuffle_once_keeps_one_order():
    from wsigraph.train.lightning_module import EpochShuffleSampler

    every = EpochShuffleSampler(20, seed=3)
    once = EpochShuffleSampler(20, seed=3, reshuffle=False)
    orders, fixed = [], []
    for epoch in range(3):
        every.set_epoch(epoch)
        once.set_epoch(epoch)
        orders.append(list(every))
        fixed.append(list(once))
    assert orders[0] != orders[1] and fixed[0] == fixed[1] == fixed[2] == orders[0]
    assert sorted(fixed[0]) == list(range(20)) and fixed[0] != list(range(20))


def test_selection_on_loss_and_early_stopping(tmp_path):
    history = [{"accuracy": 0.5, "auc": 0.5, "loss": v} for v in (0.9, 0.5, 0.6, 0.7, 0.4, 0.3)]
    sel = ModelSelection(tmp_path / "best.ckpt", {}, metric="loss", tiebreak=None, select_after=0.0, patience=2)
    trainer = run_selection(sel, history)
    assert trainer.should_stop and sel.best_epoch == 1 and trainer.current_epoch == 3


def test_class_weights():
    assert class_weights("none", [0, 1, 1], CLASSES) is None
    w = class_weights("balanced", [0, 1, 1, 1], CLASSES)
    assert w == pytest.approx([4 / (2 * 1), 4 / (2 * 3)])
    assert class_weights([1, 3], [0, 1], CLASSES) == [1.0, 3.0]
    with pytest.raises(InputError, match="class_weights"):
        class_weights([1.0], [0, 1], CLASSES)


def test_tensorboard_logger_gets_every_loss_part(cohort_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; install it to test this logger")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest = split_manifest(cohort_dir, tmp_path / "m.csv")
    cfg = load_experiment_config(experiment(cohort_dir, tmp_path / "tb", manifest,
                                            train={"epochs": 2, "logger": "tensorboard", "plots": False}))
    train_experiment(cfg)
    fold = tmp_path / "tb" / "fold_0"
    assert not (fold / "plots").exists()
    events = EventAccumulator(str(fold / "logs" / "version_0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "train_ce_masked", "train_ce_full", "train_recon", "val_auc", "lr"} <= tags
    hist = pd.read_csv(fold / "history.csv")
    recon = [e.value for e in events.Scalars("train_recon")]
    assert [e.step for e in events.Scalars("train_recon")] == [1, 2]
    assert np.allclose(recon, hist["train_recon"], rtol=1e-5)
    assert (fold / "logs" / "version_0" / "metrics.csv").exists()  # CSV alongside, always
    with pytest.raises(ConfigError, match="logger must be one of"):
        load_experiment_config(experiment(cohort_dir, tmp_path / "x", manifest, train={"logger": "wandb"}))


def test_reuse_cpu_memory_is_applied_on_cpu_and_resume_free(cohort_dir, tmp_path, monkeypatch):
    from wsigraph.utils import memory

    calls = []
    monkeypatch.setattr(memory, "reuse_freed_memory", lambda: calls.append(1) or True)
    manifest = split_manifest(cohort_dir, tmp_path / "split.csv")
    cfg = experiment(cohort_dir, tmp_path / "run", manifest, train={"epochs": 1, "accelerator": "cpu"})
    train_experiment(load_experiment_config(cfg))
    assert calls == []  # off by default: glibc's own behaviour
    cfg["train"]["reuse_cpu_memory"] = True
    cfg["output_dir"] = str(tmp_path / "run2")
    train_experiment(load_experiment_config(cfg))
    assert calls == [1]
    cfg["train"]["reuse_cpu_memory"] = False
    again = EpochCounter()
    train_experiment(load_experiment_config(cfg), callbacks=[again])  # the key does not change results
    assert again.epochs == []
