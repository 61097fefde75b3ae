"""Slide classification: C class logits, cross-entropy (class-weighted if asked), class probabilities."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsigraph.tasks.base import Task


class ClassificationTask(Task):
    """Args: classes: the C ordered class names. ordinal: quadratic kappa. class_weight: (C,) or None."""

    name = "classification"
    select_metrics = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa", "loss")
    summary_metrics = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa")
    log_metrics = ("accuracy", "auc")
    loss_name = "ce"

    def __init__(self, classes: Sequence[str], ordinal: bool = False, class_weight: Sequence[float] | None = None):
        self.classes = [str(c) for c in classes]
        self.ordinal = bool(ordinal)
        self.class_weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)

    @property
    def out_dim(self) -> int:
        return len(self.classes)

    def target_columns(self) -> tuple[str, ...]:
        return ("label",)

    def labeled(self, targets: np.ndarray) -> np.ndarray:
        return np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)[:, 0] >= 0

    def stratify(self, targets: np.ndarray) -> np.ndarray:
        return np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)[:, 0].astype(np.int64)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean over the batch of ``w[y] * CE`` (unweighted without class weights)."""
        y = targets.reshape(outputs.size(0), -1)[:, 0].to(device=outputs.device, dtype=torch.long)
        ce = F.cross_entropy(outputs, y, reduction="none")
        if self.class_weight is not None:
            ce = ce * self.class_weight.to(device=ce.device, dtype=ce.dtype)[y]
        return ce.mean()

    def label_of(self, target: Tensor) -> int | None:
        return int(target.reshape(-1)[0])

    def eval_row(self, outputs: Tensor) -> Tensor:
        return torch.softmax(outputs.float().view(1, -1), dim=-1)[0]

    def row_names(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]

    def eval_loss(self, outputs: Tensor, target: Tensor) -> float:
        y = int(target.reshape(-1)[0])
        if y < 0:
            return float("nan")
        return float(F.cross_entropy(outputs.float().view(1, -1), torch.tensor([y], device=outputs.device)).item())

    def metrics(self, targets: np.ndarray, rows: np.ndarray, *, train: Any = None, n_bootstrap: int = 0,
                seed: int = 0) -> dict[str, Any]:
        from wsigraph.train.metrics import classification_metrics, metrics_with_ci

        y = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)[:, 0].astype(np.int64)
        if n_bootstrap > 0:
            return metrics_with_ci(y, rows, self.classes, ordinal=self.ordinal, n_bootstrap=n_bootstrap, seed=seed)
        return classification_metrics(y, rows, self.classes, ordinal=self.ordinal)

    def predictions_frame(self, slide_ids: Sequence[str], targets: np.ndarray | None, rows: np.ndarray) -> Any:
        from wsigraph.train.inference import predictions_frame

        y = None if targets is None else np.asarray(targets, dtype=np.float64).reshape(len(slide_ids), -1)[:, 0]
        return predictions_frame(slide_ids, None if y is None else y.astype(np.int64), rows, self.classes)


__all__ = ["ClassificationTask"]
