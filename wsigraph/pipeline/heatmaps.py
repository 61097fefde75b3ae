"""The heatmap stage (``wsigraph heatmap``): per-patch scores drawn over their slides, one slide or a cohort.

For each score file (:mod:`wsigraph.data.scores`; e.g. ``wsigraph predict``'s ``scores/<slide_id>.h5``)::

    OUT/<slide_id>.heatmap.png    scores over the slide thumbnail (or a canvas drawn from the patches)
    OUT/<slide_id>.geojson        one QuPath object per patch with its score (unless geojson=False)
    OUT/<slide_id>.topk.png       the top-k patches (needs the slide image); .bottomk.png likewise
    OUT/<slide_id>.heatmap.json   what was written and what made it (written last: the slide is done)

Where each part comes from:

* **coordinates**: the score file's own ``coords``, else the slide's feature/coords file (``features``: a file,
  or a folder searched for ``<slide_id>.h5``); row ``i`` scores patch ``i``.
* **slide image**: ``slide`` (one score file only), else the file in the ``slides`` folder named by the score
  file's ``slide_file`` attribute or, failing that, by the slide id. A recorded absolute ``slide_path`` is
  never opened by itself: slides are read only from the folders given. Without an image the canvas is drawn
  from the patches (synthetic cohorts, features only).
* **title**: the slide id with its prediction (and label) from ``predictions`` (``predict``'s CSV) or, when
  not given, from the score file's ``pred``/``probs`` attributes.

Runs through :func:`wsigraph.pipeline.runner.run_per_slide`: resume (a slide is skipped when its record
lists the same options and inputs; a record with other options stops the job before any work, naming them),
``on_error``, shards and the report ``OUT/heatmap_report.csv``. Percentile normalisation is the default, as
in CLAM's heatmaps: the colours rank the patches of each slide.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from wsigraph.errors import InputError, MissingFileError
from wsigraph.pipeline.paths import check_slide_id, slide_file
from wsigraph.pipeline.provenance import Provenance, provenance_differences, quick_fingerprint, read_json_provenance
from wsigraph.pipeline.runner import JobReport, Status, run_per_slide
from wsigraph.pipeline.shards import ShardSpec

SCORE_SUFFIXES = (".h5", ".hdf5", ".npy", ".csv", ".pt")
NORMALIZE_CHOICES = ("percentile", "minmax", "none")
OBJECT_TYPES = ("detection", "tile", "annotation")
RECORD_SUFFIX = ".heatmap.json"
#: level-0 µm/px override: one value for every slide, per slide id, or a function of the slide id (None: the file's)
MppSpec = Union[float, Mapping[str, float], Callable[[str], Union[float, None]], None]


@dataclass(frozen=True)
class HeatmapOptions:
    """How the heatmaps are drawn (each one is recorded; a rerun with others is refused unless overwrite).

    Attributes:
        key: dataset / dict key of the scores (None: ``scores``, ``patch_scores``, ``attention``, ``A``).
        column: for (N, C) scores a class index or name; for CSV the score column.
        cmap: matplotlib colour map. blur: Gaussian sigma in patches (0: none). alpha: opacity in [0, 1].
        normalize: ``"percentile"`` (rank within the slide, the default), ``"minmax"`` or ``"none"``.
        vmin, vmax: colour range of the drawn values (None: their range).
        max_size: longest side of the drawn slide in pixels.
        top_k, bottom_k: patches in the galleries of the highest / lowest scores (need the slide image).
        object_type: QuPath object type of the GeoJSON patches. geojson: write the GeoJSON.
    """

    key: str | None = None
    column: str | None = None
    cmap: str = "jet"
    blur: float = 0.0
    alpha: float = 0.5
    normalize: str = "percentile"
    vmin: float | None = None
    vmax: float | None = None
    max_size: int = 1024
    top_k: int = 16
    bottom_k: int = 0
    object_type: str = "detection"
    geojson: bool = True

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE_CHOICES:
            raise InputError(f"normalize must be one of {NORMALIZE_CHOICES}, got {self.normalize!r}")
        if self.object_type not in OBJECT_TYPES:
            raise InputError(f"object_type must be one of {OBJECT_TYPES}, got {self.object_type!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if float(self.blur) < 0:
            raise InputError(f"blur must be >= 0 patches, got {self.blur}")
        if int(self.max_size) < 16:
            raise InputError(f"max_size must be at least 16 pixels, got {self.max_size}")
        if int(self.top_k) < 0 or int(self.bottom_k) < 0:
            raise InputError(f"top_k and bottom_k must be >= 0, got {self.top_k} and {self.bottom_k}")


@dataclass(frozen=True)
class HeatmapJob:
    """One slide's inputs: its score file, feature/coords file and slide image (None where absent)."""

    scores: Path
    features: Path | None = None
    slide: Path | None = None
    mpp: float | None = None
    prediction: Mapping[str, Any] | None = None
    title: str | None = None


