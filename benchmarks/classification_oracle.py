"""The ceiling of a synthetic classification benchmark: a patch oracle that sees the patch labels, scored on
the test slides of each run seed, read from a ``wsigraph bench`` output folder; and where the trained models
lose to it.

    python benchmarks/classification_oracle.py OUTPUT_DIR [--cohort realistic_camelyon] [--fold 0]

For each seed with a splits file (or once, for a cohort shared by every seed), the oracle is a logistic
regression of the true patch labels (``patch_labels`` in the synthetic feature files: privileged
information no MIL model has) on the patch features of that seed's *training* slides; each test slide is
scored as in
:func:`wsigraph.data.synthetic_checks.cohort_report`: the largest 3 x 3 neighbourhood mean of its patch
log-odds (centred per slide). Prints one Markdown row per seed (test slides, positives, oracle slide AUC,
the oracle's largest patch probability as a slide score, and the Hanley-McNeil standard error of an AUC on
that many slides), then the mean and sd over seeds: the spread a perfect patch detector still shows on
these test sets.

Then, for the camelyon mode (feature files with ``lesion_kind``), a table of every model with finished runs
under ``runs/<cohort>/`` and the two oracle scores: mean test AUC over the runs on all test slides, on the
positives holding a macro lesion against the negatives, and on the positives holding only micro lesions
against the negatives (the slides only spatial context can find).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: lesion_kind codes of the camelyon generator (wsigraph.data.synthetic)
MACRO, MICRO = 1, 2


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC of ``auc`` measured on ``n_pos`` positives and ``n_neg`` negatives
    (Hanley and McNeil 1982)."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def subgroup_aucs(y: np.ndarray, score: np.ndarray, kind: np.ndarray) -> dict[str, float]:
    """Slide AUC on all slides, on macro positives vs negatives and on micro-only positives vs negatives.

    ``y`` (S,) 0/1 labels, ``score`` (S,), ``kind`` (S,) "macro" | "micro" | "" (negatives)."""
    from wsigraph.data.synthetic_checks import _auc

    neg = y == 0
    out = {"all": _auc(y, score)}
    for name in ("macro", "micro"):
        sel = neg | (kind == name)
        out[name] = _auc(y[sel], score[sel]) if (kind == name).any() else float("nan")
    return out


def _slide_kind(s) -> str:
    if s.label <= 0 or s.lesion_kind is None:
        return ""
    return "macro" if (s.lesion_kind == MACRO).any() else "micro" if (s.lesion_kind == MICRO).any() else ""


def oracle_rows(out: Path, cohort: str, fold: int, max_patches: int = 30000) -> list[dict]:
    """One dict per seed with both a cohort folder and a splits file (seed None: one cohort for every run
    seed, ``splits/<cohort>.csv``): seed, n_test, n_pos, auc, max_auc, se,
    and per test slide: ids, y, kind (see :func:`subgroup_aucs`), neigh and top (the two oracle scores)."""
    from scipy.special import expit

    from wsigraph.data.synthetic_checks import _auc, fit_patch_oracle, neighbourhood_mean, read_cohort_arrays

    rows = []
    found = [(int(f.stem[5:]), f) for f in (out / "splits" / cohort).glob("seed_*.csv")]  # a cohort per seed
    if (out / "splits" / f"{cohort}.csv").is_file():  # one cohort for every seed (seed None)
        found.append((None, out / "splits" / f"{cohort}.csv"))
    for seed, split_file in sorted(found, key=lambda x: -1 if x[0] is None else x[0]):
        root = out / "cohorts" / cohort / f"seed_{seed}"
        if seed is None or not (root / "manifest.csv").is_file():
            root = out / "cohorts" / cohort  # one cohort for every seed
        if not (root / "manifest.csv").is_file():
            continue
        slides = {s.slide_id: s for s in read_cohort_arrays(root)}
        sp = pd.read_csv(split_file, dtype={"slide_id": str})
        sp = sp[sp["fold"] == fold]
        missing = sorted(set(sp["slide_id"]) - set(slides))
        if missing:
            raise SystemExit(f"{split_file}: slides not in {root / 'manifest.csv'}: {missing[:5]}")
        train = [slides[i] for i in sp[sp["split"] == "train"]["slide_id"]]
        test = [slides[i] for i in sp[sp["split"] == "test"]["slide_id"]]
        oracle = fit_patch_oracle(train, "patch_labels", max_patches, seed or 0)
        y = np.array([int(s.label > 0) for s in test])
        neigh, top = [], []
        for s in test:
            logit = oracle.decision_function(s.features.astype(np.float32))
            neigh.append(neighbourhood_mean(s.coords, logit - np.median(logit), s.step, missing=None).max())
            top.append(expit(logit.max()))  # the largest patch probability: predict_proba is expit(logit)
        auc = _auc(y, neigh)
        rows.append({"seed": seed, "n_test": len(test), "n_pos": int(y.sum()), "auc": auc, "max_auc": _auc(y, top),
                     "se": hanley_mcneil_se(auc, int(y.sum()), int(len(y) - y.sum())),
                     "ids": [s.slide_id for s in test], "y": y, "kind": np.array([_slide_kind(s) for s in test]),
                     "neigh": np.array(neigh), "top": np.array(top)})
    return rows


def model_scores(out: Path, cohort: str, fold: int, seed: int | None) -> list[tuple[str, pd.Series]]:
    """(model, positive-class probability per test slide) of each finished run of run seed ``seed``, or of
    every run seed when ``seed`` is None (one cohort for every seed)."""
    scores = []
    pattern = f"*/seed_{'*' if seed is None else seed}/fold_{fold}/predictions_test.csv"
    for run in sorted((out / "runs" / cohort).glob(pattern)):
        pred = pd.read_csv(run, dtype={"slide_id": str}).set_index("slide_id")
        prob = [c for c in pred.columns if c.startswith("prob_")]
        scores.append((run.parents[2].name, pred[prob[-1]]))  # binary: the last class is the positive one
    return scores


def subgroup_table(out: Path, cohort: str, fold: int, rows: list[dict]) -> list[tuple[str, int, dict[str, float]]]:
    """(model, runs, mean subgroup AUCs) for the two oracle scores and every model with finished runs."""
    per: dict[str, list[dict[str, float]]] = {"oracle (3 x 3 neighbourhood)": [], "oracle (largest patch)": []}
    for r in rows:
        per["oracle (3 x 3 neighbourhood)"].append(subgroup_aucs(r["y"], r["neigh"], r["kind"]))
        per["oracle (largest patch)"].append(subgroup_aucs(r["y"], r["top"], r["kind"]))
        for model, s in model_scores(out, cohort, fold, r["seed"]):
            per.setdefault(model, []).append(subgroup_aucs(r["y"], s.loc[r["ids"]].to_numpy(float), r["kind"]))

    def mean(values: list[float]) -> float:
        kept = [v for v in values if not math.isnan(v)]
        return float(np.mean(kept)) if kept else float("nan")

    return [(m, len(v), {k: mean([d[k] for d in v]) for k in ("all", "macro", "micro")}) for m, v in per.items() if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output_dir", type=Path, help="a wsigraph bench output folder")
    p.add_argument("--cohort", default="realistic_camelyon", help="cohort name (default: %(default)s)")
    p.add_argument("--fold", type=int, default=0, help="fold whose test slides are scored (default: 0)")
    args = p.parse_args(argv)
    rows = oracle_rows(args.output_dir, args.cohort, args.fold)
    if not rows:
        print(f"{args.output_dir}: no cohort with splits for {args.cohort!r}", file=sys.stderr)
        return 2
    print("| seed | test slides | positives | oracle slide AUC | oracle max-patch AUC | AUC sampling SE |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        seed = "all" if r["seed"] is None else r["seed"]
        print(f"| {seed} | {r['n_test']} | {r['n_pos']} | {r['auc']:.3f} | {r['max_auc']:.3f} | {r['se']:.3f} |")
    for key, name in (("auc", "oracle slide AUC"), ("max_auc", "oracle max-patch AUC"), ("se", "sampling SE")):
        v = np.array([r[key] for r in rows])
        print(f"{name}: mean {v.mean():.3f}, sd {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}")
    if any((r["kind"] != "").any() for r in rows):
        n_micro = sum(int((r["kind"] == "micro").sum()) for r in rows)
        n_pos = sum(r["n_pos"] for r in rows)
        print(f"\nmicro-only positives: {n_micro} of {n_pos} test positives\n\n"
              "| score | runs | test AUC, all | macro positives vs negatives | micro-only positives vs negatives |\n"
              "|---|---:|---:|---:|---:|")
        for model, n, m in subgroup_table(args.output_dir, args.cohort, args.fold, rows):
            print(f"| {model} | {n} | {m['all']:.3f} | {m['macro']:.3f} | {m['micro']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
