"""Bench config templates (wsigraph.bench.template): cohorts filled in by name, model subsets, quick runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsigraph.bench.template import (
    QUICK_MODEL_PARAMS,
    QUICK_TRAIN,
    fill_bench_template,
    write_bench_config,
)
from wsigraph.errors import ConfigError, MissingFileError

TEMPLATE = {
    "cohorts": [
        {"name": "c16", "manifest": "manifest.csv", "feature_dir": "features", "split_mode": "manifest"},
        {"name": "tcga", "manifest": "m.csv", "feature_dir": "f", "split_mode": "kfold", "n_folds": 5},
    ],
    "models": [
        {"label": "SRMIL", "name": "srmil", "params": {"heads": 4, "w_gen": 1.8}},
        {"label": "ABMIL", "name": "abmil", "params": {}},
        {"label": "MeanPool", "name": "mean"},
    ],
    "seeds": [0, 1, 2, 3, 4],
    "reference": "SRMIL",
    "train": {"epochs": 100, "lr": 5e-4},
    "output_dir": "results",
}


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text("# a recipe\n" + yaml.safe_dump(TEMPLATE, sort_keys=False))
    return path


def test_cohorts_are_filled_in_by_name_and_others_dropped(template, tmp_path):
    cohort = {"name": "tcga", "manifest": "/data/manifest.csv", "feature_dir": "/data/features", "classes": ["a", "b"]}
    raw = fill_bench_template(template, [cohort], tmp_path / "out" / "results")
    assert raw["cohorts"] == [{**TEMPLATE["cohorts"][1], **cohort}]  # template keys kept, given keys win
    assert raw["output_dir"] == str((tmp_path / "out" / "results").resolve())
    assert [m["label"] for m in raw["models"]] == ["SRMIL", "ABMIL", "MeanPool"] and raw["seeds"] == TEMPLATE["seeds"]
    assert "allow_random_features" not in raw["cohorts"][0]
    # no template cohort of that name: the cohorts as given
    other = fill_bench_template(template, [{"name": "mine", "manifest": "x.csv"}], tmp_path,
                                allow_random_features=True)
    assert other["cohorts"] == [{"name": "mine", "manifest": "x.csv", "allow_random_features": True}]


def test_model_subset_moves_the_reference(template, tmp_path):
    raw = fill_bench_template(template, [{"name": "c16"}], tmp_path, models=["mean", "ABMIL"])
    assert [m["label"] for m in raw["models"]] == ["ABMIL", "MeanPool"]  # the template's order
    assert raw["reference"] == "ABMIL"
    kept = fill_bench_template(template, [{"name": "c16"}], tmp_path, models=["MeanPool", "SRMIL"])
    assert kept["reference"] == "SRMIL"
    with pytest.raises(ConfigError, match=r"bench\.yaml: model\(s\) \['GNN'\] not in this config.*'SRMIL'"):
        fill_bench_template(template, [{"name": "c16"}], tmp_path, models=["ABMIL", "GNN"])
    with pytest.raises(ConfigError, match="not in this config"):
        fill_bench_template(template, [{"name": "c16"}], tmp_path, models=[])


def test_quick_run_is_small_and_keeps_the_template_params(template, tmp_path):
    raw = fill_bench_template(template, [{"name": "c16"}, {"name": "tcga"}], tmp_path, quick=True)
    assert raw["seeds"] == [0]
    assert raw["train"] == {"epochs": 2, "lr": 5e-4, "bootstrap": 0, "progress_bar": False}
    assert QUICK_TRAIN["epochs"] == 2
    srmil = raw["models"][0]["params"]
    assert srmil == {**{"heads": 4, "w_gen": 1.8}, **QUICK_MODEL_PARAMS["srmil"]} and srmil["w_gen"] == 1.8
    assert raw["models"][2]["params"] == QUICK_MODEL_PARAMS["mean"]
    assert [c.get("n_folds") for c in raw["cohorts"]] == [None, 2]  # only the k-fold cohort gets 2 folds
    assert TEMPLATE["models"][0]["params"] == {"heads": 4, "w_gen": 1.8}  # the template itself is not changed


def test_bad_templates_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="nowhere.yaml: bench config does not exist"):
        fill_bench_template(tmp_path / "nowhere.yaml", [], tmp_path)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: a bench config is a mapping"):
        fill_bench_template(listed, [{"name": "a"}], tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("cohorts: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        fill_bench_template(broken, [{"name": "a"}], tmp_path)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(TEMPLATE))
    with pytest.raises(ConfigError, match="ok.yaml: cohort 1 to fill in has no 'name'"):
        fill_bench_template(ok, [{"name": "c16"}, {"manifest": "m.csv"}], tmp_path)


def test_written_config_has_the_comment_and_loads_back(template, tmp_path):
    from wsigraph.bench import load_bench_config

    raw = fill_bench_template(template, [{"name": "c16", "manifest": str(tmp_path / "m.csv"),
                                          "feature_dir": str(tmp_path)}], tmp_path / "results", quick=True)
    path = write_bench_config(raw, tmp_path / "out" / "bench.yaml", "written by a test\nrerun: wsigraph bench")
    text = path.read_text()
    assert text.startswith("# written by a test\n# rerun: wsigraph bench\n")
    assert yaml.safe_load(text) == raw
    assert list(yaml.safe_load(text)) == list(raw)  # key order kept (cohorts first, as in the template)
    cfg = load_bench_config(path)
    assert [m.label for m in cfg.models] == ["SRMIL", "ABMIL", "MeanPool"] and cfg.train.epochs == 2
    assert [p.name for p in path.parent.iterdir()] == ["bench.yaml"]  # no temporary file left
