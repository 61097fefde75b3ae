"""``train_experiment``: one split or k-fold cross-validation, resumable, with results on disk.

Output folder (``cfg.output_dir``)::

    config.yaml                 the configuration used, every model argument written out (a rerun with a
                                different one, or after a model default changed, is refused)
    splits.csv                  fold,split,slide_id,case_id,label (reused when the run resumes)
    fold_<k>/best.ckpt          the selected weights (wsigraph checkpoint, weights_only-loadable)
    fold_<k>/last.ckpt          Lightning's training state after the last finished epoch (resume)
    fold_<k>/history.csv        one row per epoch: losses, validation metrics, lr, seconds
    fold_<k>/predictions_<split>.csv   slide_id,case_id,label,pred,prob_<class>... (val and test; survival: time,
                                event,risk,surv_bin<k>; regression: target,pred)
    fold_<k>/predictions_<split>_patients.csv  the same per case_id, when a case has several slides
                                (data.patient_level); its metrics under "<split>_patient" in results.json
    fold_<k>/results.json       config, seed, selected epoch, metrics per split with bootstrap 95% CIs
    fold_<k>/plots/             roc_pr_<split>.png, calibration_<split>.png, confusion_<split>.png,
                                training_curves.png (train.plots)
    fold_<k>/logs/version_<n>/  Lightning loggers (train.logger): metrics.csv, TensorBoard events;
                                one version per start of the fold (a resumed fold adds one)
    summary.json, summary.csv   mean and std over folds of every scalar metric

Resume: a fold whose ``results.json`` exists is not rerun; a fold with a ``last.ckpt`` continues from it
(Lightning's ``ckpt_path``, read through :class:`~wsigraph.train.checkpoint.SafeCheckpointIO`, i.e.
``torch.load(weights_only=True)``).

Distributed training: ``train.devices``/``train.num_nodes`` > 1 runs Lightning DDP. Each rank trains on
its share of the slides; validation predictions are gathered across ranks, so selection is identical on
every rank; rank 0 writes every file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from wsigraph.config import dump_config, save_config
from wsigraph.errors import ConfigError, InputError
from wsigraph.pipeline.validate import validate_feature_files
from wsigraph.train.config import ExperimentConfig, check_model_graph, resolved_model_params
from wsigraph.train.inference import evaluate, make_dataset, make_loader, with_case_ids, write_csv

log = logging.getLogger("wsigraph")

SPLITS = ("train", "val", "test")
# config keys that may change between a run and its resumption (they do not change the results)
RESUME_FREE_KEYS = {"data.num_workers", "data.cache_dir", "train.progress_bar", "train.devices", "train.num_nodes",
                    "train.accelerator", "train.strategy", "train.log_every_n_steps", "train.bootstrap",
                    "train.plots", "train.logger", "train.reuse_cpu_memory", "data.allow_random_features",
                    "output_dir"}
PATH_KEYS = {"data.manifest", "data.feature_dir", "data.splits_csv"}  # equal when moved with the output folder


# ----------------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------------


def env_global_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not distributed)."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    if "LOCAL_RANK" in os.environ:  # Lightning's own launcher: node_rank * local_world + local_rank
        local = int(os.environ["LOCAL_RANK"])
        node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        return node * per_node + local
    return 0


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO chatter (GPU available, tips, ...) hidden; its warnings and errors still shown."""
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            # the loggers get one row per epoch from EpochLog, so Lightning's step-logging interval is moot
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


@contextlib.contextmanager
def keep_torch_flags() -> Iterator[None]:
    """Restore torch's deterministic-algorithms and cuDNN flags, which ``Trainer(deterministic=...)`` sets
    process-wide, when the block ends."""
    import torch

    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _cuda_wanted(accelerator: str) -> bool:
    import torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """``"auto"`` -> ``"bf16-mixed"`` on CUDA (when supported), ``"32-true"`` elsewhere."""
    import torch

    if precision != "auto":
        return precision
    if _cuda_wanted(accelerator) and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_loggers(kind: str, fold_dir: Path) -> list[Any] | bool:
    """Lightning loggers writing to ``fold_dir/logs/version_<n>/`` (a resumed fold starts the next version, so
    earlier logs are kept): ``csv`` -> CSVLogger (``metrics.csv``); ``tensorboard`` -> CSV and TensorBoard
    (``events.out.tfevents.*``); ``none`` -> False (``history.csv`` only). Each epoch's row of ``history.csv``
    (every loss part and validation metric) is sent to them by :class:`~wsigraph.train.selection.EpochLog`."""
    if kind == "none":
        return False
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(fold_dir), name="logs")]
    if kind == "tensorboard":
        loggers.append(TensorBoardLogger(save_dir=str(fold_dir), name="logs", version=loggers[0].version,
                                         default_hp_metric=False))
    return loggers


