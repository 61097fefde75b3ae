"""Survival: a slide's follow-up ``time`` and ``event`` (1 = observed, 0 = censored).

Two losses (``loss``):

* ``nll``: Patch-GCN's discrete-time model. The model outputs K hazard logits, one per time bin; the bins
  are the quantiles of the training fold's event times (:meth:`SurvivalTask.fit`), the last one open.
  Risk = -sum_k S_k (higher = earlier event); survival curve S_k at the bins' ends.
* ``cox``: one output, the log relative hazard; the Cox partial likelihood over the slides of a training
  step (needs ``train.batch_size >= 2``). Survival curves come from Breslow's baseline on the training fold.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from wsigraph.errors import InputError
from wsigraph.tasks.base import Task
from wsigraph.tasks.losses import cox_partial_nll, discrete_survival_nll, survival_from_logits

SURVIVAL_LOSSES = ("nll", "cox")


class SurvivalTask(Task):
    """Args: loss: ``nll`` | ``cox``. n_bins: K time bins of ``nll``. alpha: weight of the uncensored terms
    of ``nll`` (Patch-GCN). horizons: times of the time-dependent AUC (None: quartiles of the training
    fold's event times). time_col, event_col: manifest columns."""

    name = "survival"
    select_metrics = ("c_index", "mean_td_auc", "loss")
    summary_metrics = ("c_index", "mean_td_auc", "ibs")
    log_metrics = ("c_index",)
    lower_is_better = frozenset({"loss", "ibs"})

    def __init__(self, loss: str = "nll", n_bins: int = 4, alpha: float = 0.0, horizons: Sequence[float] | None = None,
                 time_col: str = "time", event_col: str = "event"):
        if loss not in SURVIVAL_LOSSES:
            raise ValueError(f"survival loss must be one of {SURVIVAL_LOSSES}, got {loss!r}")
        self.kind, self.n_bins, self.alpha = loss, int(n_bins), float(alpha)
        self.horizons = None if horizons is None else [float(h) for h in horizons]
        self.time_col, self.event_col = time_col, event_col
        self.loss_name = loss
        self.min_batch = 2 if loss == "cox" else 1
        self.edges: list[float] | None = None  # the K - 1 inner bin edges (nll)
        #: the training fold's (time, event) (censoring weights of td-AUC / IBS on a cohort evaluated later)
        self.train_targets: list[list[float]] | None = None

    @property
    def out_dim(self) -> int:
        return self.n_bins if self.kind == "nll" else 1

    def target_columns(self) -> tuple[str, ...]:
        return (self.time_col, self.event_col)

    def stratify(self, targets: np.ndarray) -> np.ndarray:
        t = np.asarray(targets, dtype=np.float64).reshape(len(targets), 2)
        return np.where(self.labeled(t), np.nan_to_num(t[:, 1]).astype(np.int64), -1)

    # ------------------------------------------------------------------ fit
    def fit(self, train_targets: np.ndarray) -> None:
        t = np.asarray(train_targets, dtype=np.float64).reshape(-1, 2)
        t = t[self.labeled(t)]
        if not (t[:, 1] > 0).any():
            raise InputError(f"survival: the training fold has no event ({len(t)} slides, all censored); the "
                             "model cannot learn when events happen. Check the event column, or the splits")
        if self.kind == "nll":
            q = np.quantile(t[t[:, 1] > 0, 0], np.arange(1, self.n_bins) / self.n_bins)
            self.edges = [float(v) for v in q]
        self.train_targets = [[float(a), float(b)] for a, b in t]

    def state(self) -> dict[str, Any]:
        return {"loss": self.kind, "n_bins": self.n_bins, "alpha": self.alpha, "edges": self.edges,
                "time_col": self.time_col, "event_col": self.event_col, "horizons": self.horizons,
                "train_targets": self.train_targets}

    def load_state(self, state: dict[str, Any]) -> None:
        self.edges = None if state.get("edges") is None else [float(v) for v in state["edges"]]
        tt = state.get("train_targets")
        self.train_targets = None if tt is None else [[float(a), float(b)] for a, b in tt]

    def bins_of(self, time: Tensor) -> Tensor:
        """(B,) int64 bin index of each time: the number of inner edges <= t."""
        assert self.edges is not None, "SurvivalTask.fit was not called"
        edges = torch.as_tensor(self.edges, dtype=torch.float64, device=time.device)
        return torch.bucketize(time.double().contiguous(), edges, right=True)

    # ------------------------------------------------------------------ training
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        tg = targets.reshape(outputs.size(0), 2).to(outputs.device)
        if self.kind == "nll":
            return discrete_survival_nll(outputs, self.bins_of(tg[:, 0]), tg[:, 1], self.alpha)
        return cox_partial_nll(outputs.view(-1), tg[:, 0], tg[:, 1])

    def eval_loss(self, outputs: Tensor, target: Tensor) -> float:
        if self.kind == "cox" or not bool(torch.isfinite(target).all()):
            return float("nan")  # the partial likelihood is not a per-slide quantity
        return super().eval_loss(outputs, target)

    # ------------------------------------------------------------------ evaluation
    def eval_row(self, outputs: Tensor) -> Tensor:
        o = outputs.float().view(1, -1)
        if self.kind == "cox":
            return o[0, :1]
        _, surv = survival_from_logits(o)
        return torch.cat([-surv.sum(dim=1), surv[0]])

    def row_names(self) -> list[str]:
        if self.kind == "cox":
            return ["risk"]
        return ["risk"] + [f"surv_bin{k}" for k in range(self.n_bins)]

    def survival_at(self, rows: np.ndarray, grid: np.ndarray,
                    train: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """(n, T) survival probabilities at ``grid`` times: the bins' step function (a slide survives bin k
        with probability S_k, read at every time of the bin after it), or Breslow's for ``cox``."""
        if self.kind == "cox":
            from wsigraph.tasks.survival_metrics import breslow_survival

            assert train is not None
            tt, tr = np.asarray(train[0], dtype=np.float64), np.asarray(train[1], dtype=np.float64)
            ok = self.labeled(tt)
            return breslow_survival(tr[ok, 0], tt[ok, 0], tt[ok, 1], rows[:, 0], grid)
        assert self.edges is not None
        surv = np.concatenate([np.ones((len(rows), 1)), rows[:, 1:]], axis=1)  # S_{-1} = 1, S_0 ..
        k = np.searchsorted(np.asarray(self.edges), np.asarray(grid, dtype=np.float64), side="right")
        return surv[:, k]  # in bin k: survived bins 0..k-1

    def metrics(self, targets: np.ndarray, rows: np.ndarray, *, train: tuple[np.ndarray, np.ndarray] | None = None,
                n_bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
        from wsigraph.tasks.survival_metrics import survival_metrics

        t = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
        rows = np.asarray(rows, dtype=np.float64).reshape(len(t), -1)
        ok = self.labeled(t)
        t, rows = t[ok], rows[ok]
        kw: dict[str, Any] = {}
        if train is None and self.train_targets is not None:  # a cohort evaluated after training
            train = (np.asarray(self.train_targets, dtype=np.float64), None)
        if train is not None:
            tt = np.asarray(train[0], dtype=np.float64).reshape(-1, 2)
            keep = self.labeled(tt)
            kw = {"train_time": tt[keep, 0], "train_event": tt[keep, 1], "horizons": self.horizons}
            if self.kind == "nll" or train[1] is not None:  # Cox: Breslow needs the training fold's risks
                kw["surv_fn"] = lambda grid: self.survival_at(rows, grid, train)
        return survival_metrics(t[:, 0], t[:, 1], rows[:, 0], n_bootstrap=n_bootstrap, seed=seed, **kw)

    def predictions_frame(self, slide_ids: Sequence[str], targets: np.ndarray | None, rows: np.ndarray) -> Any:
        import pandas as pd

        rows = np.asarray(rows, dtype=np.float64).reshape(len(slide_ids), -1)
        df = pd.DataFrame({"slide_id": list(slide_ids)})
        if targets is not None:
            t = np.asarray(targets, dtype=np.float64).reshape(len(slide_ids), 2)
            df["time"], df["event"] = t[:, 0], pd.array(np.where(np.isfinite(t[:, 1]), t[:, 1], np.nan)).astype("Int64")
        for j, name in enumerate(self.row_names()):
            df[name] = rows[:, j]
        return df


__all__ = ["SurvivalTask", "SURVIVAL_LOSSES"]
