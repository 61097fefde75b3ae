"""The tissue and tiling stages (``wsigraph segment``, ``wsigraph tile``, and the first half of ``preprocess``).

Per slide, in ``out``:

    masks/<slide_id>.png      binary tissue mask (255 = tissue) over the whole slide, reusable with --masks
    masks/<slide_id>.geojson  its tissue outlines (polygons with holes, level-0 px): QuPath annotations
    masks/<slide_id>.json     tissue fraction and area, mask geometry, the parameters (and their provenance)
    overlays/<slide_id>.png   the mask (and, when tiled, the kept patches) drawn on a thumbnail
    coords/<slide_id>.h5      (tile) coords in level-0 px + attributes + provenance: input of extraction

A user mask ``<masks_dir>/<slide_id>.png`` replaces the segmentation for that slide. Every output records
what made it (:mod:`wsigraph.pipeline.provenance`: the segmentation and tiling parameters, the resolution
overrides, the slide file's fingerprint, the user mask's); a rerun skips a slide only when they match and
refuses when they do not (``overwrite`` recomputes). A slide without tissue fails at both stages (segment
writes its mask first, so the empty mask can be looked at).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.paths import slide_file
from wsigraph.pipeline.provenance import (
    PROVENANCE_ATTR,
    Provenance,
    provenance_differences,
    quick_fingerprint,
    read_h5_provenance,
    read_json_provenance,
)
from wsigraph.pipeline.runner import JobReport, Status, run_per_slide
from wsigraph.pipeline.shards import ShardSpec, shard_suffix

log = logging.getLogger("wsigraph")

TILING_DEFAULTS = {"target_mpp": 0.5, "patch_size": 224, "min_tissue": 0.5}


def user_mask_of(masks_dir: str | os.PathLike | None, slide_id: str) -> Path | None:
    """The user's mask ``<masks_dir>/<slide_id>.png`` when it exists, else None."""
    if masks_dir is None:
        return None
    p = slide_file(masks_dir, slide_id, ".png")
    return p if p.exists() else None


def tissue_provenance(stage: str, slide_path: str | os.PathLike, *, segment_kwargs: Mapping[str, Any] | None,
                      mpp: float | None, default_mpp: float | None, user_mask: Path | None,
                      tiling: Mapping[str, Any] | None = None) -> Provenance:
    """What a ``segment`` (``tiling`` None) or ``tile`` output of one slide is made from."""
    params: dict[str, Any] = {"mpp": mpp, "default_mpp": default_mpp,
                              "tissue": "user mask" if user_mask is not None else dict(segment_kwargs or {})}
    if tiling is not None:
        params["tiling"] = {**TILING_DEFAULTS, **dict(tiling)}
    inputs: dict[str, Any] = {"slide": quick_fingerprint(slide_path)}
    if user_mask is not None:
        inputs["user_mask"] = quick_fingerprint(user_mask)
    return Provenance(stage, params, inputs)


def _mask_and_thumbnail(slide: Any, user_mask: Path | None, segment_kwargs: Mapping[str, Any] | None):
    from wsigraph.slide.tissue import TissueMask, mask_size_for, segment_tissue

    kw = dict(segment_kwargs or {})
    thumb = slide.get_image_at_size(mask_size_for(slide.dimensions, slide.mpp, kw.get("mask_mpp", 8.0)))
    if user_mask is not None:
        return TissueMask.from_png(user_mask, slide.dimensions, slide.mpp, source=str(slide.path)), thumb
    return segment_tissue(slide, thumbnail=thumb, **kw), thumb


def _overlay_background(slide: Any, thumb: Any, min_side: int = 768, max_side: int = 1024) -> Any:
    """The mask thumbnail, or a larger one for slides whose mask is too small to look at."""
    if max(thumb.size) >= min_side or max(thumb.size) >= max(slide.dimensions):
        return thumb
    return slide.thumbnail(min(max_side, max(slide.dimensions)))


def _write_mask_record(path: Path, slide_path: Path, mask: Any, prov: Provenance) -> None:
    from wsigraph.utils.atomic import atomic_write_json

    atomic_write_json(path, {
        "slide": str(slide_path), "tissue_fraction": mask.tissue_fraction, "tissue_area_mm2": mask.tissue_area_mm2,
        "mask_size": list(mask.mask.shape[::-1]), "mask_mpp": mask.mpp, "mode": mask.mode,
        "threshold": mask.threshold, "params": mask.params, "provenance": prov.to_dict()})


def _save_contours(out: Path, slide_id: str, mask: Any, slide: Any) -> Path:
    """``masks/<id>.geojson``: the mask's tissue outlines in level-0 pixels, editable in QuPath."""
    from wsigraph.viz.geojson import write_tissue_geojson

    return write_tissue_geojson(slide_file(out / "masks", slide_id, ".geojson"), mask.mask, mask.scale,
                                mpp=slide.mpp if getattr(slide, "has_mpp", True) else None)


