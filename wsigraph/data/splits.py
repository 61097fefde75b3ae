"""Train/val/test splits of a cohort: the manifest's own ``split`` column, or grouped stratified k-fold.

k-fold: ``StratifiedGroupKFold`` over the labeled slides, stratified by label and grouped by ``case_id``
(no patient in two parts of a fold), shuffled with ``seed``. Each fold's test part is one of the k groups;
its validation part is taken from the rest the same way (grouped, stratified, about ``val_frac``).
Slides are sorted by id first, so the result depends only on the cohort's content and the seed, not on
the row order of the manifest.

Splits are written as a long CSV, ``fold,split,slide_id,case_id,label``, one row per slide and fold, so a
run can be repeated exactly (``read_splits_csv``).
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wsigraph.errors import ConfigError, InputError, MissingFileError

if TYPE_CHECKING:
    from wsigraph.data.manifest import Cohort

log = logging.getLogger("wsigraph")

SPLIT_NAMES = ("train", "val", "test")
SPLITS_CSV_COLUMNS = ("fold", "split", "slide_id", "case_id", "label")


@dataclass
class Splits:
    """Folds of slide ids.

    Attributes:
        folds: one dict per fold, keys ``train``/``val``/``test`` -> sorted slide ids.
        info: per slide_id, ``(case_id, label)`` (label as class name, "" when unlabeled), for writing.
        method: ``"manifest"``, ``"kfold"`` or ``"file"``.
        seed: the seed used (None for the manifest's own split).
    """

    folds: list[dict[str, list[str]]]
    info: dict[str, tuple[str, str]] = field(default_factory=dict)
    method: str = "kfold"
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.folds)

    def __getitem__(self, i: int) -> dict[str, list[str]]:
        return self.folds[i]

    def summary(self) -> str:
        """One line per fold: slide counts per part."""
        return "\n".join(f"fold {k}: " + ", ".join(f"{s} {len(f.get(s, []))}" for s in SPLIT_NAMES)
                         for k, f in enumerate(self.folds))

    def subsets(self, cohort: "Cohort", fold: int) -> dict[str, "Cohort"]:
        """``{"train": Cohort, "val": Cohort, "test": Cohort}`` of fold ``fold``."""
        if not 0 <= fold < len(self.folds):
            raise ConfigError(f"fold {fold} does not exist; the splits have folds 0..{len(self.folds) - 1}")
        return {s: cohort.subset(self.folds[fold].get(s, [])) for s in SPLIT_NAMES}

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for k, fold in enumerate(self.folds):
            for s in SPLIT_NAMES:
                for sid in fold.get(s, []):
                    case, label = self.info.get(sid, (sid, ""))
                    rows.append((k, s, sid, case, label))
        return pd.DataFrame(rows, columns=list(SPLITS_CSV_COLUMNS))

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write ``fold,split,slide_id,case_id,label`` (one row per slide per fold) atomically."""
        from wsigraph.utils.atomic import atomic_path

        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)
        return Path(path)


