"""Finding slide files in folders, and per-slide resolutions from a CSV."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from wsigraph.errors import InputError, MissingFileError
from wsigraph.slide.reader import SLIDE_SUFFIXES, _import_openslide, _to_float
from wsigraph.utils.folders import walk_folders


def find_slides(inputs: Sequence[str | os.PathLike], *, depth: int = 0, suffixes: Sequence[str] = SLIDE_SUFFIXES,
                skip_dirs: Iterable[str] = (), exclude: Iterable[str | os.PathLike] = (),
                allow_empty: bool = False) -> list[tuple[str, Path]]:
    """(slide_id, path) for slide files and folders of slides, sorted by slide id.

    A folder contributes its files with a suffix in ``suffixes`` (default :data:`SLIDE_SUFFIXES`; hidden
    files skipped), and those of its sub-folders down to ``depth`` levels (default 0: the folder only;
    hidden folders, folders named in ``skip_dirs`` and the folders in ``exclude`` are not entered). The
    ``.dcm`` files of one DICOM slide (same ``dicom.SeriesInstanceUID``) count once, under the first file's
    name. Files named explicitly are taken whatever their suffix.

    Raises:
        MissingFileError: an input does not exist. InputError: nothing found (unless ``allow_empty``), or two
        slides share an id (ids must be unique across the folders searched).
    """
    wanted = tuple(x.lower() for x in suffixes)
    skip = set(skip_dirs)
    excluded = {Path(e).resolve() for e in exclude}
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise MissingFileError(f"{p}: slide file or folder does not exist")
        if not p.is_dir():
            found.append(p)
            continue
        for d in walk_folders(p, depth, skip=skip, exclude=excluded):
            try:
                files = sorted(f for f in d.iterdir()
                               if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in wanted)
            except OSError:
                continue
            found.extend(_dedupe_dicom(files))
    if not found and not allow_empty:
        raise InputError(f"no slide files found in {[str(i) for i in inputs]} (looked for {', '.join(wanted)})")
    by_id: dict[str, Path] = {}
    for p in found:
        if p.stem in by_id and by_id[p.stem].resolve() != p.resolve():
            raise InputError(f"two slides have the id {p.stem!r}: {by_id[p.stem]} and {p}; slide ids (file names "
                             "without extension) must be unique")
        by_id[p.stem] = p
    return sorted(by_id.items())


def _dedupe_dicom(files: list[Path]) -> list[Path]:
    dcm = [f for f in files if f.suffix.lower() == ".dcm"]
    if len(dcm) < 2:
        return files
    openslide = _import_openslide()
    seen: set[str] = set()
    drop: set[Path] = set()
    for f in dcm:  # one open per DICOM file of a folder scan
        try:
            with openslide.OpenSlide(str(f)) as osr:
                series = osr.properties.get("dicom.SeriesInstanceUID")
        except Exception:  # noqa: BLE001 - left in; opening it later reports the error
            continue
        if series is None:
            continue
        if series in seen:
            drop.add(f)
        seen.add(series)
    return [f for f in files if f not in drop]


def read_mpp_csv(path: str | os.PathLike) -> dict[str, float]:
    """Per-slide resolutions from a CSV with an ``mpp`` column and a ``slide_id`` (or ``wsi``/``slide``/
    ``file``) column; keys are slide ids (file names without extension)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: mpp CSV does not exist")
    try:
        df = pd.read_csv(path, dtype=str)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: cannot be read as CSV ({e})") from e
    id_col = next((c for c in ("slide_id", "wsi", "slide", "file", "filename") if c in df.columns), None)
    if id_col is None or "mpp" not in df.columns:
        raise InputError(f"{path}: needs columns 'slide_id' (or 'wsi'/'slide'/'file') and 'mpp'; "
                         f"found {list(df.columns)}")
    out: dict[str, float] = {}
    for row, (sid, mpp) in enumerate(zip(df[id_col], df["mpp"]), start=2):  # a small per-slide table
        value = _to_float(mpp)
        if value is None or value <= 0:
            raise InputError(f"{path}, row {row}: mpp must be a positive number, got {mpp!r}")
        name = Path(str(sid).strip()).name
        out[name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in SLIDE_SUFFIXES else name] = value
    return out
