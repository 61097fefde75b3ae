"""Your own cohort: a folder of slides (or of feature files) and a labels CSV, to the benchmark table.

    python examples/own_cohort/run.py --data DIR [--labels CSV] [--classes A B ..] [--out DIR] [--quick]

DIR holds labels.csv (slide_id,label[,case_id][,split]) and either the slides (DIR/slides/ or anywhere
below DIR; then --encoder NAME --weights FILE) or a feature folder (CLAM h5_files/, TRIDENT features_<enc>/,
wsigraph features/). With a split column the CSV's split is used, otherwise 5-fold cross-validation
grouped by case_id. See README.md beside this file.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402
from wsigraph.pipeline.slides import strip_slide_suffix  # noqa: E402

LAYOUTS = [
    "features      h5_files/<slide_id>.h5 (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/<slide_id>.h5",
    "              (TRIDENT) or features/<slide_id>.h5 (wsigraph preprocess)",
    "slides        slides/<slide_id>.svs|.tif|.ndpi|.mrxs|... (or anywhere below --data; needs --encoder, --weights)",
    "labels        labels.csv: slide_id,label[,case_id][,split] (split: train/val/test)",
]
EX = C.Example("own_cohort", LAYOUTS)


def run(argv=None) -> int:
    p = EX.parser(__doc__)
    p.add_argument("--labels", metavar="CSV", help="slide_id,label[,case_id][,split] (default: DATA/labels.csv)")
    p.add_argument("--label-col", default="label", help="label column of the CSV (default: %(default)s)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="ordered class names (default: sorted labels)")
    p.add_argument("--ordinal", action="store_true", help="the classes are ordered grades (quadratic kappa)")
    p.add_argument("--folds", type=int, default=5, help="folds when the CSV has no split column (default: 5)")
    args = p.parse_args(argv)
    data, out, missing = EX.start(args, "the folder holding your cohort (--data)")
    labels = Path(args.labels) if args.labels else data / "labels.csv"
    print(f"[1/4] looking for slides or features in {data}")

    def slides(miss):
        found = C.find_slides(data)
        if not found:
            miss.add(data / "slides" / "<slide_id>.svs", "your slides (.svs, .tif, .ndpi, .mrxs, ...)")
        return found or None

    start = C.choose_start(args, ["features", "slides"], {"features": lambda m: C.find_one_feature_folder(data, m),
                                                         "slides": slides, "srmil-pickle": _no_pickles}, missing)
    if not labels.is_file():
        missing.add(labels, "slide_id,label[,case_id][,split]: one row per slide, slide_id = file name without "
                    "extension (or pass --labels FILE)")
    missing.check()
    kind, found = start
    EX.ready(kind, args, missing)
    from wsigraph.data.manifest import read_manifest

    cohort = read_manifest(labels, classes=args.classes, label_col=args.label_col)  # errors name file and line
    feats = C.preprocess({s: found[s] for s in found}, out / "preprocess", args) if kind == "slides" else found
    print(f"      {feats.describe()}")

    print("[3/4] manifest")
    table = cohort.labeled().table
    ids = {sid: strip_slide_suffix(sid) for sid in table["slide_id"]}
    absent = [sid for sid, stem in ids.items() if stem not in feats.files]
    if absent:
        print(f"      {len(absent)} slide(s) of {labels} have no feature file, left out: {C.listing(absent)}")
    rows = [{"slide_id": ids[r.slide_id], "label": r.label, "case_id": r.case_id,
             **({"split": r.split} if cohort.has_split_column else {})}
            for r in table.itertuples() if ids[r.slide_id] in feats.files]
    if not rows:
        raise C.ExampleError(f"no slide of {labels} has a feature file in {feats.path} "
                             f"(feature files: {C.listing(sorted(feats.files))})")
    C.write_manifest(out / "manifest.csv", rows, cohort.classes)

    EX.benchmark(args, out, [C.cohort_entry(EX.name, out / "manifest.csv", feats.path, classes=list(cohort.classes),
                                            ordinal=args.ordinal, n_folds=args.folds)])
    return 0


def _no_pickles(miss):
    raise C.ExampleError("own_cohort takes slides or feature folders; for SRMIL pickles run "
                         "`wsigraph import-srmil FILE.pkl OUT --trust-pickle` and point --features at OUT/features")


def main(argv=None) -> int:
    return EX.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
