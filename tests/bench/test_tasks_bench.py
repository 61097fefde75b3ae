"""``wsigraph bench`` on survival and regression cohorts: task metrics in runs.csv, table and paired tests."""
from __future__ import annotations

import pandas as pd
import pytest

from wsigraph.bench import load_bench_config, run_benchmark
from wsigraph.errors import ConfigError


def test_a_survival_and_a_regression_cohort_in_one_bench(tmp_path):
    syn = {"n_slides": 16, "dim": 8, "grid": [10, 12], "seed": 1, "mode": "lesion", "lesion_strength": 3.0}
    raw = {
        "output_dir": str(tmp_path / "bench"), "seeds": [0, 1], "reference": "abmil", "localization": False,
        "metrics": ["c_index", "ibs", "pearson", "rmse"],
        "cohorts": [{"name": "surv", "task": "survival", "survival": {"n_bins": 3}, "synthetic": syn,
                     "n_folds": 2, "folds": [0]},
                    {"name": "reg", "task": "regression", "synthetic": syn, "n_folds": 2, "folds": [0]}],
        "models": [{"name": "abmil", "params": {"embed_dim": 16, "attn_dim": 8}},
                   {"name": "mean", "params": {"hidden": 8}}],
        "train": {"epochs": 1, "bootstrap": 0, "select_after": 0.0},
    }
    cfg = load_bench_config(raw)
    assert cfg.train.select_metric == "auto"  # each cohort's runs select on their task's metric
    runs = run_benchmark(cfg)
    assert len(runs) == 8
    surv, reg = runs[runs["cohort"] == "surv"], runs[runs["cohort"] == "reg"]
    assert surv["test_c_index"].between(0, 1).all() and surv["test_ibs"].notna().all()
    assert surv["test_auc"].isna().all() and reg["test_pearson"].notna().all() and reg["test_c_index"].isna().all()
    res = pd.read_json(tmp_path / "bench" / "runs" / "surv" / "abmil" / "seed_0" / "fold_0" / "results.json",
                       typ="series")
    assert res["task"] == "survival" and res["select_metric"] == "c_index"
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "c_index" in table.lower().replace("-", "_") or "C-index" in table
    wil = pd.read_csv(tmp_path / "bench" / "wilcoxon.csv")
    assert {"test_c_index", "test_pearson"} <= set(wil["metric"])


def test_bench_metrics_must_belong_to_a_cohort_task():
    raw = {"cohorts": [{"name": "c", "synthetic": {"n_slides": 8}}], "models": [{"name": "mean"}],
           "metrics": ["c_index"]}
    with pytest.raises(ConfigError, match=r"none is a metric of the cohorts' task\(s\) \['classification'\]"):
        load_bench_config(raw)
    with pytest.raises(ConfigError, match="task must be one of"):
        load_bench_config({**raw, "cohorts": [{"name": "c", "task": "prognosis", "synthetic": {"n_slides": 8}}]})
