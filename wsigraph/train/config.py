"""The experiment configuration: data, graph, model, training and output, as typed dataclasses.

Read with :func:`load_experiment_config` (YAML + dotted overrides, strict keys and types, see
:mod:`wsigraph.config`). ``wsigraph init-config`` writes the defaults (the SRMIL paper's) as commented YAML.

Model hyper-parameters sit flat under ``model:`` next to ``name`` and are checked against the model
class's constructor (``model.mask_rate=0.5``); an unknown one is a :class:`ConfigError` listing the valid
ones.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

from wsigraph.config import load_config
from wsigraph.errors import ConfigError

from wsigraph.graph.params import GraphConfig

SPLIT_MODES = ("auto", "manifest", "kfold", "csv")
SELECT_METRICS = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa", "loss")  # classification
#: model-selection metrics per task; the first is the task's default (``train.select_metric: auto``)
TASK_SELECT_METRICS = {"classification": SELECT_METRICS, "survival": ("c_index", "mean_td_auc", "loss"),
                       "regression": ("pearson", "spearman", "mse_neg", "loss")}
TASK_TIEBREAK = {"classification": "auc", "survival": None, "regression": None}
SELECT_TIES = ("earlier", "later")
SHUFFLES = ("epoch", "once", "none")
LOGGERS = ("csv", "tensorboard", "none")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16", "64-true", "64", "bf16-true")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


TASK_NAMES = ("classification", "survival", "regression")


@dataclass
class SurvivalConfig:
    """``data.task: survival``: the manifest's follow-up columns and the survival loss."""

    time_col: str = _help("manifest column of the follow-up time (>= 0, any unit)", default="time")
    event_col: str = _help("manifest column of the event indicator (1 = event observed, 0 = censored)",
                           default="event")
    loss: str = _help("nll (discrete-time likelihood over quantile time bins, Patch-GCN) | cox (partial "
                      "likelihood over the slides of a step: needs train.batch_size >= 2)", default="nll")
    n_bins: int = _help("time bins of nll: quantiles of the training fold's event times", default=4)
    alpha: float = _help("nll: extra weight of the uncensored terms, in [0, 1] (Patch-GCN)", default=0.0)
    horizons: Optional[list[float]] = _help("times of the time-dependent AUC (null: quartiles of the training "
                                            "fold's event times)", default=None)

    def __post_init__(self) -> None:
        if self.loss not in ("nll", "cox"):
            raise ConfigError(f"data.survival.loss must be 'nll' or 'cox', got {self.loss!r}")
        if self.n_bins < 2:
            raise ConfigError(f"data.survival.n_bins must be >= 2, got {self.n_bins}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"data.survival.alpha must be in [0, 1], got {self.alpha}")
        if self.horizons is not None and any(h <= 0 for h in self.horizons):
            raise ConfigError(f"data.survival.horizons must be > 0, got {self.horizons}")


@dataclass
class RegressionConfig:
    """``data.task: regression``: the manifest's target column and the loss."""

    target_col: str = _help("manifest column of the continuous target", default="target")
    loss: str = _help("mse | huber", default="mse")
    delta: float = _help("huber: the error where the loss turns linear (in standardised units)", default=1.0)
    standardize: bool = _help("train on (y - mean) / sd of the training fold (predictions on the original "
                              "scale)", default=True)

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "huber"):
            raise ConfigError(f"data.regression.loss must be 'mse' or 'huber', got {self.loss!r}")
        if self.delta <= 0:
            raise ConfigError(f"data.regression.delta must be > 0, got {self.delta}")


