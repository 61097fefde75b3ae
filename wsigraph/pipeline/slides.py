"""Which slides a cohort job runs on: slide folders and manifests, coords files matched to slides.

The one place that turns what a user gives (a folder of slides, one slide file, a CSV manifest with a path
column, a folder of coords files) into :class:`SlideJob` records; slide files are found by
:func:`wsigraph.slide.find_slides` (one suffix list: :data:`wsigraph.slide.SLIDE_SUFFIXES`) and every slide
id is checked by :func:`wsigraph.pipeline.paths.check_slide_id` before it names a file. Also what a data
folder holds: whole-slide files (:func:`find_slide_files`), CLAM / TRIDENT / wsigraph feature folders
(:func:`find_feature_folders`), the SRMIL paper's pickles (:func:`find_pickle_files`); and slide ids given
with a file extension (:func:`strip_slide_suffix`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.paths import check_slide_id
from wsigraph.slide.reader import OTHER_SLIDE_SUFFIXES, SLIDE_SUFFIXES
from wsigraph.utils.folders import SIDE_FOLDERS, walk_folders

#: manifest columns that hold the slide's path (the first present is used)
PATH_COLUMNS = ("path", "slide_path", "wsi", "filename", "file")
#: feature file extensions (removed from slide ids by :func:`strip_slide_suffix`, as slide extensions are)
FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt")
#: whole-slide files looked for in a data folder (:func:`find_slide_files`): those of
#: :data:`wsigraph.slide.SLIDE_SUFFIXES` less .png/.jpg (CLAM/TRIDENT thumbnails are not slides) and .dcm (a
#: DICOM slide is a folder of files)
DATA_SLIDE_SUFFIXES = tuple(s for s in SLIDE_SUFFIXES if s not in (".png", ".jpg", ".jpeg", ".dcm"))
#: the SRMIL paper's feature files (:func:`find_pickle_files`)
PICKLE_SUFFIXES = (".pkl", ".pickle")
#: TRIDENT's job folder ``<mag>x_<patch>px_<overlap>px_overlap``
_TRIDENT_DIR = re.compile(r"^\d+(\.\d+)?x_\d+px_\d+px_overlap$")


@dataclass
class SlideJob:
    """One slide of a cohort job: its id, its slide file and its coords file (None: make them first)."""

    slide_id: str
    slide_path: Path | None
    coords_path: Path | None = None
    mpp: float | None = None


def open_slide_with(path: str | os.PathLike, mpp: float | None = None, *, default_mpp: float | None = None) -> Any:
    """``open_slide(path, mpp=mpp, default_mpp=default_mpp)``; picklable with ``functools.partial``."""
    from wsigraph.slide import open_slide

    return open_slide(path, mpp=mpp, default_mpp=default_mpp)


def read_slide_list(source: str | os.PathLike) -> list[SlideJob]:
    """Slides of a folder (every whole-slide file in it), one slide file, or a CSV manifest.

    The manifest has a path column (one of ``path``, ``slide_path``, ``wsi``, ``filename``, ``file``;
    relative paths are taken from the manifest's folder) and optional ``slide_id`` (default: the file
    stem) and ``mpp`` (level-0 µm/px for that slide, overriding its metadata) columns.
    """
    source = Path(source)
    if source.is_dir():
        return [SlideJob(slide_id=sid, slide_path=p) for sid, p in list_slide_files(source).items()]
    if not source.is_file():
        raise MissingFileError(f"{source}: slides folder or manifest does not exist")
    if source.suffix.lower() != ".csv":  # one slide file
        return [SlideJob(slide_id=sid, slide_path=p) for sid, p in list_slide_files(source).items()]
    import pandas as pd

    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{source}: cannot be read as a CSV manifest ({e})") from e
    col = next((c for c in PATH_COLUMNS if c in table.columns), None)
    if col is None:
        raise InputError(f"{source}: the manifest needs a slide path column (one of {list(PATH_COLUMNS)}); "
                         f"columns present: {list(table.columns)}")
    jobs: dict[str, SlideJob] = {}
    for row, rec in enumerate(table.to_dict("records"), start=2):  # row 1 is the header
        raw = str(rec[col]).strip()
        if not raw:
            raise InputError(f"{source}, row {row}: empty {col!r}")
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = source.parent / p
        sid = str(rec.get("slide_id", "") or "").strip() or p.stem
        check_slide_id(sid, f"{source}, row {row}")
        mpp = None
        if str(rec.get("mpp", "") or "").strip():
            try:
                mpp = float(rec["mpp"])
            except ValueError:
                raise InputError(f"{source}, row {row}: mpp {rec['mpp']!r} is not a number") from None
            if not mpp > 0:
                raise InputError(f"{source}, row {row}: mpp must be positive, got {mpp}")
        if sid in jobs:
            raise InputError(f"{source}, row {row}: slide_id {sid!r} appears twice")
        jobs[sid] = SlideJob(slide_id=sid, slide_path=p, mpp=mpp)
    if not jobs:
        raise InputError(f"{source}: the manifest lists no slides")
    return list(jobs.values())


def slide_jobs(files: Mapping[str, str | os.PathLike]) -> list[SlideJob]:
    """One :class:`SlideJob` per ``slide id -> slide file`` (e.g. from :func:`find_slide_files`), sorted by id;
    the in-memory form of :func:`read_slide_list`. Each id is checked (an ``InputError`` names it and its file)."""
    return [SlideJob(slide_id=check_slide_id(sid, str(path)), slide_path=Path(path))
            for sid, path in sorted(files.items())]


def slide_id_of_coords(path: Path) -> str:
    """Slide id of a coords file: its stem, without TRIDENT's ``_patches`` suffix."""
    stem = path.stem
    return stem[: -len("_patches")] if stem.endswith("_patches") else stem


