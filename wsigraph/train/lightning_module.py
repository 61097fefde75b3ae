"""The LightningModule around a :class:`~wsigraph.nn.MILModel`: one slide per step.

The model stays a plain ``nn.Module`` (``self.model``); this wrapper adds the optimiser (AdamW + cosine
schedule over the epochs), the training step (``model.training_loss``) and the validation/test epochs:
each rank runs its share of the slides, the per-slide probabilities are gathered across ranks (padding
duplicates from the distributed sampler removed by slide position), the metrics are computed on rank 0
and broadcast, so every rank holds the same ``last_val_metrics`` (model selection and early stopping then
agree on every rank).

Batches are PyG ``Batch`` objects of one graph (``DataLoader(batch_size=1)``), or lists of ``Data``
(``train.batch_size`` > 1: the slides of one step, each run on its own, their task losses taken over the
step); each slide carries ``sample_pos`` (1,) int64, its position in its dataset, and ``target`` (1, T)
float64, its task target (see :class:`PositionedDataset`). What the outputs mean, their loss and metrics
come from the task (:mod:`wsigraph.tasks`; classification by default).
"""
from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import numpy as np
import torch

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
    gathering predictions across ranks) and, when ``targets`` (n, T) are given, ``target`` (1, T) float64
    (else the class label ``y`` as a (1, 1) target)."""

    def __init__(self, dataset: Any, targets: np.ndarray | None = None):
        self.dataset = dataset
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets, dtype=np.float64))
        if self.targets is not None and len(self.targets) != len(dataset):
            raise ValueError(f"{len(self.targets)} targets for {len(dataset)} slides")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        data = self.dataset[i]
        data.sample_pos = torch.tensor([int(i)], dtype=torch.long)
        if self.targets is not None:
            data.target = self.targets[i].view(1, -1)
        return data


def slide_target(data: Any) -> torch.Tensor:
    """(1, T) float64 target of one slide (``target``; else its class label ``y``)."""
    t = getattr(data, "target", None)
    if t is not None:
        return t.reshape(1, -1).double()
    return data.y.view(-1)[:1].double().view(1, 1)


def pack_slides(slides: Sequence[Any]) -> Any:
    """The slides' features and graphs as one PyG ``Batch`` (block-diagonal edges, ``ptr``); only ``x`` and
    ``edge_index`` are kept, so slides with and without patch labels or positions pack together."""
    from torch_geometric.data import Batch, Data

    return Batch.from_data_list([Data(x=d.x, edge_index=getattr(d, "edge_index", None), num_nodes=d.x.size(0))
                                 for d in slides])


def step_loss(model: torch.nn.Module, slides: Sequence[Any], task: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one training step over ``slides`` and its parts: each supervised term of the model's
    :meth:`~wsigraph.nn.MILModel.training_terms` goes through ``task.loss`` over the step's slides (outputs
    stacked (B, K)), times its weight; label-free terms are averaged over the slides. With one slide and
    cross-entropy it is the model's :meth:`~wsigraph.nn.MILModel.training_loss`. Several slides run packed
    as one graph where the model supports it (:meth:`~wsigraph.nn.MILModel.packed_training_terms`), else one
    by one."""
    targets = torch.cat([slide_target(d) for d in slides])
    if len(slides) > 1 and getattr(model, "supports_packing", False):
        terms = [model.packed_training_terms(pack_slides(slides))]  # one pass; outputs (B, K)
    else:
        terms = [model.training_terms(d, task.label_of(slide_target(d))) for d in slides]
    total: torch.Tensor | None = None
    parts: dict[str, float] = {name: 0.0 for name in terms[0].skipped}

    def add(v: torch.Tensor) -> None:
        nonlocal total
        total = v if total is None else total + v

    prefix = task.loss_name
    for j, (name, _out, w) in enumerate(terms[0].supervised):
        outs = torch.cat([t.supervised[j][1] for t in terms])
        value = task.loss(outs, targets.to(outs.device))
        parts[name if prefix == "ce" or not name.startswith("ce") else prefix + name[2:]] = float(value.detach())
        add(w * value)
    for j, (name, _v, w) in enumerate(terms[0].unsupervised):
        value = torch.stack([t.unsupervised[j][1] for t in terms]).mean()
        parts[name] = float(value.detach())
        add(w * value)
    assert total is not None
    return total, parts


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
        model: the MILModel (``training_terms(data, label)``, ``forward(data) -> MILOutput``).
        classes: class names (C); for other tasks the split strata (unused).
        lr, weight_decay: AdamW.
        epochs: length of the cosine schedule (``CosineAnnealingLR(T_max=epochs)``, stepped per epoch).
        scheduler: ``"cosine"`` or ``"none"``.
        min_lr: final learning rate of the cosine schedule.
        class_weight: (C,) cross-entropy weights, or None.
        ordinal: quadratic kappa in the validation metrics.
        metadata: plain dict stored in Lightning checkpoints under ``"wsigraph"`` (model name, params, ...).
        seed: when given, the random generators (masking, dropout) are reseeded at every epoch start from
            ``(seed, epoch, rank)``, so a resumed run continues exactly as an uninterrupted one.
        task: a fitted :class:`~wsigraph.tasks.Task` (None: classification of ``classes`` with ``class_weight``
            and ``ordinal``).
    """

    def __init__(self, model: torch.nn.Module, classes: Sequence[str], *, lr: float = 5e-4,
                 weight_decay: float = 1e-5, epochs: int = 100, scheduler: str = "cosine", min_lr: float = 0.0,
                 class_weight: torch.Tensor | Sequence[float] | None = None, ordinal: bool = False,
                 metadata: dict | None = None, seed: int | None = None, task: Any = None):
        super().__init__()
        from wsigraph.tasks import ClassificationTask

        self.task = task if task is not None else ClassificationTask(classes, ordinal=ordinal,
                                                                     class_weight=class_weight)
        self.seed = seed
        self.model = model
        self.classes = [str(c) for c in classes]
        self.lr, self.weight_decay, self.epochs = float(lr), float(weight_decay), int(epochs)
        self.scheduler_name, self.min_lr = scheduler, float(min_lr)
        self.ordinal = bool(ordinal)
        self.metadata = dict(metadata or {})
        cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", cw, persistent=False)
        self._outputs: list[tuple[int, torch.Tensor, torch.Tensor, float, tuple[float, float, float]]] = []
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

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        slides = batch if isinstance(batch, (list, tuple)) else [batch]
        loss, parts = step_loss(self.model, slides, self.task)
        value = float(loss.detach())
        # rank-local running mean for the progress bar; the epoch means over ranks come from
        # reduce_train_parts (one collective, called by every rank at the same point)
        self.log("train/loss", value, on_step=False, on_epoch=True, batch_size=len(slides), sync_dist=False,
                 prog_bar=True, logger=False)  # the loggers get EpochLog's per-epoch row (every loss part)
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
        target = slide_target(batch)
        labeled = bool(self.task.labeled(target.cpu().numpy())[0])
        loss = self.task.eval_loss(logits, target.to(logits.device)) if labeled else float("nan")
        pos = int(batch.sample_pos.view(-1)[0]) if hasattr(batch, "sample_pos") else len(self._outputs)
        attn = attention_stats(out.patch_scores, getattr(batch, "patch_labels", None))
        self._outputs.append((pos, target.view(-1).cpu(), self.task.eval_row(logits).detach(), loss, attn))

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
        """(pos, targets (n, T), rows (n, P), loss, attention stats (n, 3)) of every slide over all ranks,
        sorted by position, duplicates removed."""
        n_target = len(self._outputs[0][1]) if self._outputs else (1 if self.task.name != "survival" else 2)
        n_row = len(self.task.row_names())
        rows = [torch.cat([torch.tensor([p, l, *a], dtype=torch.float64), t.double(), pr.double().cpu()])
                for p, t, pr, l, a in self._outputs]
        local = torch.stack(rows) if rows else torch.zeros((0, 5 + n_target + n_row), dtype=torch.float64)
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            local = _all_gather_rows(local.to(self.device)).cpu()
        arr = local.numpy()
        _, first = np.unique(arr[:, 0].astype(np.int64), return_index=True)
        arr = arr[first]
        return arr[:, 0].astype(np.int64), arr[:, 5:5 + n_target], arr[:, 5 + n_target:], arr[:, 1], arr[:, 2:5]

    def _finish_eval(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            self._outputs = []
            return
        pos, targets, rows, loss, attn = self._gather_outputs()
        metrics: dict[str, Any] | None = None
        if self.trainer.is_global_zero:
            import warnings

            labeled = self.task.labeled(targets)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metrics = self.task.metrics(targets[labeled], rows[labeled])
            metrics["loss"] = float(np.nanmean(loss)) if np.isfinite(loss).any() else float("nan")
            for j, key in enumerate(ATTENTION_KEYS):
                col = attn[:, j]
                if np.isfinite(col).any():
                    metrics[key] = float(np.nanmean(col))
        if self.trainer.world_size > 1:
            metrics = self.trainer.strategy.broadcast(metrics, src=0)
        assert metrics is not None
        self.last_val_metrics = metrics
        self.last_val_predictions = {"pos": pos, "targets": targets, "rows": rows}
        for k in (*self.task.summary_metrics, "loss"):  # identical on every rank: no sync needed
            v = metrics.get(k)
            if isinstance(v, (int, float)):
                self.log(f"{stage}/{k}", float(v), on_epoch=True, batch_size=1, sync_dist=False,
                         prog_bar=(k in self.task.log_metrics), logger=False)
        self._outputs = []

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from wsigraph.train.checkpoint import LIGHTNING_KEY, plain

        checkpoint[LIGHTNING_KEY] = plain({**self.metadata, "epoch": int(self.current_epoch)})


__all__ = ["MILLightningModule", "PositionedDataset", "step_loss", "pack_slides", "slide_target", "EpochShuffleSampler",
           "epoch_seed", "attention_stats", "ATTENTION_KEYS"]