def segment_slide(slide_id: str, slide_path: str | os.PathLike, out: str | os.PathLike, *,
                  segment_kwargs: Mapping[str, Any] | None = None, mpp: float | None = None,
                  default_mpp: float | None = None, masks_dir: str | os.PathLike | None = None,
                  overlays: bool = True) -> dict[str, Any]:
    """Tissue mask of one slide: ``masks/<id>.png`` and its outlines ``masks/<id>.geojson`` (QuPath
    annotations), ``overlays/<id>.png``, then ``masks/<id>.json`` (the
    record a rerun checks). Returns ``{tissue_fraction}``; a slide without tissue raises after writing the
    PNGs (to look at) and before the record (so a rerun tries again)."""
    from wsigraph.slide import open_slide

    out, slide_path = Path(out), Path(slide_path)
    user = user_mask_of(masks_dir, slide_id)
    prov = tissue_provenance("segment", slide_path, segment_kwargs=segment_kwargs, mpp=mpp, default_mpp=default_mpp,
                             user_mask=user)
    with open_slide(slide_path, mpp=mpp, default_mpp=default_mpp) as slide:
        mask, thumb = _mask_and_thumbnail(slide, user, segment_kwargs)
        if overlays:
            mask.save_overlay(slide_file(out / "overlays", slide_id, ".png"), _overlay_background(slide, thumb))
        mask.save_png(slide_file(out / "masks", slide_id, ".png"))
        _save_contours(out, slide_id, mask, slide)
    if mask.is_empty:  # no record: a rerun tries again, as tile does
        raise InputError(f"{slide_path}: no tissue found (mask written to {out / 'masks'}; check it, or pass "
                         "--threshold / --keep-background / your own mask with --masks)")
    _write_mask_record(slide_file(out / "masks", slide_id, ".json"), slide_path, mask, prov)
    return {"tissue_fraction": float(mask.tissue_fraction)}


def tile_slide_to_coords(slide_id: str, slide_path: str | os.PathLike, out: str | os.PathLike, *,
                         segment_kwargs: Mapping[str, Any] | None = None, tiling: Mapping[str, Any] | None = None,
                         mpp: float | None = None, default_mpp: float | None = None,
                         masks_dir: str | os.PathLike | None = None, overlays: bool = True) -> dict[str, Any]:
    """Tissue mask and patch grid of one slide: ``masks/<id>.png`` (+ outlines ``.geojson``),
    ``overlays/<id>.png`` (patches drawn)
    and ``coords/<id>.h5`` with its provenance. Returns the tiling figures."""
    from wsigraph.slide import open_slide, tile_slide, write_coords
    from wsigraph.utils.atomic import atomic_path
    from wsigraph.viz.lattice import draw_patches

    out, slide_path = Path(out), Path(slide_path)
    if not slide_path.exists():
        raise MissingFileError(f"{slide_path}: slide file does not exist")
    tiling = {**TILING_DEFAULTS, **dict(tiling or {})}
    user = user_mask_of(masks_dir, slide_id)
    prov = tissue_provenance("tile", slide_path, segment_kwargs=segment_kwargs, mpp=mpp, default_mpp=default_mpp,
                             user_mask=user, tiling=tiling)
    with open_slide(slide_path, mpp=mpp, default_mpp=default_mpp) as slide:
        mask, thumb = _mask_and_thumbnail(slide, user, segment_kwargs)
        mask.save_png(slide_file(out / "masks", slide_id, ".png"))
        _save_contours(out, slide_id, mask, slide)
        thumb = _overlay_background(slide, thumb) if overlays else None
        try:
            coords, attrs = tile_slide(slide, mask, **tiling)
        except Exception:
            if overlays:
                mask.save_overlay(slide_file(out / "overlays", slide_id, ".png"), thumb)  # to see why
            raise
        if overlays:
            overlay = draw_patches(mask.overlay(thumb), coords, attrs["patch_size_level0"], slide.dimensions)
            with atomic_path(slide_file(out / "overlays", slide_id, ".png")) as tmp:
                overlay.save(tmp, format="PNG")
        write_coords(slide_file(out / "coords", slide_id, ".h5"), coords, {**attrs, PROVENANCE_ATTR: prov.to_json()})
    return {"n_patches": len(coords), "tissue_fraction": attrs["tissue_fraction"],
            "level0_mpp": attrs["level0_mpp"], "patch_size_level0": attrs["patch_size_level0"],
            "patch_level": attrs["patch_level"]}


# ----------------------------------------------------------------------------------------------- status


def coords_status(path: Path, expected: Provenance) -> Status:
    """``"missing"``, ``"done"`` or the differences of a coords file from what this run would write."""
    from wsigraph.data.features import is_complete_feature_file

    if not is_complete_feature_file(path, require_features=False):
        return "missing"
    diffs = provenance_differences(read_h5_provenance(path), expected)
    return diffs or "done"


