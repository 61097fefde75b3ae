"""The ceiling of a synthetic survival benchmark: Harrell's C-index of the true log hazard (the manifest's
``log_hazard`` column, written by ``wsigraph.data.synthetic.outcomes``) against the observed times, on the
test slides of each run seed, read from a finished ``wsigraph bench`` output folder.

    python benchmarks/survival_oracle.py OUTPUT_DIR [--cohort survival_contiguity] [--fold 0]

Prints one Markdown row per seed (test slides, events, oracle C-index) and the mean and sd.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def oracle_rows(out: Path, cohort: str, fold: int) -> list[tuple[int, int, int, float]]:
    """(seed, test slides, events, C-index) per seed with both a manifest and a splits file."""
    from sksurv.metrics import concordance_index_censored

    rows = []
    for split_file in sorted((out / "splits" / cohort).glob("seed_*.csv"), key=lambda p: int(p.stem[5:])):
        seed = int(split_file.stem[5:])
        manifest = out / "cohorts" / cohort / f"seed_{seed}" / "manifest.csv"
        if not manifest.is_file():
            manifest = out / "cohorts" / cohort / "manifest.csv"  # one cohort for every seed
        m = pd.read_csv(manifest, dtype={"slide_id": str}).set_index("slide_id")
        if "log_hazard" not in m:
            raise SystemExit(f"{manifest}: no log_hazard column (not a synthetic survival cohort)")
        sp = pd.read_csv(split_file, dtype={"slide_id": str})
        test = m.loc[sp[(sp["fold"] == fold) & (sp["split"] == "test")]["slide_id"]]
        c = concordance_index_censored(test["event"].astype(bool).to_numpy(), test["time"].to_numpy(float),
                                       test["log_hazard"].to_numpy(float))[0]
        rows.append((seed, len(test), int(test["event"].sum()), float(c)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output_dir", type=Path, help="a wsigraph bench output folder")
    p.add_argument("--cohort", default="survival_contiguity", help="cohort name (default: %(default)s)")
    p.add_argument("--fold", type=int, default=0, help="fold whose test slides are scored (default: 0)")
    args = p.parse_args(argv)
    rows = oracle_rows(args.output_dir, args.cohort, args.fold)
    if not rows:
        print(f"{args.output_dir}: no splits for cohort {args.cohort!r}", file=sys.stderr)
        return 2
    print("| seed | test slides | events | oracle C-index |\n|---:|---:|---:|---:|")
    for seed, n, e, c in rows:
        print(f"| {seed} | {n} | {e} | {c:.3f} |")
    cs = np.array([r[3] for r in rows])
    print(f"\nmean {cs.mean():.3f}, sd {cs.std(ddof=1) if len(cs) > 1 else 0.0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
