"""``wsigraph demo``: generate a cohort, build graphs, train SRMIL, evaluate, draw a heatmap."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from wsigraph.demo import DemoSettings

    d = DemoSettings()
    p = sub.add_parser("demo", help="run the whole chain on a generated synthetic cohort (about a minute on CPU)",
                       description=__doc__)
    p.add_argument("--out", default="wsigraph-demo", help="output folder (default: ./wsigraph-demo)")
    p.add_argument("--n-slides", type=int, default=None, help=f"slides in the synthetic cohort (default {d.n_slides})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {d.epochs})")
    p.add_argument("--mode", choices=["lesion", "contiguity"], default=None,
                   help="lesion: positives carry lesion regions; contiguity: only the lesions' spatial "
                        f"contiguity separates the classes (default {d.mode})")
    p.add_argument("--seed", type=int, default=None, help=f"cohort and training seed (default {d.seed})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from wsigraph.demo import DemoSettings, run_demo

    given = {k: v for k, v in (("n_slides", args.n_slides), ("epochs", args.epochs), ("mode", args.mode),
                               ("seed", args.seed)) if v is not None}
    run_demo(args.out, replace(DemoSettings(), **given), progress=not args.no_progress)
    return 0
