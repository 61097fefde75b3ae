"""The patch-label stage (``wsigraph label-patches``): lesion annotations -> ``patch_labels`` in every feature
file of a folder, one slide at a time through :func:`wsigraph.pipeline.runner.run_per_slide`.

The annotation readers and the per-slide labelling are :mod:`wsigraph.data.annotations`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from wsigraph.data.annotations import GEOJSON_SUFFIXES, XML_SUFFIXES, add_patch_labels, find_annotation
from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.runner import run_per_slide
from wsigraph.pipeline.shards import ShardSpec


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
        ann = find_annotation(annotation_dir, sid)
        if ann is None and missing == "skip":
            continue
        items.append((sid, (path, ann)))

    def one(slide_id: str, item: tuple[Path, Path | None]) -> int:
        path, ann = item
        if ann is None and missing == "error":
            raise MissingFileError(f"{annotation_dir}: no annotation file for slide {slide_id!r} "
                                   f"(looked for {[slide_id + s for s in XML_SUFFIXES + GEOJSON_SUFFIXES]})")
        out = None if out_dir is None else Path(out_dir) / path.name
        labels = add_patch_labels(path, ann, out, min_fraction=min_fraction, classes=classes, link=link)
        return int(labels.sum())

    return run_per_slide(items, one, on_error=on_error, desc="label", stage="patch_labels",
                         report_path=report_path, progress=progress, shard=shard)


__all__ = ["label_feature_folder"]
