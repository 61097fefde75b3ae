"""What the synthetic cohorts of a bench config let a model learn, before any model is trained.

    python benchmarks/check_cohorts.py --config benchmarks/configs/realistic_contiguity.yaml
    python benchmarks/check_cohorts.py --config benchmarks/configs/realistic_camelyon.yaml --seeds 0 1 2 3 4

For every synthetic cohort of the config and each run seed asked for (the generator seed is the cohort's
``synthetic.seed`` plus the run seed when the cohort has ``vary_synthetic_seed``), the cohort is generated in
memory (nothing is written) and :func:`wsigraph.data.synthetic_checks.cohort_report` measures the per-patch
oracle (a logistic regression on patch features trained with patch labels on half the slides: patch AUC,
and slide AUC of its probabilities combined over the spatial graph) and the slide-level set statistics
(mean features, oracle count and max) on the other half. Also printed: patches per slide and the
train/val/test sizes of the fold the bench runs. One thread is enough (``OMP_NUM_THREADS=1``); a
150-slide, 1024-d cohort takes about 15 s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEYS = ["oracle_patch_auc", "oracle_slide_auc", "oracle_max_auc", "oracle_count_auc", "oracle_mean_prob_auc",
        "mean_features_auc", "true_count_auc", "macro_patch_auc", "micro_patch_auc", "decoy_patch_auc",
        "micro_only_positive_fraction", "micro_only_oracle_slide_auc",
        "micro_only_oracle_max_auc"]


def split_sizes(spec, cfg, seed: int, seeds: list[int]) -> tuple[int, int, int]:
    """(train, val, test) slides of the fold run seed ``seed`` trains, from the labels and cases alone (the
    manifest the generator would write)."""
    import tempfile

    import pandas as pd

    from wsigraph.data.manifest import read_manifest
    from wsigraph.data.splits import make_splits
    from wsigraph.data.synthetic import _assign_cases, _assign_labels

    labels = _assign_labels(cfg)
    width = max(3, len(str(cfg.n_slides - 1)))
    ids = [f"syn_{i:0{width}d}" for i in range(cfg.n_slides)]
    table = pd.DataFrame({"slide_id": ids, "label": [cfg.classes[int(v)] for v in labels],
                          "case_id": _assign_cases(cfg, labels, ids)})
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "manifest.csv", index=False)
        cohort = read_manifest(Path(tmp) / "manifest.csv", classes=list(cfg.classes))
    splits = make_splits(cohort, n_folds=spec.n_folds, val_frac=spec.val_frac, seed=spec.split_seed)
    seeds = list(seeds) if seed in seeds else [seed]
    fold = spec.seed_folds(seeds, len(splits.folds))[seed][0]
    f = splits.folds[fold]
    return len(f["train"]), len(f["val"]), len(f["test"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="bench config YAML")
    p.add_argument("--cohort", action="append", help="only this cohort (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (default: 0)")
    p.add_argument("--n-slides", type=int, default=None, help="override n_slides (a quicker look)")
    args = p.parse_args(argv)

    from wsigraph.bench.config import load_bench_config
    from wsigraph.data.synthetic import SyntheticConfig
    from wsigraph.data.synthetic_checks import cohort_report, format_report, generate_arrays

    bench = load_bench_config(args.config, check=False)
    for spec in bench.cohorts:
        if spec.synthetic is None or (args.cohort and spec.name not in args.cohort):
            continue
        for seed in args.seeds:
            params = dict(spec.synthetic)
            if spec.vary_synthetic_seed:
                params["seed"] = spec.base_synthetic_seed() + seed
            if args.n_slides:
                params["n_slides"] = args.n_slides
            cfg = SyntheticConfig(**params)
            t0 = time.perf_counter()
            slides = generate_arrays(cfg)
            t_gen = time.perf_counter() - t0
            target = "patch_labels" if cfg.mode == "camelyon" else "lesion_like"
            rep = cohort_report(slides, target=target)
            n = np.array([len(s.coords) for s in slides])
            pos = [s for s in slides if s.label > 0]
            lesion = np.array([s.patch_labels.mean() for s in pos]) if pos else np.zeros(1)
            print(f"== {spec.name}, run seed {seed} (generator seed {cfg.seed}): {cfg.n_slides} slides, "
                  f"{cfg.mode} mode, dim {cfg.dim}; generated in {t_gen:.1f} s, checked in "
                  f"{time.perf_counter() - t0 - t_gen:.1f} s")
            print(f"patches per slide: min {n.min()}, median {int(np.median(n))}, max {n.max()}; lesion patches "
                  f"in positives: median {np.median(lesion):.1%} (max {lesion.max():.1%})")
            tr, va, te = split_sizes(spec, cfg, seed, list(bench.seeds))
            print(f"fold of this seed: train/val/test {tr}/{va}/{te} slides")
            print(format_report(rep, KEYS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
