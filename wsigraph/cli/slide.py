"""``wsigraph slide-info | segment | tile``: inspect slides, segment tissue, lay patch grids."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wsigraph.pipeline.paths import slide_file
from wsigraph.cli._options import (
    add_job_args,
    add_mpp_args,
    add_tiling_args,
    add_tissue_args,
    job_exit_status,
    job_kwargs,
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
                                   "and OUT/masks/<slide_id>.json (tissue fraction, parameters).")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--out", required=True, metavar="DIR")
    add_tissue_args(p)
    add_mpp_args(p)
    add_job_args(p, report_default="OUT/segment_failures.csv", overwrite=True)
    p.set_defaults(func=_segment)

    p = sub.add_parser("tile", help="lay the global patch grid and keep tissue patches (coords h5 per slide)",
                       description="Write OUT/coords/<slide_id>.h5 (coords in level-0 px + attributes: a valid "
                                   "input of `wsigraph extract`), OUT/masks/<slide_id>.png, OUT/overlays/"
                                   "<slide_id>.png (tissue and kept patches) and OUT/tiling_summary.csv. "
                                   "Slides whose coords file is complete are skipped (resume).")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--out", required=True, metavar="DIR")
    add_tiling_args(p)
    add_tissue_args(p)
    add_mpp_args(p)
    add_job_args(p, report_default="OUT/tile_failures.csv", overwrite=True)
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


def _mask_for(slide: Any, slide_id: str, args: argparse.Namespace):
    """(mask, thumbnail): the user's mask PNG when given and present, else a segmentation."""
    from wsigraph.slide.tissue import TissueMask, mask_size_for, segment_tissue

    thumb = slide.get_image_at_size(mask_size_for(slide.dimensions, slide.mpp, args.mask_mpp))
    if args.masks:
        user = slide_file(Path(args.masks), slide_id, ".png")
        if user.exists():
            mask = TissueMask.from_png(user, slide.dimensions, slide.mpp, source=str(slide.path))
            return mask, thumb
    return segment_tissue(slide, thumbnail=thumb, **tissue_kwargs(args)), thumb


def _overlay_background(slide: Any, thumb: Any, min_side: int = 768, max_side: int = 1024) -> Any:
    """The mask thumbnail, or a larger one for slides whose mask is too small to look at."""
    if max(thumb.size) >= min_side or max(thumb.size) >= max(slide.dimensions):
        return thumb
    return slide.thumbnail(min(max_side, max(slide.dimensions)))


def _run(args: argparse.Namespace, stage: str, fn, is_done) -> Any:
    """``fn`` over the slides as a cohort job (resume unless ``--overwrite``); returns the ``JobReport``."""
    from wsigraph.slide import find_slides
    from wsigraph.utils.jobs import run_per_slide

    kw = job_kwargs(args, Path(args.out) / f"{stage}_failures.csv")
    overwrite = kw.pop("overwrite")
    report = run_per_slide(find_slides(args.slides), fn, is_done=None if overwrite else is_done, desc=stage,
                           stage=stage, **kw)
    print(f"{stage}: {report.summary()}")
    return report


def _segment(args: argparse.Namespace) -> int:
    from wsigraph.slide import open_slide
    from wsigraph.utils.atomic import atomic_write_json

    out = Path(args.out)
    open_kwargs = open_slide_kwargs(args)

    def one(slide_id: str, path: Path) -> float:
        with open_slide(path, **open_kwargs(slide_id)) as slide:
            mask, thumb = _mask_for(slide, slide_id, args)
            mask.save_overlay(slide_file(out / "overlays", slide_id, ".png"), _overlay_background(slide, thumb))
            mask.save_png(slide_file(out / "masks", slide_id, ".png"))
            atomic_write_json(slide_file(out / "masks", slide_id, ".json"), {
                "slide": str(path), "tissue_fraction": mask.tissue_fraction, "tissue_area_mm2": mask.tissue_area_mm2,
                "mask_size": list(mask.mask.shape[::-1]), "mask_mpp": mask.mpp, "mode": mask.mode,
                "threshold": mask.threshold, "params": mask.params})
            if mask.is_empty:
                print(f"warning: no tissue found in {path}", file=sys.stderr)
            return mask.tissue_fraction

    def done(slide_id: str, path: Path) -> bool:
        return (slide_file(out / "masks", slide_id, ".json")).exists()

    return job_exit_status(_run(args, "segment", one, done))


def _tile(args: argparse.Namespace) -> int:
    import pandas as pd

    from wsigraph.data.features import is_complete_feature_file
    from wsigraph.slide import open_slide, tile_slide, write_coords
    from wsigraph.utils.atomic import atomic_path
    from wsigraph.viz.lattice import draw_patches

    out = Path(args.out)
    open_kwargs = open_slide_kwargs(args)

    def coords_path(slide_id: str) -> Path:
        return slide_file(out / "coords", slide_id, ".h5")

    def one(slide_id: str, path: Path) -> dict[str, Any]:
        with open_slide(path, **open_kwargs(slide_id)) as slide:
            mask, thumb = _mask_for(slide, slide_id, args)
            mask.save_png(slide_file(out / "masks", slide_id, ".png"))
            thumb = _overlay_background(slide, thumb)
            try:
                coords, attrs = tile_slide(slide, mask, **tiling_kwargs(args))
            except Exception:
                mask.save_overlay(slide_file(out / "overlays", slide_id, ".png"), thumb)  # to see why
                raise
            overlay = draw_patches(mask.overlay(thumb), coords, attrs["patch_size_level0"], slide.dimensions)
            with atomic_path(slide_file(out / "overlays", slide_id, ".png")) as tmp:
                overlay.save(tmp, format="PNG")
            write_coords(coords_path(slide_id), coords, attrs)
            return {"n_patches": len(coords), "tissue_fraction": attrs["tissue_fraction"],
                    "level0_mpp": attrs["level0_mpp"], "patch_size_level0": attrs["patch_size_level0"],
                    "patch_level": attrs["patch_level"]}

    def done(slide_id: str, path: Path) -> bool:
        return is_complete_feature_file(coords_path(slide_id), require_features=False)

    report = _run(args, "tile", one, done)
    rows = [{"slide_id": sid, "status": "done", **report.results[sid]} for sid in report.done]
    rows += [{"slide_id": sid, "status": "already complete"} for sid in report.resumed]
    rows += [{"slide_id": sid, "status": "failed", "error": err} for sid, err in report.failed.items()]
    if rows:
        with atomic_path(out / "tiling_summary.csv") as tmp:
            table = pd.DataFrame(rows).sort_values("slide_id")
            for col in ("n_patches", "patch_size_level0", "patch_level"):
                if col in table:
                    table[col] = table[col].astype("Int64")
            table.to_csv(tmp, index=False)
    for sid in report.done:
        r = report.results[sid]
        print(f"  {sid}: {r['n_patches']} patches (step {r['patch_size_level0']} level-0 px, tissue "
              f"{r['tissue_fraction']:.1%})")
    return job_exit_status(report)