@dataclass
class DataConfig:
    """Which slides, where their features are, and how they are split."""

    manifest: str = _help("cohort CSV: slide_id,label[,case_id][,split] (survival: time and event columns; "
                          "regression: a target column)")
    task: str = _help("classification | survival | regression", default="classification")
    survival: SurvivalConfig = _help("data.task survival: columns and loss", default_factory=SurvivalConfig)
    patient_level: str = _help("when a case_id has several slides in a split: also predict per patient from "
                               "its slides' outputs, mean | max (max: the largest class probabilities, the "
                               "highest risk or value) | none; metrics per slide and per patient side by side",
                               default="mean")
    regression: RegressionConfig = _help("data.task regression: column and loss", default_factory=RegressionConfig)
    feature_dir: Optional[str] = _help("folder of <slide_id>.h5 feature files", default=None)
    classes: Optional[list[str]] = _help("ordered class names (label_index = position); null: sorted labels",
                                         default=None)
    ordinal: bool = _help("classes are ordered grades (quadratic kappa)", default=False)
    split_mode: str = _help("auto (manifest split column if present, else kfold) | manifest | kfold | csv",
                            default="auto")
    n_folds: int = _help("folds of cross-validation (split_mode kfold)", default=5)
    val_frac: float = _help("fraction of the training part held out for validation", default=0.2)
    split_seed: int = _help("seed of the splits (kept apart from train.seed)", default=0)
    splits_csv: Optional[str] = _help("splits file fold,split,slide_id (split_mode csv)", default=None)
    cache_dir: Optional[str] = _help("graph cache folder (null: no cache)", default=None)
    num_workers: int = _help("data loader worker processes", default=0)
    allow_random_features: bool = _help("accept features of a randomly initialised encoder (tests, benchmarks); "
                                        "false: refused before training", default=False)

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ConfigError(f"data.task must be one of {list(TASK_NAMES)}, got {self.task!r}")
        if self.patient_level not in ("none", "mean", "max"):
            raise ConfigError(f"data.patient_level must be none, mean or max, got {self.patient_level!r}")
        if self.split_mode not in SPLIT_MODES:
            raise ConfigError(f"split_mode must be one of {list(SPLIT_MODES)}, got {self.split_mode!r}")
        if self.split_mode == "csv" and not self.splits_csv:
            raise ConfigError("split_mode 'csv' needs splits_csv (the file of fold,split,slide_id rows)")
        if not 0.0 <= self.val_frac < 1.0:
            raise ConfigError(f"val_frac must be in [0, 1), got {self.val_frac}")
        if self.n_folds < 1:
            raise ConfigError(f"n_folds must be >= 1, got {self.n_folds}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes lists a name twice: {self.classes}")