def slide_id_of_scores(path: str | os.PathLike) -> str:
    """``<id>.scores.npy`` / ``<id>.h5`` ... -> ``<id>``."""
    name = Path(path).name
    for suffix in SCORE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[: -len(".scores")] if name.endswith(".scores") else name


def list_score_files(scores: str | os.PathLike) -> dict[str, Path]:
    """slide id -> score file for one file or every score file (:data:`SCORE_SUFFIXES`) of a folder."""
    p = Path(scores)
    if not p.exists():
        raise MissingFileError(f"{p}: score file or folder does not exist")
    if not p.is_dir():
        return {slide_id_of_scores(p): p}
    out: dict[str, Path] = {}
    for f in sorted(p.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SCORE_SUFFIXES \
                and not f.name.endswith(RECORD_SUFFIX):
            sid = slide_id_of_scores(f)
            if sid in out:
                raise InputError(f"{p}: two score files for slide {sid!r}: {out[sid].name} and {f.name}")
            out[sid] = f
    if not out:
        raise InputError(f"{p}: no score files in this folder (looked for {', '.join(SCORE_SUFFIXES)})")
    return out


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """slide id -> row of a predictions CSV (``slide_id,[label,]pred,prob_<class>...``)."""
    from wsigraph.data.tables import read_table

    path = Path(path)
    df = read_table(path)
    if "slide_id" not in df.columns or "pred" not in df.columns:
        raise InputError(f"{path}: a predictions table needs the columns slide_id and pred (has {list(df.columns)})")
    rows: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(df.to_dict("records"), start=2):
        sid = str(row["slide_id"])
        if sid in rows:
            raise InputError(f"{path}, line {i}: slide_id {sid!r} appears twice")
        clean: dict[str, Any] = {}
        for k, v in row.items():
            v = None if v != v or (isinstance(v, str) and not v.strip()) else v  # NaN / empty label -> None
            if str(k).startswith("prob_") and v is not None:
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise InputError(f"{path}, line {i}: column {k} must be a probability, got {v!r}") from None
            clean[str(k)] = v
        rows[sid] = clean
    return rows


def _title(slide_id: str, prediction: Mapping[str, Any] | None, attrs: Mapping[str, Any]) -> str:
    pred, prob, label = None, None, None
    if prediction:
        pred = prediction.get("pred")
        prob = prediction.get(f"prob_{pred}")
        label = prediction.get("label")
    elif attrs.get("pred") is not None:  # predict's score files: pred is a class name, probs follow classes
        pred = str(attrs["pred"])
        classes = [str(c) for c in attrs.get("classes") or []]
        probs = attrs.get("probs")
        if pred in classes and probs is not None and len(list(probs)) == len(classes):
            prob = float(list(probs)[classes.index(pred)])
    risk = (prediction or {}).get("risk", attrs.get("risk"))
    if pred is None and attrs.get("pred_value") is not None:  # a regression model's score file
        pred = f"{float(attrs['pred_value']):.3g}"
    parts = [slide_id]
    if pred is not None:
        parts.append(f"predicted {pred}" + (f" (p = {float(prob):.2f})" if prob is not None else ""))
    if risk is not None and str(risk) != "":
        parts.append(f"risk {float(risk):.3g}")
    if label not in (None, ""):
        parts.append(f"label {label}")
    return " - ".join(parts)


def _provenance(job: HeatmapJob, options: HeatmapOptions) -> Provenance:
    inputs: dict[str, Any] = {"scores": quick_fingerprint(job.scores)}
    if job.features is not None:
        inputs["features"] = quick_fingerprint(job.features)
    if job.slide is not None:
        inputs["slide"] = {"file": job.slide.name, **quick_fingerprint(job.slide)}
    params: dict[str, Any] = {**dataclasses.asdict(options), "mpp": job.mpp, "title": job.title}
    if job.prediction is not None:
        params["prediction"] = dict(job.prediction)
    return Provenance("heatmap", params, inputs)


def heatmap_status(out_dir: Path, slide_id: str, job: HeatmapJob, options: HeatmapOptions) -> Status:
    """``"missing"``, ``"done"`` or the differences between a slide's record and this run's."""
    import json

    record = slide_file(out_dir, slide_id, RECORD_SUFFIX)
    if not record.exists():
        return "missing"
    try:
        written = json.loads(record.read_text()).get("outputs") or []
    except (OSError, ValueError, AttributeError):
        return "missing"
    if not isinstance(written, list) or any(not isinstance(name, str) or Path(name).name != name
                                            or not (out_dir / name).is_file() for name in written):
        return "missing"  # a listed file is gone (or the record names something outside out_dir): redraw
    diffs = provenance_differences(read_json_provenance(record), _provenance(job, options))
    return diffs or "done"


def draw_heatmap(slide_id: str, job: HeatmapJob, out_dir: str | os.PathLike,
                 options: HeatmapOptions = HeatmapOptions(), *, default_mpp: float | None = None) -> list[Path]:
    """Draw one slide's heatmap, GeoJSON and galleries into ``out_dir``; returns the files written (record last).

    Raises:
        InputError / MissingFileError: naming the score, feature or slide file (no coords anywhere, row counts
        or coordinates that disagree, STAMP µm coordinates without a slide to place them ...).
    """
    import numpy as np

    from wsigraph.data.features import infer_grid_step, read_features, to_level0
    from wsigraph.data.scores import load_scores
    from wsigraph.utils.atomic import atomic_write_json
    from wsigraph.viz import render_heatmap, render_synthetic_slide, topk_gallery, write_geojson
    from wsigraph.viz.lattice import default_level0_size

    out_dir = Path(out_dir)
    check_slide_id(slide_id, str(job.scores))
    ps = load_scores(job.scores, key=options.key, column=options.column)
    bag = read_features(job.features, require_features=False) if job.features is not None else None
    coords = ps.coords
    attrs: dict[str, Any] = dict(bag.attrs) if bag is not None else {}
    for k, v in ps.attrs.items():
        attrs.setdefault(k, v)
    if coords is None:
        if bag is None:
            raise InputError(f"{job.scores}: the score file has no coords; give the slide's feature/coords file "
                             "(--features FILE or a folder holding <slide_id>.h5)")
        if bag.num_patches != ps.scores.shape[0]:
            raise InputError(f"{job.scores}: {ps.scores.shape[0]} scores but {job.features} has "
                             f"{bag.num_patches} patches")
        coords = bag.coords
    elif bag is not None and (bag.num_patches != len(coords) or not np.array_equal(bag.coords, coords)):
        raise InputError(f"{job.scores}: its coords differ from those of {job.features}; they belong to "
                         "different tilings")
    step = float(attrs.get("patch_size_level0") or infer_grid_step(coords, where=str(job.scores)))
    title = job.title or _title(slide_id, job.prediction, ps.attrs)
    normalize = None if options.normalize == "none" else options.normalize
    png = slide_file(out_dir, slide_id, ".heatmap.png")
    written: list[Path] = []

    slide = None
    if job.slide is not None:
        from wsigraph.slide import open_slide

        slide = open_slide(job.slide, mpp=job.mpp, default_mpp=default_mpp)
    try:
        if slide is not None and attrs.get("coords_mpp") is not None:  # STAMP: not level-0 pixels yet
            coords, new_step = to_level0(coords, attrs, slide.mpp, where=str(job.features or job.scores))
            step = new_step or step
        if slide is not None:
            level0_size = slide.dimensions
            background = slide.thumbnail(options.max_size)
        else:
            w, h = attrs.get("level0_width"), attrs.get("level0_height")
            level0_size = (int(w), int(h)) if w and h else default_level0_size(coords, step)
            labels = bag.patch_labels if bag is not None else None
            background = render_synthetic_slide(coords, labels, step, level0_size=level0_size,
                                                max_size=options.max_size)
        render_heatmap(coords, ps.scores, step, background=background, level0_size=level0_size, out_path=png,
                       cmap=options.cmap, blur=options.blur, alpha=options.alpha, vmin=options.vmin,
                       vmax=options.vmax, normalize=normalize, title=title, label=ps.name,
                       max_size=options.max_size)
        written.append(png)
        if options.geojson:
            written.append(write_geojson(slide_file(out_dir, slide_id, ".geojson"), coords, ps.scores, step,
                                         score_name=ps.name, object_type=options.object_type))
        if slide is not None:
            for k, largest, suffix in ((options.top_k, True, ".topk.png"), (options.bottom_k, False, ".bottomk.png")):
                if k > 0:
                    written.append(slide_file(out_dir, slide_id, suffix))
                    topk_gallery(slide, coords, ps.scores, step, k, written[-1], largest=largest)
    finally:
        if slide is not None:
            slide.close()
    record = slide_file(out_dir, slide_id, RECORD_SUFFIX)
    atomic_write_json(record, {"slide_id": slide_id, "outputs": [p.name for p in written],
                               "provenance": _provenance(job, options).to_dict()})
    return written + [record]


def _slide_index(slides: str | os.PathLike | None) -> tuple[dict[str, Path], dict[str, Path]]:
    """(slide id -> file, file name -> file) of a slide folder."""
    if slides is None:
        return {}, {}
    from wsigraph.slide import find_slides

    by_id = dict(find_slides([slides], depth=2, allow_empty=True))
    return by_id, {p.name: p for p in by_id.values()}


def recorded_slide_file(path: Path) -> str | None:
    """The slide file name a score or feature file records (``slide_file``, or the name in ``slide_path``)."""
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if "coords" in f:
                attrs = {**dict(f["coords"].attrs), **attrs}
    except OSError:
        return None
    for key in ("slide_file", "slide_path"):
        v = attrs.get(key)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if isinstance(v, str) and v.strip():
            return Path(v.replace("\\", "/")).name  # the name only: never a path taken from a file
    return None


def heatmap_jobs(scores: str | os.PathLike, *, features: str | os.PathLike | None = None,
                 slides: str | os.PathLike | None = None, slide: str | os.PathLike | None = None,
                 predictions: str | os.PathLike | Mapping[str, Mapping[str, Any]] | None = None,
                 slide_id: str | None = None, title: str | None = None,
                 mpp: MppSpec = None) -> list[tuple[str, HeatmapJob]]:
    """Pair each score file with its feature file, slide image and prediction (see the module docstring).

    Args:
        scores: one score file or a folder of them. features: a feature/coords file (one score file) or a
            folder of ``<slide_id>.h5``. slides: a folder of slide images (searched 2 levels deep). slide: the
            image of the one score file. predictions: ``predict``'s CSV or its rows by slide id.
        slide_id, title: for one score file: its output name (default: from the file name) and PNG title.
        mpp: level-0 µm/px override (:data:`MppSpec`).
    """
    from wsigraph.data.features import list_feature_files

    files = list_score_files(scores)
    single = not Path(scores).is_dir()
    if not single and (slide is not None or slide_id is not None or title is not None):
        raise InputError(f"{scores}: slide, slide_id and title name one slide; with a folder of score files use "
                         "slides=<folder of slide images> (ids from the file names)")
    if slide_id is not None:
        check_slide_id(slide_id, "--slide-id (slide_id)")
        files = {slide_id: next(iter(files.values()))}
    feature_files: dict[str, Path] = {}
    if features is not None:
        fp = Path(features)
        if fp.is_dir():
            feature_files = list_feature_files(fp)
        elif not fp.exists():
            raise MissingFileError(f"{fp}: feature/coords file does not exist")
        elif not single:
            raise InputError(f"{fp}: with a folder of score files, features must be a folder of <slide_id>.h5")
        else:
            feature_files = {sid: fp for sid in files}
    if slide is not None and not Path(slide).exists():
        raise MissingFileError(f"{slide}: slide file does not exist")
    by_id, by_name = _slide_index(slides)
    if predictions is not None and not isinstance(predictions, Mapping):
        predictions = read_predictions(predictions)
    jobs: list[tuple[str, HeatmapJob]] = []
    for sid, path in files.items():
        check_slide_id(sid, f"{path} (slide id from the file name)")
        feat = feature_files.get(sid)
        image = Path(slide) if slide is not None else None
        if image is None and (by_id or by_name):
            recorded = recorded_slide_file(path) or (recorded_slide_file(feat) if feat is not None else None)
            image = by_name.get(recorded) if recorded else None
            image = image or by_id.get(sid)
        slide_mpp = mpp.get(sid) if isinstance(mpp, Mapping) else mpp(sid) if callable(mpp) else mpp
        pred = dict(predictions[sid]) if predictions is not None and sid in predictions else None
        jobs.append((sid, HeatmapJob(path, feat, image, slide_mpp, pred, title)))
    return jobs


def heatmap_cohort(scores: str | os.PathLike, out_dir: str | os.PathLike, *,
                   features: str | os.PathLike | None = None, slides: str | os.PathLike | None = None,
                   slide: str | os.PathLike | None = None,
                   predictions: str | os.PathLike | Mapping[str, Mapping[str, Any]] | None = None,
                   options: HeatmapOptions = HeatmapOptions(), slide_id: str | None = None,
                   title: str | None = None, mpp: MppSpec = None,
                   default_mpp: float | None = None, on_error: str = "skip", overwrite: bool = False,
                   progress: bool = True, report_path: str | os.PathLike | None = None,
                   shard: ShardSpec = None) -> JobReport:
    """Heatmaps of every score file (a cohort job; see the module docstring for inputs and outputs).

    Args:
        scores, features, slides, slide, predictions, slide_id, title, mpp: as in :func:`heatmap_jobs`.
        options: :class:`HeatmapOptions`. default_mpp: µm/px for slides whose file has none.
        on_error, overwrite, progress, shard: as in :func:`wsigraph.pipeline.runner.run_per_slide`.
        report_path: default ``out_dir/heatmap_report.csv``.

    Returns:
        the :class:`~wsigraph.pipeline.runner.JobReport`; ``results[slide_id]`` lists the files written.
    """
    out_dir = Path(out_dir)
    jobs = heatmap_jobs(scores, features=features, slides=slides, slide=slide, predictions=predictions,
                        slide_id=slide_id, title=title, mpp=mpp)
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(sid: str, job: HeatmapJob) -> list[Path]:
        return draw_heatmap(sid, job, out_dir, options, default_mpp=default_mpp)

    return run_per_slide(jobs, one, status=lambda sid, job: heatmap_status(out_dir, sid, job, options),
                         overwrite=overwrite, on_error=on_error, desc="heatmap", stage="heatmap",
                         report_path=report_path or out_dir / "heatmap_report.csv", progress=progress, shard=shard)


__all__ = ["HeatmapJob", "HeatmapOptions", "MppSpec", "NORMALIZE_CHOICES", "SCORE_SUFFIXES", "draw_heatmap",
           "heatmap_cohort", "heatmap_jobs", "heatmap_status", "list_score_files", "read_predictions",
           "recorded_slide_file",
           "slide_id_of_scores"]
