"""Cohort manifests: which slides, their labels, patients (``case_id``) and optional fixed splits.

A manifest is a CSV with a header. Required column: ``slide_id`` (the feature file stem). Usual columns:
``label`` (class name; the column name is configurable), ``case_id`` (patient; defaults to the slide),
``split`` (``train``/``val``/``test``). Column order is free and extra columns are kept, so CLAM's dataset
CSVs (``case_id,slide_id,label``) read as they are. Every value is read as text: zero-padded ids stay
zero-padded.

Class names map to indices through an ordered list (``classes``); without one the sorted label set is
used, with a warning, because the order then depends on the labels present.

Every error names the file and the 1-based line of the CSV (line 1 is the header).
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from wsigraph.errors import ConfigError, InputError, MissingFileError
from wsigraph.pipeline.paths import check_slide_id
from wsigraph.pipeline.slides import strip_slide_suffix as _strip_slide_suffix  # ids given with an extension

log = logging.getLogger("wsigraph")

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test", "testing": "test"}
_NA_TOKENS = {"", "na", "nan", "none", "null", "n/a"}
_MAX_LISTED = 10

TABLE_COLUMNS = ("slide_id", "label", "label_index", "case_id", "split", "feature_path")


def _listing(items: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@dataclass
class Cohort:
    """A set of slides with labels.

    Attributes:
        table: one row per slide, columns ``slide_id`` (str), ``label`` (str or NA), ``label_index`` (int,
            -1 when unlabeled), ``case_id`` (str), ``split`` (str or NA), ``feature_path`` (Path or None),
            then any extra manifest columns. Index: 0..n-1.
        classes: ordered class names; ``label_index`` indexes this list.
        source: the manifest file, if read from one.
        lines: 1-based CSV line of each row (for error messages), aligned with ``table``.
    """

    table: pd.DataFrame
    classes: list[str]
    source: Path | None = None
    lines: list[int] | None = None
    missing_features: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self.class_counts().items())
        return f"Cohort({len(self)} slides, classes [{counts}], source={self.source})"

    # ------------------------------------------------------------------ views
    @property
    def slide_ids(self) -> list[str]:
        return list(self.table["slide_id"])

    @property
    def label_indices(self) -> list[int]:
        return [int(v) for v in self.table["label_index"]]

    @property
    def case_ids(self) -> list[str]:
        return list(self.table["case_id"])

    @property
    def feature_paths(self) -> list[Path | None]:
        return list(self.table["feature_path"])

    @property
    def has_split_column(self) -> bool:
        return bool(self.table["split"].notna().any())

    def class_counts(self) -> dict[str, int]:
        """Number of slides per class (unlabeled slides under ``"<unlabeled>"`` when present)."""
        counts = {c: int((self.table["label_index"] == i).sum()) for i, c in enumerate(self.classes)}
        n_unlabeled = int((self.table["label_index"] < 0).sum())
        if n_unlabeled:
            counts["<unlabeled>"] = n_unlabeled
        return counts

    def where(self, slide_id: str) -> str:
        """``"<manifest>, line N"`` for a slide, for error messages."""
        src = str(self.source) if self.source is not None else "cohort"
        if self.lines is not None:
            pos = self.table.index[self.table["slide_id"] == slide_id]
            if len(pos):
                return f"{src}, line {self.lines[int(pos[0])]}"
        return src

    def subset(self, slide_ids: Iterable[str]) -> "Cohort":
        """The cohort restricted to ``slide_ids``, in that order. Unknown ids raise, named."""
        slide_ids = [str(s) for s in slide_ids]
        pos = {s: i for i, s in enumerate(self.table["slide_id"])}
        unknown = [s for s in slide_ids if s not in pos]
        dup = sorted(s for s, n in Counter(slide_ids).items() if n > 1)
        if dup:
            raise InputError(f"{self.source or 'cohort'}: slide_id(s) listed more than once: {_listing(dup)}")
        if unknown:
            raise InputError(f"{self.source or 'cohort'}: slide_id(s) not in the cohort: {_listing(unknown)}")
        rows = [pos[s] for s in slide_ids]
        table = self.table.iloc[rows].reset_index(drop=True)
        lines = [self.lines[r] for r in rows] if self.lines is not None else None
        return Cohort(table=table, classes=list(self.classes), source=self.source, lines=lines)

    def labeled(self) -> "Cohort":
        """The slides that have a label."""
        return self.subset(self.table.loc[self.table["label_index"] >= 0, "slide_id"])

    # ------------------------------------------------------------------ features
    def attach_features(self, feature_dir: str | os.PathLike, on_missing: str = "raise") -> "Cohort":
        """Fill ``feature_path`` from the ``.h5``/``.pt`` files in ``feature_dir`` (in place; returns self).

        A slide id that carries a slide-file extension (``a.svs``) also matches ``a.h5``.

        Args:
            on_missing: ``"raise"``: an :class:`InputError` naming every slide without a file;
                ``"skip"``: drop those slides (listed in ``self.missing_features`` and the log).
        """
        from wsigraph.data.features import list_feature_files

        if on_missing not in ("raise", "skip"):
            raise ConfigError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
        files = list_feature_files(feature_dir)
        paths: list[Path | None] = []
        missing: list[str] = []
        for sid in self.table["slide_id"]:
            p = files.get(sid)
            if p is None:
                stem = _strip_slide_suffix(sid)
                p = files.get(stem) if stem != sid else None
            paths.append(p)
            if p is None:
                missing.append(sid)
        self.table["feature_path"] = pd.Series(paths, index=self.table.index, dtype=object)
        if missing:
            msg = (f"{feature_dir}: no feature file (.h5/.hdf5/.pt) for {len(missing)} of {len(self)} slide(s) "
                   f"of {self.source or 'the cohort'}: {_listing(missing)}")
            if on_missing == "raise":
                raise InputError(msg)
            log.warning("%s; skipping them", msg)
            keep = self.table["feature_path"].notna().to_numpy()
            if self.lines is not None:
                self.lines = [ln for ln, k in zip(self.lines, keep) if k]
            self.table = self.table.loc[keep].reset_index(drop=True)
            self.missing_features = missing
        return self

    # ------------------------------------------------------------------ output
    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the manifest (``slide_id,label,case_id[,split]`` + extra columns) atomically."""
        from wsigraph.utils.atomic import atomic_path

        cols = ["slide_id", "label", "case_id"]
        if self.has_split_column:
            cols.append("split")
        cols += [c for c in self.table.columns if c not in TABLE_COLUMNS]
        df = self.table[cols].copy()
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, na_rep="")
        return Path(path)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` of each non-blank row; checks the field count of every row."""
    if not path.exists():
        raise MissingFileError(f"{path}: manifest file does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a manifest CSV file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e}); expected a CSV manifest") from e
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e})") from e
    first = text.split("\n", 1)[0]
    delimiter = "\t" if ("\t" in first and "," not in first) else ","
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            fields = [f.strip() for f in fields]
            if header is None:
                header = fields
                empty = [i + 1 for i, h in enumerate(header) if not h and i > 0]
                dup = sorted({h for h in header if h and header.count(h) > 1})
                if dup:
                    raise InputError(f"{path}, line {line}: duplicate column name(s) {dup} in the header")
                if empty:
                    raise InputError(f"{path}, line {line}: empty column name at position(s) {empty} of the header")
                header_line = line
                continue
            if len(fields) != len(header):
                # a trailing empty field from a trailing comma is harmless
                if len(fields) == len(header) + 1 and fields[-1] == "":
                    fields = fields[:-1]
                else:
                    raise InputError(f"{path}, line {line}: malformed row: {len(fields)} field(s) but the header "
                                     f"(line {header_line}) has {len(header)} ({','.join(header)})")
            rows.append((line, fields))
    except csv.Error as e:
        raise InputError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from e
    if header is None:
        raise InputError(f"{path}: empty manifest (no header line)")
    if not rows:
        raise InputError(f"{path}: manifest has a header but no slide rows")
    if header[0] == "" and len(header) > 1:  # pandas index column written without a name
        header = ["_index"] + header[1:]
    return header, rows


def read_manifest(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    feature_dir: str | os.PathLike | None = None,
    *,
    label_col: str = "label",
    slide_col: str = "slide_id",
    case_col: str = "case_id",
    split_col: str = "split",
    require_labels: bool = True,
    on_missing_features: str = "raise",
) -> Cohort:
    """Read a cohort manifest CSV into a :class:`Cohort`.

    Args:
        path: the CSV (comma- or tab-separated, header on the first line).
        classes: ordered class names; ``label_index`` is the position in this list. None: the sorted
            set of labels (a warning says so).
        feature_dir: when given, :meth:`Cohort.attach_features` is called with ``on_missing_features``.
        label_col / slide_col / case_col / split_col: column names in the file; they are renamed to
            ``label``/``slide_id``/``case_id``/``split`` in ``table``.
        require_labels: the label column must exist (empty cells are still allowed: unlabeled slides).

    Raises:
        MissingFileError: the file does not exist.
        InputError: naming the file and line: missing columns, empty or duplicate ``slide_id``, a label
            not in ``classes``, an unknown split value, a ``case_id`` in two splits, a malformed row.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    required = [slide_col] + ([label_col] if require_labels else [])
    missing = [c for c in required if c not in header]
    if missing:
        hint = " (set the label column name with label_col=/--label-col)" if label_col in missing else ""
        raise InputError(f"{path}, line 1: missing required column(s) {missing}; columns present: {header}{hint}")
    col = {name: header.index(name) for name in header}
    lines = [ln for ln, _ in rows]

    def column(name: str) -> list[str] | None:
        if name not in col:
            return None
        i = col[name]
        return [fields[i] for _, fields in rows]

    slide_ids = column(slide_col)
    assert slide_ids is not None
    seen: dict[str, int] = {}
    for ln, sid in zip(lines, slide_ids):
        if not sid:
            raise InputError(f"{path}, line {ln}: empty {slide_col!r}")
        check_slide_id(sid, f"{path}, line {ln}, column {slide_col!r}")
        if sid in seen:
            raise InputError(f"{path}, line {ln}: duplicate {slide_col} {sid!r} (first on line {seen[sid]})")
        seen[sid] = ln

    raw_labels = column(label_col)
    labels: list[str | None] = ([None if v.lower() in _NA_TOKENS else v for v in raw_labels]
                                if raw_labels is not None else [None] * len(rows))
    classes = _resolve_classes(path, classes, labels)
    class_pos = {c: i for i, c in enumerate(classes)}
    label_index: list[int] = []
    for ln, lab in zip(lines, labels):
        if lab is None:
            label_index.append(-1)
        elif lab in class_pos:
            label_index.append(class_pos[lab])
        else:
            raise InputError(f"{path}, line {ln}: label {lab!r} (column {label_col!r}) is not one of the "
                             f"classes {classes}")
    n_unlabeled = label_index.count(-1)
    if n_unlabeled and raw_labels is not None:
        log.info("%s: %d slide(s) without a label", path, n_unlabeled)

    raw_cases = column(case_col)
    case_ids = [c if c and c.lower() not in _NA_TOKENS else sid
                for c, sid in zip(raw_cases or [""] * len(rows), slide_ids)]

    raw_splits = column(split_col)
    splits: list[str | None] = []
    for ln, v in zip(lines, raw_splits or [""] * len(rows)):
        if v.lower() in _NA_TOKENS:
            splits.append(None)
            continue
        s = _SPLIT_ALIASES.get(v.lower())
        if s is None:
            raise InputError(f"{path}, line {ln}: split {v!r} (column {split_col!r}) is not one of "
                             f"{list(SPLIT_NAMES)}")
        splits.append(s)
    _check_case_splits(path, lines, case_ids, splits)

    table = pd.DataFrame({
        "slide_id": pd.Series(slide_ids, dtype=object),
        "label": pd.Series(labels, dtype=object),
        "label_index": pd.Series(label_index, dtype="int64"),
        "case_id": pd.Series(case_ids, dtype=object),
        "split": pd.Series(splits, dtype=object),
        "feature_path": pd.Series([None] * len(rows), dtype=object),
    })
    used = {slide_col, label_col, case_col, split_col}
    for name in header:
        if name in used:
            continue
        target = name if name not in TABLE_COLUMNS else f"{name}_orig"
        table[target] = pd.Series(column(name), dtype=object)
    cohort = Cohort(table=table, classes=list(classes), source=path, lines=lines)
    if feature_dir is not None:
        cohort.attach_features(feature_dir, on_missing=on_missing_features)
    return cohort


def _resolve_classes(path: Path, classes: Sequence[str] | None, labels: list[str | None]) -> list[str]:
    if classes is not None:
        if isinstance(classes, str):
            raise ConfigError(f"classes must be a list of class names, got the string {classes!r}")
        out = [str(c) for c in classes]
        if not out:
            raise ConfigError("classes is an empty list")
        dup = sorted({c for c in out if out.count(c) > 1})
        if dup:
            raise ConfigError(f"classes {out} lists {dup} more than once")
        return out
    present = sorted({lab for lab in labels if lab is not None})
    if present:
        log.warning("%s: no class list given; using the sorted labels %s (label_index = position). "
                    "Pass classes=[...] (config 'classes', CLI --classes) to fix the order", path, present)
    return present


def _check_case_splits(path: Path, lines: list[int], case_ids: list[str], splits: list[str | None]) -> None:
    """A patient (case_id) must not appear in two different splits."""
    first: dict[str, tuple[str, int]] = {}
    for ln, case, split in zip(lines, case_ids, splits):
        if split is None:
            continue
        if case in first and first[case][0] != split:
            other_split, other_line = first[case]
            raise InputError(f"{path}, line {ln}: case_id {case!r} is in split {split!r} here but in "
                             f"{other_split!r} on line {other_line}; a patient's slides must share one split")
        first.setdefault(case, (split, ln))


def write_manifest(path: str | os.PathLike, rows: Sequence[dict[str, Any]], classes: Sequence[str] | None = None
                   ) -> tuple[dict[str, int], dict[str, int]]:
    """Write a cohort manifest (the CSV :func:`read_manifest` reads) atomically; returns its counts.

    Args:
        path: the ``.csv`` to write.
        rows: one dict per slide with ``slide_id`` and ``label``, and optionally ``case_id``, ``split`` and
            more columns (columns in first-seen order, see :func:`wsigraph.data.tables.write_csv_rows`).
        classes: class order of the returned counts (None: sorted labels).

    Returns:
        ``(slides per class, slides per split)``: every class of ``classes`` in order (0 when it has no
        slide), then any other label, sorted; split name -> slides, sorted, empty when a row has no split.

    Raises:
        InputError: no rows, a row without ``slide_id`` or ``label``, an unsafe or repeated ``slide_id``
        (naming the line the row would have in ``path``; line 1 is the header).
    """
    from wsigraph.data.tables import write_csv_rows

    path = Path(path)
    if not rows:
        raise InputError(f"{path}: no slides to write")
    first: dict[str, int] = {}
    for line, r in enumerate(rows, start=2):
        for key in ("slide_id", "label"):
            if r.get(key) is None or str(r[key]).strip() == "":
                raise InputError(f"{path}, line {line}: the row has no {key!r} (keys: {sorted(r)})")
        sid = check_slide_id(str(r["slide_id"]), f"{path}, line {line}")
        if sid in first:
            raise InputError(f"{path}, line {line}: slide_id {sid!r} is already on line {first[sid]}")
        first[sid] = line
    write_csv_rows(path, rows)
    labels = Counter(str(r["label"]) for r in rows)
    by_class = {c: labels.get(c, 0) for c in classes or ()}
    by_class.update({k: labels[k] for k in sorted(labels) if k not in by_class})
    splits = [str(r.get("split") or "") for r in rows]
    by_split = dict(sorted(Counter(splits).items())) if all(splits) else {}
    return by_class, by_split


def cohort_from_records(records: Sequence[dict[str, Any]], classes: Sequence[str] | None = None) -> Cohort:
    """Build a :class:`Cohort` from dicts with ``slide_id``, ``label`` and optionally ``case_id``, ``split``.

    Goes through the same checks as :func:`read_manifest` (via a temporary CSV text), so both paths agree.
    """
    import tempfile

    if not records:
        raise InputError("no slides given")
    cols = ["slide_id", "label"] + [c for c in ("case_id", "split") if any(c in r for r in records)]
    df = pd.DataFrame([{c: r.get(c, "") for c in cols} for r in records], columns=cols)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "manifest.csv"
        df.to_csv(p, index=False)
        cohort = read_manifest(p, classes=classes)
    cohort.source = None
    return cohort
