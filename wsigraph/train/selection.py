"""Model selection on validation (the SRMIL paper's rule), early stopping and the per-epoch log line.

:class:`ModelSelection`: from the first epoch after ``select_after * max_epochs`` on (1-based epoch
``e`` is eligible when ``e > select_after * max_epochs``; 100 epochs, 0.6 -> epochs 61..100; with
``epoch_base=0``, the reference's 0-based count, 62..100), the weights with the best validation ``metric``
are kept, ties broken by ``tiebreak`` (accuracy, then AUC, in the paper); a later epoch replaces the kept
one only when strictly better (``ties="later"``: also on a full tie, as the reference). The kept weights are written
atomically as a wsigraph checkpoint (``best.ckpt``, readable with ``weights_only=True``). Optional early
stopping: stop after ``patience`` eligible epochs without improvement. The callback's state (best score,
epoch, patience counter) is stored in Lightning's ``last.ckpt``, so a resumed run selects as an
uninterrupted one would.

:class:`EpochLog`: one concise line per epoch (losses, validation metrics, learning rate, time) and a
``history.csv`` of the same numbers.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, Checkpoint, TQDMProgressBar

from wsigraph.train.checkpoint import save_checkpoint
from wsigraph.train.lightning_module import ATTENTION_KEYS

log = logging.getLogger("wsigraph")

LOWER_IS_BETTER = {"loss"}


def _score(metrics: dict[str, Any], name: str | None) -> float:
    if name is None:
        return 0.0
    v = metrics.get(name)
    if v is None or not isinstance(v, (int, float)) or math.isnan(v):
        return -math.inf
    return -float(v) if name in LOWER_IS_BETTER else float(v)


class ModelSelection(Callback):
    """Keep the best validation checkpoint (see module docstring).

    Args:
        path: where the selected checkpoint goes (``best.ckpt``).
        metadata: :func:`~wsigraph.train.checkpoint.make_metadata` output (model name, params, classes...).
        metric / tiebreak: validation metrics (``tiebreak`` None: no tie-break).
        select_after: fraction of ``max_epochs`` before which nothing is selected.
        epoch_base: 1 (epochs numbered 1..E, wsigraph) or 0 (0-based, the SRMIL reference) in the
            ``select_after`` rule.
        ties: ``earlier`` (a full tie keeps the kept weights) | ``later`` (the later epoch replaces them, the
            SRMIL reference).
        patience: early stopping after this many eligible epochs without improvement (None: off).
    """

    def __init__(self, path: str | os.PathLike, metadata: dict, metric: str = "accuracy",
                 tiebreak: str | None = "auc", select_after: float = 0.6, patience: int | None = None,
                 epoch_base: int = 1, ties: str = "earlier"):
        self.path = Path(path)
        self.metadata = dict(metadata)
        self.metric, self.tiebreak = metric, tiebreak
        self.select_after = float(select_after)
        self.epoch_base, self.ties = int(epoch_base), ties
        self.patience = patience
        self.best_key: tuple[float, float] | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, Any] = {}
        self.wait = 0
        self.stopped_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return "wsigraph.ModelSelection"

    def eligible(self, epoch: int, max_epochs: int) -> bool:
        """0-based ``epoch`` may be selected: its number (counted from ``epoch_base``) exceeds
        ``select_after * max_epochs``."""
        return (epoch + self.epoch_base) > self.select_after * max_epochs

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        if not self.eligible(epoch, int(trainer.max_epochs)):
            return
        metrics = pl_module.last_val_metrics
        key = (_score(metrics, self.metric), _score(metrics, self.tiebreak))
        if self.best_key is None or key > self.best_key or (self.ties == "later" and key == self.best_key):
            self.best_key, self.best_epoch, self.wait = key, epoch, 0
            self.best_metrics = _scalars(metrics)
            self._save(trainer, pl_module, epoch)
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                trainer.should_stop = True
                self.stopped_epoch = epoch
                log.info("early stopping at epoch %d: no better validation %s for %d epochs (best: epoch %d)",
                         epoch + 1, self.metric, self.wait, (self.best_epoch or 0) + 1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.best_epoch is None:  # nothing eligible ran (e.g. stopped early): keep the last weights
            epoch = int(trainer.current_epoch)
            log.warning("no epoch reached the selection window (select_after=%.2f); keeping the last weights",
                        self.select_after)
            self.best_epoch = epoch
            self.best_metrics = _scalars(pl_module.last_val_metrics)
            self._save(trainer, pl_module, epoch)

    def _save(self, trainer: Any, pl_module: Any, epoch: int) -> None:
        if not trainer.is_global_zero:
            return
        meta = {**self.metadata, "epoch": epoch, "metrics": self.best_metrics}
        save_checkpoint(self.path, pl_module.model.state_dict(), meta)

    def state_dict(self) -> dict[str, Any]:
        return {"best_key": list(self.best_key) if self.best_key is not None else None,
                "best_epoch": self.best_epoch, "best_metrics": dict(self.best_metrics), "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bk = state.get("best_key")
        self.best_key = (float(bk[0]), float(bk[1])) if bk is not None else None
        self.best_epoch = state.get("best_epoch")
        self.best_metrics = dict(state.get("best_metrics") or {})
        self.wait = int(state.get("wait", 0))


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class EpochLog(Callback):
    """One line per epoch: ``fold 0 | epoch 3/100 | loss 0.693 (ce 0.61, recon 0.08) | val acc 0.750 auc
    0.812 loss 0.55 | lr 4.9e-04 | 12.3s``; rows also appended to ``history.csv`` (rank 0)."""

    def __init__(self, history_path: str | os.PathLike | None = None, prefix: str = ""):
        self.history_path = Path(history_path) if history_path is not None else None
        self.prefix = prefix
        self._t0 = time.perf_counter()

    @property
    def state_key(self) -> str:
        return "wsigraph.EpochLog"

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        parts = pl_module.reduce_train_parts() if hasattr(pl_module, "reduce_train_parts") else {}
        if not trainer.is_global_zero:
            return
        epoch = int(trainer.current_epoch)
        parts = dict(parts)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": parts.pop("loss", float("nan"))}
        for k, v in parts.items():
            row[f"train_{k}"] = v
        val = getattr(pl_module, "last_val_metrics", {}) or {}
        task = getattr(pl_module, "task", None)
        keys = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa") if task is None else task.summary_metrics
        for k in ("loss", *keys, *ATTENTION_KEYS):
            if isinstance(val.get(k), (int, float)):
                row[f"val_{k}"] = float(val[k])
        opt = trainer.optimizers[0] if trainer.optimizers else None
        row["lr"] = float(opt.param_groups[0]["lr"]) if opt is not None else float("nan")
        row["seconds"] = time.perf_counter() - self._t0
        parts_text = ", ".join(f"{k} {v:.3g}" for k, v in parts.items())
        line = (f"{self.prefix}epoch {epoch + 1}/{trainer.max_epochs} | loss {row['train_loss']:.4f}"
                + (f" ({parts_text})" if parts_text else ""))
        if val:
            shown = ("accuracy", "auc") if task is None else task.log_metrics
            short = {"accuracy": "acc"}
            line += " | val " + " ".join(f"{short.get(k, k)} {val.get(k, float('nan')):.3f}" for k in shown)
            line += f" loss {val.get('loss', float('nan')):.4f}"
        line += f" | lr {row['lr']:.2e} | {row['seconds']:.1f}s"
        bar = getattr(trainer, "progress_bar_callback", None)
        if bar is not None and hasattr(bar, "print") and trainer.progress_bar_callback.is_enabled:
            bar.print(line)
        else:
            log.info("%s", line)
        if self.history_path is not None:
            self._append(row)
        for logger in trainer.loggers:  # Lightning's loggers (train.logger): the same row, step = epoch
            logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            logger.save()

    def _append(self, row: dict[str, Any]) -> None:
        import pandas as pd

        from wsigraph.utils.atomic import atomic_path

        path = self.history_path
        assert path is not None
        old = pd.read_csv(path) if path.exists() else pd.DataFrame()
        if not old.empty and "epoch" in old:
            old = old[old["epoch"] < row["epoch"]]  # a resumed run rewrites the epochs it redoes
        df = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)


class LastCheckpoint(Checkpoint):
    """Writes Lightning's full training state to ``path`` at the end of every epoch, after model selection
    and the epoch log (Lightning runs ``Checkpoint`` callbacks last), for resuming a killed run. Atomic and
    read back with ``weights_only=True`` through :class:`~wsigraph.train.checkpoint.SafeCheckpointIO`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def state_key(self) -> str:
        return "wsigraph.LastCheckpoint"

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state (Lightning's meaning)


class FoldProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, trimmed: one training bar described ``fold k | epoch e/E`` (1-based), no
    validation bar (the epoch log line reports validation)."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def init_validation_tqdm(self) -> Any:
        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        return Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


__all__ = ["ModelSelection", "EpochLog", "LastCheckpoint", "FoldProgressBar"]
