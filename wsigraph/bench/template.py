"""Bench config templates: a YAML recipe whose cohorts get their paths filled in before a run.

A template (e.g. ``examples/camelyon16/bench.yaml``) holds the models, seeds and training recipe, and
cohorts by name with placeholder paths. :func:`fill_bench_template` gives the config to run: the cohorts'
paths filled in, a subset of the models, or a quick smoke run (:data:`QUICK_TRAIN`,
:data:`QUICK_MODEL_PARAMS`); :func:`write_bench_config` saves it as YAML for ``wsigraph bench --config``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from wsigraph.errors import ConfigError, MissingFileError

#: quick run: training settings of a smoke run of the whole chain (not results to report)
QUICK_TRAIN = {"epochs": 2, "bootstrap": 0, "progress_bar": False}
#: quick run: small models, by model name (params merged over the template's)
QUICK_MODEL_PARAMS = {
    "srmil": {"hidden": 16, "heads": 2, "cls_hidden": 16, "attn_hidden": 16},
    "mean": {"hidden": 16}, "max": {"hidden": 16},
    "abmil": {"embed_dim": 16, "attn_dim": 8},
    "clam_sb": {"embed_dim": 16, "attn_dim": 8, "k_sample": 2},
    "transmil": {"dim": 16, "heads": 2, "num_landmarks": 8},
    "dsmil": {"q_dim": 8},
    "patch_gcn": {"hidden": 16, "num_layers": 1},
}
#: quick run: seeds, and folds of cohorts split by k-fold cross-validation
QUICK_SEEDS = [0]
QUICK_FOLDS = 2


def fill_bench_template(template_path: str | os.PathLike, cohorts: Sequence[Mapping[str, Any]],
                        output_dir: str | os.PathLike, *, models: Sequence[str] | None = None, quick: bool = False,
                        allow_random_features: bool = False) -> dict[str, Any]:
    """The template's config (a plain dict, for :func:`wsigraph.bench.load_bench_config`) with ``cohorts`` in.

    Args:
        template_path: YAML bench config.
        cohorts: entries with at least ``name`` (``manifest``, ``feature_dir``, other cohort keys); each is
            merged over the template's cohort of that name and the others are dropped. When no name
            matches, the config's cohorts are ``cohorts`` as given.
        output_dir: the config's ``output_dir`` (made absolute).
        models: labels or names of the template's models to keep (the ``reference`` moves to the first
            kept model when it is not kept); None keeps all.
        quick: seeds :data:`QUICK_SEEDS`, :data:`QUICK_TRAIN`, :data:`QUICK_MODEL_PARAMS`, and
            :data:`QUICK_FOLDS` folds for cohorts with ``split_mode`` ``kfold`` or ``auto``.
        allow_random_features: mark every cohort ``allow_random_features`` (features of an encoder
            without trained weights; tests only).

    Raises:
        MissingFileError: no template. ConfigError: not a YAML mapping, a cohort without ``name``, or a
        model not in the template (each naming the template).
    """
    import yaml

    template_path = Path(template_path)
    if not template_path.is_file():
        raise MissingFileError(f"{template_path}: bench config does not exist")
    try:
        raw = yaml.safe_load(template_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{template_path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{template_path}: a bench config is a mapping of keys, got a {type(raw).__name__}")
    for i, c in enumerate(cohorts):
        if not c.get("name"):
            raise ConfigError(f"{template_path}: cohort {i} to fill in has no 'name' (keys: {sorted(c)})")
    by_name = {c["name"]: dict(c) for c in cohorts}
    filled = [{**c, **by_name[c["name"]]} for c in raw.get("cohorts") or [] if c.get("name") in by_name]
    raw["cohorts"] = filled or [dict(c) for c in cohorts]
    if allow_random_features:
        for c in raw["cohorts"]:
            c["allow_random_features"] = True
    raw["output_dir"] = str(Path(output_dir).resolve())
    if models is not None:
        _keep_models(raw, list(models), template_path)
    if quick:
        raw["seeds"] = list(QUICK_SEEDS)
        raw["train"] = {**(raw.get("train") or {}), **QUICK_TRAIN}
        for m in raw.get("models") or []:
            m["params"] = {**(m.get("params") or {}), **QUICK_MODEL_PARAMS.get(m.get("name"), {})}
        for c in raw["cohorts"]:
            if c.get("split_mode") in ("kfold", "auto"):
                c["n_folds"] = QUICK_FOLDS
    return raw


def _keep_models(raw: dict[str, Any], wanted: list[str], template_path: Path) -> None:
    """Keep the models whose label or name is in ``wanted``; the reference must be one of them."""
    every = raw.get("models") or []
    unknown = [w for w in wanted if not any(w in (m.get("label"), m.get("name")) for m in every)]
    if unknown or not wanted:
        raise ConfigError(f"{template_path}: model(s) {unknown or wanted} not in this config "
                          f"(labels: {[m.get('label') for m in every]})")
    raw["models"] = [m for m in every if m.get("label") in wanted or m.get("name") in wanted]
    labels = [m.get("label") or m.get("name") for m in raw["models"]]
    if raw.get("reference") not in labels:  # the paired tests compare every model with the reference
        raw["reference"] = labels[0]


def write_bench_config(raw: Mapping[str, Any], path: str | os.PathLike, comment: str = "") -> Path:
    """Write ``raw`` as YAML to ``path`` atomically, after ``comment`` (one ``# `` line per line)."""
    import yaml

    from wsigraph.utils.atomic import atomic_write_text

    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return atomic_write_text(path, head + yaml.safe_dump(dict(raw), sort_keys=False))


__all__ = ["QUICK_TRAIN", "QUICK_MODEL_PARAMS", "QUICK_SEEDS", "QUICK_FOLDS", "fill_bench_template",
           "write_bench_config"]
