"""What the viewer can show: one :class:`SlideEntry` per slide id, found once when the viewer starts.

Slides come from the folders given (slide images, score files, feature files, annotations, tissue masks,
a predictions table); the browser names a slide only by its id, which is looked up in this catalog, so no
path from a request ever reaches the file system.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from wsigraph.errors import InputError, MissingFileError


@dataclass(frozen=True)
class SlideEntry:
    """One slide's files (None where absent) and its label / prediction.

    Attributes:
        image: the slide image (tiles), or None: overlays on a blank canvas of the slide's extent.
        scores: per-patch score file (:mod:`wsigraph.data.scores`). features: the feature or coords file.
        annotation: lesion outlines (ASAP XML / GeoJSON). mask: binary tissue mask PNG (``masks/<id>.png``).
        label, pred, prob: from the predictions table or the score file.
    """

    slide_id: str
    image: Path | None = None
    scores: Path | None = None
    features: Path | None = None
    annotation: Path | None = None
    mask: Path | None = None
    label: str | None = None
    pred: str | None = None
    prob: float | None = None

    @property
    def has_patches(self) -> bool:
        return self.scores is not None or self.features is not None


def _dir(path: str | os.PathLike | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_dir():
        raise MissingFileError(f"{p}: {what} folder does not exist")
    return p


def _manifest_labels(path: Path) -> dict[str, str]:
    """slide_id -> label of a manifest CSV (rows without a label left out); the class order is not needed."""
    import pandas as pd

    if not path.is_file():
        raise MissingFileError(f"{path}: manifest not found")
    try:
        table = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(f"{path}: cannot be read as a CSV manifest ({e})") from e
    missing = [c for c in ("slide_id", "label") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: manifest has no column {', '.join(missing)} (columns: {', '.join(table.columns)})")
    return {sid.strip(): lab.strip() for sid, lab in zip(table["slide_id"], table["label"]) if lab.strip()}


def build_catalog(*, slides: str | os.PathLike | None = None, scores: str | os.PathLike | None = None,
                  features: str | os.PathLike | None = None, annotations: str | os.PathLike | None = None,
                  masks: str | os.PathLike | None = None,
                  predictions: str | os.PathLike | Mapping[str, Mapping[str, Any]] | None = None,
                  manifest: str | os.PathLike | None = None) -> dict[str, SlideEntry]:
    """Slide id -> :class:`SlideEntry` for every slide with an image or per-patch coordinates.

    Args:
        slides: folder of slide images (2 levels deep). scores: folder of score files (``predict``'s
            ``scores/``). features: folder of feature/coords files. annotations: folder of
            ``<id>.xml``/``.geojson``/``.json``. masks: folder of ``<id>.png`` tissue masks (``segment``'s
            ``masks/``). predictions: ``predict``'s ``predictions.csv`` (label and prediction in the list).
            manifest: a cohort manifest CSV (``slide_id``, ``label``): the label of slides whose predictions
            row has none.

    A score file's slide image is the one its ``slide_file`` attribute names in ``slides`` (else the image
    named like the slide id), as in ``wsigraph heatmap``.
    """
    from wsigraph.data.annotations import find_annotation
    from wsigraph.data.features import list_feature_files
    from wsigraph.pipeline.heatmaps import list_score_files, read_predictions, recorded_slide_file

    slides_dir, scores_dir = _dir(slides, "slide"), _dir(scores, "score")
    features_dir, ann_dir, masks_dir = _dir(features, "feature"), _dir(annotations, "annotation"), _dir(masks, "mask")
    images: dict[str, Path] = {}
    if slides_dir is not None:
        from wsigraph.slide import find_slides

        images = dict(find_slides([slides_dir], depth=2, allow_empty=True))
    by_name = {p.name: p for p in images.values()}
    score_files = list_score_files(scores_dir) if scores_dir is not None else {}
    feature_files = list_feature_files(features_dir) if features_dir is not None else {}
    preds: Mapping[str, Mapping[str, Any]] = {}
    if predictions is not None:
        preds = predictions if isinstance(predictions, Mapping) else read_predictions(predictions)
    labels: dict[str, str] = {}
    if manifest is not None:
        labels = _manifest_labels(Path(manifest))
    image_of: dict[str, Path] = {}
    for sid, path in score_files.items():
        name = recorded_slide_file(path)
        if name is None and sid in feature_files:
            name = recorded_slide_file(feature_files[sid])
        if name in by_name:
            image_of[sid] = by_name[name]
    claimed = set(image_of.values())
    ids = set(score_files) | set(feature_files) | {s for s, p in images.items() if p not in claimed}
    catalog: dict[str, SlideEntry] = {}
    for sid in sorted(ids):
        row = preds.get(sid) or {}
        pred = row.get("pred")
        prob = row.get(f"prob_{pred}") if pred is not None else None
        mask = masks_dir / f"{sid}.png" if masks_dir is not None and (masks_dir / f"{sid}.png").is_file() else None
        catalog[sid] = SlideEntry(
            slide_id=sid, image=image_of.get(sid, images.get(sid)), scores=score_files.get(sid),
            features=feature_files.get(sid), annotation=find_annotation(ann_dir, sid) if ann_dir else None,
            mask=mask, label=str(row["label"]) if row.get("label") is not None else labels.get(sid),
            pred=None if pred is None else str(pred), prob=None if prob is None else float(prob))
    if not catalog:
        raise InputError("nothing to show: no slide images, score files or feature files in the folders given "
                         f"(slides={slides}, scores={scores}, features={features})")
    return catalog


__all__ = ["SlideEntry", "build_catalog"]
