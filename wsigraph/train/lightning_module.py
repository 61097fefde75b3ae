"""The LightningModule around a :class:`~wsigraph.nn.MILModel`: one slide per step.

The model stays a plain ``nn.Module`` (``self.model``); this wrapper adds the optimiser (AdamW + cosine
schedule over the epochs), the training step (``model.training_loss``) and the validation/test epochs:
each rank runs its share of the slides, the per-slide probabilities are gathered across ranks (padding
duplicates from the distributed sampler removed by slide position), the metrics are computed on rank 0
and broadcast, so every rank holds the same ``last_val_metrics`` (model selection and early stopping then
agree on every rank).

Batches are PyG ``Batch`` objects of one graph (``DataLoader(batch_size=1)``); each carries
``sample_pos`` (1,) int64, the slide's position in its dataset (see :class:`PositionedDataset`).
"""
from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from wsigraph.train.metrics import classification_metrics

SCALAR_LOG_KEYS = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa", "loss")
#: per-epoch attention diagnostics on the evaluated slides (models whose patch scores are a distribution):
#: ``attn_eff_frac`` = exp(entropy) / N, the effective share of a slide's patches attended (1 = uniform),
#: averaged over slides; ``attn_lesion_mass`` = attention mass on ground-truth lesion patches
#: (``patch_labels``), and ``lesion_frac`` the mass uniform attention would give them, averaged over the
#: slides that hold lesion patches.
ATTENTION_KEYS = ("attn_eff_frac", "attn_lesion_mass", "lesion_frac")


def attention_stats(scores: torch.Tensor | None, patch_labels: torch.Tensor | None) -> tuple[float, float, float]:
    """``(effective share attended, mass on lesion patches, lesion share)`` of one slide's patch scores
    (N,); NaN where the scores are not a distribution (negative or not summing to 1) or the slide has no
    lesion patches."""
    nan = float("nan")
    if scores is None or scores.numel() == 0:
        return nan, nan, nan
    p = scores.detach().double().view(-1)
    if bool((p < 0).any()) or abs(float(p.sum()) - 1.0) > 1e-3:
        return nan, nan, nan
    entropy = -float(torch.special.xlogy(p, p).sum())
    eff = float(np.exp(entropy)) / p.numel()
    if patch_labels is None or patch_labels.numel() != p.numel():
        return eff, nan, nan
    lesion = patch_labels.view(-1).to(p.device) > 0
    if not bool(lesion.any()):
        return eff, nan, nan
    return eff, float(p[lesion].sum()), float(lesion.double().mean())


class EpochShuffleSampler(torch.utils.data.Sampler):
    """Shuffles ``range(n)`` with a permutation that depends only on ``(seed, epoch)``; with
    ``reshuffle=False``, one permutation of ``seed`` for every epoch (the SRMIL reference shuffles its list
    once).

    Lightning calls ``set_epoch`` at every epoch, so a run resumed from ``last.ckpt`` sees the same data
    order as an uninterrupted one.
    """

    def __init__(self, n: int, seed: int = 0, reshuffle: bool = True):
        self.n, self.seed, self.epoch, self.reshuffle = int(n), int(seed), 0, bool(reshuffle)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch) if self.reshuffle else 0

    def __iter__(self) -> Any:
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for ``(seed, epoch, rank)``: distinct per epoch and rank, the same on every rerun."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729) % (2**63 - 1)


class PositionedDataset(torch.utils.data.Dataset):
    """Wraps a dataset of PyG ``Data``; each item gets ``sample_pos`` = its index (for de-duplication when
    gathering predictions across ranks)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        data = self.dataset[i]
        data.sample_pos = torch.tensor([int(i)], dtype=torch.long)
        return data


def _all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate (n_r, K) tensors of every rank (n_r may differ) in rank order; every rank gets all rows."""
    import torch.distributed as dist

    world = dist.get_world_size()
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    width = int(max(int(c) for c in counts))
    padded = torch.zeros((width, rows.shape[1]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c)] for p, c in zip(parts, counts)])


