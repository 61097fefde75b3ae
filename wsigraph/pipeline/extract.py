"""The extraction stage (``wsigraph extract``): feature files for a cohort of slides with coords files.

:func:`extract_cohort` runs :func:`wsigraph.features.extract.extract_features` (one slide) per slide through
:func:`wsigraph.pipeline.runner.run_per_slide`, so a long job shows its progress, resumes (slides whose output was
made with the same parameters are skipped), skips and reports slides that fail, and can be split over processes
or machines (:mod:`wsigraph.pipeline.shards`). :func:`run_extraction_job` is the job behind ``extract`` and
``preprocess`` (:mod:`wsigraph.pipeline.preprocess`).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from wsigraph.errors import MissingFileError, WsigraphError
from wsigraph.features.encoders import PatchEncoder
from wsigraph.features.extract import extract_features
from wsigraph.pipeline.paths import slide_file
from wsigraph.pipeline.shards import ShardSpec, shard_suffix
from wsigraph.pipeline.slides import SlideJob
from wsigraph.utils.device import resolve_device

log = logging.getLogger("wsigraph")


# ----------------------------------------------------------------------------------------------------
# cohorts
# ----------------------------------------------------------------------------------------------------


def encoder_folder_name(name: str) -> str:
    """A folder-safe form of an encoder name (``timm:resnet18`` -> ``timm-resnet18``)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def extract_cohort(
    jobs: Sequence[SlideJob],
    out_dir: str | os.PathLike,
    encoder: PatchEncoder,
    *,
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
    opener: Callable[..., Any] | None = None,
):
    """Extract features for many slides into ``out_dir/<slide_id>.h5``; returns the ``JobReport``.

    Slides whose file records the same provenance (encoder and weights, precision, storage dtype, slide,
    coords; :mod:`wsigraph.pipeline.provenance`) are skipped (resume) unless ``overwrite``; when any file
    in the folder was made otherwise, nothing runs (:class:`~wsigraph.pipeline.runner.StaleOutputError`
    names the slides and parameters), so features are never overwritten or mixed silently. ``shard``: ``"i/n"`` or ``(i, n)``; default from ``RANK``/``WORLD_SIZE`` (torchrun) or
    ``SLURM_PROCID``/``SLURM_NTASKS``. Failures are written to ``report_path`` (default
    ``out_dir/extract_report[.shard-i-of-n].csv``) and a summary to ``out_dir/extract_summary[...].json``.
    """
    def coords_of(job: SlideJob) -> Path:
        if job.slide_path is None:
            raise MissingFileError(f"no slide file found for {job.slide_id!r} (coords {job.coords_path})")
        if job.coords_path is None:
            raise MissingFileError(f"no coords file for {job.slide_id!r}")
        return Path(job.coords_path)

    out_dir = Path(out_dir)
    return run_extraction_job(
        jobs, out_dir, out_dir, encoder, coords_of, command="extract",
        extract_kwargs=dict(batch_size=batch_size, num_workers=num_workers, amp=amp, features_dtype=features_dtype,
                            opener=opener),
        device=device, shard=shard, on_error=on_error, report_path=report_path, overwrite=overwrite,
        progress=progress)