@dataclass
class ModelConfig:
    """A registered model (``wsigraph.nn.MODELS``) and its constructor arguments, written flat."""

    __config_extra__ = "params"

    name: str = _help("model name in wsigraph.nn.MODELS", default="srmil")
    params: dict[str, Any] = _help("constructor arguments of the model (written flat under model:)",
                                   default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation, model selection and hardware."""

    epochs: int = _help("training epochs (one slide per step)", default=100)
    lr: float = _help("AdamW learning rate", default=5e-4)
    weight_decay: float = _help("AdamW weight decay", default=1e-5)
    scheduler: str = _help("cosine (CosineAnnealingLR over the epochs) | none", default="cosine")
    min_lr: float = _help("learning rate at the end of the cosine schedule", default=0.0)
    select_metric: str = _help("validation metric of model selection, auto: the task's (classification: accuracy; "
                               "survival: c_index; regression: pearson). Classification: "
                               + " | ".join(SELECT_METRICS) + "; survival: c_index | mean_td_auc | loss; "
                               "regression: pearson | spearman | mse_neg | loss", default="auto")
    select_tiebreak: Optional[str] = _help("metric breaking ties of select_metric (null: none; auto: auc for "
                                           "classification, none otherwise)", default="auto")
    batch_size: int = _help("slides per training step (their losses averaged; the Cox loss compares them): 1 is "
                            "the paper's recipe", default=1)
    accumulate: int = _help("gradient accumulation: one optimiser step per this many steps of batch_size slides "
                            "(the mean of their losses; a Cox loss still compares only the slides of one step)",
                            default=1)
    select_after: float = _help("select only after this fraction of the epochs", default=0.6)
    select_epoch_base: int = _help("epoch numbering of select_after: 1 (epoch e of 1..E is eligible when "
                                   "e > select_after * E; 100 epochs -> 61..100) | 0 (0-based index > "
                                   "select_after * E, the SRMIL reference; -> 62..100)", default=1)
    select_ties: str = _help("a full tie (select_metric and tiebreak equal) keeps the earlier epoch | takes "
                             "the later one (the SRMIL reference)", default="earlier")
    early_stopping_patience: Optional[int] = _help(
        "stop after this many eligible epochs without improvement (null: never)", default=None)
    shuffle: str = _help("training order: epoch (a new seeded order every epoch) | once (one seeded order "
                         "kept for every epoch, the SRMIL reference) | none (manifest order)", default="epoch")
    class_weights: Union[str, list[float]] = _help("none | balanced | list of one weight per class",
                                                   default="none")
    precision: str = _help("auto (bf16-mixed on CUDA, 32-true on CPU) or a Lightning precision", default="auto")
    seed: int = _help("seed of weights, masking and data order", default=0)
    accelerator: str = _help("auto | cpu | gpu | cuda | mps", default="auto")
    devices: Union[int, str, list[int]] = _help("devices per node (int, list of ids, or 'auto')", default=1)
    num_nodes: int = _help("machines (multi-node DDP)", default=1)
    strategy: str = _help("auto (ddp when several devices) or a Lightning strategy name", default="auto")
    deterministic: bool = _help("deterministic algorithms (warn-only on CUDA)", default=True)
    reuse_cpu_memory: bool = _help("on CPU with glibc (Linux), keep freed memory in the process for the next step "
                                   "instead of handing it back to the kernel (wsigraph.utils.memory): no page "
                                   "faults, SRMIL steps 1.4x (10k patches) to 1.7x (200k) faster, but the heap "
                                   "fragments: peak memory 1.1x (10k) to 1.85x (200k) (benchmarks/RESULTS.md); "
                                   "`wsigraph --allocator tcmalloc` does better (2.1x at 200k, 1.09x the memory)",
                                   default=False)
    gradient_clip: Optional[float] = _help("clip gradient norm (null: off)", default=None)
    bootstrap: int = _help("bootstrap resamples of the 95% confidence intervals (0: none)", default=1000)
    progress_bar: bool = _help("show progress bars", default=True)
    logger: str = _help("Lightning loggers of each fold under fold_<k>/logs/: csv (metrics.csv: every loss part "
                        "and validation metric per epoch), tensorboard (csv + TensorBoard events; needs the "
                        "tensorboard package), none (history.csv only)", default="csv")
    plots: bool = _help("write fold_<k>/plots/: ROC and precision-recall curves with bootstrap bands, "
                        "calibration, confusion matrix (val and test) and the training curves", default=True)
    log_every_n_steps: int = _help("how often step metrics are recorded", default=50)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.scheduler not in ("cosine", "none"):
            raise ConfigError(f"scheduler must be 'cosine' or 'none', got {self.scheduler!r}")
        known = sorted({m for ms in TASK_SELECT_METRICS.values() for m in ms} | {"auto"})
        for name in ("select_metric", "select_tiebreak"):
            v = getattr(self, name)
            if v is not None and v not in known:
                raise ConfigError(f"{name} must be one of {known}, got {v!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.accumulate < 1:
            raise ConfigError(f"accumulate must be >= 1, got {self.accumulate}")
        if not 0.0 <= self.select_after < 1.0:
            raise ConfigError(f"select_after must be in [0, 1), got {self.select_after}")
        if self.select_epoch_base not in (0, 1):
            raise ConfigError(f"select_epoch_base must be 0 or 1, got {self.select_epoch_base}")
        if self.select_ties not in SELECT_TIES:
            raise ConfigError(f"select_ties must be one of {list(SELECT_TIES)}, got {self.select_ties!r}")
        if self.shuffle not in SHUFFLES:
            raise ConfigError(f"shuffle must be one of {list(SHUFFLES)}, got {self.shuffle!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}")
        if isinstance(self.class_weights, str) and self.class_weights not in ("none", "balanced"):
            raise ConfigError(f"class_weights must be 'none', 'balanced' or a list of numbers, "
                              f"got {self.class_weights!r}")
        if isinstance(self.class_weights, list) and any(w < 0 for w in self.class_weights):
            raise ConfigError(f"class_weights must be >= 0, got {self.class_weights}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if self.logger not in LOGGERS:
            raise ConfigError(f"logger must be one of {list(LOGGERS)}, got {self.logger!r}")
        if self.logger == "tensorboard":
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
                raise ConfigError("logger: tensorboard needs the tensorboard package (pip install tensorboard, or "
                                  "pip install 'wsigraph[tensorboard]'); use logger: csv without it")
        if self.log_every_n_steps < 1:
            raise ConfigError(f"log_every_n_steps must be >= 1, got {self.log_every_n_steps}")


@dataclass
class ExperimentConfig:
    """Everything ``wsigraph train`` needs; saved as ``<output_dir>/config.yaml`` with the results."""

    data: DataConfig = _help("cohort and splits")
    graph: GraphConfig = _help("spatial graph construction", default_factory=GraphConfig)
    model: ModelConfig = _help("model", default_factory=ModelConfig)
    train: TrainConfig = _help("training", default_factory=TrainConfig)
    output_dir: str = _help("results folder (resumes when it holds a previous run)", default="runs/experiment")

    def __post_init__(self) -> None:
        task, t = self.data.task, self.train
        allowed = TASK_SELECT_METRICS[task]
        if t.select_metric == "auto":
            t.select_metric = allowed[0]
        if t.select_tiebreak == "auto":
            t.select_tiebreak = TASK_TIEBREAK[task]
        for name in ("select_metric", "select_tiebreak"):
            v = getattr(t, name)
            if v is not None and v not in allowed:
                raise ConfigError(f"train.{name}: {v!r} is not a {task} metric; one of {list(allowed)}")
        if task == "survival" and self.data.survival.loss == "cox" and t.batch_size < 2:
            raise ConfigError("data.survival.loss 'cox' compares the slides of a training step: set "
                              "train.batch_size >= 2 (16-64 are usual), or use loss 'nll'")


# ----------------------------------------------------------------------------------------------------
# model parameters
# ----------------------------------------------------------------------------------------------------

def model_class(name: str) -> type:
    """The registered model class ``name`` (ConfigError listing the registered names)."""
    from wsigraph.nn import model_class as _model_class

    return _model_class(name)


def model_signature_defaults(name: str) -> tuple[dict[str, Any], bool]:
    """``({param: default or inspect.Parameter.empty}, accepts_var_kwargs)`` of the model's constructor
    (without ``in_dim`` and ``num_classes``)."""
    from wsigraph.nn import model_arguments

    defaults = model_arguments(name)
    sig = inspect.signature(model_class(name).__init__)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return dict(defaults), var_kw


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def validate_model_params(name: str, params: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """Check ``params`` against the constructor of model ``name``; return them (ints cast to float where
    the default is a float).

    Raises:
        ConfigError: unknown model, unknown parameter (lists the valid ones), a value whose type does not
            match the default's, or a required constructor argument missing.
    """
    defaults, var_kw = model_signature_defaults(name)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in ("in_dim", "num_classes"):
            raise ConfigError(f"{where}.{key}: set by the data (feature dimension / number of classes), "
                              "not in the config")
        if key not in defaults:
            if var_kw:
                out[key] = value
                continue
            raise ConfigError(f"unknown parameter '{where}.{key}' for model {name!r}; valid parameters: "
                              f"{', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"'{where}.{key}' must be {type(default).__name__} like its default "
                              f"{default!r}, got {value!r} ({type(value).__name__})")
        out[key] = value
    missing = [k for k, d in defaults.items() if d is inspect.Parameter.empty and k not in out]
    if missing:
        raise ConfigError(f"model {name!r} needs parameter(s) {', '.join(f'{where}.{m}' for m in missing)}")
    return out


def resolved_model_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """All constructor arguments of the model: the given ones plus the defaults (plain values only), so a
    checkpoint rebuilds the same model even if a default changes later."""
    defaults, _ = model_signature_defaults(name)
    out = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty and _is_plain(v)}
    out.update(validate_model_params(name, params))
    return out


def check_model_graph(name: str, graph: GraphConfig, where: str = "model") -> None:
    """A model that reads the spatial graph (``needs_graph``) cannot run on slides read without
    coordinates (``graph.mode: none``, CLI ``--no-coords``): a ConfigError naming it and the models that can."""
    if graph.uses_coords or not getattr(model_class(name), "needs_graph", False):
        return
    from wsigraph.nn import MODELS

    setwise = sorted(n for n, cls in MODELS.items() if not getattr(cls, "needs_graph", False))
    raise ConfigError(f"{where}: model {name!r} needs the spatial graph, but graph.mode is 'none' (slides "
                      f"without coordinates, --no-coords); models that need no graph: {', '.join(setwise)}")


# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------


def load_experiment_config(src: str | os.PathLike | Mapping[str, Any] | None,
                           overrides: Iterable[str] = (), *, check_model: bool = True) -> ExperimentConfig:
    """Load an :class:`ExperimentConfig` (YAML path or mapping) with dotted overrides.

    With ``check_model`` the model name and its parameters are validated against ``wsigraph.nn``.
    """
    cfg = load_config(src, ExperimentConfig, overrides)
    if check_model:
        source = str(src) if isinstance(src, (str, os.PathLike)) else "<dict>"
        try:
            cfg.model.params = validate_model_params(cfg.model.name, cfg.model.params)
            check_model_graph(cfg.model.name, cfg.graph)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e
    return cfg


#: Named starting points of ``wsigraph init-config --recipe``: settings that differ from the defaults.
#: ``paper`` reproduces the SRMIL reference code (wwyi1828/SRMIL at 7bb63e8): the authors' computation
#: (``variant: reference``, SRMIL only), fp32 everywhere, one data order for all epochs, its selection
#: window and tie rule, and its 15% validation split. The other defaults (100 epochs, AdamW 5e-4 / 1e-5,
#: cosine schedule, selection on validation accuracy with AUC ties after 60% of the epochs, no class
#: weights) are already the reference's.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "paper": {
        "model": {"variant": "reference"},
        "train": {"precision": "32-true", "shuffle": "once", "select_epoch_base": 0, "select_ties": "later"},
        "data": {"val_frac": 0.15},
    },
}


def default_config(model: str = "srmil", manifest: str = "manifest.csv",
                   feature_dir: str | None = "features", recipe: str = "default",
                   task: str = "classification") -> ExperimentConfig:
    """The defaults with every constructor argument of ``model``, changed as ``recipe`` (a key of
    :data:`RECIPES`) says; the ``model`` part of a recipe applies to the models that take those
    arguments. ``task``: ``data.task`` (the selection metric follows it)."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")
    spec = RECIPES[recipe]
    defaults, _ = model_signature_defaults(model)
    params = resolved_model_params(model, {k: v for k, v in spec.get("model", {}).items() if k in defaults})
    return ExperimentConfig(data=DataConfig(manifest=manifest, feature_dir=feature_dir, task=task,
                                            **spec.get("data", {})),
                            model=ModelConfig(name=model, params=params), train=TrainConfig(**spec.get("train", {})))


__all__ = [
    "ExperimentConfig", "DataConfig", "GraphConfig", "ModelConfig", "TrainConfig",
    "load_experiment_config", "default_config", "validate_model_params", "resolved_model_params",
    "check_model_graph",
    "SELECT_METRICS", "TASK_SELECT_METRICS", "TASK_NAMES", "SurvivalConfig", "RegressionConfig", "RECIPES",
]
