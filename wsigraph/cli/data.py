"""``wsigraph synth | import-srmil | split | label-patches``: synthetic cohorts, SRMIL pickle import, cohort
splits, patch labels from lesion annotations."""
from __future__ import annotations

import argparse

from wsigraph.cli._options import add_job_args, job_exit_status, job_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic cohort (features + patch ground truth + manifest)",
                       description="Write a synthetic cohort in the same layout as real data: OUT_DIR/features/"
                                   "<slide_id>.h5, OUT_DIR/manifest.csv, OUT_DIR/synthetic.json.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--n-slides", type=int, default=40)
    p.add_argument("--mode", choices=("lesion", "contiguity", "camelyon"), default="lesion",
                   help="lesion: positives hold lesion regions; contiguity: only the spatial arrangement of "
                        "lesion-like patches separates the classes; camelyon: a few small macro / micro "
                        "lesions in positives (default: %(default)s; the Python API and bench configs take "
                        "every parameter of SyntheticConfig)")
    p.add_argument("--dim", type=int, default=32, help="feature dimension (default: %(default)s)")
    p.add_argument("--classes", nargs="+", default=["normal", "tumor"], metavar="NAME",
                   help="class names, negative first (default: normal tumor)")
    p.add_argument("--grid", type=int, nargs=2, default=[40, 72], metavar=("MIN", "MAX"),
                   help="lattice side length range in patches (default: 40 72)")
    p.add_argument("--lesion-strength", type=float, default=2.0,
                   help="per-patch signal of lesion patches in noise units: the difficulty (default: %(default)s)")
    p.add_argument("--lesion-fraction", type=float, nargs=2, default=[0.03, 0.12], metavar=("MIN", "MAX"),
                   help="fraction of tissue patches that are lesion(-like) (default: 0.03 0.12)")
    p.add_argument("--decoy-fraction", type=float, default=0.01,
                   help="lesion mode: scattered lesion-like patches in every slide (default: %(default)s)")
    p.add_argument("--cluster-fraction", type=float, default=1.0,
                   help="contiguity mode: fraction of a positive slide's lesion-like patches that are clustered "
                        "(lower = harder; default: %(default)s)")
    p.add_argument("--positive-fraction", type=float, default=0.5, help="fraction of positive slides")
    p.add_argument("--tissue-types", type=int, default=4, dest="n_tissue_types")
    p.add_argument("--patch-size-level0", type=int, default=224,
                   help="grid step in level-0 pixels (448 mimics 40x slides; default: %(default)s)")
    p.add_argument("--float16", action="store_true", help="store features as float16")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)

    p = sub.add_parser("import-srmil", help="convert the SRMIL paper's feature pickles to feature files + manifest",
                       description="Convert pickled lists of torch_geometric Data (x, pos, graph_y, slide_index[, y]) "
                                   "into OUT_DIR/features/<slide_id>.h5 and OUT_DIR/manifest.csv. Unpickling runs "
                                   "code from the file: --trust-pickle is required, for files from a trusted source.")
    p.add_argument("pkl", nargs="+", metavar="PKL", help="pickle file(s), e.g. C16_R50.pkl C16_R50_test.pkl")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling (it can execute arbitrary code: only for files you trust)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names in graph_y order "
                   "(default: class0 class1 ...)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT", choices=("train", "val", "test"),
                   help="one split per pickle, written to the manifest's split column")
    p.add_argument("--patch-size-level0", type=int, default=224, help="grid step of pos (default: %(default)s)")
    p.add_argument("--mpp", type=float, default=0.5, help="um/px of the patches (default: %(default)s)")
    add_job_args(p, report_default="OUT_DIR/import_srmil_report.csv", items="items", overwrite=True)
    p.set_defaults(func=_import_srmil)

    p = sub.add_parser("split", help="make train/val/test splits of a cohort manifest and write them to CSV",
                       description="Use the manifest's split column when it has one, else stratified k-fold "
                                   "grouped by case_id. Writes fold,split,slide_id,case_id,label.")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("-o", "--out", required=True, metavar="CSV", help="output splits CSV")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--val-frac", type=float, default=0.2, help="validation fraction of each training part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", metavar="NAME", help="ordered class names (default: sorted labels)")
    p.add_argument("--label-col", default="label", help="label column of the manifest (default: %(default)s)")
    p.add_argument("--ignore-split-column", action="store_true",
                   help="make k folds even if the manifest has a split column")
    p.set_defaults(func=_split)

    p = sub.add_parser(
        "label-patches", help="patch labels from lesion annotations (ASAP XML, QuPath GeoJSON) into feature files",
        description="For each FEATURE_DIR/<slide_id>.h5, read ANNOTATION_DIR/<slide_id>.xml (ASAP, e.g. "
                    "CAMELYON16) or .geojson/.json (QuPath; level-0 pixel coordinates) and write a copy "
                    "OUT/<slide_id>.h5 with a 'patch_labels' dataset (1 = lesion patch; --link writes the "
                    "labels and links to the original datasets instead of a copy). Exclusion regions "
                    "(ASAP group _2, QuPath class Exclusion/Ignore*) are never lesion.")
    p.add_argument("feature_dir", metavar="FEATURE_DIR", help="folder of <slide_id>.h5 feature (or coords) files")
    p.add_argument("annotation_dir", metavar="ANNOTATION_DIR", help="folder of <slide_id>.xml/.geojson/.json")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the labelled copies")
    p.add_argument("--link", action="store_true",
                   help="write small files holding the labels and HDF5 external links to the original "
                        "datasets instead of copies (the originals must stay where they are)")
    p.add_argument("--min-fraction", type=_min_fraction, default=0.5, metavar="0-1|center",
                   help="a patch is lesion when at least this fraction of its area is (4x4 sample points), or "
                        "'center': when its centre is (default: %(default)s)")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="lesion groups / classes to use (ASAP PartOfGroup, QuPath class; default: all)")
    p.add_argument("--missing", choices=("negative", "skip", "error"), default="negative",
                   help="slides without an annotation file: all-zero labels (the CAMELYON16 convention for "
                        "normal slides), left out, or a failure (default: %(default)s)")
    add_job_args(p, report_default="OUT/label_patches_report.csv")
    p.set_defaults(func=_label_patches)


