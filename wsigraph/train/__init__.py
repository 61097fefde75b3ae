"""Training and inference: typed experiment config, Lightning training with the paper's model selection,
k-fold cross-validation with resume, metrics with bootstrap CIs, checkpoints and ``evaluate`` (``predict``, a cohort job: :mod:`wsigraph.pipeline.predict`).

Lightning is imported only when a model is trained (``train_experiment``), not by ``import wsigraph.train``.
"""
from wsigraph.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from wsigraph.train.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    default_config,
    load_experiment_config,
)
from wsigraph.train.inference import evaluate
from wsigraph.train.metrics import bootstrap_ci, classification_metrics, metrics_with_ci
from wsigraph.train.runner import summarize, train_experiment

__all__ = [
    "ExperimentConfig", "DataConfig", "ModelConfig", "TrainConfig", "load_experiment_config", "default_config",
    "train_experiment", "summarize", "evaluate",
    "classification_metrics", "bootstrap_ci", "metrics_with_ci",
    "Checkpoint", "load_checkpoint", "save_checkpoint",
]