class MILLightningModule(L.LightningModule):
    """Trains a MILModel.

    Args:
        model: the MILModel (``training_loss(data, y, class_weight)``, ``forward(data) -> MILOutput``).
        classes: class names (C).
        lr, weight_decay: AdamW.
        epochs: length of the cosine schedule (``CosineAnnealingLR(T_max=epochs)``, stepped per epoch).
        scheduler: ``"cosine"`` or ``"none"``.
        min_lr: final learning rate of the cosine schedule.
        class_weight: (C,) cross-entropy weights, or None.
        ordinal: quadratic kappa in the validation metrics.
        metadata: plain dict stored in Lightning checkpoints under ``"wsigraph"`` (model name, params, ...).
        seed: when given, the random generators (masking, dropout) are reseeded at every epoch start from
            ``(seed, epoch, rank)``, so a resumed run continues exactly as an uninterrupted one.
    """

    def __init__(self, model: torch.nn.Module, classes: Sequence[str], *, lr: float = 5e-4,
                 weight_decay: float = 1e-5, epochs: int = 100, scheduler: str = "cosine", min_lr: float = 0.0,
                 class_weight: torch.Tensor | Sequence[float] | None = None, ordinal: bool = False,
                 metadata: dict | None = None, seed: int | None = None):
        super().__init__()
        self.seed = seed
        self.model = model
        self.classes = [str(c) for c in classes]
        self.lr, self.weight_decay, self.epochs = float(lr), float(weight_decay), int(epochs)
        self.scheduler_name, self.min_lr = scheduler, float(min_lr)
        self.ordinal = bool(ordinal)
        self.metadata = dict(metadata or {})
        cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", cw, persistent=False)
        self._outputs: list[tuple[int, int, torch.Tensor, float, tuple[float, float, float]]] = []
        self.last_val_metrics: dict[str, Any] = {}
        self.last_val_predictions: dict[str, np.ndarray] = {}
        self._train_parts: dict[str, list[float]] = {}
        self.last_train_parts: dict[str, float] = {}

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "none":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs, eta_min=self.min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    @staticmethod
    def _label(batch: Any) -> torch.Tensor:
        return batch.y.view(-1)[:1].long()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        y = self._label(batch)
        loss, _logits, parts = self.model.training_loss(batch, y, self.class_weight)
        value = float(loss.detach())
        # rank-local running mean for the progress bar; the epoch means over ranks come from
        # reduce_train_parts (one collective, called by every rank at the same point)
        self.log("train/loss", value, on_step=False, on_epoch=True, batch_size=1, sync_dist=False, prog_bar=True,
                 logger=False)  # the loggers get EpochLog's per-epoch row (every loss part), one step per epoch
        self._train_parts.setdefault("loss", []).append(value)
        for k, v in parts.items():
            if k != "loss":
                self._train_parts.setdefault(k, []).append(float(v))
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_parts = {}
        if self.seed is not None:
            import random

            s = epoch_seed(self.seed, self.current_epoch, self.global_rank)
            torch.manual_seed(s)
            np.random.seed(s % 2**32)
            random.seed(s)

    def reduce_train_parts(self) -> dict[str, float]:
        """Epoch means of the loss (``"loss"``) and its parts over all ranks; every rank must call it (it is
        a collective). Also kept in ``last_train_parts``."""
        keys = sorted(self._train_parts)
        n_local = len(self._train_parts[keys[0]]) if keys else 0
        sums = torch.tensor([[sum(self._train_parts[k]) for k in keys] + [n_local]], dtype=torch.float64,
                            device=self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        sums = sums.view(-1).cpu()
        n = max(float(sums[-1]), 1.0)
        self.last_train_parts = {k: float(sums[i]) / n for i, k in enumerate(keys)}
        return self.last_train_parts

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch: Any) -> None:
        out = self.model(batch)
        logits = out.logits.float().view(1, -1)
        y = self._label(batch)
        loss = float(F.cross_entropy(logits, y.clamp(min=0)).item()) if int(y) >= 0 else float("nan")
        pos = int(batch.sample_pos.view(-1)[0]) if hasattr(batch, "sample_pos") else len(self._outputs)
        attn = attention_stats(out.patch_scores, getattr(batch, "patch_labels", None))
        self._outputs.append((pos, int(y), torch.softmax(logits, dim=-1)[0].detach(), loss, attn))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _gather_outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pos, y, probs, loss, attention stats (n, 3)) of every slide over all ranks, sorted by position,
        duplicates removed."""
        c = len(self.classes)
        rows = [torch.cat([torch.tensor([p, y, l, *a], dtype=torch.float64), pr.double().cpu()])
                for p, y, pr, l, a in self._outputs]
        local = torch.stack(rows) if rows else torch.zeros((0, 6 + c), dtype=torch.float64)
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            local = _all_gather_rows(local.to(self.device)).cpu()
        arr = local.numpy()
        _, first = np.unique(arr[:, 0].astype(np.int64), return_index=True)
        arr = arr[first]
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 6:], arr[:, 2], arr[:, 3:6]

    def _finish_eval(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            self._outputs = []
            return
        pos, y, probs, loss, attn = self._gather_outputs()
        metrics: dict[str, Any] | None = None
        if self.trainer.is_global_zero:
            import warnings

            labeled = y >= 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics = classification_metrics(y[labeled], probs[labeled], self.classes, ordinal=self.ordinal)
            metrics["loss"] = float(np.nanmean(loss)) if labeled.any() else float("nan")
            for j, key in enumerate(ATTENTION_KEYS):
                col = attn[:, j]
                if np.isfinite(col).any():
                    metrics[key] = float(np.nanmean(col))
        if self.trainer.world_size > 1:
            metrics = self.trainer.strategy.broadcast(metrics, src=0)
        assert metrics is not None
        self.last_val_metrics = metrics
        self.last_val_predictions = {"pos": pos, "y": y, "probs": probs}
        for k in SCALAR_LOG_KEYS:  # identical on every rank: no sync needed
            v = metrics.get(k)
            if v is not None:
                self.log(f"{stage}/{k}", float(v), on_epoch=True, batch_size=1, sync_dist=False,
                         prog_bar=(k in ("accuracy", "auc")), logger=False)
        self._outputs = []

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from wsigraph.train.checkpoint import LIGHTNING_KEY, plain

        checkpoint[LIGHTNING_KEY] = plain({**self.metadata, "epoch": int(self.current_epoch)})


__all__ = ["MILLightningModule", "PositionedDataset", "EpochShuffleSampler", "epoch_seed", "attention_stats",
           "ATTENTION_KEYS"]
