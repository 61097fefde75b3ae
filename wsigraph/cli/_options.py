"""Argument groups shared by several commands, and their conversion into library keyword arguments.

Each flag is declared once here, so ``--mask-mpp`` or ``--on-error`` has the same name, default and
meaning in every command that takes it. Only ``argparse`` is imported at module level (``wsigraph --help``
stays fast); the converters import what they need.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

_Parser = argparse.ArgumentParser
_Group = argparse._ArgumentGroup

# ------------------------------------------------------------------------------------------------------
# resolution (open_slide)
# ------------------------------------------------------------------------------------------------------


def add_mpp_args(p: _Parser, *, per_slide: bool = True) -> _Group:
    """``--mpp``, ``--default-mpp`` and (``per_slide``) ``--mpp-csv``: level-0 µm/px of the slides."""
    g = p.add_argument_group("resolution (for slides whose file lacks it, or to correct it)")
    g.add_argument("--mpp", type=float, metavar="UM_PER_PX",
                   help="level-0 microns per pixel for every slide, overriding the files")
    g.add_argument("--default-mpp", type=float, metavar="UM_PER_PX",
                   help="microns per pixel used only for slides whose file has none")
    if per_slide:
        g.add_argument("--mpp-csv", metavar="CSV",
                       help="per-slide values: columns slide_id (or wsi/file) and mpp; they override the files "
                            "and --mpp")
    return g


def mpp_resolver(args: argparse.Namespace) -> Callable[..., float | None]:
    """``resolve(slide_id, own=None) -> float | None``: the level-0 µm/px override of a slide.

    Precedence: the ``--mpp-csv`` row of the slide, else ``own`` (e.g. a manifest's ``mpp`` column), else
    ``--mpp``; None leaves the slide file's own value (``--default-mpp`` applies when it has none). The CSV
    is read once, here.
    """
    table: dict[str, float] = {}
    if getattr(args, "mpp_csv", None):
        from wsigraph.slide import read_mpp_csv

        table = read_mpp_csv(args.mpp_csv)

    def resolve(slide_id: str, own: float | None = None) -> float | None:
        return table.get(slide_id, own if own is not None else args.mpp)

    return resolve


def open_slide_kwargs(args: argparse.Namespace) -> Callable[[str], dict[str, Any]]:
    """``kwargs(slide_id) -> {mpp, default_mpp}`` for ``wsigraph.slide.open_slide(path, **kwargs)``."""
    resolve = mpp_resolver(args)
    default = getattr(args, "default_mpp", None)
    return lambda slide_id: {"mpp": resolve(slide_id), "default_mpp": default}


# ------------------------------------------------------------------------------------------------------
# tissue segmentation (segment_tissue) and tiling (tile_slide)
# ------------------------------------------------------------------------------------------------------


def add_tissue_args(p: _Parser, *, masks: bool = True) -> _Group:
    """The options of ``segment_tissue``; ``masks`` adds ``--masks DIR`` (user-made mask PNGs)."""
    g = p.add_argument_group("tissue segmentation (sizes in micrometres, areas in square micrometres)")
    g.add_argument("--mode", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto: fluorescence when the slide is mostly dark (default: %(default)s)")
    g.add_argument("--threshold", type=float, metavar="0-255",
                   help="fixed threshold instead of Otsu (saturation for brightfield, brightness for fluorescence)")
    g.add_argument("--mask-mpp", type=float, default=8.0, help="mask resolution in um/px (default: %(default)s)")
    g.add_argument("--median-um", type=float, default=24.0, help="median blur window (default: %(default)s)")
    g.add_argument("--close-um", type=float, default=48.0, help="closing disk diameter (default: %(default)s)")
    g.add_argument("--min-object-um2", type=float, default=10_000.0,
                   help="drop tissue pieces smaller than this (default: %(default)s)")
    g.add_argument("--max-hole-um2", type=float, default=20_000.0,
                   help="fill holes smaller than this (default: %(default)s)")
    g.add_argument("--exclude-pen", action="store_true", help="remove blue/green/black marker ink (brightfield)")
    g.add_argument("--keep-background", action="store_true",
                   help="do not remove near-white / near-black pixels (brightfield)")
    if masks:
        g.add_argument("--masks", metavar="DIR",
                       help="use your own masks DIR/<slide_id>.png (nonzero = tissue, covering the whole slide) "
                            "instead of segmenting; slides without one are segmented")
    return g


def tissue_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``wsigraph.slide.segment_tissue`` from the :func:`add_tissue_args` options."""
    return dict(mode=args.mode, method="threshold" if args.threshold is not None else "otsu",
                threshold=args.threshold, mask_mpp=args.mask_mpp, median_um=args.median_um,
                close_um=args.close_um, min_object_um2=args.min_object_um2, max_hole_um2=args.max_hole_um2,
                exclude_pen=args.exclude_pen, exclude_background=not args.keep_background)


def add_tiling_args(p: _Parser) -> _Group:
    """``--target-mpp``, ``--patch-size``, ``--min-tissue``: the options of ``tile_slide``."""
    g = p.add_argument_group("tiling")
    g.add_argument("--target-mpp", type=float, default=0.5,
                   help="um/px of the patch pixels (0.5 ~ 20x, 0.25 ~ 40x; default: %(default)s)")
    g.add_argument("--patch-size", type=int, default=224, help="patch side in pixels (default: %(default)s)")
    g.add_argument("--min-tissue", type=float, default=0.5,
                   help="keep patches with at least this tissue fraction (default: %(default)s)")
    return g


def tiling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``wsigraph.slide.tile_slide`` (and ``preprocess_cohort``)."""
    return dict(target_mpp=args.target_mpp, patch_size=args.patch_size, min_tissue=args.min_tissue)


# ------------------------------------------------------------------------------------------------------
# cohort jobs (wsigraph.pipeline.runner.run_per_slide and the functions built on it)
# ------------------------------------------------------------------------------------------------------


def add_job_args(p: _Parser, *, report_default: str, on_error: str = "skip", overwrite: bool = False,
                 shard: bool = True, items: str = "slides") -> _Group:
    """``--shard`` (every per-slide stage), ``--on-error``, ``--report``, ``--no-progress`` and optionally
    ``--overwrite``.

    Args:
        report_default: where the report goes when ``--report`` is not given (for the help).
        on_error: the default, ``"skip"`` in every cohort command (``wsigraph.pipeline.runner``).
        items: what the command iterates over, for the help ("slides", "items" ...).
    """
    g = p.add_argument_group("cohort job")
    if shard:
        g.add_argument("--shard", metavar="I/N",
                       help="process slides I::N (0-based) of the list sorted by slide id; default from RANK/"
                            "WORLD_SIZE (torchrun) or SLURM_PROCID/SLURM_NTASKS. A shard's report and summary "
                            "files carry .shard-I-of-N before their suffix, so shards can share one folder")
    g.add_argument("--on-error", choices=("skip", "raise"), default=on_error,
                   help=f"skip: go on past failing {items} and list them in the report; raise: stop at the "
                        "first failure (default: %(default)s)")
    g.add_argument("--report", metavar="CSV", help=f"report of the run, CSV slide_id,stage,status,error, one row "
                                                   f"per {items[:-1] if items.endswith('s') else items} "
                                                   f"(default: {report_default})")
    if overwrite:
        g.add_argument("--overwrite", action="store_true",
                       help=f"redo {items} whose outputs are already complete (default: skip those made with the "
                            "same parameters = resume, and refuse to run when outputs made with other "
                            "parameters are in the folder)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return g


def job_kwargs(args: argparse.Namespace, report_default: str | Path | None = None) -> dict[str, Any]:
    """``on_error``, ``report_path`` (``--report``, else ``report_default``) and ``progress``, plus
    ``overwrite`` and ``shard`` when the command declared them."""
    kw: dict[str, Any] = dict(on_error=args.on_error,
                              report_path=Path(args.report) if args.report else report_default,
                              progress=not args.no_progress)
    for name in ("overwrite", "shard"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    return kw


def job_exit_status(report: Any, what: str = "slide(s)") -> int:
    """Exit status of a cohort command from its ``JobReport`` (see :mod:`wsigraph.cli`).

    0 when every slide is done or already complete; 1 when the job finished but some failed: then their
    count and the report CSV that lists them are printed. (2, bad input, is ``main``'s answer to a
    ``WsigraphError``.)
    """
    if not report.failed:
        return 0
    where = f"; they are listed in {report.report_path}" if report.report_path else ""
    print(f"{len(report.failed)} {what} failed{where}")
    return 1
