"""Accuracy harness: outputs of a tiny benchmark, resume, config changes, bad input, paired tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from wsigraph.bench import load_bench_config, run_benchmark
from wsigraph.bench.stats import paired_wilcoxon
from wsigraph.cli import main
from wsigraph.errors import ConfigError, InputError
from wsigraph.nn import MILOutput
from wsigraph.nn.models import MeanPoolMIL

SEEDS = [0, 1]


class NoScoreMean(MeanPoolMIL):
    """Mean pooling that gives no per-patch scores (localisation must come out NaN)."""

    def forward(self, data):
        return MILOutput(super().forward(data).logits, None)


def tiny_config(out: Path) -> dict:
    syn = {"n_slides": 10, "dim": 8, "grid": [12, 16], "seed": 3}
    return {
        "output_dir": str(out),
        "seeds": list(SEEDS),
        "reference": "srmil",
        "localization_k": [3],
        "cohorts": [
            {"name": "lesion", "synthetic": {**syn, "mode": "lesion", "lesion_strength": 3.0}, "n_folds": 2,
             "folds": [0]},
            {"name": "contig", "synthetic": {**syn, "mode": "contiguity"}, "n_folds": 2, "folds": [0]},
        ],
        "models": [
            {"name": "srmil", "params": {"hidden": 8, "heads": 2}},
            {"name": "mean", "params": {"hidden": 8}},
            {"label": "noscore", "name": "noscore_mean", "params": {"hidden": 8}},
        ],
        "train": {"epochs": 2, "bootstrap": 0, "select_after": 0.0},
    }


@pytest.fixture(autouse=True)
def _noscore_model(monkeypatch):
    from wsigraph.nn import registry

    monkeypatch.setitem(registry.MODELS, "noscore_mean", NoScoreMean)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The tiny benchmark, run once: (config dict, output folder, runs DataFrame)."""
    from wsigraph.nn import registry

    out = tmp_path_factory.mktemp("bench") / "results"
    raw = tiny_config(out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.MODELS, "noscore_mean", NoScoreMean)
        runs = run_benchmark(load_bench_config(raw), progress=False)
    return raw, out, runs


def test_runs_csv_has_one_row_per_cohort_model_seed_fold(bench):
    raw, out, runs = bench
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == len(runs) == 2 * 3 * len(SEEDS)
    got = set(zip(df["cohort"], df["model"], df["seed"], df["fold"]))
    assert got == {(c, m, s, 0) for c in ("lesion", "contig") for m in ("srmil", "mean", "noscore") for s in SEEDS}
    for col in ("test_auc", "test_accuracy", "test_balanced_accuracy", "test_f1_macro", "seconds",
                "loc_patch_auc", "loc_lesion_hit@3"):
        assert col in df.columns
    assert df["test_accuracy"].between(0, 1).all()
    assert (df["seconds"] > 0).all()
    # identical splits for every model and seed of a cohort
    for cohort in ("lesion", "contig"):
        splits = {pd.read_csv(p).drop(columns=[c for c in ("case_id", "label")
                                                 if c in pd.read_csv(p, nrows=0).columns]).to_csv()
                  for p in (out / "runs" / cohort).glob("*/seed_*/splits.csv")}
        assert len(splits) == 1


def test_localization_columns(bench):
    _, out, _ = bench
    df = pd.read_csv(out / "runs.csv")
    scored = df[df["model"].isin(["srmil", "mean"])]
    assert np.isfinite(scored["loc_patch_auc"]).all()
    assert scored["loc_patch_auc"].between(0, 1).all() and scored["loc_lesion_hit@3"].between(0, 1).all()
    assert df.loc[df["model"] == "noscore", "loc_patch_auc"].isna().all()
    loc = pd.read_csv(out / "localization.csv")
    assert {"cohort", "model", "seed", "fold", "slide_id", "auc", "lesion_hit@3"} <= set(loc.columns)
    # one row per test slide of every run
    n_test = df.groupby(["cohort"])["n_test"].first()
    for (cohort, model, seed), part in loc.groupby(["cohort", "model", "seed"]):
        assert len(part) == n_test[cohort]