def list_coords_files(coords: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Coords files from a folder (``*.h5``/``*.hdf5``), or the given files."""
    items = [coords] if isinstance(coords, (str, os.PathLike)) else list(coords)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in (".h5", ".hdf5") and not q.name.startswith("."))
            if not found:
                raise MissingFileError(f"{p}: no coords files (*.h5) in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise MissingFileError(f"{p}: coords file or folder does not exist")
    return files


def list_slide_files(slides: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Map slide id (file stem) -> slide file for slide files and folders of slides (``wsigraph.slide.find_slides``)."""
    from wsigraph.slide import find_slides

    items = [slides] if isinstance(slides, (str, os.PathLike)) else list(slides)
    return dict(find_slides(items))


def match_coords_to_slides(coords: str | os.PathLike | Sequence[str | os.PathLike],
                           slides_dir: str | os.PathLike) -> list[SlideJob]:
    """One :class:`SlideJob` per coords file, with the slide of the same id (None when absent: reported later)."""
    slides = list_slide_files(slides_dir)
    jobs: dict[str, SlideJob] = {}
    for f in list_coords_files(coords):
        sid = slide_id_of_coords(f)
        if sid in jobs:
            raise InputError(f"{f}: a second coords file for slide {sid!r} (first: {jobs[sid].coords_path})")
        jobs[sid] = SlideJob(slide_id=sid, slide_path=slides.get(sid), coords_path=f)
    return list(jobs.values())


# ---------------------------------------------------------------------------------------- feature folders


@dataclass
class FeatureFolder:
    """A folder of per-slide feature files: ``kind`` ``clam``, ``trident`` or ``wsigraph``; ``files`` maps
    slide id -> file (:func:`wsigraph.data.features.list_feature_files`)."""

    kind: str
    path: Path
    files: dict[str, Path]

    def describe(self) -> str:
        return f"{self.kind} feature folder {self.path} ({len(self.files)} slides)"


def classify_feature_folder(folder: str | os.PathLike) -> str:
    """``clam`` (``h5_files``/``pt_files``), ``trident`` (``<mag>x_<ps>px_<ov>px_overlap/features_<enc>``) or
    ``wsigraph`` (anything else, e.g. ``features/`` or ``features_<encoder>/`` of ``wsigraph preprocess``)."""
    folder = Path(folder)
    if folder.name in ("h5_files", "pt_files"):
        return "clam"
    if folder.name.startswith("features_") and _TRIDENT_DIR.match(folder.parent.name):
        return "trident"
    return "wsigraph"


def feature_folder(folder: str | os.PathLike) -> FeatureFolder:
    """The :class:`FeatureFolder` of one folder named by the user (e.g. ``--features DIR``): its kind by
    :func:`classify_feature_folder`, its files by :func:`~wsigraph.data.features.list_feature_files` (none
    when ``folder`` is not a folder)."""
    from wsigraph.data.features import list_feature_files

    folder = Path(folder)
    files = list_feature_files(folder) if folder.is_dir() else {}
    return FeatureFolder(classify_feature_folder(folder), folder, files)


def find_feature_folders(root: str | os.PathLike, depth: int = 4, *,
                         exclude: Iterable[str | os.PathLike] = ()) -> list[FeatureFolder]:
    """Every feature folder under ``root`` (down to ``depth`` levels): CLAM ``h5_files/`` (``pt_files/``
    when there is no ``h5_files/`` beside it), TRIDENT ``*x_*px_*px_overlap/features_*/``, and ours
    (``features/``, ``features_*/``); folders without feature files are left out."""
    from wsigraph.data.features import list_feature_files

    found: list[FeatureFolder] = []
    for d in walk_folders(root, depth, exclude=exclude):
        name = d.name
        if not (name in ("h5_files", "features") or name.startswith("features_")
                or (name == "pt_files" and not (d.parent / "h5_files").is_dir())):
            continue
        files = list_feature_files(d)
        if files:
            found.append(FeatureFolder(classify_feature_folder(d), d, files))
    return found


# ---------------------------------------------------------------------------------------- names and pickles


def strip_slide_suffix(slide_id: str) -> str:
    """``S001.svs`` -> ``S001``: one slide or feature file extension removed (any case; those of
    :data:`wsigraph.slide.SLIDE_SUFFIXES`, :data:`~wsigraph.slide.reader.OTHER_SLIDE_SUFFIXES` and
    :data:`FEATURE_SUFFIXES`); other dots are kept (``TCGA-...-DX1.<uuid>`` stays as it is)."""
    low = slide_id.lower()
    for suf in SLIDE_SUFFIXES + OTHER_SLIDE_SUFFIXES + FEATURE_SUFFIXES:
        if low.endswith(suf):
            return slide_id[: -len(suf)]
    return slide_id


def find_slide_files(root: str | os.PathLike, depth: int = 4, *,
                     exclude: Iterable[str | os.PathLike] = ()) -> dict[str, Path]:
    """Slide id (file stem) -> whole-slide file, for the files of :data:`DATA_SLIDE_SUFFIXES` in ``root`` and
    its sub-folders down to ``depth`` levels (:func:`wsigraph.slide.find_slides`; CLAM / TRIDENT side-output
    folders such as ``masks/``, hidden and ``exclude`` folders are not entered). Nothing found: empty.

    Raises:
        MissingFileError: ``root`` does not exist. InputError: two slides share an id (naming both files).
    """
    from wsigraph.slide import find_slides

    return dict(find_slides([root], depth=depth, suffixes=DATA_SLIDE_SUFFIXES, skip_dirs=SIDE_FOLDERS,
                            exclude=exclude, allow_empty=True))


def find_pickle_files(root: str | os.PathLike, depth: int = 2, *,
                      exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """``*.pkl`` / ``*.pickle`` files (any case) in ``root`` and its sub-folders down to ``depth`` levels,
    sorted; folders are walked by :func:`~wsigraph.utils.folders.walk_folders` (hidden, side-output and
    ``exclude`` folders are not entered). Finding a pickle does not read it."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: folder does not exist")
    found: list[Path] = []
    for d in walk_folders(root, depth, exclude=exclude):
        try:
            found += [f for f in d.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES and f.is_file()]
        except OSError:  # unreadable folder: passed, as walk_folders does
            continue
    return sorted(found)


__all__ = ["PATH_COLUMNS", "SIDE_FOLDERS", "DATA_SLIDE_SUFFIXES", "FEATURE_SUFFIXES", "PICKLE_SUFFIXES",
           "SlideJob", "open_slide_with", "read_slide_list", "slide_jobs", "list_slide_files", "list_coords_files",
           "slide_id_of_coords", "match_coords_to_slides", "FeatureFolder", "feature_folder",
           "classify_feature_folder", "find_feature_folders", "find_slide_files", "find_pickle_files",
           "strip_slide_suffix"]