def _min_fraction(text: str) -> float | str:
    """``--min-fraction``: a number in (0, 1] or ``center``."""
    if text.strip().lower() in ("center", "centre"):
        return "center"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or 'center', got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] or 'center', got {text!r}")
    return value


def _synth(args: argparse.Namespace) -> int:
    from wsigraph.data.synthetic import make_synthetic_cohort

    cohort = make_synthetic_cohort(
        args.out_dir, n_slides=args.n_slides, mode=args.mode, dim=args.dim, classes=tuple(args.classes),
        grid=tuple(args.grid), lesion_strength=args.lesion_strength, lesion_fraction=tuple(args.lesion_fraction),
        decoy_fraction=args.decoy_fraction, cluster_fraction=args.cluster_fraction,
        positive_fraction=args.positive_fraction, n_tissue_types=args.n_tissue_types,
        patch_size_level0=args.patch_size_level0, feature_dtype="float16" if args.float16 else "float32",
        seed=args.seed)
    counts = ", ".join(f"{c} {n}" for c, n in cohort.class_counts().items())
    print(f"wrote {len(cohort)} slides ({counts}) to {args.out_dir}")
    return 0


def _import_srmil(args: argparse.Namespace) -> int:
    from wsigraph.pipeline.imports import import_srmil

    cohort = import_srmil(args.pkl, args.out_dir, classes=args.classes, trust_pickle=args.trust_pickle,
                          patch_size_level0=args.patch_size_level0, splits=args.splits, mpp=args.mpp,
                          **job_kwargs(args))
    report = cohort.import_report
    print(f"imported {len(cohort)} slides into {args.out_dir} ({report.summary()})")
    return job_exit_status(report, "item(s)")


def _split(args: argparse.Namespace) -> int:
    from wsigraph.data.manifest import read_manifest
    from wsigraph.data.splits import make_splits

    cohort = read_manifest(args.manifest, classes=args.classes, label_col=args.label_col)
    splits = make_splits(cohort, n_folds=args.folds, val_frac=args.val_frac, seed=args.seed,
                         use_manifest_split=not args.ignore_split_column)
    splits.write_csv(args.out)
    print(splits.summary())
    print(f"wrote {len(splits)} fold(s) to {args.out}")
    return 0


def _label_patches(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wsigraph.pipeline.patch_labels import label_feature_folder

    kw = job_kwargs(args, Path(args.out) / "label_patches_report.csv")
    report = label_feature_folder(args.feature_dir, args.annotation_dir, args.out, missing=args.missing,
                                  min_fraction=args.min_fraction, classes=args.classes, link=args.link, **kw)
    positive = sum(report.results.values())
    print(f"patch labels: {report.summary()}; {positive} lesion patches in "
          f"{sum(n > 0 for n in report.results.values())} slide(s) -> {args.out}")
    return job_exit_status(report)