def mask_status(path: Path, expected: Provenance) -> Status:
    """``"missing"``, ``"done"`` or the differences of a mask record (``masks/<id>.json``)."""
    if not path.exists():
        return "missing"
    diffs = provenance_differences(read_json_provenance(path), expected)
    return diffs or "done"


# ----------------------------------------------------------------------------------------------- cohorts


def _jobs_of(slides: Sequence[Any]) -> list[tuple[str, Any]]:
    return [(j.slide_id, j) for j in slides]


def segment_cohort(slides: Sequence[Any], out: str | os.PathLike, *, segment_kwargs: Mapping[str, Any] | None = None,
                   default_mpp: float | None = None, masks_dir: str | os.PathLike | None = None,
                   on_error: str = "skip", report_path: str | os.PathLike | None = None, overwrite: bool = False,
                   progress: bool = True, shard: ShardSpec = None) -> JobReport:
    """:func:`segment_slide` for each ``SlideJob`` (``slide_id``, ``slide_path``, ``mpp``) through the runner;
    the report goes to ``report_path`` (default ``out/segment_report.csv``); ``shard`` as in
    :func:`~wsigraph.pipeline.runner.run_per_slide` (default from ``RANK``/``WORLD_SIZE``)."""
    out = Path(out)

    def prov(job: Any) -> Provenance:
        return tissue_provenance("segment", job.slide_path, segment_kwargs=segment_kwargs, mpp=job.mpp,
                                 default_mpp=default_mpp, user_mask=user_mask_of(masks_dir, job.slide_id))

    def status(sid: str, job: Any) -> Status:
        return mask_status(slide_file(out / "masks", sid, ".json"), prov(job))

    def one(sid: str, job: Any) -> dict[str, Any]:
        return segment_slide(sid, job.slide_path, out, segment_kwargs=segment_kwargs, mpp=job.mpp,
                             default_mpp=default_mpp, masks_dir=masks_dir)

    return run_per_slide(_jobs_of(slides), one, status=status, overwrite=overwrite, on_error=on_error, desc="segment",
                         stage="segment", report_path=report_path or out / "segment_report.csv", progress=progress,
                         shard=shard)


def tile_cohort(slides: Sequence[Any], out: str | os.PathLike, *, segment_kwargs: Mapping[str, Any] | None = None,
                tiling: Mapping[str, Any] | None = None, default_mpp: float | None = None,
                masks_dir: str | os.PathLike | None = None, on_error: str = "skip",
                report_path: str | os.PathLike | None = None, overwrite: bool = False,
                progress: bool = True, shard: ShardSpec = None) -> JobReport:
    """:func:`tile_slide_to_coords` for each ``SlideJob`` through the runner, then ``out/tiling_summary.csv``
    (one row per slide: status, patches, tissue fraction ...); report ``out/tile_report.csv``; with a shard
    (default from ``RANK``/``WORLD_SIZE``) both names carry ``.shard-i-of-n``."""
    import pandas as pd

    from wsigraph.utils.atomic import atomic_path

    out = Path(out)
    tiling = {**TILING_DEFAULTS, **dict(tiling or {})}

    def prov(job: Any) -> Provenance:
        return tissue_provenance("tile", job.slide_path, segment_kwargs=segment_kwargs, mpp=job.mpp,
                                 default_mpp=default_mpp, user_mask=user_mask_of(masks_dir, job.slide_id), tiling=tiling)

    def status(sid: str, job: Any) -> Status:
        return coords_status(slide_file(out / "coords", sid, ".h5"), prov(job))

    def one(sid: str, job: Any) -> dict[str, Any]:
        return tile_slide_to_coords(sid, job.slide_path, out, segment_kwargs=segment_kwargs, tiling=tiling,
                                    mpp=job.mpp, default_mpp=default_mpp, masks_dir=masks_dir)

    report = run_per_slide(_jobs_of(slides), one, status=status, overwrite=overwrite, on_error=on_error, desc="tile",
                           stage="tile", report_path=report_path or out / "tile_report.csv", progress=progress,
                           shard=shard)
    rows = [{"slide_id": sid, "status": "done", **report.results[sid]} for sid in report.done]
    rows += [{"slide_id": sid, "status": "already complete"} for sid in report.resumed]
    rows += [{"slide_id": sid, "status": "failed", "error": err} for sid, err in report.failed.items()]
    if rows:
        with atomic_path(out / f"tiling_summary{shard_suffix(report.shard)}.csv") as tmp:
            table = pd.DataFrame(rows).sort_values("slide_id")
            for col in ("n_patches", "patch_size_level0", "patch_level"):
                if col in table:
                    table[col] = table[col].astype("Int64")
            table.to_csv(tmp, index=False)
    return report


__all__ = ["TILING_DEFAULTS", "coords_status", "mask_status", "segment_cohort", "segment_slide", "tile_cohort",
           "tile_slide_to_coords", "tissue_provenance", "user_mask_of"]
