"""Running a trained model on slides: the shared inference loop and ``evaluate``.

* :func:`evaluate`: a checkpoint on a labeled cohort -> ``metrics.json`` (with bootstrap 95% CIs) and
  ``predictions.csv`` (``slide_id,case_id,label,pred,prob_<class>...``).
* ``predict`` (unlabelled slides, a cohort job) lives in :mod:`wsigraph.pipeline.predict` and uses the loop here.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from wsigraph.errors import ConfigError, InputError
from wsigraph.pipeline.validate import check_against_checkpoint, validate_feature_files
from wsigraph.utils.device import resolve_device

log = logging.getLogger("wsigraph")


# ----------------------------------------------------------------------------------------------------
# helpers shared with the runner
# ----------------------------------------------------------------------------------------------------


def feature_dim(path: str | os.PathLike) -> int:
    """Feature dimension D of a feature file, read from the h5 dataset shape (no data loaded)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        from wsigraph.data.features import FEATURE_KEYS

        try:
            with h5py.File(path, "r") as f:
                key = next((k for k in FEATURE_KEYS if k in f), None)
                if key is None:
                    raise InputError(f"{path}: no embeddings in this file (looked for {list(FEATURE_KEYS)})")
                shape = f[key].shape
        except OSError as e:
            raise InputError(f"{path}: cannot be read as HDF5 ({e})") from e
        return int(shape[-1]) if len(shape) >= 2 else 1
    from wsigraph.data.features import read_features

    bag = read_features(path, validate=False, require_coords=False)  # the width needs no coordinates
    assert bag.dim is not None
    return bag.dim


def check_feature_dims(paths: Mapping[str, Path], expected: int | None = None, expected_from: str = "",
                       where: str = "") -> int:
    """Check every slide's features have one dimension (``expected`` when given); return it.

    Raises:
        InputError: naming the slide, its file and both dimensions.
    """
    dim = expected
    ref = expected_from
    for sid, path in paths.items():
        d = feature_dim(path)
        if dim is None:
            dim, ref = d, f"slide {sid!r} ({path})"
        elif d != dim:
            loc = f"{where}: " if where else ""
            raise InputError(f"{loc}slide {sid!r} ({path}) has feature dimension {d}, but {ref} has {dim}; "
                             "all slides must come from the same encoder as the model")
    if dim is None:
        raise InputError(f"{where or 'cohort'}: no slides")
    return dim


def checkpoint_graph(ckpt: Any, no_coords: bool = False) -> Any:
    """The graph settings to run a checkpoint with: its training ones, or ``mode="none"`` (slides without
    coordinates) with ``no_coords``, which only a model that needs no graph accepts (ConfigError otherwise)."""
    from wsigraph.graph import GraphConfig
    from wsigraph.train.config import check_model_graph

    graph = GraphConfig(mode="none") if no_coords else (GraphConfig(**ckpt.graph) if ckpt.graph else GraphConfig())
    check_model_graph(ckpt.model_name, graph, where=f"checkpoint {ckpt.path}")
    return graph


def trained_features(ckpt: Any) -> Any:
    """The checkpoint's record of its training features (empty for checkpoints from before the record)."""
    from wsigraph.pipeline.validate import FeatureSource

    return FeatureSource.from_dict({**(ckpt.extra.get("features") or {}), "dim": ckpt.in_dim})


def make_dataset(paths: Sequence[Path], slide_ids: Sequence[str], labels: Sequence[int] | None,
                 graph: Any, cache_dir: str | os.PathLike | None = None) -> Any:
    """A :class:`wsigraph.graph.GraphDataset` of the slides (one graph built/loaded per item)."""
    from wsigraph.graph import GraphDataset

    return GraphDataset([Path(p) for p in paths], labels=None if labels is None else [int(v) for v in labels],
                        slide_ids=[str(s) for s in slide_ids], graph=graph, cache_dir=cache_dir)


def slide_list(items: Sequence[Any]) -> list[Any]:
    """Collate of ``batch_size`` > 1: the step's slides as a list (each run on its own)."""
    return list(items)


