"""The prediction stage (``wsigraph predict``): a checkpoint on feature files without labels.

Writes ``predictions.csv`` (``slide_id,pred,prob_<class>...``; survival: ``slide_id,risk,surv_bin<k>...``;
regression: ``slide_id,pred``) and, for models with per-patch scores,
``scores/<slide_id>.h5`` in the scores-file format of :mod:`wsigraph.data.scores`::

    coords  (N, 2) int64    level-0 pixels, top-left (as in the feature file)
    scores  (N,)   float32  the model's per-patch score (attention, instance logit, ...)
    attrs   patch_size_level0, slide_id, score_name ("<model> patch score"), and the slide's prediction:
            model, task, outputs_row / outputs_names (the predictions row), classification: classes, probs (C,),
            pred; survival: risk; regression: pred_value; slide_file (the slide image's name, where the feature file
            records it), level0_width/height

``wsigraph heatmap`` draws it. Each scores file records its provenance (attribute ``wsigraph_provenance``,
:mod:`wsigraph.pipeline.provenance`): the checkpoint's SHA-256, its model and classes, the graph settings,
``no_coords``, the autocast precision and the feature file's fingerprint. A rerun skips slides whose
scores file records what this run would write (resume); when any records something else (another
checkpoint, e.g. fold_1's after fold_0's) the job refuses before any work, naming the parameter, unless
``overwrite`` (recompute). ``on_error="skip"`` goes on past bad slides and lists them in
``predict_report.csv``. The inference loop is :mod:`wsigraph.train.inference`'s, shared with ``evaluate``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from wsigraph.errors import InputError, MissingFileError, WsigraphError
from wsigraph.pipeline.paths import check_slide_id, slide_file
from wsigraph.pipeline.provenance import (PROVENANCE_ATTR, Provenance, file_sha256, provenance_differences,
                                          quick_fingerprint, read_h5_provenance)
from wsigraph.pipeline.runner import Status, run_per_slide
from wsigraph.pipeline.shards import ShardSpec, shard_suffix
from wsigraph.pipeline.validate import check_against_checkpoint, source_of_file
from wsigraph.train.inference import (checkpoint_graph, feature_dim, iter_outputs, make_dataset, make_loader,
                                      trained_features, write_csv)
from wsigraph.utils.device import resolve_device

log = logging.getLogger("wsigraph")


def _feature_files(features: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Path]:
    from wsigraph.data.features import list_feature_files

    if isinstance(features, (str, os.PathLike)) and Path(features).is_dir():
        files = list_feature_files(features)
        if not files:
            raise InputError(f"{features}: no feature files (.h5/.hdf5/.pt) in this folder")
        for sid, path in files.items():  # every id is an output name: checked before anything is written
            check_slide_id(sid, f"{path} (slide id from the file name)")
        return files
    items = [features] if isinstance(features, (str, os.PathLike)) else list(features)
    out: dict[str, Path] = {}
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.update(_feature_files(p))
            continue
        if not p.exists():
            raise MissingFileError(f"{p}: feature file does not exist")
        check_slide_id(p.stem, f"{p} (slide id from the file name)")
        if p.stem in out and out[p.stem] != p:
            raise InputError(f"{p}: slide id {p.stem!r} given twice ({out[p.stem]} and {p})")
        out[p.stem] = p
    if not out:
        raise InputError("no feature files given")
    return out


def _scores_file_row(path: Path) -> np.ndarray | None:
    """The slide's prediction row a finished ``predict`` stored in a scores file (``outputs_row``; class
    probabilities ``probs`` in files from before tasks); None: absent or unreadable."""
    from wsigraph.data.scores import load_scores

    try:
        attrs = load_scores(path).attrs
    except WsigraphError:
        return None
    for key in ("outputs_row", "probs"):
        if key in attrs:
            return np.asarray(attrs[key], dtype=np.float64).reshape(-1)
    return None


def precision_name(device: Any, precision: str) -> str:
    """The autocast that :func:`~wsigraph.train.inference.iter_outputs` runs under (``"fp32"``,
    ``"bfloat16"``, ``"float16"``): it changes the scores, so it is recorded."""
    from wsigraph.train.inference import _autocast

    dtype = getattr(_autocast(device, precision), "fast_dtype", None)
    return "fp32" if dtype is None else str(dtype).replace("torch.", "")


def predict_params(ckpt: Any, checkpoint_digest: str, graph: Any, no_coords: bool, precision: str) -> dict[str, Any]:
    """The parameters a scores file records: the checkpoint (its SHA-256 digest, model, classes), the graph
    settings that change the graph, ``no_coords`` and the precision."""
    return {"checkpoint": {"sha256": checkpoint_digest, "model": ckpt.model_name},
            "classes": [str(c) for c in ckpt.classes], "graph": graph.cache_fields(), "no_coords": bool(no_coords),
            "precision": precision}


def predict(checkpoint: str | os.PathLike, features: str | os.PathLike | Sequence[str | os.PathLike],
            out_dir: str | os.PathLike, *, device: str = "auto", precision: str = "auto",
            cache_dir: str | os.PathLike | None = None, on_error: str = "skip", progress: bool = True,
            allow_feature_mismatch: bool = False, report_path: str | os.PathLike | None = None,
            shard: ShardSpec = None, no_coords: bool = False, overwrite: bool = False) -> Any:
    """Class probabilities and per-patch scores for slides without labels.

    Args:
        checkpoint: a wsigraph checkpoint.
        features: a folder of feature files, one file, or a list of files/folders.
        out_dir: gets ``predictions.csv`` (``slide_id,pred,prob_<class>...``; every slide done now or on an
            earlier run) and ``scores/<slide_id>.h5``.
        on_error: ``"skip"`` (failed slides listed in the report) or ``"raise"``.
        report_path: the report CSV (default ``out_dir/predict_report.csv``).
        no_coords: read the slides without coordinates (plain ``.pt`` tensors; models that need no graph):
            score files then hold no ``coords`` (rows follow the bag's rows) and cannot be drawn as heatmaps.
        allow_feature_mismatch: predict slides whose features come from another encoder, weights or
            resolution than the checkpoint's training features (by default such a slide fails, reported).
        shard: predict only this shard's slides (:mod:`wsigraph.pipeline.shards`; default from
            ``RANK``/``WORLD_SIZE``): its table is ``predictions.shard-i-of-n.csv`` and its report
            ``predict_report.shard-i-of-n.csv``, so shards can share one output folder.
        overwrite: recompute every slide, also those whose scores file was made with other parameters
            (without it such a file makes the job refuse before any work, naming the parameter).

    Returns:
        the :class:`~wsigraph.pipeline.runner.JobReport`; ``results[slide_id]`` holds the probabilities (C,) of
        the slides predicted in this run.
    """
    from wsigraph.data.features import read_coords
    from wsigraph.data.scores import write_scores
    from wsigraph.train.checkpoint import load_checkpoint

    from wsigraph.tasks.cohort import task_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    task = task_from_checkpoint(ckpt)
    files = _feature_files(features)
    out = Path(out_dir)
    scores_dir = out / "scores"
    dev = resolve_device(device)
    model = ckpt.build_model(dev)
    graph = checkpoint_graph(ckpt, no_coords)
    classes = ckpt.classes

    trained = trained_features(ckpt)
    params = predict_params(ckpt, file_sha256(ckpt.path or checkpoint), graph, no_coords,
                            precision_name(dev, precision))

    def provenance_of(path: Path) -> Provenance:
        return Provenance("predict", params, {"features": quick_fingerprint(path)})

    def run_one(sid: str, path: Path) -> np.ndarray:
        d = feature_dim(path)
        if d != ckpt.in_dim:
            raise InputError(f"slide {sid!r} ({path}) has feature dimension {d}, but the checkpoint "
                             f"{ckpt.path} expects {ckpt.in_dim} (in_dim)")
        check_against_checkpoint(source_of_file(path), trained, where=f"slide {sid!r} ({path})",
                                 checkpoint=str(ckpt.path), force=allow_feature_mismatch)
        ds = make_dataset([path], [sid], None, graph, cache_dir)
        loader = make_loader(ds, num_workers=0)
        _, outputs, scores = next(iter_outputs(model, loader, [sid], dev, precision))
        row = task.eval_row(outputs).double().numpy()
        if scores is not None:
            prediction: dict[str, Any] = {"model": ckpt.model_name, "task": task.name, "outputs_row": row,
                                          "outputs_names": task.row_names()}
            if task.name == "classification":
                prediction.update({"classes": list(classes), "probs": row, "pred": classes[int(np.argmax(row))]})
            elif task.name == "survival":
                prediction["risk"] = float(row[0])
            else:
                prediction["pred_value"] = float(row[0])
            coords, step = None, None
            if graph.uses_coords:
                bag = read_coords(path)  # the feature reader's coords: CLAM/TRIDENT/STAMP conventions as in training
                prediction.update({k: bag.attrs[k] for k in ("coords_unit", "coords_mpp", "level0_width",
                                                             "level0_height") if k in bag.attrs})
                slide_name = bag.attrs.get("slide_file") or bag.attrs.get("slide_path")
                if isinstance(slide_name, str) and slide_name.strip():  # heatmap --slides finds the image by it
                    prediction["slide_file"] = Path(slide_name.replace("\\", "/")).name
                coords, step = bag.coords, bag.patch_size_level0
            prediction[PROVENANCE_ATTR] = provenance_of(path).to_json()
            write_scores(slide_file(scores_dir, sid, ".h5"), scores, coords, patch_size_level0=step,
                         slide_id=sid, score_name=f"{ckpt.model_name} patch score", attrs=prediction)
        else:
            stale = slide_file(scores_dir, sid, ".h5")
            if stale.exists():  # left by another checkpoint (overwrite): it no longer describes this slide
                stale.unlink()
                log.info("removed %s: model %r gives no per-patch scores", stale, ckpt.model_name)
        return row

    stored: dict[str, np.ndarray] = {}  # prediction rows of the slides finished by an earlier run

    def status(sid: str, path: Path) -> Status:
        scores_path = slide_file(scores_dir, sid, ".h5")
        if not scores_path.exists():
            return "missing"
        try:
            want = provenance_of(path)
        except OSError:
            return "missing"  # the feature file cannot be read now: run it, and let it fail with the reason
        diffs = provenance_differences(read_h5_provenance(scores_path), want)
        if diffs:
            return diffs
        p = _scores_file_row(scores_path)
        if p is None:
            return "missing"
        stored[sid] = p
        return "done"

    report = run_per_slide(list(files.items()), run_one, on_error=on_error, status=status, overwrite=overwrite,
                           desc="predict", report_path=report_path or out / "predict_report.csv", stage="predict",
                           progress=progress, shard=shard)
    if report.done and not any(slide_file(scores_dir, s, ".h5").exists() for s in report.done):
        log.warning("model %r gives no per-patch scores: no scores/*.h5 written", ckpt.model_name)
    found = {**stored, **report.results}
    mine = set(report.done) | set(report.resumed) | set(report.failed)
    ids = [sid for sid in files if sid in found and (report.shard is None or sid in mine)]
    rows = np.stack([found[sid] for sid in ids]) if ids else np.zeros((0, len(task.row_names())))
    path = write_csv(task.predictions_frame(ids, None, rows), out / f"predictions{shard_suffix(report.shard)}.csv")
    log.info("predict: %s; predictions in %s", report.summary(), path)
    return report


__all__ = ["precision_name", "predict", "predict_params"]
