"""``wsigraph bench``: the accuracy benchmark (cohorts x models x seeds), resumable (thin layer)."""
from __future__ import annotations

import argparse


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="accuracy benchmark: every model on every cohort over several seeds, on identical splits",
        description="Run every model of a bench config on every cohort over its seeds (same splits for all), "
                    "score per-patch localisation where patch labels exist, and write runs.csv, table.md, "
                    "wilcoxon.csv, localization.csv and boxplot_<metric>.png into output_dir. Rerunning "
                    "resumes: finished runs are not redone. KEY=VALUE overrides (dotted keys, YAML values) "
                    "follow the config, e.g. seeds=[0,1] train.epochs=5 output_dir=out/b2. "
                    "See benchmarks/configs/default.yaml for an annotated config.")
    p.add_argument("--config", "-c", required=True, help="bench YAML (cohorts, models, seeds, train, graph, ...)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--only-cohorts", type=_names, default=None, metavar="A,B",
                   help="run only these cohorts (the reports still cover every finished run)")
    p.add_argument("--only-models", type=_names, default=None, metavar="X,Y",
                   help="run only these model labels (the reports still cover every finished run)")
    p.add_argument("--force-new-config", action="store_true",
                   help="the output folder holds a benchmark with another config: move its conflicting runs "
                        "to <output_dir>/superseded/<time>/ and run the new config (nothing is deleted); "
                        "without this flag such a folder is refused, naming the differing keys")
    p.add_argument("--base-dir", default=None,
                   help="folder that relative paths of the config are relative to (default: the current one)")
    p.add_argument("--allow-random-features", action="store_true",
                   help="accept features of a randomly initialised encoder in every cohort (refused by default; "
                        "a cohort's allow_random_features: true does the same for one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wsigraph.bench import load_bench_config, run_benchmark

    cfg = load_bench_config(args.config, args.overrides, base_dir=args.base_dir)
    if args.allow_random_features:
        for spec in cfg.cohorts:
            spec.allow_random_features = True
    run_benchmark(cfg, progress=not args.no_progress, only_cohorts=args.only_cohorts, only_models=args.only_models,
                  force_new_config=args.force_new_config)
    out = Path(cfg.output_dir)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"results: {out} (runs.csv, table.md, wilcoxon.csv, localization.csv, boxplot_*.png)")
    return 0
