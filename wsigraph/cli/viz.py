"""``wsigraph heatmap``: per-patch scores drawn over their slides (one score file or a folder of them), with
QuPath GeoJSON and top-k patch galleries; a cohort job (:mod:`wsigraph.pipeline.heatmaps`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from wsigraph.cli._options import add_job_args, add_mpp_args, job_exit_status, job_kwargs, mpp_resolver


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heatmap", help="draw per-patch scores over their slides (one file or a cohort; + GeoJSON, top-k gallery)",
        description="Writes OUT/<slide_id>.heatmap.png, OUT/<slide_id>.geojson, OUT/<slide_id>.topk.png (with a "
                    "slide image) and OUT/<slide_id>.heatmap.json (what made them: a rerun skips slides drawn "
                    "with the same options and refuses other options unless --overwrite). Scores: .h5 (dataset "
                    "'scores' (N,) or (N, C), optional 'coords'; what `wsigraph predict` writes), .npy, .csv "
                    "(column 'score', optional x,y) or .pt; row i scores patch i of the slide's feature file "
                    "unless the score file has its own coords.")
    p.add_argument("--scores", required=True, metavar="FILE|DIR",
                   help="one score file, or a folder of them (e.g. predict's OUT/scores): one heatmap per file")
    p.add_argument("--features", metavar="H5|DIR",
                   help="the slide's feature or coords file, or a folder of <slide_id>.h5 (for score files "
                        "without coords, patch_size_level0 and the synthetic canvas)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--slide", metavar="SLIDE", help="the slide image of the one score file")
    src.add_argument("--slides", metavar="DIR",
                     help="folder of slide images (2 levels deep): each score file's slide is the one its score or "
                          "feature file names (slide_file) or, else, the one named like the slide id. Without "
                          "--slide/--slides the scores are drawn on a canvas made from the patches")
    p.add_argument("--predictions", metavar="CSV",
                   help="predict's predictions.csv: the title shows each slide's prediction and label (default: "
                        "the prediction stored in predict's score files)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--slide-id", help="output name of the one score file (default: its name without .scores/.h5)")
    p.add_argument("--title", help="title of the one PNG (default: the slide id and its prediction)")
    g = p.add_argument_group("drawing")
    g.add_argument("--key", help="dataset / dict key of the scores (default: scores, patch_scores, attention, A)")
    g.add_argument("--column", help="for (N, C) scores: class index or name; for CSV: the score column")
    g.add_argument("--cmap", default="jet", help="matplotlib colour map (default: %(default)s)")
    g.add_argument("--blur", type=float, default=0.0, help="Gaussian sigma in patches (default: none)")
    g.add_argument("--alpha", type=float, default=0.5, help="opacity of the scores (default: %(default)s)")
    g.add_argument("--normalize", choices=("percentile", "minmax", "none"), default="percentile",
                   help="rescale each slide's scores before drawing; percentile ranks them within the slide, as "
                        "CLAM's heatmaps do (default: %(default)s)")
    g.add_argument("--vmin", type=float)
    g.add_argument("--vmax", type=float)
    g.add_argument("--max-size", type=int, default=1024, help="longest side of the drawn slide (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=16, help="patches in the gallery (0: none; needs the slide image)")
    g.add_argument("--bottom-k", type=int, default=0, help="also a gallery of the lowest-scoring patches")
    g.add_argument("--object-type", choices=("detection", "tile", "annotation"), default="detection",
                   help="QuPath object type in the GeoJSON (default: %(default)s)")
    g.add_argument("--no-geojson", action="store_true", help="do not write the GeoJSON")
    add_mpp_args(p)  # only used to open the slide images
    add_job_args(p, report_default="OUT/heatmap_report.csv", overwrite=True)
    p.set_defaults(func=_heatmap, on_error=None)
    for action in p._actions:  # one score file: its error is the answer (exit 2), there is nothing to skip to
        if action.dest == "on_error":
            action.default = None
            action.help = ("skip: go on past failing slides and list them in the report; raise: stop at the first "
                           "failure (default: skip for a folder of score files, raise for one file)")


def _heatmap(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.heatmaps import HeatmapOptions, heatmap_cohort

    options = HeatmapOptions(key=args.key, column=args.column, cmap=args.cmap, blur=args.blur, alpha=args.alpha,
                             normalize=args.normalize, vmin=args.vmin, vmax=args.vmax, max_size=args.max_size,
                             top_k=args.top_k, bottom_k=args.bottom_k, object_type=args.object_type,
                             geojson=not args.no_geojson)
    out = Path(args.out)
    kw = job_kwargs(args, out / "heatmap_report.csv")
    if kw["on_error"] is None:
        kw["on_error"] = "skip" if Path(args.scores).is_dir() else "raise"
    report = heatmap_cohort(args.scores, out, features=args.features, slides=args.slides, slide=args.slide,
                            predictions=args.predictions, options=options, slide_id=args.slide_id,
                            title=args.title, mpp=mpp_resolver(args), default_mpp=args.default_mpp, **kw)
    for sid in report.done:
        for path in report.results[sid]:
            print(path)
    print(f"heatmap: {report.summary()}")
    return job_exit_status(report)