def run_extraction_job(
    jobs: Sequence[SlideJob],
    out_dir: Path,
    feat_dir: Path,
    encoder: PatchEncoder,
    coords_of: Callable[[SlideJob], Path],
    *,
    command: str,
    extract_kwargs: dict[str, Any],
    device: str | torch.device,
    shard: ShardSpec,
    on_error: str,
    report_path: str | os.PathLike | None,
    overwrite: bool,
    progress: bool,
    tiling: bool = False,
    summary: dict[str, Any] | None = None,
    provenance_of: Callable[[SlideJob, dict[str, Any]], Any] | None = None,
    coords_status: Callable[[SlideJob], Any] | None = None,
):
    """The cohort job behind ``extract`` and ``preprocess``: ``feat_dir/<slide_id>.h5`` for each slide of this
    shard, through :func:`~wsigraph.pipeline.runner.run_per_slide`; returns the ``JobReport``.

    Args:
        coords_of: ``coords_of(job) -> Path``, the slide's coords file (with ``tiling``, it makes it); what
            it raises is that slide's failure.
        command: names the progress bar, the report's stage and ``out_dir/<command>_report[.shard].csv``
            (default report) and ``out_dir/<command>_summary[.shard].json``.
        extract_kwargs: the options of :func:`~wsigraph.features.extract.extract_features` besides the paths,
            the encoder, the device, ``slide_mpp`` (``SlideJob.mpp``) and ``progress``.
        tiling: ``coords_of`` tiles the slide (``preprocess``): failures name their stage (``tissue/tiling``
            is ``coords_of``'s to say, ``extraction`` this function's) and each slide's result records its
            coords file and tiling time.
        summary: more entries of the JSON summary.
        provenance_of: ``provenance_of(job, encoder_params) -> Provenance`` of the slide's feature file
            (default: :func:`extraction_provenance`, which fingerprints the slide and digests the coords).
        coords_status: with ``tiling``, the status of the slide's coords file (``"done"``, ``"missing"`` or its
            differences), checked before any work so stale coords are refused like stale features.

    Resume: a slide is skipped when its feature file records the provenance this run would write; when any
    records another one, nothing runs and the job says which parameters differ (``overwrite`` recomputes).
    """
    from wsigraph.pipeline.runner import run_per_slide

    out_dir, feat_dir = Path(out_dir), Path(feat_dir)
    for d in (out_dir, feat_dir):
        d.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    encoder = encoder.to(dev).eval()
    if report_path is None:
        report_path = out_dir / f"{command}_report.csv"

    from wsigraph.features.extract import amp_name, resolve_amp
    from wsigraph.pipeline.provenance import provenance_differences, read_h5_provenance

    encoder_params = {"encoder": encoder.identity(),
                      "amp": amp_name(resolve_amp(extract_kwargs.get("amp", "auto"), dev, encoder)),
                      "features_dtype": extract_kwargs.get("features_dtype", "float32")}
    expected = provenance_of or (lambda job, params: extraction_provenance(job, coords_of(job), params))

    def status(slide_id: str, job: SlideJob) -> Any:
        out = slide_file(feat_dir, slide_id, ".h5")
        from wsigraph.data.features import is_complete_feature_file

        if is_complete_feature_file(out):
            try:
                want = expected(job, encoder_params)
            except WsigraphError:
                return "missing"  # its inputs cannot be read now: run it, and let it fail with the reason
            return provenance_differences(read_h5_provenance(out), want) or "done"
        if coords_status is not None:
            st = coords_status(job)
            if st not in ("done", "missing"):
                return [f"coords: {d}" for d in st]
        return "missing"

    def run_one(slide_id: str, job: SlideJob) -> dict[str, Any]:
        out = slide_file(feat_dir, slide_id, ".h5")
        t0 = time.perf_counter()
        coords_path = coords_of(job)
        t1 = time.perf_counter()
        try:
            res = extract_features(job.slide_path, coords_path, out, encoder, device=dev, slide_mpp=job.mpp,
                                   progress=progress, provenance=expected(job, encoder_params), **extract_kwargs)
        except WsigraphError as e:
            if not tiling:
                raise
            raise type(e)(f"extraction: {e}") from e
        result = res.as_dict()
        if tiling:
            result.update(coords=str(coords_path), tiling_seconds=round(t1 - t0, 3),
                          seconds=round(time.perf_counter() - t0, 3))
        return result

    t0 = time.perf_counter()
    report = run_per_slide([(j.slide_id, j) for j in jobs], run_one, on_error=on_error, status=status,
                           overwrite=overwrite, desc=command, report_path=report_path, stage=command,
                           progress=progress, shard=shard)
    write_job_summary(out_dir / f"{command}_summary{shard_suffix(report.shard)}.json", report,
                      time.perf_counter() - t0,
                      extra={"encoder": encoder.name, "encoder_weights": encoder.weights_label,
                             "device": str(dev), **(summary or {}),
                             "shard": list(report.shard) if report.shard else None,
                             "report": str(report.report_path) if report.failed else None})
    return report


def extraction_provenance(job: SlideJob, coords_path: Path, encoder_params: dict[str, Any]) -> Any:
    """Provenance of an ``extract`` feature file: the encoder, precision and storage type, the slide's mpp
    override, the slide file's fingerprint and the digest of the coords (values and patch size)."""
    import numpy as np

    from wsigraph.features.extract import _read_coords_file
    from wsigraph.pipeline.provenance import Provenance, array_digest, quick_fingerprint

    if job.slide_path is None or not Path(job.slide_path).exists():
        raise MissingFileError(f"{job.slide_path}: slide file does not exist")
    coords, _, step = _read_coords_file(Path(coords_path))
    return Provenance("extract", {**encoder_params, "slide_mpp": job.mpp},
                      {"slide": quick_fingerprint(job.slide_path),
                       "coords": {"digest": array_digest(coords, np.asarray([step]))}})


def write_job_summary(path: Path, report: Any, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write (atomically) and log a JSON summary of a cohort job: counts, patches, patches/s, failures."""
    from wsigraph.utils.atomic import atomic_write_json

    patches = sum(int(r.get("n_patches", 0)) for r in report.results.values() if isinstance(r, dict))
    summary = {
        "done": len(report.done), "already_complete": len(report.resumed), "failed": len(report.failed),
        "patches": patches, "seconds": round(seconds, 2),
        "patches_per_s": round(patches / seconds, 2) if seconds > 0 and patches else None,
        **(extra or {}),
        "slides": report.results, "failures": report.failed,
    }
    atomic_write_json(path, summary)
    log.warning("%s; %d patches in %.1f s (%s patches/s); summary: %s", report.summary(), patches, seconds,
                summary["patches_per_s"], path)
    return summary
