"""``wsigraph slide-info | segment | tile``: inspect slides, segment tissue, lay patch grids."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wsigraph.cli._options import (
    add_job_args,
    add_mpp_args,
    add_tiling_args,
    add_tissue_args,
    job_exit_status,
    job_kwargs,
    mpp_resolver,
    open_slide_kwargs,
    tiling_kwargs,
    tissue_kwargs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slide-info", help="print a slide's levels, resolution and objective power",
                       description="Print levels (size, downsample, um/px), mpp and its source, objective power.")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--json", action="store_true", help="print JSON (one object per slide) instead of text")
    p.add_argument("--check", action="store_true", help="also decode a thumbnail, to find corrupt image data")
    add_mpp_args(p)
    p.set_defaults(func=_slide_info)

    p = sub.add_parser("segment", help="segment tissue: mask and overlay PNGs per slide",
                       description="Write OUT/masks/<slide_id>.png (255 = tissue), OUT/overlays/<slide_id>.png "
                                   "and OUT/masks/<slide_id>.json (tissue fraction, parameters). Resumes like tile.")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--out", required=True, metavar="DIR")
    add_tissue_args(p)
    add_mpp_args(p)
    add_job_args(p, report_default="OUT/segment_report.csv", overwrite=True)
    p.set_defaults(func=_segment)

    p = sub.add_parser("tile", help="lay the global patch grid and keep tissue patches (coords h5 per slide)",
                       description="Write OUT/coords/<slide_id>.h5 (coords in level-0 px + attributes: a valid "
                                   "input of `wsigraph extract`), OUT/masks/<slide_id>.png, OUT/overlays/"
                                   "<slide_id>.png (tissue and kept patches) and OUT/tiling_summary.csv. "
                                   "Rerunning resumes: slides whose coords file was made with the same parameters "
                                   "are skipped, and outputs made with other parameters make it refuse "
                                   "(--overwrite recomputes them).")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--out", required=True, metavar="DIR")
    add_tiling_args(p)
    add_tissue_args(p)
    add_mpp_args(p)
    add_job_args(p, report_default="OUT/tile_report.csv", overwrite=True)
    p.set_defaults(func=_tile)


# ------------------------------------------------------------------------------------------------------
# handlers
# ------------------------------------------------------------------------------------------------------


def _slide_info(args: argparse.Namespace) -> int:
    from wsigraph.errors import WsigraphError
    from wsigraph.slide import find_slides, open_slide

    open_kwargs = open_slide_kwargs(args)
    failed = 0
    infos = []
    for slide_id, path in find_slides(args.slides):
        try:
            with open_slide(path, **open_kwargs(slide_id)) as slide:
                info = slide.info()
                if args.check:
                    slide.thumbnail(256)
        except WsigraphError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        infos.append(info)
        if not args.json:
            print(_format_info(info))
    if args.json:
        print(json.dumps(infos, indent=2))
    return 2 if failed else 0


def _format_info(info: dict[str, Any]) -> str:
    mpp = info["mpp"]
    mpp_text = (f"{mpp:.4g} um/px ({info['mpp_source']})" if mpp is not None
                else "unknown (the file does not record it: pass --mpp)")
    power = info["objective_power"]
    lines = [f"{info['path']}",
             f"  slide_id:  {info['slide_id']}",
             f"  format:    {info['vendor']} ({info['backend']})",
             f"  size:      {info['dimensions'][0]} x {info['dimensions'][1]} px",
             f"  mpp:       {mpp_text}",
             f"  objective: {'unknown' if power is None else f'{power:g}x'}"
             + ("" if power is not None or info["magnification"] is None
                else f" (about {info['magnification']:g}x from mpp)"),
             "  levels:    level  width x height  downsample  um/px"]
    for i, ((w, h), ds) in enumerate(zip(info["level_dimensions"], info["level_downsamples"])):
        lm = "-" if info["level_mpp"] is None else f"{info['level_mpp'][i]:.4g}"
        lines.append(f"             {i:5d}  {w:>6d} x {h:<6d}  {ds:10.4g}  {lm}")
    return "\n".join(lines)


def _slide_jobs(args: argparse.Namespace) -> list:
    """``SlideJob`` per slide of the arguments, with its ``--mpp-csv`` / ``--mpp`` override."""
    from wsigraph.pipeline.slides import SlideJob
    from wsigraph.slide import find_slides

    resolve = mpp_resolver(args)
    return [SlideJob(slide_id=sid, slide_path=path, mpp=resolve(sid)) for sid, path in find_slides(args.slides)]


def _segment(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.tiling import segment_cohort

    report = segment_cohort(_slide_jobs(args), args.out, segment_kwargs=tissue_kwargs(args),
                            default_mpp=args.default_mpp, masks_dir=args.masks,
                            **job_kwargs(args, Path(args.out) / "segment_report.csv"))
    print(f"segment: {report.summary()}")
    return job_exit_status(report)


def _tile(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.tiling import tile_cohort

    report = tile_cohort(_slide_jobs(args), args.out, segment_kwargs=tissue_kwargs(args), tiling=tiling_kwargs(args),
                         default_mpp=args.default_mpp, masks_dir=args.masks,
                         **job_kwargs(args, Path(args.out) / "tile_report.csv"))
    print(f"tile: {report.summary()}")
    for sid in report.done:
        r = report.results[sid]
        print(f"  {sid}: {r['n_patches']} patches (step {r['patch_size_level0']} level-0 px, tissue "
              f"{r['tissue_fraction']:.1%})")
    return job_exit_status(report)
