"""Typed config loading (wsigraph.config) and the experiment config (wsigraph.train.config)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import pytest
import yaml

from wsigraph.cli import main
from wsigraph.config import config_to_yaml, dump_config, load_config, parse_override, save_config
from wsigraph.errors import ConfigError, MissingFileError
from wsigraph.train.config import ExperimentConfig, default_config, load_experiment_config


@dataclass
class Inner:
    rate: float = 0.5
    name: str = "x"
    tags: list[str] = field(default_factory=list)
    mode: Literal["a", "b"] = "a"
    limit: Optional[int] = None


@dataclass
class Outer:
    path: str
    count: int = 1
    flag: bool = False
    weights: Union[str, list[float]] = "none"
    inner: Inner = field(default_factory=Inner)


def write_yaml(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return path


def test_load_nested_with_types_and_defaults(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", {"path": "a.csv", "count": 3, "weights": [1, 2],
                                         "inner": {"rate": 1, "tags": ["t"], "mode": "b", "limit": 7}})
    cfg = load_config(p, Outer)
    assert cfg.count == 3 and cfg.flag is False
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)  # int accepted for float
    assert cfg.weights == [1.0, 2.0] and all(isinstance(w, float) for w in cfg.weights)
    assert cfg.inner.tags == ["t"] and cfg.inner.mode == "b" and cfg.inner.limit == 7
    assert load_config(dump_config(cfg), Outer) == cfg  # round trip


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    p = write_yaml(tmp_path / "bad.yaml", {"path": "a", "inner": {"rte": 0.1}})
    with pytest.raises(ConfigError) as e:
        load_config(p, Outer)
    msg = str(e.value)
    assert str(p) in msg and "'inner.rte'" in msg
    for valid in ("rate", "name", "tags", "mode", "limit"):
        assert valid in msg
    assert "did you mean 'inner.rate'" in msg


@pytest.mark.parametrize("bad, key", [
    ({"path": "a", "count": "3"}, "count"),
    ({"path": "a", "count": 2.5}, "count"),
    ({"path": "a", "count": True}, "count"),  # a bool is not an int
    ({"path": "a", "flag": "yes-please"}, "flag"),
    ({"path": "a", "inner": {"mode": "c"}}, "inner.mode"),
    ({"path": "a", "inner": {"tags": "t"}}, "inner.tags"),
    ({"path": "a", "inner": {"tags": ["ok", 3]}}, "inner.tags[1]"),
    ({"path": "a", "inner": 5}, "inner"),
    ({"path": 3}, "path"),
])
def test_wrong_type_names_key(tmp_path, bad, key):
    p = write_yaml(tmp_path / "t.yaml", bad)
    with pytest.raises(ConfigError) as e:
        load_config(p, Outer)
    assert str(p) in str(e.value) and f"'{key}'" in str(e.value)


def test_missing_required_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="'path'"):
        load_config({"count": 2}, Outer)
    with pytest.raises(MissingFileError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml", Outer)
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(tmp_path / "broken.yaml", Outer)


def test_dotted_overrides(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", {"path": "a", "inner": {"rate": 0.1}})
    cfg = load_config(p, Outer, ["inner.rate=2e-3", "count=5", "inner.tags=[a, b]", "inner.limit=null",
                                 "flag=true"])
    assert cfg.inner.rate == pytest.approx(2e-3) and cfg.count == 5 and cfg.inner.tags == ["a", "b"]
    assert cfg.inner.limit is None and cfg.flag is True
    with pytest.raises(ConfigError) as e:
        load_config(p, Outer, ["inner.rat=1"])
    assert "inner.rat=1" in str(e.value) and "'inner.rat'" in str(e.value) and "rate" in str(e.value)
    with pytest.raises(ConfigError, match="count=x"):
        load_config(p, Outer, ["count=x"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("count")
    with pytest.raises(ConfigError, match="'count'"):
        load_config(p, Outer, ["count.sub=1"])  # count is a value, not a section


def test_save_config_atomic_roundtrip(tmp_path):
    cfg = load_config({"path": "a", "inner": {"tags": ["x"]}}, Outer)
    out = save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(out, Outer) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["saved.yaml"]  # no temporary file left


def test_experiment_defaults_are_the_papers():
    cfg = default_config("srmil")
    t = cfg.train
    assert (t.epochs, t.lr, t.weight_decay, t.scheduler) == (100, 5e-4, 1e-5, "cosine")
    assert (t.select_metric, t.select_tiebreak, t.select_after) == ("accuracy", "auc", 0.6)
    assert cfg.graph.mode == "paper" and cfg.graph.window == 2
    assert cfg.model.params["mask_rate"] == 0.7 and cfg.model.params["w_gen"] == 1.8


def test_model_params_flat_validated_against_constructor(tmp_path):
    p = write_yaml(tmp_path / "e.yaml", {"data": {"manifest": "m.csv"}, "model": {"name": "srmil", "mask_rate": 0.5}})
    cfg = load_experiment_config(p, ["model.hidden=32"])
    assert cfg.model.params == {"mask_rate": 0.5, "hidden": 32}
    assert dump_config(cfg)["model"] == {"name": "srmil", "mask_rate": 0.5, "hidden": 32}
    with pytest.raises(ConfigError) as e:
        load_experiment_config(p, ["model.mask_rat=0.5"])
    assert str(p) in str(e.value) and "model.mask_rat" in str(e.value) and "mask_rate" in str(e.value)
    with pytest.raises(ConfigError, match="hidden"):
        load_experiment_config(p, ["model.hidden=wide"])
    with pytest.raises(ConfigError, match="valid models: .*srmil"):
        load_experiment_config(p, ["model.name=srmi"])


@pytest.mark.parametrize("override, key", [
    ("train.epochz=3", "train.epochz"),
    ("train.select_after=1.5", "select_after"),
    ("train.class_weights=heavy", "class_weights"),
    ("train.select_metric=precision", "select_metric"),
    ("data.split_mode=random", "split_mode"),
    ("graph.mode=delaunay", "mode"),
])
def test_experiment_bad_values(tmp_path, override, key):
    p = write_yaml(tmp_path / "e.yaml", {"data": {"manifest": "m.csv"}})
    with pytest.raises(ConfigError) as e:
        load_experiment_config(p, [override])
    assert key in str(e.value) and override in str(e.value)


def test_init_config_cli_writes_loadable_commented_yaml(tmp_path, capsys):
    out = tmp_path / "c.yaml"
    assert main(["init-config", "--out", str(out), "--manifest", "m.csv", "--features", "f"]) == 0
    text = out.read_text()
    assert "# AdamW learning rate" in text
    cfg = load_experiment_config(out)
    assert cfg == default_config("srmil", manifest="m.csv", feature_dir="f")
    assert config_to_yaml(cfg, comments=False)  # plain YAML also renders


def test_init_config_paper_recipe(tmp_path):
    out = tmp_path / "paper.yaml"
    assert main(["init-config", "--recipe", "paper", "--out", str(out)]) == 0
    assert "SRMIL reference code's recipe" in out.read_text()
    cfg = load_experiment_config(out)
    assert cfg.model.params["variant"] == "reference"
    t = cfg.train
    assert (t.precision, t.shuffle, t.select_epoch_base, t.select_ties) == ("32-true", "once", 0, "later")
    assert cfg.data.val_frac == 0.15 and t.class_weights == "none" and t.epochs == 100
    assert default_config("srmil").model.params["variant"] == "reference"  # the default is the paper's too
    # a baseline takes the training part of the recipe; it has no 'variant'
    abmil = default_config("abmil", recipe="paper")
    assert "variant" not in abmil.model.params and abmil.train.shuffle == "once"
    with pytest.raises(ConfigError, match="recipe"):
        default_config("srmil", recipe="papers")
    for override, key in (("train.shuffle=twice", "shuffle"), ("train.select_ties=middle", "select_ties"),
                          ("train.select_epoch_base=2", "select_epoch_base")):
        with pytest.raises(ConfigError, match=key):
            load_experiment_config(out, [override])


def test_train_cli_reports_config_errors(tmp_path, capsys):
    p = write_yaml(tmp_path / "e.yaml", {"data": {"manifest": "m.csv"}, "trian": {}})
    assert main(["train", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and str(p) in err and "train" in err


def test_experiment_config_is_a_dataclass_tree():
    cfg = load_experiment_config({"data": {"manifest": "m.csv"}}, check_model=False)
    assert isinstance(cfg, ExperimentConfig) and cfg.data.feature_dir is None
