"""The task contract: what a slide's model outputs mean, how they are supervised and scored.

A model (:class:`~wsigraph.nn.MILModel`) produces K outputs per slide; its task says what they are, turns
them into a loss against the slide's target, into the values kept per evaluated slide, into metrics and
into the predictions table. Targets are (n, T) float64 arrays, one row per slide, NaN (or -1 for a class
index) where a slide has no target.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from torch import Tensor


class Task:
    """Base class of the slide-level tasks (classification, survival, regression)."""

    name: ClassVar[str] = ""
    #: validation metrics model selection may use; the first is the default
    select_metrics: ClassVar[tuple[str, ...]] = ()
    #: metrics where lower is better (the rest: higher is better)
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    #: scalar metrics of summary.csv / bench tables
    summary_metrics: ClassVar[tuple[str, ...]] = ()
    #: the metrics shown in each epoch's log line
    log_metrics: ClassVar[tuple[str, ...]] = ()
    #: the loss's short name; supervised loss parts ``ce_*`` are logged as ``<loss_name>_*``
    loss_name: str = "ce"
    #: slides a training step needs at least (Cox: 2, it compares slides)
    min_batch: int = 1

    @property
    def out_dim(self) -> int:
        """K, the outputs a model must produce per slide."""
        raise NotImplementedError

    # -- targets
    def target_columns(self) -> tuple[str, ...]:
        """The manifest columns holding the target."""
        raise NotImplementedError

    def labeled(self, targets: np.ndarray) -> np.ndarray:
        """(n,) bool: slides with a target."""
        return np.isfinite(np.asarray(targets, dtype=np.float64)).all(axis=1)

    def fit(self, train_targets: np.ndarray) -> None:
        """Learn what the task needs from the training fold's targets (survival: the time bins)."""

    def state(self) -> dict[str, Any]:
        """Plain values saved in checkpoints to rebuild the fitted task."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""

    # -- training
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean loss of (B, K) outputs against (B, T) targets."""
        raise NotImplementedError

    def label_of(self, target: Tensor) -> int | None:
        """The class index a model's label-specific term may use (None: the task has no classes)."""
        return None

    # -- evaluation
    def eval_row(self, outputs: Tensor) -> Tensor:
        """(P,) float values kept per evaluated slide, from its (1, K) outputs."""
        raise NotImplementedError

    def row_names(self) -> list[str]:
        """Names of the P values of :meth:`eval_row` (columns of the predictions table)."""
        raise NotImplementedError

    def eval_loss(self, outputs: Tensor, target: Tensor) -> float:
        """One slide's validation loss (NaN where it is not defined per slide)."""
        return float(self.loss(outputs.float().view(1, -1), target.view(1, -1)).detach())

    def metrics(self, targets: np.ndarray, rows: np.ndarray, *, train: tuple[np.ndarray, np.ndarray] | None = None,
                n_bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
        """Metrics of the slides' rows (n, P) against their targets (n, T). ``train``: the training fold's
        (targets, rows), for metrics that need it (survival: censoring weights, Breslow baseline)."""
        raise NotImplementedError

    def predictions_frame(self, slide_ids: Sequence[str], targets: np.ndarray | None, rows: np.ndarray) -> Any:
        """The predictions table: ``slide_id``, the target columns, then the task's prediction columns."""
        raise NotImplementedError

    def stratify(self, targets: np.ndarray) -> np.ndarray:
        """(n,) int groups that splits keep in proportion (classes; events), -1 for slides without target."""
        return np.where(self.labeled(targets), 0, -1)


def finite_mean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


__all__ = ["Task", "finite_mean"]