def test_table_has_bold_best_per_column(bench):
    _, out, runs = bench
    text = (out / "table.md").read_text()
    for cohort in ("lesion", "contig"):
        section = text.split(f"### {cohort}")[1].split("###")[0]
        rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
        header = next(ln for ln in section.splitlines() if ln.startswith("| model"))
        cols = [c.strip() for c in header.strip("|").split("|")]
        assert "AUC" in cols and "patch AUC" in cols
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
        assert [c[0] for c in cells] == ["srmil", "mean", "noscore"]
        for j in range(2, len(cols)):
            assert any(c[j].startswith("**") for c in cells), (cohort, cols[j])
        # the bold AUC is the highest mean AUC of the runs
        part = runs[runs["cohort"] == cohort].groupby("model")["test_auc"].mean().round(3)
        bold = {c[0] for c in cells if c[cols.index("AUC")].startswith("**")}
        assert bold == set(part[part == part.max()].index)


def test_boxplots_and_wilcoxon(bench):
    _, out, _ = bench
    for metric in ("auc", "accuracy", "balanced_accuracy", "f1_macro", "loc_patch_auc"):
        png = out / f"boxplot_{metric}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    # the per-epoch diagnostics come with every report: one row per model x seed x fold x epoch
    diag = pd.read_csv(out / "diagnostics.csv")
    assert set(diag["model"]) == {"srmil", "mean", "noscore"} and diag["epoch"].min() == 1
    assert (out / "diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cohort in ("lesion", "contig"):  # every model's test ROC on one figure per cohort
        assert (out / f"roc_{cohort}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wil = pd.read_csv(out / "wilcoxon.csv")
    assert set(wil["model"]) == {"mean", "noscore"} and set(wil["reference"]) == {"srmil"}
    assert len(wil) == 2 * 2 * 5  # cohorts x other models x (4 metrics + patch AUC)
    assert (wil.loc[wil["metric"] == "test_auc", "n"] == len(SEEDS)).all()
    assert wil.loc[wil["model"] == "noscore", :].query("metric == 'loc_patch_auc'")["n"].eq(0).all()


def test_rerun_does_not_retrain(bench):
    raw, out, _ = bench
    results = sorted(out.glob("runs/*/*/seed_*/fold_*/results.json"))
    assert len(results) == 12
    before = {p: p.stat().st_mtime_ns for p in results}
    runs_csv = (out / "runs.csv").read_text()
    assert main(["bench", "--config", str(_write_yaml(raw, out.parent / "same.yaml")), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == before
    assert json.loads((out / "bench_info.json").read_text())["folds_trained_last_invocation"] == 0
    assert (out / "runs.csv").read_text() == runs_csv


def test_changed_config_is_refused_naming_the_key(bench):
    raw, out, _ = bench
    path = _write_yaml(raw, out.parent / "changed.yaml")
    with pytest.raises(ConfigError, match=r"train\.epochs: 2 -> 3"):
        run_benchmark(load_bench_config(path, ["train.epochs=3"]), progress=False)
    with pytest.raises(ConfigError, match=r"models\[mean\]\.params\.hidden: 8 -> 6"):
        run_benchmark(load_bench_config(path, ["models=" + json.dumps(
            [{"name": "srmil", "params": {"hidden": 8, "heads": 2}}, {"name": "mean", "params": {"hidden": 6}}])]),
            progress=False)
    assert main(["bench", "--config", str(path), "train.epochs=3", "--no-progress"]) == 2
    assert yaml.safe_load((out / "bench_config.yaml").read_text())["train"]["epochs"] == 2


def test_force_new_config_moves_old_runs_aside(tmp_path):
    raw = {"output_dir": str(tmp_path / "out"), "seeds": [0], "reference": "srmil",
           "cohorts": [{"name": "c", "synthetic": {"n_slides": 8, "dim": 4, "grid": [10, 12], "seed": 2},
                        "n_folds": 2, "folds": [0]}],
           "models": [{"name": "srmil", "params": {"hidden": 4, "heads": 1}},
                      {"name": "mean", "params": {"hidden": 4}}],
           "train": {"epochs": 1, "bootstrap": 0}}
    run_benchmark(load_bench_config(raw), progress=False)
    out = tmp_path / "out"
    srmil_result = out / "runs" / "c" / "srmil" / "seed_0" / "fold_0" / "results.json"
    mtime = srmil_result.stat().st_mtime_ns
    raw["models"][1]["params"]["hidden"] = 6
    with pytest.raises(ConfigError, match=r"models\[mean\]\.params\.hidden: 4 -> 6"):
        run_benchmark(load_bench_config(raw), progress=False)
    runs = run_benchmark(load_bench_config(raw), progress=False, force_new_config=True)
    moved = list((out / "superseded").glob("*/runs/c/mean/seed_0/fold_0/results.json"))
    assert len(moved) == 1 and len(list((out / "superseded").glob("*/bench_config.yaml"))) == 1
    assert yaml.safe_load((out / "bench_config.yaml").read_text())["models"][1]["params"]["hidden"] == 6
    assert srmil_result.stat().st_mtime_ns == mtime  # the unchanged model is not retrained
    assert list(runs["model"]) == ["srmil", "mean"]
    assert (out / "splits" / "c.csv").exists() and not list((out / "superseded").glob("*/splits"))


def test_unknown_model_lists_valid_names(tmp_path):
    raw = tiny_config(tmp_path / "out")
    raw["models"].append({"label": "mine", "name": "no_such_model"})
    with pytest.raises(ConfigError, match="no_such_model") as e:
        run_benchmark(load_bench_config(raw, check=False), progress=False)
    assert "srmil" in str(e.value) and "abmil" in str(e.value) and "models[3]" in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    path = _write_yaml(raw, tmp_path / "bad.yaml")
    assert main(["bench", "--config", str(path)]) == 2


def test_unknown_model_parameter_and_only_filters(tmp_path):
    raw = tiny_config(tmp_path / "out")
    raw["models"][1]["params"]["hiddden"] = 3
    with pytest.raises(ConfigError, match=r"hiddden"):
        load_bench_config(raw)
    with pytest.raises(ConfigError, match=r"models \['nope'\] not in the config"):
        run_benchmark(load_bench_config(tiny_config(tmp_path / "out")), only_models=["nope"], progress=False)


def test_missing_feature_files(tmp_path):
    from wsigraph.data.synthetic import make_synthetic_cohort

    cohort = tmp_path / "cohort"
    make_synthetic_cohort(cohort, n_slides=8, dim=4, grid=(10, 12), seed=1)
    (cohort / "features" / "syn_002.h5").unlink()
    (cohort / "features" / "syn_005.h5").unlink()
    raw = {"output_dir": str(tmp_path / "out"), "seeds": [0], "reference": "mean",
           "cohorts": [{"name": "c", "manifest": str(cohort / "manifest.csv"),
                        "feature_dir": str(cohort / "features"), "classes": ["normal", "tumor"], "n_folds": 2,
                        "folds": [0]}],
           "models": [{"name": "mean", "params": {"hidden": 4}}], "train": {"epochs": 1, "bootstrap": 0}}
    with pytest.raises(InputError, match=r"cohort 'c'.*syn_002.*syn_005.*missing_features: skip"):
        run_benchmark(load_bench_config(raw), progress=False)
    assert not (tmp_path / "out" / "runs").exists()
    runs = run_benchmark(load_bench_config(raw, ["missing_features=skip"]), progress=False)
    kept = pd.read_csv(tmp_path / "out" / "manifests" / "c.csv")
    assert len(kept) == 6 and "syn_002" not in set(kept["slide_id"])
    assert len(runs) == 1 and runs["n_train"].iloc[0] + runs["n_val"].iloc[0] + runs["n_test"].iloc[0] == 6


def test_synthetic_folder_with_other_parameters_is_refused(tmp_path):
    from wsigraph.data.synthetic import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "syn", n_slides=6, dim=4, grid=(10, 12), seed=1)
    raw = {"output_dir": str(tmp_path / "out"), "seeds": [0], "reference": "mean",
           "cohorts": [{"name": "c", "root": str(tmp_path / "syn"),
                        "synthetic": {"n_slides": 6, "dim": 5, "grid": [10, 12], "seed": 1}}],
           "models": [{"name": "mean"}], "train": {"epochs": 1}}
    with pytest.raises(InputError, match=r"dim: 4 -> 5"):
        run_benchmark(load_bench_config(raw), progress=False)
    assert len(list((tmp_path / "syn" / "features").glob("*.h5"))) == 6  # untouched


def test_bad_config_keys_are_named(tmp_path):
    raw = tiny_config(tmp_path / "out")
    raw["cohorts"][0]["n_fold"] = 3
    with pytest.raises(ConfigError, match=r"cohorts\[0\]\.n_fold"):
        load_bench_config(raw)
    raw = tiny_config(tmp_path / "out")
    raw["models"].append({"name": "mean", "params": {"hidden": 4}})
    with pytest.raises(ConfigError, match=r"model label\(s\) given twice: \['mean'\]"):
        load_bench_config(raw)
    raw = tiny_config(tmp_path / "out")
    raw["reference"] = "abmil"
    with pytest.raises(ConfigError, match="reference 'abmil'"):
        load_bench_config(raw)


def test_fold_per_seed_rotation():
    from wsigraph.bench import CohortSpec

    spec = CohortSpec(name="c", manifest="m.csv", feature_dir="f", n_folds=3, fold_per_seed=True)
    assert spec.seed_folds([7, 8, 9, 10], 3) == {7: [0], 8: [1], 9: [2], 10: [0]}
    spec = CohortSpec(name="c", manifest="m.csv", feature_dir="f", folds=[2, 0])
    assert spec.seed_folds([1, 2], 3) == {1: [2, 0], 2: [2, 0]}


def test_paired_wilcoxon():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    a = rng.uniform(size=12)
    b = a - rng.uniform(0.01, 0.2, size=12)
    res = paired_wilcoxon(a, b)
    ref = wilcoxon(a, b)
    assert res["n"] == 12 and res["p_value"] == pytest.approx(ref.pvalue) and res["mean_diff"] > 0
    same = paired_wilcoxon([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert same["p_value"] == 1.0 and same["note"] == "all differences zero"
    with_nan = paired_wilcoxon([0.5, np.nan, 0.7, 0.9], [0.4, 0.3, np.nan, 0.6])
    assert with_nan["n"] == 2
    assert np.isnan(paired_wilcoxon([0.5], [0.4])["p_value"])


def _write_yaml(raw: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_compare_script_writes_the_results_section(bench, tmp_path):
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_compare", repo / "benchmarks" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    raw, out, _ = bench
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written text\n\n<!-- BEGIN accuracy -->\nold\n<!-- END accuracy -->\n\ntail\n")
    compare.update_results(md, compare.results_markdown(load_bench_config(raw), out, "compare.py"))
    text = md.read_text()
    assert text.startswith("# Results\n\nhand-written text\n\n<!-- BEGIN accuracy -->\n## Accuracy")
    assert text.endswith("<!-- END accuracy -->\n\ntail\n") and "\nold\n" not in text
    assert "#### lesion" in text and "| srmil |" in text and "cannot give p below 0.5" in text


def _varied_config(out: Path, seeds=(0, 1)) -> dict:
    return {"output_dir": str(out), "seeds": list(seeds), "reference": "mean", "localization_k": [3],
            "cohorts": [{"name": "v", "synthetic": {"n_slides": 10, "dim": 8, "grid": [12, 16], "seed": 40,
                                                    "mode": "contiguity"},
                         "vary_synthetic_seed": True, "n_folds": 2, "folds": [0]}],
            "models": [{"name": "mean", "params": {"hidden": 4}}, {"label": "mean6", "name": "mean",
                                                                    "params": {"hidden": 6}}],
            "train": {"epochs": 1, "bootstrap": 0, "select_after": 0.0}}


def test_vary_synthetic_seed_one_cohort_per_seed_resumable(tmp_path):
    """vary_synthetic_seed: run seed s trains on a cohort generated with synthetic seed base + s (own folder,
    splits and graph cache); every model of seed s sees that cohort and its splits; a rerun regenerates and
    retrains nothing; more seeds add cohorts and leave the others alone."""
    out = tmp_path / "out"
    runs = run_benchmark(load_bench_config(_varied_config(out)), progress=False)
    assert sorted(zip(runs["model"], runs["seed"])) == [("mean", 0), ("mean", 1), ("mean6", 0), ("mean6", 1)]
    roots = {s: out / "cohorts" / "v" / f"seed_{s}" for s in (0, 1)}
    for s, root in roots.items():
        assert json.loads((root / "synthetic.json").read_text())["seed"] == 40 + s
        assert (out / "splits" / "v" / f"seed_{s}.csv").exists()
        assert list((out / "graph_cache" / "v" / f"seed_{s}").glob("*.pt"))
        splits = set()
        for model in ("mean", "mean6"):
            run = out / "runs" / "v" / model / f"seed_{s}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["data"]["manifest"] == str(root / "manifest.csv")
            assert cfg["data"]["feature_dir"] == str(root / "features")
            assert cfg["data"]["splits_csv"] == str(out / "splits" / "v" / f"seed_{s}.csv")
            assert cfg["data"]["cache_dir"] == str(out / "graph_cache" / "v" / f"seed_{s}")
            splits.add((run / "splits.csv").read_text())
        assert len(splits) == 1  # both models of a seed: the same splits
    assert not (out / "cohorts" / "v" / "manifest.csv").exists()  # no cohort outside the seed folders
    import h5py

    with h5py.File(roots[0] / "features" / "syn_000.h5") as a, h5py.File(roots[1] / "features" / "syn_000.h5") as b:
        assert a["features"].shape != b["features"].shape or not np.array_equal(a["features"][()], b["features"][()])
    assert "a cohort per seed (generator seed 40 + run seed)" in (out / "table.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("cohorts/v/seed_*/synthetic.json"),
                                                  *out.glob("runs/v/*/seed_*/fold_0/results.json")]}
    assert len(stamps) == 2 + 4
    again = run_benchmark(load_bench_config(_varied_config(out, seeds=(0, 1, 2))), progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing regenerated or retrained
    assert json.loads((out / "cohorts" / "v" / "seed_2" / "synthetic.json").read_text())["seed"] == 42
    assert len(again) == 6 and set(again["seed"]) == {0, 1, 2}
    assert json.loads((out / "bench_info.json").read_text())["folds_trained_last_invocation"] == 2

    # turning it off on the same results folder is a changed cohort, refused by name
    raw = _varied_config(out, seeds=(0, 1, 2))
    raw["cohorts"][0]["vary_synthetic_seed"] = False
    with pytest.raises(ConfigError, match=r"cohorts\[v\]\.vary_synthetic_seed: True -> False"):
        run_benchmark(load_bench_config(raw), progress=False)
    # ... unless forced: the seed folders move aside, one cohort (seed 40) is made in their place, and back
    raw["seeds"] = [0]
    run_benchmark(load_bench_config(raw), progress=False, force_new_config=True)
    assert json.loads((out / "cohorts" / "v" / "synthetic.json").read_text())["seed"] == 40
    assert list(out.glob("superseded/*/cohorts/v/seed_1/synthetic.json"))
    assert (out / "splits" / "v.csv").exists() and not (out / "splits" / "v").exists()
    raw["cohorts"][0]["vary_synthetic_seed"] = True
    run_benchmark(load_bench_config(raw), progress=False, force_new_config=True)
    assert json.loads((out / "cohorts" / "v" / "seed_0" / "synthetic.json").read_text())["seed"] == 40
    assert not (out / "cohorts" / "v" / "synthetic.json").exists()


def test_vary_synthetic_seed_config_errors(tmp_path):
    raw = _varied_config(tmp_path / "out")
    raw["cohorts"][0]["vary_synthetic_seeds"] = True
    with pytest.raises(ConfigError, match=r"cohorts\[0\]\.vary_synthetic_seeds"):
        load_bench_config(raw)
    raw = _varied_config(tmp_path / "out")
    raw["cohorts"][0]["vary_synthetic_seed"] = "yes"
    with pytest.raises(ConfigError, match="vary_synthetic_seed"):
        load_bench_config(raw)
    raw = {"output_dir": str(tmp_path / "out"), "reference": "mean", "models": [{"name": "mean"}],
           "cohorts": [{"name": "c", "manifest": "m.csv", "feature_dir": "f", "vary_synthetic_seed": True}]}
    with pytest.raises(ConfigError, match="vary_synthetic_seed needs synthetic parameters"):
        load_bench_config(raw)


def test_synthetic_cohort_from_before_new_generator_parameters_is_reused(tmp_path):
    """A cohort whose synthetic.json predates parameters added to the generator (they had their default
    values then) is the same cohort: not regenerated, not refused."""
    from wsigraph.bench.harness import prepare_synthetic
    from wsigraph.bench.config import CohortSpec

    spec = CohortSpec(name="c", root=str(tmp_path / "c"), synthetic={"n_slides": 4, "dim": 4, "grid": [10, 12]})
    prepare_synthetic(spec)
    info = tmp_path / "c" / "synthetic.json"
    old = {k: v for k, v in json.loads(info.read_text()).items()
           if k not in ("latent_dim", "ambient_noise", "stain_shift", "stain_mix", "micro_fraction")}
    info.write_text(json.dumps(old))
    stamp = (tmp_path / "c" / "features" / "syn_000.h5").stat().st_mtime_ns
    prepare_synthetic(spec)
    assert (tmp_path / "c" / "features" / "syn_000.h5").stat().st_mtime_ns == stamp
    spec.synthetic["latent_dim"] = 2
    with pytest.raises(InputError, match=r"latent_dim: 0 -> 2"):
        prepare_synthetic(spec)


def test_model_train_overrides_reach_the_run_and_are_checked(tmp_path):
    from wsigraph.bench.harness import experiment_config

    raw = tiny_config(tmp_path / "out")
    raw["models"][1]["train"] = {"lr": "2e-4", "weight_decay": 0.05}  # a string as YAML reads 2e-4
    cfg = load_bench_config(raw)
    mean, srmil = cfg.model("mean"), cfg.model("srmil")
    assert mean.train == {"lr": 2e-4, "weight_decay": 0.05}
    spec = cfg.cohorts[0]
    exp = experiment_config(cfg, spec, mean, 3, "m.csv", tmp_path / "s.csv", tmp_path / "out")
    assert (exp.train.lr, exp.train.weight_decay, exp.train.seed, exp.train.epochs) == (2e-4, 0.05, 3, 2)
    other = experiment_config(cfg, spec, srmil, 3, "m.csv", tmp_path / "s.csv", tmp_path / "out")
    assert (other.train.lr, other.train.weight_decay) == (cfg.train.lr, cfg.train.weight_decay)
    for bad, message in (({"lrr": 1.0}, r"model 'mean': train: unknown key 'lrr'"),
                         ({"seed": 1}, r"model 'mean'.*train.seed is set per run"),
                         ({"lr": -1.0}, r"model 'mean'.*lr must be > 0"),
                         ({"epochs": "many"}, r"model 'mean'.*epochs")):
        raw["models"][1]["train"] = bad
        with pytest.raises(ConfigError, match=message):
            load_bench_config(raw)
