"""``wsigraph build-graphs``: build and cache every slide's spatial graph (resumable)."""
from __future__ import annotations

import argparse

from wsigraph.cli._options import add_job_args, job_exit_status, job_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-graphs", help="build and cache the spatial graph of every slide in a feature folder",
        description="Build each slide's spatial graph from its feature file's coordinates and cache it in CACHE "
                    "(one <slide_id>.<key>.pt per slide; the key covers the feature file and the graph "
                    "parameters). Slides already cached are skipped, so an interrupted run resumes.")
    p.add_argument("--features", required=True, metavar="DIR", help="folder of <slide_id>.h5/.pt feature files")
    p.add_argument("--manifest", metavar="CSV", help="only the slides of this cohort manifest (slide_id column)")
    p.add_argument("--cache", required=True, metavar="DIR", help="graph cache folder")
    g = p.add_argument_group("graph")
    g.add_argument("--mode", choices=("paper", "radius", "knn"),
                   help="paper: radius window*1.42 steps + self loops (SRMIL); radius: --radius steps; knn: --k "
                        "nearest (default: knn when --k is given, radius when --radius is given, else paper)")
    g.add_argument("--k", type=int, help="neighbours per patch for knn (default: 8)")
    g.add_argument("--radius", type=float, help="radius in patch steps for mode radius (1.5: 8-neighbourhood)")
    g.add_argument("--window", type=float, default=2.0,
                   help="paper mode window (default: %(default)s -> 24 neighbours)")
    g.add_argument("--no-self-loops", action="store_true", help="leave out the (i, i) edges")
    g.add_argument("--backend", choices=("auto", "lattice", "kdtree", "torch_cluster"), default="auto",
                   help="search backend; all give the same edges (default: %(default)s)")
    g.add_argument("--edge-attr", action="store_true", help="store edge lengths (patch steps) as edge_attr")
    add_job_args(p, report_default="CACHE/build_graphs_report.csv")
    p.set_defaults(func=_build_graphs)


def _graph_config(args: argparse.Namespace):
    from wsigraph.graph.params import GraphConfig

    mode = args.mode or ("radius" if args.radius is not None else "knn" if args.k is not None else "paper")
    return GraphConfig(mode=mode, k=args.k if args.k is not None else 8, radius=args.radius, window=args.window,
                       self_loops=not args.no_self_loops, backend=args.backend, edge_attr=args.edge_attr)


def _build_graphs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wsigraph.data.features import list_feature_files
    from wsigraph.errors import InputError
    from wsigraph.graph.dataset import GraphDataset
    from wsigraph.pipeline.graphs import build_graph_cache

    cfg = _graph_config(args)
    failed_before: dict[str, str] = {}
    if args.manifest:
        from wsigraph.data.manifest import read_manifest

        cohort = read_manifest(args.manifest, feature_dir=args.features, require_labels=False,
                               on_missing_features=args.on_error)
        for sid in getattr(cohort, "missing_features", None) or []:
            failed_before[sid] = f"MissingFileError: no feature file for this slide in {args.features}"
        dataset = GraphDataset.from_cohort(cohort, cfg, args.cache)
    else:
        files = list_feature_files(args.features)
        if not files:
            raise InputError(f"{args.features}: no feature files (*.h5, *.hdf5, *.pt) in this folder")
        dataset = GraphDataset(list(files.values()), slide_ids=list(files), graph=cfg, cache_dir=args.cache)
    kw = job_kwargs(args, Path(args.cache) / "build_graphs_report.csv")
    report = build_graph_cache(dataset, failed_before=failed_before, **kw)
    n_edges = sum(r["num_edges"] for r in report.results.values())
    print(f"graphs in {args.cache}: {report.summary()}; {n_edges} edges built this run")
    return job_exit_status(report)
