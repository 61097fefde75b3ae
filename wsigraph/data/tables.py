"""Label and clinical tables as users have them: CSV, TSV (delimiter sniffed from the header) or an Excel
``.xlsx`` sheet (read by pandas with openpyxl), always as a DataFrame of strings with stripped headers;
and tables we write (:func:`write_csv_rows`: dict rows as CSV, atomically)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from wsigraph.errors import InputError, MissingDependencyError, MissingFileError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx")


def read_table(path: str | os.PathLike, sheet: int | str = 0) -> Any:
    """``path`` as a ``pandas.DataFrame`` of strings (empty cells ``""``; header names stripped of spaces).

    Args:
        path: ``.xlsx`` (sheet ``sheet``, an index or a name), or a delimited text file (tab when the header
            holds more tabs than commas, else comma; UTF-8, a byte-order mark allowed).

    Raises:
        MissingFileError: no such file. InputError: unreadable, naming the file.
        MissingDependencyError: an ``.xlsx`` without openpyxl installed.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: table file does not exist")
    try:
        if path.suffix.lower() == ".xlsx":
            try:
                import openpyxl  # noqa: F401
            except ImportError as e:
                raise MissingDependencyError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or "
                                             "save the sheet as CSV") from e
            df = pd.read_excel(path, sheet_name=sheet, dtype=str, engine="openpyxl")
        else:
            text = path.read_text(encoding="utf-8-sig")
            first = text.split("\n", 1)[0]
            sep = "\t" if first.count("\t") > first.count(",") else ","
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (MissingDependencyError, MissingFileError):
        raise
    except Exception as e:  # noqa: BLE001 - pandas and openpyxl raise many kinds
        raise InputError(f"{path}: cannot be read as a table ({type(e).__name__}: {e})") from e
    df = df.fillna("")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def write_csv_rows(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as a UTF-8 CSV with a header, atomically; returns ``path``.

    Columns come in first-seen order (a key first seen in row 3 comes after those of rows 1-2). Values are
    written as ``str(value)``; a missing key, None and NaN leave the cell empty. No rows: an empty table.
    """
    import csv
    import math

    from wsigraph.utils.atomic import atomic_path

    path = Path(path)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]

    def cell(v: Any) -> Any:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        w.writerows([cell(r.get(c)) for c in cols] for r in rows)
    return path


__all__ = ["TABLE_SUFFIXES", "read_table", "write_csv_rows"]
