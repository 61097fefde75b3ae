"""``wsigraph preprocess``: tissue segmentation -> tiling -> feature extraction for each slide of a cohort.

Output layout (TRIDENT-like, one folder per stage, so each stage can be rerun or replaced)::

    out/coords/<slide_id>.h5                   coords-only files with their provenance (as ``wsigraph tile``)
    out/masks/<slide_id>.png                   binary tissue mask (255 = tissue; reusable with --masks)
    out/overlays/<slide_id>.png                mask and kept patches drawn on a thumbnail (quality control)
    out/features_<encoder>/<slide_id>.h5       feature files
    out/preprocess_summary[.shard-i-of-n].json per-slide patches / seconds, failures
    out/preprocess_report[...].csv             slide_id,stage,status,error: every slide of the last run

Resumable at both stages: coords and feature files made with this run's parameters are reused; files made
with other parameters make the job refuse before any work, naming the parameters (``overwrite`` recomputes).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from wsigraph.errors import MissingFileError, WsigraphError
from wsigraph.features.encoders import PatchEncoder
from wsigraph.pipeline.extract import encoder_folder_name, run_extraction_job
from wsigraph.pipeline.paths import slide_file
from wsigraph.pipeline.shards import ShardSpec
from wsigraph.pipeline.slides import SlideJob, open_slide_with

log = logging.getLogger("wsigraph")

def preprocess_cohort(
    slides: Sequence[SlideJob],
    out_dir: str | os.PathLike,
    encoder: PatchEncoder,
    *,
    target_mpp: float = 0.5,
    patch_size: int = 224,
    min_tissue: float = 0.5,
    segment_kwargs: Mapping[str, Any] | None = None,
    default_mpp: float | None = None,
    masks_dir: str | os.PathLike | None = None,
    save_masks: bool = True,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "auto",
    amp: str = "auto",
    features_dtype: str = "float32",
    shard: ShardSpec = None,
    on_error: str = "skip",
    report_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
):
    """Run segmentation, tiling and extraction for each slide; returns the ``JobReport``.

    Args:
        slides: from :func:`wsigraph.pipeline.slides.read_slide_list` (``SlideJob.mpp`` overrides that slide's resolution).
        default_mpp: level-0 µm/px for slides whose files record none.
        segment_kwargs: options of :func:`wsigraph.slide.segment_tissue` (``mode``, ``method`` ...).
        masks_dir: user masks ``<masks_dir>/<slide_id>.png`` used instead of the segmentation where present.
        save_masks: write ``masks/<id>.png`` (binary) and ``overlays/<id>.png`` as ``wsigraph tile`` does.
        shard, on_error, report_path, overwrite: as in :func:`wsigraph.pipeline.extract.extract_cohort`.

    The tissue and tiling stage is :func:`wsigraph.pipeline.tiling.tile_slide_to_coords`, the same as
    ``wsigraph tile``. A failing slide is reported with the stage that failed (``tissue/tiling`` or
    ``extraction``) and the others go on (``on_error="skip"``). Resume: coords and features are reused only
    when they record the parameters of this run (tissue, tiling, resolution, encoder and its weights,
    precision; see :mod:`wsigraph.pipeline.provenance`); otherwise the job refuses before any work.
    """
    from wsigraph.pipeline.provenance import Provenance
    from wsigraph.pipeline.tiling import coords_status, tile_slide_to_coords, tissue_provenance, user_mask_of

    out_dir = Path(out_dir)
    coords_dir = out_dir / "coords"
    coords_dir.mkdir(parents=True, exist_ok=True)
    tiling = {"target_mpp": target_mpp, "patch_size": patch_size, "min_tissue": min_tissue}

    def tile_prov(job: SlideJob) -> Provenance:
        if job.slide_path is None or not Path(job.slide_path).exists():
            raise MissingFileError(f"{job.slide_path}: slide file does not exist")
        return tissue_provenance("tile", job.slide_path, segment_kwargs=segment_kwargs, mpp=job.mpp,
                                 default_mpp=default_mpp, user_mask=user_mask_of(masks_dir, job.slide_id), tiling=tiling)

    def coords_state(job: SlideJob) -> Any:
        try:
            return coords_status(slide_file(coords_dir, job.slide_id, ".h5"), tile_prov(job))
        except WsigraphError:
            return "missing"  # the slide cannot be read: run it, and let it fail with the reason

    def coords_of(job: SlideJob) -> Path:
        coords_path = slide_file(coords_dir, job.slide_id, ".h5")
        if overwrite or coords_state(job) != "done":
            try:
                tile_slide_to_coords(job.slide_id, Path(job.slide_path), out_dir, segment_kwargs=segment_kwargs,
                                     tiling=tiling, mpp=job.mpp, default_mpp=default_mpp, masks_dir=masks_dir,
                                     overlays=save_masks)
            except WsigraphError as e:
                raise type(e)(f"tissue/tiling: {e}") from e
        return coords_path

    def provenance_of(job: SlideJob, encoder_params: dict[str, Any]) -> Provenance:
        tile = tile_prov(job)
        return Provenance("preprocess", {**encoder_params, "tile": tile.params}, tile.inputs)

    feat_dir = out_dir / f"features_{encoder_folder_name(encoder.name)}"
    opener = functools.partial(open_slide_with, default_mpp=default_mpp)
    return run_extraction_job(
        slides, out_dir, feat_dir, encoder, coords_of, command="preprocess", tiling=True,
        extract_kwargs=dict(batch_size=batch_size, num_workers=num_workers, amp=amp, features_dtype=features_dtype,
                            opener=opener),
        device=device, shard=shard, on_error=on_error, report_path=report_path, overwrite=overwrite,
        progress=progress, provenance_of=provenance_of, coords_status=coords_state,
        summary={"features": str(feat_dir), "coords": str(coords_dir), "target_mpp": target_mpp,
                 "patch_size": patch_size, "min_tissue": min_tissue})
