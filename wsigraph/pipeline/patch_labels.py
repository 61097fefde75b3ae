"""The patch-label stage (``wsigraph label-patches``): lesion annotations -> ``patch_labels`` in every feature
file of a folder, one slide at a time through :func:`wsigraph.pipeline.runner.run_per_slide`.

Two helpers build a feature folder for the benchmark harness without copying embeddings:
:func:`gather_feature_files` (files spread over several folders, by symbolic link) and
:func:`label_feature_files` (chosen slides labelled into small files that link to the originals).

The annotation readers and the per-slide labelling are :mod:`wsigraph.data.annotations`.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from wsigraph.data.annotations import GEOJSON_SUFFIXES, XML_SUFFIXES, add_patch_labels, find_annotation
from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.paths import check_slide_id, slide_file
from wsigraph.pipeline.runner import run_per_slide
from wsigraph.pipeline.shards import ShardSpec

log = logging.getLogger("wsigraph")


def label_feature_folder(
    feature_dir: str | os.PathLike,
    annotation_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    missing: str = "negative",
    min_fraction: float | str = 0.5,
    classes: Sequence[str] | None = None,
    on_error: str = "skip",
    report_path: str | os.PathLike | None = None,
    progress: bool = True,
    link: bool = False,
    shard: ShardSpec = None,
):
    """Add ``patch_labels`` to every feature file of a folder (a cohort job, see ``run_per_slide``).

    Args:
        feature_dir: folder of ``<slide_id>.h5``.
        annotation_dir: folder of ``<slide_id>.xml`` / ``.geojson`` / ``.json``.
        out_dir: where the labelled copies go (None: in place).
        missing: what to do for a slide without an annotation file: ``"negative"`` (all-zero labels,
            the CAMELYON16 convention for normal slides), ``"skip"`` (leave it out) or ``"error"``.
        on_error, report_path, progress, shard: as in :func:`wsigraph.pipeline.runner.run_per_slide` (shard
            default: from ``RANK``/``WORLD_SIZE``).
        link: write small files that link to the originals' datasets (see :func:`add_patch_labels`);
            needs ``out_dir``.

    Returns:
        the :class:`~wsigraph.pipeline.runner.JobReport`; ``results[slide_id]`` is the number of positive patches.
    """
    from wsigraph.data.features import H5_SUFFIXES, list_feature_files

    if missing not in ("negative", "skip", "error"):
        raise InputError(f"missing must be 'negative', 'skip' or 'error', got {missing!r}")
    if link and out_dir is None:
        raise InputError("linked labels (link=True) need an output folder (out_dir): the originals stay as they are")
    annotation_dir = Path(annotation_dir)
    if not annotation_dir.is_dir():
        raise MissingFileError(f"{annotation_dir}: annotation folder does not exist")
    files = {k: v for k, v in list_feature_files(feature_dir).items() if v.suffix.lower() in H5_SUFFIXES}
    items = []
    for sid, path in files.items():
        check_slide_id(sid, f"{path} (slide id from the file name)")  # before anything is read or written
        ann = find_annotation(annotation_dir, sid)
        if ann is None and missing == "skip":
            continue
        items.append((sid, (path, ann)))

    def one(slide_id: str, item: tuple[Path, Path | None]) -> int:
        path, ann = item
        if ann is None and missing == "error":
            raise MissingFileError(f"{annotation_dir}: no annotation file for slide {slide_id!r} "
                                   f"(looked for {[slide_id + s for s in XML_SUFFIXES + GEOJSON_SUFFIXES]})")
        out = None if out_dir is None else slide_file(out_dir, slide_id, path.suffix, where=str(path))
        labels = add_patch_labels(path, ann, out, min_fraction=min_fraction, classes=classes, link=link)
        return int(labels.sum())

    return run_per_slide(items, one, on_error=on_error, desc="label", stage="patch_labels",
                         report_path=report_path, progress=progress, shard=shard)


def gather_feature_files(files: Mapping[str, str | os.PathLike], out: str | os.PathLike) -> Path:
    """One feature folder ``out`` of ``<slide_id>.h5`` for feature files spread over several folders.

    Args:
        files: slide id -> ``.h5``/``.hdf5`` or CLAM ``.pt`` feature file (e.g. the ``files`` of several
            :class:`~wsigraph.pipeline.slides.FeatureFolder`).
        out: the folder to fill (made when missing).

    ``.h5`` files are symbolic links to the originals (copies, written atomically, where links are not
    allowed); a link or file already there for another source is replaced. ``.pt`` bags are written as
    ``.h5`` (their coordinates live in another folder, which a link would lose), once: an existing
    ``<slide_id>.h5`` is kept. Returns ``out``.
    """
    from wsigraph.data.features import read_features, write_features
    from wsigraph.utils.atomic import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for sid, src in files.items():
        src = Path(src)
        dst = slide_file(out, sid, ".h5", where=str(src))
        if not src.is_file():
            raise MissingFileError(f"{src}: feature file of slide {sid!r} does not exist")
        if src.suffix.lower() == ".pt":
            if not dst.exists():
                bag = read_features(src)
                write_features(dst, bag.coords, bag.features, attrs=bag.attrs)
            continue
        if dst.is_symlink() or dst.exists():
            if dst.resolve() == src.resolve():
                continue
            dst.unlink()
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
    return out


def label_feature_files(features: Mapping[str, str | os.PathLike], annotation_dir: str | os.PathLike,
                        slide_ids: Iterable[str], out: str | os.PathLike) -> dict[str, Path | None]:
    """Feature folder ``out`` for the harness, with ``patch_labels`` for the slides ``slide_ids``.

    Args:
        features: slide id -> feature file (``.h5``/``.hdf5``, or a CLAM ``.pt``), every slide of the cohort.
        annotation_dir: folder of lesion outlines ``<slide_id>.xml``/``.geojson``/``.json``.
        slide_ids: the slides to label (ids of ``features``); a slide without an outline gets all-zero
            labels (the CAMELYON16 convention for slides without lesions).
        out: the folder to fill (made when missing).

    Each labelled slide is a small ``out/<slide_id>.h5`` holding ``patch_labels`` whose other datasets
    are HDF5 external links to the original (see :func:`~wsigraph.data.annotations.add_patch_labels`), so
    nothing large is copied; a ``.pt`` bag is first written as ``.h5`` and labelled in place. Every other
    slide is linked as it is (:func:`gather_feature_files`). A labelled file newer than its original and
    linking to it where it is now is kept (resume).

    Returns:
        slide id -> the outline its labels came from (None: all-zero labels), for ``slide_ids``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    used_ids = set(slide_ids)
    chosen = sorted(used_ids)
    unknown = [s for s in chosen if s not in features]
    if unknown:
        raise InputError(f"slide(s) {unknown[:10]} to label have no feature file (among {len(features)} slides)")
    annotation_dir = Path(annotation_dir)
    if not annotation_dir.is_dir():
        raise MissingFileError(f"{annotation_dir}: annotation folder does not exist")
    gather_feature_files({s: p for s, p in features.items() if s not in used_ids}, out)
    used: dict[str, Path | None] = {}
    for sid in chosen:
        src, dst = Path(features[sid]), slide_file(out, sid, ".h5")
        ann = used[sid] = find_annotation(annotation_dir, sid)
        if dst.is_symlink():
            dst.unlink()
        if _labelled_from(dst, src) and dst.stat().st_mtime >= src.stat().st_mtime:  # done on an earlier run
            continue
        if src.suffix.lower() == ".pt":  # a CLAM .pt bag: written as .h5 first, then labelled in place
            gather_feature_files({sid: src}, out)
            src = dst
        add_patch_labels(src, ann, dst, link=src.resolve() != dst.resolve())
    log.info("patch labels for %d slide(s), %d with a lesion outline -> %s", len(used),
             sum(a is not None for a in used.values()), out)
    return used


def _labelled_from(path: Path, src: Path) -> bool:
    """``path`` holds ``patch_labels``, and its external links (if any) lead to ``src`` where it is now."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            links = [f.get(k, getlink=True) for k in f]
            return "patch_labels" in f and all(link.filename == str(src.resolve()) for link in links
                                               if isinstance(link, h5py.ExternalLink))
    except (OSError, FileNotFoundError):
        return False


__all__ = ["label_feature_folder", "gather_feature_files", "label_feature_files"]
