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

EXAMPLE = "own_cohort"
HERE = Path(__file__).resolve().parent
README = "examples/own_cohort/README.md"
LAYOUTS = [
    "features      h5_files/<slide_id>.h5 (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/<slide_id>.h5",
    "              (TRIDENT) or features/<slide_id>.h5 (wsigraph preprocess)",
    "slides        slides/<slide_id>.svs|.tif|.ndpi|.mrxs|... (or anywhere below --data; needs --encoder, --weights)",
    "labels        labels.csv: slide_id,label[,case_id][,split] (split: train/val/test)",
]


def run(argv=None) -> int:
    p = C.base_parser(EXAMPLE, __doc__.splitlines()[0], "wsigraph-examples/own_cohort")
    p.add_argument("--labels", metavar="CSV", help="slide_id,label[,case_id][,split] (default: DATA/labels.csv)")
    p.add_argument("--label-col", default="label", help="label column of the CSV (default: %(default)s)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="ordered class names (default: sorted labels)")
    p.add_argument("--ordinal", action="store_true", help="the classes are ordered grades (quadratic kappa)")
    p.add_argument("--folds", type=int, default=5, help="folds when the CSV has no split column (default: 5)")
    args = p.parse_args(argv)
    data, out = C.paths(args)
    missing = C.Missing(EXAMPLE)
    if not data.is_dir():
        missing.add(data, "the folder holding your cohort (--data)")
        return C.exit_missing(missing, LAYOUTS, README)
    labels = Path(args.labels) if args.labels else data / "labels.csv"
    print(f"[1/4] looking for slides or features in {data}")

    def slides(miss):
        found = C.find_slides(data)
        if not found:
            miss.add(data / "slides" / "<slide_id>.svs", "your slides (.svs, .tif, .ndpi, .mrxs, ...)")
        return found or None

    def features(miss):
        return C.find_one_feature_folder(data, miss)

    start = C.choose_start(args, ["features", "slides"], {"features": features, "slides": slides,
                                                         "srmil-pickle": _no_pickles}, missing)
    if not labels.is_file():
        missing.add(labels, "slide_id,label[,case_id][,split]: one row per slide, slide_id = file name without "
                    "extension (or pass --labels FILE)")
    if start is None or missing:
        return C.exit_missing(missing, LAYOUTS, README)
    kind, found = start
    if kind == "slides" and not args.encoder:
        missing.add("--encoder NAME --weights FILE", "slides need a patch encoder and its local weights "
                    "(e.g. --encoder resnet50_trunc --weights resnet50.pth; see `wsigraph encoders`)")
        return C.exit_missing(missing, LAYOUTS, README)

    from wsigraph.data.manifest import read_manifest

    cohort = read_manifest(labels, classes=args.classes, label_col=args.label_col)  # errors name file and line
    print(f"[2/4] starting point: {kind}")
    feats = C.preprocess({s: found[s] for s in found}, out / "preprocess", args) if kind == "slides" else found
    print(f"      {feats.describe()}")

    print("[3/4] manifest")
    table = cohort.labeled().table
    ids = {sid: C.strip_suffix(sid) for sid in table["slide_id"]}
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

    print("[4/4] benchmark")
    entry = {"name": EXAMPLE, "manifest": str((out / "manifest.csv").resolve()),
             "feature_dir": str(feats.path.resolve()), "classes": list(cohort.classes), "ordinal": args.ordinal,
             "n_folds": args.folds}
    C.run_bench(C.bench_config(Path(args.config or HERE / "bench.yaml"), [entry], out, args), out, EXAMPLE,
                force_new_config=args.force_new_config)
    return 0


def _no_pickles(miss):
    raise C.ExampleError("own_cohort takes slides or feature folders; for SRMIL pickles run "
                         "`wsigraph import-srmil FILE.pkl OUT --trust-pickle` and point --features at OUT/features")


def main(argv=None) -> int:
    return C.main_guard(EXAMPLE, run, argv)


if __name__ == "__main__":
    sys.exit(main())