class StepBatchSampler(torch.utils.data.Sampler):
    """Indices of ``sampler`` in steps of ``batch_size``; a last step shorter than ``min_batch`` is merged
    into the one before it (a Cox step needs two slides to compare: a one-slide step has no loss)."""

    def __init__(self, sampler: Any, batch_size: int, min_batch: int = 1):
        self.sampler, self.batch_size, self.min_batch = sampler, int(batch_size), int(min_batch)

    def __iter__(self) -> Any:
        order = list(self.sampler)
        steps = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(steps) > 1 and len(steps[-1]) < self.min_batch:
            steps[-2].extend(steps.pop())
        return iter(steps)

    def __len__(self) -> int:
        n = len(self.sampler)
        steps = -(-n // self.batch_size)
        return steps - 1 if steps > 1 and n - (steps - 1) * self.batch_size < self.min_batch else steps


def make_loader(dataset: Any, *, shuffle: bool = False, num_workers: int = 0, seed: int | None = None,
                reshuffle: bool = True, batch_size: int = 1, min_batch: int = 1) -> Any:
    """PyG ``DataLoader`` with one slide per batch (``batch_size`` > 1: a torch DataLoader yielding lists of
    that many slides, a last step shorter than ``min_batch`` merged into the one before); ``shuffle`` uses
    an :class:`EpochShuffleSampler` (order a function of ``(seed, epoch)``, or of ``seed`` alone when not
    ``reshuffle``)."""
    from torch_geometric.loader import DataLoader

    sampler = None
    if shuffle:
        from wsigraph.train.lightning_module import EpochShuffleSampler

        sampler = EpochShuffleSampler(len(dataset), 0 if seed is None else seed, reshuffle=reshuffle)
    # an own generator: creating the loader's iterator then draws no number from the global RNG, whose
    # state (model masking, dropout) stays a function of (seed, epoch) -- see MILLightningModule(seed=)
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    if batch_size > 1:
        steps = StepBatchSampler(sampler if sampler is not None else torch.utils.data.SequentialSampler(dataset),
                                 batch_size, min_batch)
        return torch.utils.data.DataLoader(dataset, batch_sampler=steps, num_workers=num_workers,
                                           persistent_workers=num_workers > 0, generator=gen,
                                           collate_fn=slide_list)
    return DataLoader(dataset, batch_size=1, shuffle=False, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, generator=gen)


def _autocast(device: torch.device, precision: str) -> Any:
    import contextlib

    if device.type == "cuda" and precision in ("auto", "bf16-mixed", "bf16") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision in ("16-mixed", "16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _batch_slide_id(batch: Any, fallback: str) -> str:
    sid = getattr(batch, "slide_id", None)
    if isinstance(sid, (list, tuple)):
        sid = sid[0] if sid else None
    return str(sid) if sid is not None else fallback


@torch.no_grad()
def _eval_steps(model: torch.nn.Module, loader: Any, slide_ids: Sequence[str], device: torch.device,
                precision: str, progress: bool, desc: str) -> Iterator[tuple[str, Any, Any]]:
    """``(slide_id, batch, model output)`` per slide: the model in eval mode, no autograd."""
    from tqdm.auto import tqdm

    model.eval()
    it = tqdm(loader, total=len(slide_ids), desc=desc, unit="slide", disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(it):
        batch = batch.to(device)
        with _autocast(device, precision):
            out = model(batch)
        yield _batch_slide_id(batch, slide_ids[i]), batch, out


def _patch_scores(out: Any) -> np.ndarray | None:
    return None if out.patch_scores is None else out.patch_scores.float().view(-1).cpu().numpy()


@torch.no_grad()
def iter_outputs(model: torch.nn.Module, loader: Any, slide_ids: Sequence[str], device: torch.device,
                 precision: str = "auto", progress: bool = False, desc: str = "predict"
                 ) -> Iterator[tuple[str, torch.Tensor, np.ndarray | None]]:
    """Yield ``(slide_id, outputs (1, K) float32 on CPU, patch_scores (N,) or None)`` per slide."""
    for sid, _, out in _eval_steps(model, loader, slide_ids, device, precision, progress, desc):
        yield sid, out.logits.float().view(1, -1).cpu(), _patch_scores(out)


@torch.no_grad()
def iter_predictions(model: torch.nn.Module, loader: Any, slide_ids: Sequence[str], device: torch.device,
                     precision: str = "auto", progress: bool = False, desc: str = "predict"
                     ) -> Iterator[tuple[str, int, np.ndarray, np.ndarray | None]]:
    """Yield ``(slide_id, label (-1 if none), probs (C,), patch_scores (N,) or None)`` per slide
    (classification)."""
    for sid, batch, out in _eval_steps(model, loader, slide_ids, device, precision, progress, desc):
        probs = torch.softmax(out.logits.float().view(1, -1), dim=-1)[0].cpu().numpy()
        y = int(batch.y.view(-1)[0]) if getattr(batch, "y", None) is not None else -1
        yield sid, y, probs, _patch_scores(out)


def predictions_frame(slide_ids: Sequence[str], y: Sequence[int] | None, probs: np.ndarray,
                      classes: Sequence[str]) -> Any:
    """``slide_id,label,pred,prob_<class>...`` (label empty when unknown)."""
    import pandas as pd

    probs = np.asarray(probs, dtype=np.float64).reshape(len(slide_ids), len(classes))
    df = pd.DataFrame({"slide_id": list(slide_ids)})
    if y is not None:
        df["label"] = [classes[int(v)] if int(v) >= 0 else "" for v in y]
    df["pred"] = [classes[int(k)] for k in probs.argmax(axis=1)] if len(probs) else []
    for k, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, k]
    return df


def with_case_ids(df: Any, slide_ids: Sequence[str], case_ids: Sequence[str]) -> Any:
    """``df`` (one row per slide, ``slide_id`` first) with the slides' ``case_id`` (patient) after
    ``slide_id``: ``slide_ids`` / ``case_ids`` are the cohort's, in any order."""
    patient = dict(zip((str(s) for s in slide_ids), (str(c) for c in case_ids)))
    df = df.copy()
    df.insert(1, "case_id", [patient[str(s)] for s in df["slide_id"]])
    return df


def write_csv(df: Any, path: str | os.PathLike) -> Path:
    from wsigraph.utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


# ----------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------


def evaluate(checkpoint: str | os.PathLike, manifest: str | os.PathLike, feature_dir: str | os.PathLike,
             out_dir: str | os.PathLike | None = None, *, split: str | None = None, device: str = "auto",
             precision: str = "auto", n_bootstrap: int = 1000, seed: int = 0, num_workers: int = 0,
             cache_dir: str | os.PathLike | None = None, progress: bool = True,
             allow_feature_mismatch: bool = False, no_coords: bool = False, plots: bool = True) -> dict:
    """Score a checkpoint on a labeled cohort.

    Args:
        checkpoint: a wsigraph checkpoint (``best.ckpt``) or a wsigraph Lightning ``last.ckpt``.
        manifest: cohort CSV with the checkpoint's task's targets: labels among its classes (classification),
            the time and event columns it was trained with (survival; the C-index, the time-dependent AUC and,
            for the discrete-time model, the integrated Brier score, weighted by the training fold's
            censoring kept in the checkpoint), or the target column (regression).
        feature_dir: folder of the slides' feature files.
        out_dir: where ``metrics.json``, ``predictions.csv`` and (``plots``) ``plots/`` with ROC/PR curves,
            calibration and confusion matrix go (None: nothing written).
        split: only the slides of this ``split`` value (train/val/test) of the manifest.
        allow_feature_mismatch: go on (with a warning) when the features come from another encoder, weights
            or resolution than the checkpoint's training features (refused by default).
        no_coords: read the slides without coordinates (plain ``.pt`` tensors): models that need no graph.

    Every feature file is checked before the first slide (:func:`wsigraph.pipeline.validate.validate_feature_files`).

    Returns:
        the metrics dict (with ``<metric>_ci95``), plus ``"checkpoint"``, ``"manifest"``, ``"n_unlabeled"``.
    """
    from wsigraph.tasks.cohort import read_task_cohort, task_from_checkpoint, task_targets
    from wsigraph.train.checkpoint import load_checkpoint
    from wsigraph.utils.atomic import atomic_write_json

    ckpt = load_checkpoint(checkpoint)
    task = task_from_checkpoint(ckpt)
    graph = checkpoint_graph(ckpt, no_coords)
    cohort = read_task_cohort(task, manifest, feature_dir=feature_dir, classes=ckpt.classes)
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {split!r}")
        if not cohort.has_split_column:
            raise InputError(f"{manifest}: no 'split' column, so split={split!r} cannot be selected")
        cohort = cohort.subset(cohort.table.loc[cohort.table["split"] == split, "slide_id"])
        if len(cohort) == 0:
            raise InputError(f"{manifest}: no slide has split {split!r}")
    paths = dict(zip(cohort.slide_ids, cohort.feature_paths))
    check_feature_dims(paths, expected=ckpt.in_dim, expected_from=f"the checkpoint {ckpt.path} (in_dim)",
                       where=str(manifest))
    trained = trained_features(ckpt)
    src = validate_feature_files(paths, where=str(manifest), allow_random_features=trained.random_init,
                                 require_coords=graph.uses_coords)
    check_against_checkpoint(src, trained, where=str(manifest), checkpoint=str(ckpt.path),
                             force=allow_feature_mismatch)
    dev = resolve_device(device)
    model = ckpt.build_model(dev)
    ds = make_dataset(cohort.feature_paths, cohort.slide_ids, None, graph, cache_dir)
    loader = make_loader(ds, num_workers=num_workers)
    ids, rows = [], []
    for sid, outputs, _ in iter_outputs(model, loader, cohort.slide_ids, dev, precision, progress, "evaluate"):
        ids.append(sid)
        rows.append(task.eval_row(outputs).double().numpy())
    targets = task_targets(task, cohort)
    r_arr = np.stack(rows) if rows else np.zeros((0, len(task.row_names())))
    labeled = task.labeled(targets)
    if not labeled.any():
        raise InputError(f"{manifest}: no labeled slides to evaluate (use `wsigraph predict` for unlabeled ones)")
    metrics = task.metrics(targets[labeled], r_arr[labeled], n_bootstrap=n_bootstrap, seed=seed)
    metrics.update({"checkpoint": str(ckpt.path), "manifest": str(manifest), "split": split, "task": task.name,
                    "n_unlabeled": int((~labeled).sum()), "model": ckpt.model_name})
    if getattr(task, "kind", None) == "cox":
        metrics["note"] = "integrated Brier score not computed: a Cox model's curves need the training fold's risks"
    if out_dir is not None:
        out = Path(out_dir)
        write_csv(with_case_ids(task.predictions_frame(ids, targets, r_arr), cohort.slide_ids, cohort.case_ids),
                  out / "predictions.csv")
        atomic_write_json(out / "metrics.json", metrics)
        if plots:
            _evaluate_plots(task, targets[labeled], r_arr[labeled], out / "plots", split or "evaluate",
                            ckpt, n_bootstrap=min(n_bootstrap, 200), seed=seed)
    return metrics


def _evaluate_plots(task: Any, targets: np.ndarray, rows: np.ndarray, out: Path, name: str, ckpt: Any, *,
                    n_bootstrap: int, seed: int) -> None:
    """evaluate's figures: ROC/PR/calibration/confusion (classification), the risk groups' Kaplan-Meier
    curves cut at the median risk of the cohort (survival), predicted against true (regression)."""
    if task.name == "classification":
        from wsigraph.viz.curves import plot_split

        plot_split(targets[:, 0].astype(np.int64), rows, ckpt.classes, out, name, n_bootstrap=n_bootstrap, seed=seed)
    elif task.name == "survival":
        from wsigraph.viz.outcomes import plot_km_groups

        plot_km_groups(targets[:, 0], targets[:, 1], rows[:, 0], float(np.median(rows[:, 0])), out / f"km_{name}.png",
                       title=f"{name}: risk groups (cut at the median risk)")
    else:
        from wsigraph.viz.outcomes import plot_regression

        plot_regression(targets[:, 0], rows[:, 0], out / f"scatter_{name}.png", title=name)


__all__ = ["evaluate", "iter_predictions", "iter_outputs", "slide_list", "trained_features", "checkpoint_graph", "check_feature_dims", "feature_dim",
           "predictions_frame", "with_case_ids"]