def _world_size(devices: Any, num_nodes: int) -> int:
    if isinstance(devices, list):
        n = len(devices)
    elif isinstance(devices, int):
        n = devices
    elif str(devices) == "auto":
        import torch

        n = max(torch.cuda.device_count(), 1)
    else:
        n = 1
    return max(n, 1) * max(num_nodes, 1)


def resolve_strategy(strategy: str, devices: Any, num_nodes: int) -> str:
    """``"auto"`` with several processes -> DDP that tolerates parameters unused in a step."""
    if strategy == "auto" and _world_size(devices, num_nodes) > 1:
        return "ddp_find_unused_parameters_true"
    return strategy


def class_weights(spec: str | list[float], train_labels: Sequence[int], classes: Sequence[str]) -> list[float] | None:
    """``"none"`` -> None; ``"balanced"`` -> ``n / (C * n_c)`` from the training labels; a list -> checked."""
    c = len(classes)
    if isinstance(spec, str):
        if spec == "none":
            return None
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=c).astype(np.float64)
        return (counts.sum() / (c * np.maximum(counts, 1.0))).tolist()
    if len(spec) != c:
        raise ConfigError(f"train.class_weights has {len(spec)} values but there are {c} classes {list(classes)}")
    return [float(w) for w in spec]


# ----------------------------------------------------------------------------------------------------
# cohort and splits
# ----------------------------------------------------------------------------------------------------


def load_cohort(cfg: ExperimentConfig) -> Any:
    """The manifest's cohort. For survival and regression every slide's target is checked (a bad value is an
    InputError naming its line and column) and ``label`` / ``label_index`` hold the split strata
    (:func:`wsigraph.tasks.cohort.stratified_cohort`)."""
    from wsigraph.tasks.cohort import build_task, read_task_cohort

    if cfg.data.feature_dir is None:
        raise ConfigError("data.feature_dir is not set: the folder of the slides' feature files is needed")
    return read_task_cohort(build_task(cfg.data), cfg.data.manifest, feature_dir=cfg.data.feature_dir,
                            classes=cfg.data.classes)


def make_or_load_splits(cfg: ExperimentConfig, cohort: Any, out: Path, write: bool) -> Any:
    """The run's splits: ``<out>/splits.csv`` when resuming, else from the manifest / k-fold / a CSV."""
    from wsigraph.data.splits import make_splits, read_splits_csv

    saved = out / "splits.csv"
    if saved.exists():
        return read_splits_csv(saved, cohort)
    d = cfg.data
    if d.split_mode == "csv":
        splits = read_splits_csv(d.splits_csv, cohort)  # type: ignore[arg-type]
    elif d.split_mode == "manifest":
        if not cohort.has_split_column:
            raise InputError(f"{d.manifest}: data.split_mode is 'manifest' but the manifest has no 'split' column")
        splits = make_splits(cohort, n_folds=d.n_folds, val_frac=d.val_frac, seed=d.split_seed)
    else:
        splits = make_splits(cohort, n_folds=d.n_folds, val_frac=d.val_frac, seed=d.split_seed,
                             use_manifest_split=(d.split_mode == "auto"))
    if write:
        splits.write_csv(saved)
    return splits


