"""The benchmark configuration: cohorts x models x seeds with shared training and graph settings.

Loaded with :func:`load_bench_config` (YAML + dotted overrides, strict keys and types, see
:mod:`wsigraph.config`)::

    output_dir: out/bench
    seeds: [0, 1, 2, 3, 4]
    reference: srmil                 # the model every other one is tested against (Wilcoxon)
    cohorts:
      - name: contiguity
        synthetic: {mode: contiguity, n_slides: 48, dim: 32, seed: 0}   # generated when missing
        n_folds: 4
      - name: realistic                                # a cohort of its own for every seed s:
        synthetic: {mode: camelyon, dim: 1024, latent_dim: 32, seed: 100}   # generator seed 100 + s
        vary_synthetic_seed: true
      - name: camelyon16
        manifest: data/c16/manifest.csv
        feature_dir: data/c16/features
        classes: [normal, tumor]
    models:
      - {name: srmil}                                   # the paper's defaults (keep its width, hidden 256)
      - {label: srmil_nogen, name: srmil, params: {w_gen: 0.0}}
      - {name: abmil}
    train: {epochs: 20, bootstrap: 0}

Relative paths are taken relative to ``base_dir`` (the current directory by default).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from wsigraph.config import load_config
from wsigraph.errors import ConfigError
from wsigraph.train.config import (SPLIT_MODES, TASK_NAMES, TASK_SELECT_METRICS, TASK_TIEBREAK, RegressionConfig,
                                   SurvivalConfig, TrainConfig)

from wsigraph.graph.params import GraphConfig

#: slide-level metrics of the table, the box plots and the paired tests (keys of the runner's metrics)
DEFAULT_METRICS = ["auc", "accuracy", "balanced_accuracy", "f1_macro"]
KNOWN_METRICS = ("auc", "accuracy", "balanced_accuracy", "f1_macro", "kappa",  # classification
                 "c_index", "mean_td_auc", "ibs",                            # survival
                 "pearson", "spearman", "mae", "rmse", "r2")                 # regression
#: the metrics of each task (a bench's metrics must be produced by one of its cohorts' tasks)
TASK_METRICS = {"classification": KNOWN_METRICS[:5], "survival": KNOWN_METRICS[5:8], "regression": KNOWN_METRICS[8:]}
LOWER_IS_BETTER_METRICS = frozenset({"ibs", "mae", "rmse"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class CohortSpec:
    """One cohort: a manifest and its feature files, or a synthetic cohort generated on first use."""

    name: str = _help("short unique name (folder names, table headings)")
    root: Optional[str] = _help("cohort folder: manifest and feature_dir default to <root>/manifest.csv and "
                                "<root>/features; synthetic cohorts are generated here "
                                "(default <output_dir>/cohorts/<name>)", default=None)
    manifest: Optional[str] = _help("cohort CSV slide_id,label[,case_id][,split]", default=None)
    feature_dir: Optional[str] = _help("folder of <slide_id>.h5 feature files", default=None)
    classes: Optional[list[str]] = _help("ordered class names (null: the synthetic classes, else sorted labels)",
                                         default=None)
    ordinal: bool = _help("classes are ordered grades (quadratic kappa)", default=False)
    task: str = _help("classification | survival | regression (as data.task)", default="classification")
    survival: SurvivalConfig = _help("task survival: columns and loss (as data.survival)",
                                     default_factory=SurvivalConfig)
    regression: RegressionConfig = _help("task regression: column and loss (as data.regression)",
                                         default_factory=RegressionConfig)
    split_mode: str = _help("auto | manifest | kfold | csv (as data.split_mode)", default="auto")
    n_folds: int = _help("folds of cross-validation (split_mode kfold/auto without a split column)", default=5)
    folds: Optional[list[int]] = _help("run only these folds (null: all)", default=None)
    fold_per_seed: bool = _help("the i-th seed runs only the (i mod n)-th of the folds (rotation): n seeds over "
                                "n folds test every slide once at the cost of one fold per seed", default=False)
    val_frac: float = _help("fraction of each training part held out for validation", default=0.2)
    split_seed: int = _help("seed of the splits: fixed per cohort, so every model and seed sees the same "
                            "splits", default=0)
    splits_csv: Optional[str] = _help("splits file fold,split,slide_id (split_mode csv)", default=None)
    allow_random_features: bool = _help("accept features of a randomly initialised encoder (as "
                                        "data.allow_random_features)", default=False)
    synthetic: Optional[dict[str, Any]] = _help(
        "parameters of wsigraph.data.synthetic.make_synthetic_cohort; the cohort is generated into root "
        "when root does not exist", default=None)
    vary_synthetic_seed: bool = _help(
        "synthetic cohorts: run seed s uses a cohort of its own, generated with synthetic seed "
        "(synthetic.seed, default 0) + s into <root>/seed_<s>, with its own splits (split_seed) and graph "
        "cache; every model of seed s sees the same cohort and splits. No model is tuned to one cohort",
        default=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"cohort name {self.name!r}: use letters, digits, '_', '.', '-' (it names folders)")
        if self.task not in TASK_NAMES:
            raise ConfigError(f"cohort {self.name!r}: task must be one of {list(TASK_NAMES)}, got {self.task!r}")
        if self.split_mode not in SPLIT_MODES:
            raise ConfigError(f"split_mode must be one of {list(SPLIT_MODES)}, got {self.split_mode!r}")
        if self.split_mode == "csv" and not self.splits_csv:
            raise ConfigError("split_mode 'csv' needs splits_csv")
        if self.n_folds < 1:
            raise ConfigError(f"n_folds must be >= 1, got {self.n_folds}")
        if not 0.0 <= self.val_frac < 1.0:
            raise ConfigError(f"val_frac must be in [0, 1), got {self.val_frac}")
        folds = self.folds
        if folds is not None and (not folds or min(folds) < 0 or len(set(folds)) != len(folds)):
            raise ConfigError(f"folds must be distinct fold indices >= 0 (or null for all), got {self.folds}")
        if self.synthetic is None and self.root is None and (self.manifest is None or self.feature_dir is None):
            raise ConfigError("give manifest and feature_dir, or root, or synthetic parameters")
        if self.vary_synthetic_seed and self.synthetic is None:
            raise ConfigError(f"cohort {self.name!r}: vary_synthetic_seed needs synthetic parameters (it generates "
                              "one cohort per run seed)")

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    def base_synthetic_seed(self) -> int:
        """The generator seed of the synthetic parameters (the generator's default, 0, when not given)."""
        return int((self.synthetic or {}).get("seed", 0))

    def instances(self, seeds: Iterable[int]) -> list[tuple[Optional[int], "CohortSpec", str]]:
        """``(run seed or None, spec, file stem)`` of each cohort the runs use: the cohort itself
        (``None``, stem ``name``) or, with ``vary_synthetic_seed``, one per seed ``s``: the synthetic seed
        ``base + s``, root ``<root>/seed_<s>``, stem ``<name>/seed_<s>`` (splits, manifests and graph cache
        are kept under that stem). Call after :func:`resolve_paths` (root set)."""
        if not self.vary_synthetic_seed:
            return [(None, self, self.name)]
        assert self.root is not None and self.synthetic is not None, "resolve_paths first"
        out = []
        for s in seeds:
            root = str(Path(self.root) / f"seed_{int(s)}")
            sub = copy.copy(self)
            sub.synthetic = {**self.synthetic, "seed": self.base_synthetic_seed() + int(s)}
            sub.root, sub.manifest, sub.feature_dir = root, str(Path(root) / "manifest.csv"), str(Path(root) / "features")
            out.append((int(s), sub, f"{self.name}/seed_{int(s)}"))
        return out

    def instance(self, seed: int) -> tuple["CohortSpec", str]:
        """(spec, file stem) of the cohort that run seed ``seed`` uses (see :meth:`instances`)."""
        for s, sub, stem in self.instances([seed]):
            return sub, stem
        raise AssertionError  # pragma: no cover

    def seed_folds(self, seeds: list[int], n_available: int) -> dict[int, list[int]]:
        """``{seed: folds it runs}`` given the number of folds the splits have."""
        folds = list(range(n_available)) if self.folds is None else list(self.folds)
        if not self.fold_per_seed:
            return {int(s): folds for s in seeds}
        return {int(s): [folds[i % len(folds)]] for i, s in enumerate(seeds)}


@dataclass
class ModelSpec:
    """A registered model (``wsigraph.nn.MODELS``) under a label, with its constructor arguments."""

    name: str = _help("model name in wsigraph.nn.MODELS")
    label: Optional[str] = _help("unique label in the results (default: name), e.g. srmil_nogen", default=None)
    params: dict[str, Any] = _help("constructor arguments (checked against the model)", default_factory=dict)
    train: dict[str, Any] = _help("training settings of this model's runs that replace the shared train "
                                  "section's (e.g. {lr: 2.0e-4, weight_decay: 0.05}); train.seed is set per run",
                                  default_factory=dict)

    def __post_init__(self) -> None:
        if self.label is None:
            self.label = self.name
        if not _NAME.match(self.label):
            raise ConfigError(f"model label {self.label!r}: use letters, digits, '_', '.', '-' (it names folders)")
        if not isinstance(self.train, dict):
            raise ConfigError(f"model {self.label!r}: train must be a mapping of train settings, got "
                              f"{type(self.train).__name__}")
        if "seed" in self.train:
            raise ConfigError(f"model {self.label!r}: train.seed is set per run from seeds; remove it")
        try:
            typed = load_config(self.train, TrainConfig)
        except ConfigError as e:
            raise ConfigError(f"model {self.label!r}: train: {str(e).removeprefix('<dict>: ')}") from e
        self.train = {k: getattr(typed, k) for k in self.train}

    def train_config(self, shared: TrainConfig, seed: int) -> TrainConfig:
        """The shared train settings with this model's overrides and ``seed`` (validated as a TrainConfig)."""
        return dataclasses.replace(shared, **copy.deepcopy(self.train), seed=int(seed))


@dataclass
class BenchConfig:
    """Everything ``wsigraph bench`` needs; saved as ``<output_dir>/bench_config.yaml``."""

    cohorts: list[CohortSpec] = _help("the cohorts")
    models: list[ModelSpec] = _help("the models")
    seeds: list[int] = _help("training seeds (train.seed); every model runs every seed",
                             default_factory=lambda: [0, 1, 2, 3, 4])
    train: TrainConfig = _help("training settings shared by every run (train.seed is set per run)",
                               default_factory=TrainConfig)
    graph: GraphConfig = _help("spatial graph construction", default_factory=GraphConfig)
    output_dir: str = _help("results folder (resumes when it holds an earlier run of this config)",
                            default="out/bench")
    reference: str = _help("model label tested against every other model (Wilcoxon signed-rank)", default="srmil")
    metrics: list[str] = _help("slide-level test metrics of the table, plots and tests: "
                               + " | ".join(KNOWN_METRICS), default_factory=lambda: list(DEFAULT_METRICS))
    localization_k: list[int] = _help("k of lesion_hit@k (fraction of lesions hit by the top-k patches)",
                                      default_factory=lambda: [5, 20])
    localization: bool = _help("score per-patch scores against patch labels where the cohort has them",
                               default=True)
    missing_features: str = _help("raise | skip: manifest slides without a feature file", default="raise")
    cache_graphs: bool = _help("cache each cohort's graphs in <output_dir>/graph_cache/<cohort>", default=True)
    torch_threads: Optional[int] = _help("torch threads per process (null: torch's default)", default=None)
    workers: int = _help("runs trained in parallel processes (each with torch_threads, default 1)", default=1)

    def __post_init__(self) -> None:
        if not self.cohorts:
            raise ConfigError("cohorts: at least one cohort")
        if not self.models:
            raise ConfigError("models: at least one model")
        if not self.seeds:
            raise ConfigError("seeds: at least one seed")
        for what, names in (("cohort name", [c.name for c in self.cohorts]),
                            ("model label", [m.label for m in self.models]), ("seed", self.seeds)):
            dup = sorted({str(n) for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(f"{what}(s) given twice: {dup}")
        bad = [m for m in self.metrics if m not in KNOWN_METRICS]
        if bad or not self.metrics:
            raise ConfigError(f"metrics: unknown {bad}; valid: {list(KNOWN_METRICS)}")
        tasks = sorted({c.task for c in self.cohorts})
        made = {m for t in tasks for m in TASK_METRICS[t]}
        if not made & set(self.metrics):
            raise ConfigError(f"metrics {self.metrics}: none is a metric of the cohorts' task(s) {tasks}; "
                              + "; ".join(f"{t}: {', '.join(TASK_METRICS[t])}" for t in tasks))
        if tasks == ["classification"]:  # one task: 'auto' selection settings resolve to its own
            t = self.train
            t.select_metric = TASK_SELECT_METRICS["classification"][0] if t.select_metric == "auto" else t.select_metric
            t.select_tiebreak = TASK_TIEBREAK["classification"] if t.select_tiebreak == "auto" else t.select_tiebreak
        if not self.localization_k or min(self.localization_k) < 1:
            raise ConfigError(f"localization_k must be positive integers, got {self.localization_k}")
        if self.missing_features not in ("raise", "skip"):
            raise ConfigError(f"missing_features must be 'raise' or 'skip', got {self.missing_features!r}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be >= 1 or null, got {self.torch_threads}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def model(self, label: str) -> ModelSpec:
        return next(m for m in self.models if m.label == label)


def check_models(cfg: BenchConfig, source: str = "bench config") -> None:
    """Every model name registered and its params valid (ConfigError naming the model, listing valid names)."""
    from wsigraph.nn import MODELS
    from wsigraph.train.config import check_model_graph, validate_model_params

    for i, m in enumerate(cfg.models):
        if m.name not in MODELS:
            raise ConfigError(f"{source}: models[{i}] (label {m.label!r}): unknown model {m.name!r}; valid models: "
                              f"{', '.join(sorted(MODELS))}")
        try:
            m.params = validate_model_params(m.name, m.params, where=f"models[{i}].params")
            check_model_graph(m.name, cfg.graph, where=f"models[{i}]")
        except ConfigError as e:
            raise ConfigError(f"{source}: models[{i}] (label {m.label!r}): {e}") from e
    labels = [m.label for m in cfg.models]
    if cfg.reference not in labels:
        raise ConfigError(f"{source}: reference {cfg.reference!r} is not a model label; labels: {labels}")


def resolve_paths(cfg: BenchConfig, base_dir: str | os.PathLike | None = None) -> BenchConfig:
    """Make every path absolute (relative ones against ``base_dir``, default the current directory) and fill
    the cohort defaults (root, manifest, feature_dir, the synthetic classes). Returns ``cfg``."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def absolute(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return str(q if q.is_absolute() else (base / q).resolve())

    cfg.output_dir = absolute(cfg.output_dir)  # type: ignore[assignment]
    for c in cfg.cohorts:
        if c.root is None and c.synthetic is not None:
            c.root = str(Path(cfg.output_dir) / "cohorts" / c.name)
        c.root = absolute(c.root)
        if c.root is not None:
            c.manifest = c.manifest or str(Path(c.root) / "manifest.csv")
            c.feature_dir = c.feature_dir or str(Path(c.root) / "features")
        c.manifest, c.feature_dir, c.splits_csv = absolute(c.manifest), absolute(c.feature_dir), absolute(c.splits_csv)
        if c.synthetic is not None:
            expected = (str(Path(c.root) / "manifest.csv"), str(Path(c.root) / "features"))  # type: ignore[arg-type]
            if (c.manifest, c.feature_dir) != expected:
                raise ConfigError(f"cohort {c.name!r}: a synthetic cohort lives in its root folder; manifest and "
                                  f"feature_dir must be left unset (or {expected[0]} and {expected[1]})")
            if c.classes is None:
                from wsigraph.data.synthetic import SyntheticConfig

                c.classes = list(c.synthetic.get("classes", SyntheticConfig.classes))
    return cfg


def load_bench_config(src: str | os.PathLike | Mapping[str, Any], overrides: Iterable[str] = (), *,
                      base_dir: str | os.PathLike | None = None, check: bool = True) -> BenchConfig:
    """Load a :class:`BenchConfig` (YAML path or mapping) with dotted overrides; resolve its paths against
    ``base_dir``; with ``check``, validate the model names and parameters (before anything runs)."""
    cfg = load_config(src, BenchConfig, overrides)
    source = str(src) if isinstance(src, (str, os.PathLike)) else "<dict>"
    if check:
        check_models(cfg, source)
    return resolve_paths(cfg, base_dir)


__all__ = ["BenchConfig", "CohortSpec", "ModelSpec", "load_bench_config", "check_models", "resolve_paths",
           "DEFAULT_METRICS", "KNOWN_METRICS", "TASK_METRICS", "LOWER_IS_BETTER_METRICS"]
