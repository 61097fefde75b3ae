"""``wsigraph heatmap``: per-patch scores drawn over the slide, QuPath GeoJSON, top-k patch gallery."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsigraph.cli._options import add_mpp_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heatmap", help="draw per-patch scores over a slide thumbnail (+ GeoJSON for QuPath, top-k gallery)",
        description="Writes OUT/<slide_id>.heatmap.png, OUT/<slide_id>.geojson and, with --slide, "
                    "OUT/<slide_id>.topk.png. Scores: .h5 (dataset 'scores' (N,) or (N, C), optional 'coords'), "
                    ".npy, .csv (column 'score', optional x,y) or .pt; row i scores patch i of --features "
                    "unless the score file has its own coords.")
    p.add_argument("--scores", required=True, metavar="FILE", help="per-patch scores of one slide")
    p.add_argument("--features", metavar="H5", help="the slide's feature or coords file (coords, patch_size_level0)")
    p.add_argument("--slide", metavar="SLIDE", help="the slide image (background and gallery); omit for a "
                   "synthetic background drawn from the patches")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--slide-id", help="output name (default: the score file's name without .scores/.h5)")
    p.add_argument("--key", help="dataset / dict key of the scores (default: scores, patch_scores, attention, A)")
    p.add_argument("--column", help="for (N, C) scores: class index or name; for CSV: the score column")
    p.add_argument("--cmap", default="jet", help="matplotlib colour map (default: %(default)s)")
    p.add_argument("--blur", type=float, default=0.0, help="Gaussian sigma in patches (default: none)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the scores (default: %(default)s)")
    p.add_argument("--normalize", choices=("none", "minmax", "percentile"), default="none",
                   help="rescale scores before drawing (default: %(default)s)")
    p.add_argument("--vmin", type=float)
    p.add_argument("--vmax", type=float)
    p.add_argument("--max-size", type=int, default=1024, help="longest side of the drawn slide (default: %(default)s)")
    p.add_argument("--title", help="title of the PNG (default: the slide id)")
    p.add_argument("--top-k", type=int, default=16, help="patches in the gallery (0: none; needs --slide)")
    p.add_argument("--bottom-k", type=int, default=0, help="also a gallery of the lowest-scoring patches")
    p.add_argument("--object-type", choices=("detection", "tile", "annotation"), default="detection",
                   help="QuPath object type in the GeoJSON (default: %(default)s)")
    p.add_argument("--no-geojson", action="store_true", help="do not write the GeoJSON")
    add_mpp_args(p, per_slide=False)  # only used to open --slide
    p.set_defaults(func=_heatmap)


def _slide_id(args: argparse.Namespace) -> str:
    if args.slide_id:
        return args.slide_id
    name = Path(args.scores).name
    for suffix in (".h5", ".hdf5", ".npy", ".csv", ".pt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[: -len(".scores")] if name.endswith(".scores") else name


def _heatmap(args: argparse.Namespace) -> int:
    import numpy as np

    from wsigraph.data.features import infer_grid_step, read_features
    from wsigraph.errors import InputError
    from wsigraph.viz import render_heatmap, render_synthetic_slide, topk_gallery, write_geojson
    from wsigraph.viz.lattice import default_level0_size
    from wsigraph.data.scores import load_scores

    from wsigraph.pipeline.paths import check_slide_id, slide_file

    out = Path(args.out)
    slide_id = _slide_id(args)
    id_source = "--slide-id" if args.slide_id else f"{args.scores} (slide id from the file name)"
    check_slide_id(slide_id, id_source)
    ps = load_scores(args.scores, key=args.key, column=args.column)
    bag = read_features(args.features, require_features=False) if args.features else None
    coords = ps.coords
    attrs: dict[str, Any] = dict(bag.attrs) if bag is not None else {}
    for k, v in ps.attrs.items():
        attrs.setdefault(k, v)
    if coords is None:
        if bag is None:
            raise InputError(f"{args.scores}: the score file has no coords; pass the slide's feature/coords file "
                             "with --features")
        if bag.num_patches != ps.scores.shape[0]:
            raise InputError(f"{args.scores}: {ps.scores.shape[0]} scores but {args.features} has "
                             f"{bag.num_patches} patches")
        coords = bag.coords
    elif bag is not None and (bag.num_patches != len(coords) or not np.array_equal(bag.coords, coords)):
        raise InputError(f"{args.scores}: its coords differ from those of {args.features}; they belong to "
                         "different tilings")
    step = float(attrs.get("patch_size_level0") or infer_grid_step(coords, where=str(args.scores)))

    slide = None
    if args.slide:
        from wsigraph.slide import open_slide

        slide = open_slide(args.slide, mpp=args.mpp, default_mpp=args.default_mpp)
    try:
        if slide is not None and attrs.get("coords_mpp") is not None:  # STAMP: not level-0 pixels yet
            from wsigraph.data.features import to_level0

            coords, new_step = to_level0(coords, attrs, slide.mpp, where=str(args.features or args.scores))
            step = new_step or step
        if slide is not None:
            level0_size = slide.dimensions
            background = slide.thumbnail(args.max_size)
        else:
            w, h = attrs.get("level0_width"), attrs.get("level0_height")
            level0_size = (int(w), int(h)) if w and h else default_level0_size(coords, step)
            labels = bag.patch_labels if bag is not None else None
            background = render_synthetic_slide(coords, labels, step, level0_size=level0_size, max_size=args.max_size)
        normalize = None if args.normalize == "none" else args.normalize
        render_heatmap(coords, ps.scores, step, background=background, level0_size=level0_size,
                       out_path=slide_file(out, slide_id, ".heatmap.png", id_source), cmap=args.cmap, blur=args.blur, alpha=args.alpha,
                       vmin=args.vmin, vmax=args.vmax, normalize=normalize, title=args.title or slide_id,
                       label=ps.name, max_size=args.max_size)
        written = [slide_file(out, slide_id, ".heatmap.png", id_source)]
        if not args.no_geojson:
            written.append(write_geojson(slide_file(out, slide_id, ".geojson", id_source), coords, ps.scores, step,
                                         score_name=ps.name, object_type=args.object_type))
        if slide is not None:
            if args.top_k > 0:
                written.append(slide_file(out, slide_id, ".topk.png", id_source))
                topk_gallery(slide, coords, ps.scores, step, args.top_k, written[-1])
            if args.bottom_k > 0:
                written.append(slide_file(out, slide_id, ".bottomk.png", id_source))
                topk_gallery(slide, coords, ps.scores, step, args.bottom_k, written[-1], largest=False)
    finally:
        if slide is not None:
            slide.close()
    for p in written:
        print(p)
    return 0
