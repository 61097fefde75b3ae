"""A cohort's targets for its task, checked row by row, and the task built from the experiment config.

For survival and regression the cohort's ``label`` / ``label_index`` are replaced by the strata the
splits keep in proportion (survival: ``event`` / ``censored``; regression: the target's quartile), so that
the splitting, grouping by patient and fold checks of classification apply unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from wsigraph.errors import InputError
from wsigraph.tasks.base import Task
from wsigraph.tasks.classification import ClassificationTask
from wsigraph.tasks.regression import RegressionTask
from wsigraph.tasks.survival import SurvivalTask


def build_task(data_cfg: Any, classes: Sequence[str] | None = None,
               class_weight: Sequence[float] | None = None) -> Task:
    """The task of a :class:`~wsigraph.train.config.DataConfig` (``classes`` for classification)."""
    if data_cfg.task == "classification":
        return ClassificationTask(list(classes or []), ordinal=data_cfg.ordinal, class_weight=class_weight)
    if data_cfg.task == "survival":
        s = data_cfg.survival
        return SurvivalTask(s.loss, n_bins=s.n_bins, alpha=s.alpha, horizons=s.horizons, time_col=s.time_col,
                            event_col=s.event_col)
    r = data_cfg.regression
    return RegressionTask(r.loss, delta=r.delta, target_col=r.target_col, standardize=r.standardize)


def task_from_checkpoint(ckpt: Any) -> Task:
    """The fitted task a checkpoint was trained for (classification for checkpoints from before tasks)."""
    state = dict(ckpt.task)
    name = str(state.get("name", "classification"))
    if name == "classification":
        return ClassificationTask(ckpt.classes, ordinal=ckpt.ordinal)
    if name == "survival":
        task: Task = SurvivalTask(state.get("loss", "nll"), n_bins=int(state.get("n_bins", 4)),
                                  alpha=float(state.get("alpha", 0.0)), horizons=state.get("horizons"),
                                  time_col=state.get("time_col", "time"), event_col=state.get("event_col", "event"))
    elif name == "regression":
        task = RegressionTask(state.get("loss", "mse"), delta=float(state.get("delta", 1.0)),
                              target_col=state.get("target_col", "target"))
    else:
        raise InputError(f"{ckpt.path}: checkpoint of an unknown task {name!r}; this wsigraph knows "
                         "classification, survival and regression")
    task.load_state(state)
    return task


#: the label column name given to read_manifest for survival / regression manifests: none has it, so a
#: ``label`` column there (e.g. a subtype) stays an ordinary column and no class list is made from it
NO_LABEL_COLUMN = "\x00no label column"


def read_task_cohort(task: Task, manifest: Any, feature_dir: Any = None, classes: Sequence[str] | None = None,
                     on_missing_features: str = "raise") -> Any:
    """The manifest's cohort for ``task`` (classification: with ``classes``; other tasks: every target
    checked and the split strata set, see :func:`stratified_cohort`)."""
    from wsigraph.data.manifest import read_manifest

    if task.name == "classification":
        return read_manifest(manifest, classes=classes, feature_dir=feature_dir,
                             on_missing_features=on_missing_features)
    cohort = read_manifest(manifest, feature_dir=feature_dir, require_labels=False, label_col=NO_LABEL_COLUMN,
                           on_missing_features=on_missing_features)
    return stratified_cohort(task, cohort, task_targets(task, cohort))


def _column(cohort: Any, name: str, task: str) -> pd.Series:
    if name not in cohort.table.columns:
        cols = [c for c in cohort.table.columns if c not in ("label_index", "feature_path")]
        raise InputError(f"{cohort.source or 'cohort'}: data.task {task} needs the column {name!r}; the manifest "
                         f"has {', '.join(cols)}")
    return cohort.table[name]


def _numbers(cohort: Any, name: str, task: str) -> np.ndarray:
    col = _column(cohort, name, task)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    for i, (raw, v) in enumerate(zip(col, values)):
        if not np.isfinite(v):
            sid = cohort.table["slide_id"].iloc[i]
            what = "is empty" if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "" \
                else f"is {raw!r}, not a number"
            raise InputError(f"{cohort.where(sid)}: column {name!r} of slide {sid!r} {what}")
    return values


def task_targets(task: Task, cohort: Any) -> np.ndarray:
    """(n, T) float64 targets of the cohort's slides, in its order (classification: the label index, -1
    unlabeled). Raises InputError naming the manifest line, slide and column of a bad value."""
    if isinstance(task, ClassificationTask):
        return np.asarray(cohort.label_indices, dtype=np.float64).reshape(-1, 1)
    if isinstance(task, SurvivalTask):
        time = _numbers(cohort, task.time_col, "survival")
        event = _numbers(cohort, task.event_col, "survival")
        sids = cohort.table["slide_id"].tolist()
        for i in np.flatnonzero(time < 0):
            raise InputError(f"{cohort.where(sids[i])}: column {task.time_col!r} of slide {sids[i]!r} is "
                             f"{time[i]:g}: follow-up times must be >= 0")
        for i in np.flatnonzero((event != 0) & (event != 1)):
            raise InputError(f"{cohort.where(sids[i])}: column {task.event_col!r} of slide {sids[i]!r} is "
                             f"{event[i]:g}: the event indicator must be 1 (event observed) or 0 (censored)")
        return np.stack([time, event], axis=1)
    assert isinstance(task, RegressionTask)
    return _numbers(cohort, task.target_col, "regression").reshape(-1, 1)


def stratified_cohort(task: Task, cohort: Any, targets: np.ndarray) -> Any:
    """The cohort with ``label`` / ``label_index`` / ``classes`` set to the task's split strata (the
    cohort itself for classification); the original target columns stay in the table."""
    if isinstance(task, ClassificationTask):
        return cohort
    from wsigraph.data.manifest import Cohort

    table = cohort.table.copy()
    if isinstance(task, SurvivalTask):
        names = ["censored", "event"]
        strata = targets[:, 1].astype(np.int64)
    else:
        names = ["q1", "q2", "q3", "q4"]
        y = targets[:, 0]
        edges = np.quantile(y, [0.25, 0.5, 0.75])
        strata = np.searchsorted(edges, y, side="right")
        present = sorted(set(strata.tolist()))  # ties can empty a quartile
        remap = {s: k for k, s in enumerate(present)}
        strata = np.array([remap[s] for s in strata], dtype=np.int64)
        names = [names[s] for s in present]
    table["label_index"] = strata
    table["label"] = [names[s] for s in strata]
    return Cohort(table=table, classes=names, source=cohort.source, lines=cohort.lines,
                  missing_features=list(cohort.missing_features))


__all__ = ["build_task", "task_targets", "stratified_cohort", "task_from_checkpoint", "read_task_cohort", "NO_LABEL_COLUMN"]
