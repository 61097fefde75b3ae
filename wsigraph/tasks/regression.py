"""Regression: one continuous value per slide (e.g. a gene-expression signature), MSE or Huber loss."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import Tensor

from wsigraph.tasks.base import Task
from wsigraph.tasks.losses import regression_loss

REGRESSION_LOSSES = ("mse", "huber")


class RegressionTask(Task):
    """Args: loss: ``mse`` | ``huber``. delta: Huber's threshold. target_col: the manifest column.
    standardize: the model predicts ``(y - mean) / sd`` of the training fold (predictions are reported
    on the original scale)."""

    name = "regression"
    select_metrics = ("pearson", "spearman", "mse_neg", "loss")
    summary_metrics = ("pearson", "spearman", "mae", "rmse", "r2")
    log_metrics = ("pearson",)

    def __init__(self, loss: str = "mse", delta: float = 1.0, target_col: str = "target", standardize: bool = True):
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        self.kind, self.delta, self.target_col, self.standardize = loss, float(delta), target_col, bool(standardize)
        self.loss_name = loss
        self.mean, self.sd = 0.0, 1.0

    @property
    def out_dim(self) -> int:
        return 1

    def target_columns(self) -> tuple[str, ...]:
        return (self.target_col,)

    def fit(self, train_targets: np.ndarray) -> None:
        y = np.asarray(train_targets, dtype=np.float64).reshape(-1)
        y = y[np.isfinite(y)]
        if self.standardize and y.size:
            self.mean = float(y.mean())
            self.sd = float(y.std()) if y.size > 1 and y.std() > 0 else 1.0

    def state(self) -> dict[str, Any]:
        return {"loss": self.kind, "delta": self.delta, "target_col": self.target_col, "mean": self.mean, "sd": self.sd}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean, self.sd = float(state.get("mean", 0.0)), float(state.get("sd", 1.0))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        z = (targets.reshape(-1).to(outputs.device).float() - self.mean) / self.sd
        return regression_loss(outputs.reshape(-1), z, self.kind, self.delta)

    def eval_row(self, outputs: Tensor) -> Tensor:
        return outputs.float().view(-1)[:1] * self.sd + self.mean

    def row_names(self) -> list[str]:
        return ["pred"]

    def metrics(self, targets: np.ndarray, rows: np.ndarray, *, train: Any = None, n_bootstrap: int = 0,
                seed: int = 0) -> dict[str, Any]:
        from wsigraph.tasks.regression_metrics import regression_metrics

        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        p = np.asarray(rows, dtype=np.float64).reshape(len(y), -1)[:, 0]
        ok = np.isfinite(y)
        out = regression_metrics(y[ok], p[ok], n_bootstrap=n_bootstrap, seed=seed)
        out["mse_neg"] = -out["rmse"] ** 2 if np.isfinite(out["rmse"]) else float("nan")
        return out

    def predictions_frame(self, slide_ids: Sequence[str], targets: np.ndarray | None, rows: np.ndarray) -> Any:
        import pandas as pd

        df = pd.DataFrame({"slide_id": list(slide_ids)})
        if targets is not None:
            df["target"] = np.asarray(targets, dtype=np.float64).reshape(-1)
        df["pred"] = np.asarray(rows, dtype=np.float64).reshape(len(slide_ids), -1)[:, 0]
        return df


__all__ = ["RegressionTask", "REGRESSION_LOSSES"]