def check_split_classes(splits: Any, cohort: Any, source: str) -> None:
    """Every class must have a slide in every fold's training part (InputError naming fold and class);
    a class absent from val/test only warns (its AUC is undefined there)."""
    label_of = dict(zip(cohort.slide_ids, cohort.label_indices))
    for k, fold in enumerate(splits.folds):
        for part in SPLITS:
            present = {label_of.get(s, -1) for s in fold.get(part, [])}
            missing = [c for i, c in enumerate(cohort.classes) if i not in present]
            if not missing or (part != "train" and not fold.get(part)):
                continue
            if part == "train":
                raise InputError(f"{source}: fold {k}: class(es) {missing} have no slide in the training split "
                                 f"({len(fold['train'])} training slides); a model cannot learn a class it never "
                                 "sees. Check the labels, the split column, or use fewer folds")
            log.warning("%s: fold %d: class(es) %s have no slide in the %s split", source, k, missing, part)


def with_resolved_model(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with every constructor argument of its model written out (the given ones plus the current
    defaults, :func:`~wsigraph.train.config.resolved_model_params`): what a run's ``config.yaml`` records, so
    that a rerun after a model default changed (SRMIL's ``variant``, 2026-12-07) is refused instead of
    resumed under the new default. Invalid parameters are left as given (the caller reports them)."""
    try:
        params = resolved_model_params(cfg.model.name, cfg.model.params)
    except ConfigError:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, params=params))


def _check_resume_config(cfg: ExperimentConfig, out: Path) -> None:
    from wsigraph.config import load_config

    path = out / "config.yaml"
    if not path.exists():
        return
    try:
        old = dump_config(with_resolved_model(load_config(path, ExperimentConfig)))
    except InputError as e:
        raise InputError(f"{path}: the output folder holds a run whose config cannot be read ({e}); "
                         "use another output_dir") from e
    new = dump_config(with_resolved_model(cfg))
    diffs = [f"{k}: {a!r} -> {b!r}" for k, a, b in _diff(old, new) if k not in RESUME_FREE_KEYS
             and not (k in PATH_KEYS and _moved_together(a, old.get("output_dir"), b, new.get("output_dir")))]
    if diffs:
        raise InputError(f"{out}: holds a run with a different configuration ({'; '.join(diffs[:5])}); "
                         "use a new output_dir, or delete the old one, to start again")


def _moved_together(old_path: Any, old_out: Any, new_path: Any, new_out: Any) -> bool:
    """True when a data path and the output folder moved together (same path relative to the output folder),
    so that a results folder moved or copied along with its data still resumes."""
    if not all(isinstance(v, str) for v in (old_path, old_out, new_path, new_out)):
        return False
    return os.path.relpath(os.path.abspath(old_path), os.path.abspath(old_out)) == \
        os.path.relpath(os.path.abspath(new_path), os.path.abspath(new_out))


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [(prefix, a, b)]


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------


def train_experiment(cfg: ExperimentConfig, *, callbacks: Sequence[Any] = (), folds: Sequence[int] | None = None
                     ) -> dict:
    """Train and evaluate every fold of ``cfg`` (see the module docstring for the files written).

    Args:
        cfg: the experiment.
        callbacks: extra Lightning callbacks added to every fold's Trainer.
        folds: only these fold indices (default: all).

    Returns:
        ``{"output_dir", "folds": [results of the requested folds], "summary": {...}}`` (on every rank; the
        fold results are complete on rank 0). The summary (and ``summary.json``) covers every finished
        fold in the output folder, also those trained by an earlier call with other ``folds``.
    """
    from wsigraph.train.config import validate_model_params

    out = Path(cfg.output_dir)
    main = env_global_rank() == 0
    cfg.model.params = validate_model_params(cfg.model.name, cfg.model.params)
    cohort = load_cohort(cfg)
    source = str(cfg.data.manifest)
    _check_resume_config(cfg, out)
    # every check before anything is written: a config or cohort that fails leaves no output folder behind
    splits = make_or_load_splits(cfg, cohort, out, write=False)
    check_split_classes(splits, cohort, source)
    fold_ids = list(range(len(splits.folds))) if folds is None else list(folds)
    bad = [k for k in fold_ids if not 0 <= k < len(splits.folds)]
    if bad:
        raise ConfigError(f"fold {bad[0]} does not exist; the splits have folds 0..{len(splits.folds) - 1}")
    used = sorted({s for f in splits.folds for p in SPLITS for s in f.get(p, [])})
    paths = dict(zip(cohort.slide_ids, cohort.feature_paths))
    check_model_graph(cfg.model.name, cfg.graph, where=source)
    features = validate_feature_files({s: paths[s] for s in used}, where=source,
                                      allow_random_features=cfg.data.allow_random_features,
                                      progress=cfg.train.progress_bar and main, require_coords=cfg.graph.uses_coords)
    in_dim = int(features.dim)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(with_resolved_model(cfg), out / "config.yaml")  # the defaults of this version too
        if not (out / "splits.csv").exists():
            splits.write_csv(out / "splits.csv")
    had_process_group = _dist_initialized()
    results = [train_fold(cfg, cohort, splits.folds[k], k, in_dim, callbacks=callbacks, features=features.as_dict())
               for k in fold_ids]
    # the summary covers every finished fold on disk, so that folds trained by separate calls add up
    finished = dict(zip(fold_ids, results))
    for k in range(len(splits.folds)):
        if k not in finished and (out / f"fold_{k}" / "results.json").exists():
            finished[k] = read_fold_results(out / f"fold_{k}" / "results.json")
    summary = summarize([finished[k] for k in sorted(finished)], out, write=main)
    if not had_process_group and _dist_initialized():
        # Lightning leaves the process group it created; close it once every rank is done, so that no
        # rank exits while a peer still holds a connection (gloo aborts the process then)
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"output_dir": str(out), "folds": results, "summary": summary}


def _dist_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def read_fold_results(path: Path) -> dict:
    """A finished fold's ``results.json``; an unreadable one is an :class:`InputError` naming it."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read this finished fold's results ({e}); delete the file to "
                         "retrain the fold") from e


def train_fold(cfg: ExperimentConfig, cohort: Any, fold: dict[str, list[str]], k: int, in_dim: int, *,
               callbacks: Sequence[Any] = (), features: dict[str, Any] | None = None) -> dict:
    """Train one fold (or load its finished results); returns the fold's results dict."""
    import lightning as L

    from wsigraph.nn import build_model
    from wsigraph.tasks.cohort import build_task, task_targets
    from wsigraph.train.checkpoint import SafeCheckpointIO, make_metadata
    from wsigraph.train.lightning_module import MILLightningModule, PositionedDataset
    from wsigraph.train.selection import EpochLog, FoldProgressBar, LastCheckpoint, ModelSelection

    fold_dir = Path(cfg.output_dir) / f"fold_{k}"
    done = fold_dir / "results.json"
    if done.exists():
        log.info("fold %d: finished earlier (%s); not rerun", k, done)
        return read_fold_results(done)
    t = cfg.train
    classes = cohort.classes
    subs = {p: cohort.subset(fold.get(p, [])).labeled() for p in SPLITS}
    unlabeled = sum(len(fold.get(p, [])) - len(subs[p]) for p in SPLITS)
    if unlabeled:
        log.warning("fold %d: %d slide(s) without a label left out of training and evaluation", k, unlabeled)
    if t.reuse_cpu_memory and not _cuda_wanted(t.accelerator):
        from wsigraph.utils.memory import reuse_freed_memory

        reuse_freed_memory()
    L.seed_everything(t.seed, workers=True, verbose=False)
    classification = cfg.data.task == "classification"
    cw = class_weights(t.class_weights, subs["train"].label_indices, classes) if classification else None
    task = build_task(cfg.data, classes, class_weight=cw)
    targets = {p: task_targets(task, s) for p, s in subs.items()}
    task.fit(targets["train"])
    model = build_model(cfg.model.name, in_dim, task.out_dim, **cfg.model.params)
    params = resolved_model_params(cfg.model.name, cfg.model.params)
    meta = make_metadata(cfg.model.name, params, in_dim, task.out_dim, classes, ordinal=cfg.data.ordinal,
                         graph=dump_config(cfg.graph), extra={"fold": k, "seed": t.seed, "features": features or {}},
                         task={"name": task.name, **task.state()})
    module = MILLightningModule(model, classes, lr=t.lr, weight_decay=t.weight_decay, epochs=t.epochs,
                                scheduler=t.scheduler, min_lr=t.min_lr, class_weight=cw, ordinal=cfg.data.ordinal,
                                metadata=meta, seed=t.seed, task=task)
    datasets = {p: PositionedDataset(make_dataset(s.feature_paths, s.slide_ids, s.label_indices if classification
                                                  else None, cfg.graph, cfg.data.cache_dir),
                                     targets=None if classification else targets[p])
                for p, s in subs.items() if len(s)}
    nw = cfg.data.num_workers
    train_loader = make_loader(datasets["train"], shuffle=t.shuffle != "none", num_workers=nw, seed=t.seed,
                               reshuffle=t.shuffle == "epoch", batch_size=t.batch_size,
                               min_batch=task.min_batch)
    val_loader = make_loader(datasets["val"], num_workers=nw) if "val" in datasets else None
    if val_loader is None:
        log.warning("fold %d: no validation slides; the last epoch's weights are kept", k)
    selection = ModelSelection(fold_dir / "best.ckpt", meta, metric=t.select_metric, tiebreak=t.select_tiebreak,
                               select_after=t.select_after, patience=t.early_stopping_patience,
                               epoch_base=t.select_epoch_base, ties=t.select_ties)
    with quiet_lightning(), keep_torch_flags():
        trainer = L.Trainer(
            max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
            strategy=resolve_strategy(t.strategy, t.devices, t.num_nodes),
            precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]
            deterministic=("warn" if _cuda_wanted(t.accelerator) else True) if t.deterministic else False,
            callbacks=[selection, EpochLog(fold_dir / "history.csv", prefix=f"fold {k} | "), *callbacks,
                       *([FoldProgressBar(prefix=f"fold {k} | ")] if t.progress_bar else []),
                       LastCheckpoint(fold_dir / "last.ckpt")],
            plugins=[SafeCheckpointIO()], logger=make_loggers(t.logger, fold_dir), enable_model_summary=False,
            enable_progress_bar=t.progress_bar, num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps,
            gradient_clip_val=t.gradient_clip, accumulate_grad_batches=t.accumulate, default_root_dir=str(fold_dir),
            **({} if val_loader is not None else {"limit_val_batches": 0}),
        )
        last = fold_dir / "last.ckpt"
        resume = last if last.exists() else None
        if resume is not None:
            log.info("fold %d: resuming from %s", k, resume)
        sizes = ", ".join(f"{p} {len(s)}" for p, s in subs.items())
        log.info("fold %d: %s slides; model %s (in_dim %d, %s)", k, sizes, cfg.model.name, in_dim,
                 f"{len(classes)} classes" if classification else f"{task.name}, {task.out_dim} output(s)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # validation metrics are computed on gathered predictions and broadcast: identical on every rank
            warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
        result: dict = {}
        if trainer.is_global_zero:
            result = _evaluate_fold(cfg, subs, k, fold_dir, selection, in_dim, trainer.strategy.root_device, task,
                                    targets)
        if trainer.world_size > 1:
            trainer.strategy.barrier("wsigraph_fold_done")
            result = trainer.strategy.broadcast(result, src=0)
    return result


def _evaluate_fold(cfg: ExperimentConfig, subs: dict[str, Any], k: int, fold_dir: Path, selection: Any,
                   in_dim: int, device: Any, task: Any, targets: dict[str, np.ndarray]) -> dict:
    """Score the selected checkpoint on val and test; write predictions and ``results.json``."""
    import torch

    from wsigraph import __version__
    from wsigraph.tasks.patients import aggregate_patients, has_multislide_patients, patient_frame
    from wsigraph.train.checkpoint import load_checkpoint
    from wsigraph.train.inference import iter_outputs
    from wsigraph.utils.atomic import atomic_write_json

    classes = subs["train"].classes
    ckpt = load_checkpoint(fold_dir / "best.ckpt", expect_model=cfg.model.name, expect_in_dim=in_dim,
                           expect_num_classes=task.out_dim)
    device = torch.device(device)
    model = ckpt.build_model(device)
    precision = resolve_precision(cfg.train.precision, cfg.train.accelerator)

    def rows_of(part: str) -> tuple[list[str], np.ndarray]:
        sub = subs[part]
        ds = make_dataset(sub.feature_paths, sub.slide_ids, sub.label_indices, cfg.graph, cfg.data.cache_dir)
        out = list(iter_outputs(model, make_loader(ds, num_workers=cfg.data.num_workers), sub.slide_ids, device,
                                precision))
        return [o[0] for o in out], torch.stack([task.eval_row(o[1]) for o in out]).double().numpy()

    # survival metrics read the training fold: its censoring (IPCW weights) and, for Cox, its risks
    train_rows = rows_of("train")[1] if getattr(task, "kind", None) == "cox" else None
    per_split: dict[str, Any] = {}
    predicted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part in ("val", "test"):
        if not len(subs[part]):
            continue
        ids, rows = rows_of(part)
        write_csv(with_case_ids(task.predictions_frame(ids, targets[part], rows), subs[part].slide_ids,
                                subs[part].case_ids), fold_dir / f"predictions_{part}.csv")
        predicted[part] = (targets[part], rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_split[part] = task.metrics(targets[part], rows, train=(targets["train"], train_rows),
                                           n_bootstrap=cfg.train.bootstrap, seed=cfg.train.seed)
        cases = subs[part].case_ids
        if cfg.data.patient_level != "none" and has_multislide_patients(cases):
            try:
                pids, pt, pr, counts = aggregate_patients(task, cases, ids, targets[part], rows,
                                                          cfg.data.patient_level)
            except InputError as e:  # slide-level labels that differ within a patient: slide metrics only
                log.warning("fold %d, %s: no patient-level metrics: %s", k, part, e)
                continue
            write_csv(patient_frame(task, pids, pt, pr, counts), fold_dir / f"predictions_{part}_patients.csv")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                per_split[f"{part}_patient"] = task.metrics(pt, pr, train=(targets["train"], train_rows),
                                                            n_bootstrap=cfg.train.bootstrap, seed=cfg.train.seed)
    result = {
        "fold": k, "seed": cfg.train.seed, "wsigraph_version": __version__, "task": task.name,
        "selected_epoch": None if ckpt.epoch is None else int(ckpt.epoch) + 1,
        "select_metric": cfg.train.select_metric, "select_tiebreak": cfg.train.select_tiebreak,
        "stopped_early_at_epoch": None if selection.stopped_epoch is None else selection.stopped_epoch + 1,
        "n_slides": {p: len(s) for p, s in subs.items()}, "classes": classes,
        "checkpoint": str(fold_dir / "best.ckpt"), "metrics": per_split, "config": dump_config(cfg),
    }
    if task.name == "survival" and predicted:
        # risk groups: cut at the validation fold's median risk (where the cut was chosen), applied to test
        cut = float(np.median(predicted.get("val", next(iter(predicted.values())))[1][:, 0]))
        from wsigraph.viz.outcomes import logrank_p, risk_groups

        for part, (t, r) in predicted.items():
            per_split[part]["risk_threshold"] = cut
            per_split[part]["logrank_p"] = logrank_p(t[:, 0], t[:, 1], risk_groups(r[:, 0], cut))
    atomic_write_json(fold_dir / "results.json", result)
    if cfg.train.plots:
        if task.name == "classification":
            write_fold_plots(fold_dir, {p: (t[:, 0].astype(np.int64), r) for p, (t, r) in predicted.items()},
                             classes, n_bootstrap=min(cfg.train.bootstrap, 200), seed=cfg.train.seed)
        else:
            write_outcome_plots(fold_dir, task.name, predicted, per_split)
    shown = ("accuracy", "auc") if task.name == "classification" else task.log_metrics
    short = {"accuracy": "acc"}
    msg = " | ".join(f"{p} " + " ".join(f"{short.get(n, n)} {m.get(n, float('nan')):.3f}" for n in shown)
                     for p, m in per_split.items())
    log.info("fold %d: selected epoch %s | %s", k, result["selected_epoch"], msg)
    return result


def write_outcome_plots(fold_dir: Path, task: str, predicted: dict[str, tuple[np.ndarray, np.ndarray]],
                        metrics: dict[str, Any]) -> list[Path]:
    """``fold_dir/plots/``: survival: ``km_<split>.png`` (Kaplan-Meier of the risk groups, log-rank p);
    regression: ``scatter_<split>.png``; and the training curves. Failures are logged, never fatal."""
    from wsigraph.viz.curves import plot_history
    from wsigraph.viz.outcomes import plot_km_groups, plot_regression

    out = fold_dir / "plots"
    written: list[Path] = []
    try:
        for part, (t, r) in predicted.items():
            if task == "survival":
                written.append(plot_km_groups(t[:, 0], t[:, 1], r[:, 0], metrics[part]["risk_threshold"],
                                              out / f"km_{part}.png", title=f"{part}: risk groups")[0])
            else:
                written.append(plot_regression(t[:, 0], r[:, 0], out / f"scatter_{part}.png", title=part))
        if (fold_dir / "history.csv").exists():
            written.append(plot_history(fold_dir / "history.csv", out / "training_curves.png"))
    except Exception as e:  # noqa: BLE001 - a figure must never cost the fold's results
        log.warning("%s: plots not written (%s: %s)", fold_dir, type(e).__name__, e)
    return written


def write_fold_plots(fold_dir: Path, predicted: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str], *,
                     n_bootstrap: int = 200, seed: int = 0) -> list[Path]:
    """``fold_dir/plots/``: ROC/PR, calibration and confusion of each split's predictions, and the training
    curves of ``history.csv``. A plot that cannot be drawn is logged and skipped: the fold's results stand."""
    from wsigraph.viz.curves import plot_history, plot_split

    out = fold_dir / "plots"
    written: list[Path] = []
    try:
        for part, (y, probs) in predicted.items():
            written += plot_split(y, probs, classes, out, part, n_bootstrap=n_bootstrap, seed=seed)
        if (fold_dir / "history.csv").exists():
            written.append(plot_history(fold_dir / "history.csv", out / "training_curves.png"))
    except Exception as e:  # noqa: BLE001 - a figure must never cost the fold's results
        log.warning("%s: plots not written (%s: %s)", fold_dir, type(e).__name__, e)
    return written


# ----------------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------------

SUMMARY_METRICS = ("accuracy", "auc", "balanced_accuracy", "f1_macro", "kappa",  # classification
                   "c_index", "mean_td_auc", "ibs",                                 # survival
                   "pearson", "spearman", "mae", "rmse", "r2")                      # regression


def summarize(results: Sequence[dict], out: Path, write: bool = True) -> dict:
    """Mean and standard deviation (ddof=1; 0 for one fold) over folds -> ``summary.json``/``summary.csv``."""
    import pandas as pd

    from wsigraph.utils.atomic import atomic_path, atomic_write_json

    rows = []
    for r in results:
        if not r:
            continue
        row: dict[str, Any] = {"fold": r["fold"], "selected_epoch": r.get("selected_epoch")}
        for part, m in r.get("metrics", {}).items():
            for name in SUMMARY_METRICS:
                if name in m:
                    v = m.get(name)
                    row[f"{part}_{name}"] = float("nan") if v is None else float(v)
        rows.append(row)
    df = pd.DataFrame(rows)
    summary: dict[str, Any] = {"n_folds": len(rows), "folds": [r["fold"] for r in rows], "metrics": {}}
    for col in df.columns:
        if col in ("fold", "selected_epoch"):
            continue
        vals = df[col].to_numpy(dtype=np.float64)
        ok = vals[np.isfinite(vals)]
        summary["metrics"][col] = {
            "mean": float(ok.mean()) if ok.size else float("nan"),
            "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0 if ok.size else float("nan"),
            "per_fold": vals.tolist(),
        }
    if write and rows:
        atomic_write_json(out / "summary.json", summary)
        stats = pd.DataFrame([{"fold": s, **{c: summary["metrics"][c][s] for c in summary["metrics"]}}
                              for s in ("mean", "std")])
        table = pd.concat([df.astype({"fold": str, "selected_epoch": "Int64"}), stats], ignore_index=True)
        with atomic_path(out / "summary.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
        means = ", ".join(f"{c} {summary['metrics'][c]['mean']:.3f}" for c in summary["metrics"]
                          if c.startswith("test_") and c[5:] in ("accuracy", "auc", "c_index", "pearson"))
        log.info("summary over %d fold(s): %s (%s)", len(rows), means or "no test split", out / "summary.csv")
    return summary


__all__ = ["train_experiment", "train_fold", "summarize", "evaluate", "class_weights",
           "resolve_precision", "resolve_strategy"]