def make_splits(
    cohort: "Cohort",
    n_folds: int = 5,
    val_frac: float = 0.2,
    seed: int = 0,
    *,
    use_manifest_split: bool = True,
) -> Splits:
    """Splits of ``cohort``'s labeled slides.

    When the manifest has a ``split`` column (and ``use_manifest_split``), that is the one fold; if it
    names no ``val`` slides, validation is taken from ``train`` (grouped, stratified, ``val_frac``).
    Otherwise ``n_folds``-fold cross-validation, stratified by label, grouped by ``case_id``.

    Raises:
        InputError: a class has fewer cases (patients) than ``n_folds``; slides without a split value
            in a manifest that has a split column.
    """
    if not 0.0 <= val_frac < 1.0:
        raise ConfigError(f"val_frac must be in [0, 1), got {val_frac}")
    table = cohort.table
    labeled = table["label_index"].to_numpy() >= 0
    info = {str(r.slide_id): (str(r.case_id), "" if r.label is None or pd.isna(r.label) else str(r.label))
            for r in table.itertuples(index=False)}
    where = str(cohort.source or "cohort")

    if use_manifest_split and cohort.has_split_column:
        no_split = table.loc[table["split"].isna(), "slide_id"].tolist()
        if no_split:
            raise InputError(f"{where}: the manifest has a 'split' column but {len(no_split)} slide(s) have no "
                             f"split value: {_listing(no_split)} (fill them in, or drop the column to use "
                             "k-fold cross-validation)")
        fold = {s: sorted(table.loc[table["split"] == s, "slide_id"]) for s in SPLIT_NAMES}
        if not fold["val"] and val_frac > 0 and fold["train"]:
            train = table[table["slide_id"].isin(fold["train"]) & (table["label_index"] >= 0)]
            tr, va = _grouped_holdout(train, val_frac, seed, where)
            log.info("%s: no 'val' slides in the split column; took %d of %d training slides for validation",
                     where, len(va), len(fold["train"]))
            fold["train"], fold["val"] = tr, va
        if not fold["train"]:
            raise InputError(f"{where}: the 'split' column names no 'train' slides")
        return Splits(folds=[fold], info=info, method="manifest", seed=None)

    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2 for cross-validation, got {n_folds} "
                          "(or give the manifest a 'split' column)")
    if not labeled.all():
        log.warning("%s: %d unlabeled slide(s) left out of the cross-validation splits",
                    where, int((~labeled).sum()))
    sub = table.loc[labeled].sort_values("slide_id", kind="stable").reset_index(drop=True)
    if sub.empty:
        raise InputError(f"{where}: no labeled slides to split")
    _check_cases_per_class(sub, n_folds, where, "n_folds")
    y = sub["label_index"].to_numpy()
    groups = sub["case_id"].to_numpy()
    folds: list[dict[str, list[str]]] = []
    from sklearn.model_selection import StratifiedGroupKFold

    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    ids = sub["slide_id"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = list(sgkf.split(np.zeros(len(sub)), y, groups))
    for k, (train_idx, test_idx) in enumerate(parts):
        tr, va = _grouped_holdout(sub.iloc[train_idx], val_frac, seed + 1000 * (k + 1), where)
        folds.append({"train": tr, "val": va, "test": sorted(ids[test_idx].tolist())})
    return Splits(folds=folds, info=info, method="kfold", seed=seed)


def _listing(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _check_cases_per_class(sub: pd.DataFrame, n: int, where: str, what: str) -> None:
    cases = sub.groupby("label", sort=True)["case_id"].nunique()
    few = {str(c): int(v) for c, v in cases.items() if v < n}
    if few:
        raise InputError(f"{where}: class(es) {few} have fewer cases (patients) than {what}={n}; every fold "
                         f"needs at least one case of each class. Use fewer folds, or give the manifest a "
                         "'split' column")


def _grouped_holdout(part: pd.DataFrame, frac: float, seed: int, where: str) -> tuple[list[str], list[str]]:
    """Split ``part`` into (train, val) slide ids, val about ``frac``, grouped by case, stratified by label."""
    ids = part["slide_id"].to_numpy()
    if frac <= 0 or len(part) == 0:
        return sorted(ids.tolist()), []
    groups = part["case_id"].to_numpy()
    n_groups = len(np.unique(groups))
    y = part["label_index"].to_numpy()
    largest_class = int(np.unique(y, return_counts=True)[1].max())
    n_splits = min(max(2, int(round(1.0 / frac))), n_groups, largest_class)
    if n_splits < 2:
        log.warning("%s: only %d case(s) in a training part; no validation slides", where, n_groups)
        return sorted(ids.tolist()), []
    from sklearn.model_selection import StratifiedGroupKFold

    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % (2**32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tr_idx, va_idx = next(sgkf.split(np.zeros(len(part)), y, groups))
    missing = sorted(set(part["label"].dropna()) - set(part.iloc[va_idx]["label"].dropna()))
    if missing:
        log.warning("%s: validation part has no slide of class(es) %s (too few cases)", where, missing)
    return sorted(ids[tr_idx].tolist()), sorted(ids[va_idx].tolist())


def read_splits_csv(path: str | os.PathLike, cohort: "Cohort | None" = None) -> Splits:
    """Read splits written by :meth:`Splits.write_csv`. With ``cohort``, every slide must be in it.

    Errors name the file and the 1-based line: missing columns, a non-integer fold, an unknown split,
    a slide listed twice in one fold.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: splits file does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read as a splits CSV ({e})") from e
    need = ["fold", "split", "slide_id"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{path}, line 1: missing column(s) {missing}; columns present: {list(df.columns)}")
    folds: dict[int, dict[str, list[str]]] = {}
    seen: dict[tuple[int, str], int] = {}
    info: dict[str, tuple[str, str]] = {}
    has_case, has_label = "case_id" in df.columns, "label" in df.columns
    for i, row in enumerate(df.itertuples(index=False)):
        line = i + 2
        if not any(str(v).strip() for v in row):
            continue
        try:
            k = int(str(row.fold).strip())
            if k < 0:
                raise ValueError
        except ValueError:
            raise InputError(f"{path}, line {line}: fold {row.fold!r} is not a non-negative integer") from None
        split = str(row.split).strip()
        if split not in SPLIT_NAMES:
            raise InputError(f"{path}, line {line}: split {split!r} is not one of {list(SPLIT_NAMES)}")
        sid = str(row.slide_id).strip()
        if not sid:
            raise InputError(f"{path}, line {line}: empty slide_id")
        if (k, sid) in seen:
            raise InputError(f"{path}, line {line}: slide {sid!r} appears twice in fold {k} "
                             f"(first on line {seen[(k, sid)]})")
        seen[(k, sid)] = line
        folds.setdefault(k, {s: [] for s in SPLIT_NAMES})[split].append(sid)
        info[sid] = (str(row.case_id).strip() if has_case else sid, str(row.label).strip() if has_label else "")
    if not folds:
        raise InputError(f"{path}: no rows")
    keys = sorted(folds)
    if keys != list(range(len(keys))):
        raise InputError(f"{path}: folds must be numbered 0..K-1, found {keys}")
    out = [{s: sorted(folds[k][s]) for s in SPLIT_NAMES} for k in keys]
    if cohort is not None:
        known = set(cohort.slide_ids)
        unknown = sorted({sid for f in out for s in SPLIT_NAMES for sid in f[s]} - known)
        if unknown:
            raise InputError(f"{path}: {len(unknown)} slide(s) not in the cohort {cohort.source or ''}: "
                             f"{_listing(unknown)}")
    return Splits(folds=out, info=info, method="file", seed=None)
