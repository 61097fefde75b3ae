"""``wsigraph train | evaluate | predict | init-config``: training and inference commands (thin layer)."""
from __future__ import annotations

import argparse
import sys

from wsigraph.cli._options import add_job_args, job_exit_status, job_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (one split or k-fold cross-validation) from a YAML config",
                       description="Train from a YAML config; KEY=VALUE overrides (dotted keys, YAML values) "
                                   "follow it, e.g. train.epochs=50 model.mask_rate=0.5 data.classes=[a,b]. "
                                   "Rerunning with the same output_dir resumes.")
    p.add_argument("--config", "-c", required=True, help="experiment YAML (see `wsigraph init-config`)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--fold", type=int, action="append", default=None,
                   help="train only this fold (repeatable; default: all)")
    p.add_argument("--no-coords", action="store_true",
                   help="the feature files have no coordinates (plain .pt tensors): the same as graph.mode=none, "
                        "for a model that needs no graph (abmil, mean, clam_sb, transmil, ...)")
    p.add_argument("--allow-random-features", action="store_true",
                   help="train on features of a randomly initialised encoder (refused by default: they carry no "
                        "information about the tissue; for tests and benchmarks): data.allow_random_features=true")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on a labeled cohort (metrics with 95%% CIs; "
                                        "classification, survival or regression, as it was trained)")
    p.add_argument("--checkpoint", required=True, help="best.ckpt (or last.ckpt) of a wsigraph run")
    p.add_argument("--manifest", "--cohort", required=True, dest="manifest", help="cohort CSV slide_id,label,...")
    p.add_argument("--features", required=True, help="folder of the slides' feature files")
    p.add_argument("--out", required=True, help="output folder (metrics.json, predictions.csv, plots/: ROC and "
                   "precision-recall curves with bootstrap bands, calibration, confusion matrix)")
    p.add_argument("--no-plots", action="store_true", help="do not draw plots/")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="only the manifest's slides of this split")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="graph cache folder")
    p.add_argument("--allow-feature-mismatch", action="store_true",
                   help="go on when the features come from another encoder, weights or resolution than the "
                        "checkpoint's (refused by default)")
    p.add_argument("--no-coords", action="store_true",
                   help="the feature files have no coordinates (plain .pt tensors): read them without, for a "
                        "model that needs no graph (abmil, mean, clam_sb, transmil, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="class probabilities and per-patch scores for slides without labels")
    p.add_argument("--checkpoint", required=True, help="best.ckpt of a wsigraph run")
    p.add_argument("--features", required=True, nargs="+", help="a folder of feature files, or files")
    p.add_argument("--out", required=True, help="output folder (predictions.csv, scores/<slide_id>.h5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--cache-dir", default=None, help="graph cache folder")
    p.add_argument("--allow-feature-mismatch", action="store_true",
                   help="predict slides whose features come from another encoder, weights or resolution than "
                        "the checkpoint's (by default they fail, listed in the report)")
    p.add_argument("--no-coords", action="store_true",
                   help="the feature files have no coordinates (plain .pt tensors): read them without, for a "
                        "model that needs no graph (abmil, mean, clam_sb, transmil, ...)")
    add_job_args(p, report_default="OUT/predict_report[.shard-I-of-N].csv", overwrite=True)
    p.set_defaults(func=_predict)

    p = sub.add_parser("init-config", help="write the default experiment config (the SRMIL paper's recipe)")
    p.add_argument("--model", default="srmil", help="model name (its constructor defaults are written)")
    p.add_argument("--manifest", default="manifest.csv", help="value of data.manifest")
    p.add_argument("--features", default="features", help="value of data.feature_dir")
    p.add_argument("--recipe", default="default", choices=("default", "paper"),
                   help="default: wsigraph's defaults; paper: the SRMIL reference code's computation and "
                        "training (model.variant=reference, fp32, one data order, its selection rule)")
    p.add_argument("--task", default="classification", choices=("classification", "survival", "regression"),
                   help="data.task: classification (label column), survival (time and event columns) or "
                        "regression (a target column); default: %(default)s")
    p.add_argument("--out", "-o", default=None, help="YAML file to write (default: print)")
    p.set_defaults(func=_init_config)


def _task_metrics(task: str) -> tuple[str, ...]:
    """The scalar metrics a run of ``task`` reports (its summary metrics)."""
    from wsigraph.tasks import TASKS

    return TASKS[task].summary_metrics


def _train(args: argparse.Namespace) -> int:
    from wsigraph.train.config import load_experiment_config
    from wsigraph.train.runner import train_experiment

    flags = [*(["graph.mode=none"] if args.no_coords else []),
             *(["data.allow_random_features=true"] if args.allow_random_features else [])]
    cfg = load_experiment_config(args.config, [*args.overrides, *flags])
    res = train_experiment(cfg, folds=args.fold)
    metrics = res["summary"].get("metrics", {})
    names = _task_metrics(cfg.data.task)
    parts = ("val", "test", "val_patient", "test_patient")
    for k, m in metrics.items():  # <part>_<metric>: mean and sd over the folds
        if any(k.endswith(f"_{n}") and k[: -len(n) - 1] in parts for n in names):
            print(f"{k}: {m['mean']:.4f} +/- {m['std']:.4f}")
    print(f"results in {res['output_dir']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from wsigraph.train.inference import evaluate

    m = evaluate(args.checkpoint, args.manifest, args.features, args.out, split=args.split, device=args.device,
                 n_bootstrap=args.bootstrap, seed=args.seed, num_workers=args.num_workers,
                 cache_dir=args.cache_dir, progress=not args.no_progress,
                 allow_feature_mismatch=args.allow_feature_mismatch, no_coords=args.no_coords,
                 plots=not args.no_plots)
    for k in _task_metrics(m.get("task", "classification")):
        if k not in m:
            continue
        ci = m.get(f"{k}_ci95")
        print(f"{k}: {m[k]:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""))
    print(f"results in {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wsigraph.pipeline.predict import predict
    from wsigraph.pipeline.shards import shard_suffix

    features = args.features[0] if len(args.features) == 1 else args.features
    report = predict(args.checkpoint, features, args.out, device=args.device, cache_dir=args.cache_dir,
                     allow_feature_mismatch=args.allow_feature_mismatch, no_coords=args.no_coords,
                     **job_kwargs(args))
    table = Path(args.out) / f"predictions{shard_suffix(report.shard)}.csv"
    print(f"predict: {report.summary()}; predictions in {table}")
    return job_exit_status(report)


def _init_config(args: argparse.Namespace) -> int:
    from wsigraph.config import config_to_yaml
    from wsigraph.train.config import default_config
    from wsigraph.utils.atomic import atomic_write_text

    cfg = default_config(args.model, manifest=args.manifest, feature_dir=args.features, recipe=args.recipe,
                         task=args.task)
    from pathlib import Path

    if Path(args.manifest).is_file() and args.task != "classification":  # check every target now
        import pandas as pd

        from wsigraph.data.manifest import read_manifest
        from wsigraph.tasks.cohort import NO_LABEL_COLUMN, build_task, task_targets

        cohort = read_manifest(args.manifest, require_labels=False, label_col=NO_LABEL_COLUMN)
        targets = task_targets(build_task(cfg.data), cohort)
        patients = len(set(cohort.case_ids))
        if args.task == "survival":  # events are a patient's: count each patient once
            events = int(pd.Series(targets[:, 1], index=cohort.case_ids).groupby(level=0).max().sum())
            summary = f"{events} events"
        else:
            summary = f"target {targets[:, 0].min():g} to {targets[:, 0].max():g}"
        print(f"{args.manifest}: {len(targets)} slides of {patients} patients, {summary}", file=sys.stderr)
    elif Path(args.manifest).is_file():  # write the classes it holds, so a typo label later is an error
        from wsigraph.data.manifest import read_manifest

        cfg.data.classes = read_manifest(args.manifest, require_labels=False).classes or None
        print(f"classes found in {args.manifest}: {cfg.data.classes} (data.classes; their order is the "
              "label_index)", file=sys.stderr)
    title = ("the SRMIL reference code's recipe (--recipe paper)" if args.recipe == "paper"
             else "wsigraph's defaults")
    text = (f"# wsigraph experiment config ({title}). Edit, then run:\n"
            "#   wsigraph train --config THIS.yaml [key=value ...]\n" + config_to_yaml(cfg, comments=True))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0
