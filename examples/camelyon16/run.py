"""CAMELYON16: normal vs tumour on the official split (270 train / 129 test) with lesion-level localisation.

    python examples/camelyon16/run.py --data DIR [--out DIR] [--from features|srmil-pickle|slides] [--quick]

Finds what DIR holds (CLAM / TRIDENT / wsigraph features, the SRMIL pickles, or the raw slides), converts
what needs converting, writes the manifest (labels from the file names and testing/reference.csv, split
train/test as published), labels the test slides' patches from the lesion outlines when present, runs
bench.yaml and prints the results table. Without the data it names what is missing and exits with 2.
See README.md beside this file.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402
from wsigraph.pipeline.slides import FeatureFolder  # noqa: E402

CLASSES = ["normal", "tumor"]
N_TRAIN, N_TEST = 270, 129
DROPPED = {"test_049": "a duplicate slide, removed from the test set by the organisers"}
NO_LOCALISATION = {"test_114": "its lesions are not exhaustively annotated (organisers' note)"}
LAYOUTS = [
    "features      h5_files/<slide_id>.h5 (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/<slide_id>.h5",
    "              (TRIDENT) or features/<slide_id>.h5 (wsigraph), slide ids normal_001.., tumor_001.., test_001..;",
    "              plus testing/reference.csv (labels of the test slides)",
    "srmil-pickle  <name>.pkl + <name>_test.pkl, e.g. C16_R50.pkl + C16_R50_test.pkl (needs --trust-pickle)",
    "slides        training/normal/normal_*.tif, training/tumor/tumor_*.tif, testing/images/test_*.tif and",
    "              testing/reference.csv (needs --encoder NAME --weights FILE)",
    "optional      training/ and testing/lesion_annotations/ (<slide_id>.xml) or lesion_annotations.zip: localisation",
]
EX = C.Example("camelyon16", LAYOUTS)


def reference_labels(path: Path) -> dict[str, str]:
    """``testing/reference.csv`` (no header: ``test_001,Tumor,Macro,...``) -> {slide_id: normal|tumor}."""
    import csv

    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if len(row) < 2 or not row[0].strip():
                continue
            sid, lab = Path(row[0].strip()).stem.lower(), row[1].strip().lower()
            if lab not in CLASSES:
                if line == 1:  # a header line
                    continue
                raise C.ExampleError(f"{path}, line {line}: label {row[1]!r} is not Normal or Tumor")
            out[sid] = lab
    if not out:
        raise C.ExampleError(f"{path}: no 'test_XXX,Normal|Tumor' rows")
    return out


def find_reference(args, data: Path) -> Path | None:
    if args.reference:
        return Path(args.reference) if Path(args.reference).is_file() else None
    return C.first_existing([data / "testing" / "reference.csv", data / "reference.csv"])


def manifest_rows(slide_ids, reference: dict[str, str] | None, ref_path: str) -> list[dict]:
    """Label and split of each CAMELYON16 slide id; other ids are left out (named)."""
    rows, other, unlabeled = [], [], []
    for sid in sorted(slide_ids):
        low = sid.lower()
        if low in DROPPED:
            print(f"      leaving out {sid}: {DROPPED[low]}")
        elif low.startswith(("normal_", "tumor_")):
            rows.append({"slide_id": sid, "label": low.split("_")[0], "split": "train"})
        elif low.startswith("test_"):
            if reference is None or low not in reference:
                unlabeled.append(sid)
            else:
                rows.append({"slide_id": sid, "label": reference[low], "split": "test"})
        else:
            other.append(sid)
    if other:
        print(f"      ignoring {len(other)} file(s) not named normal_/tumor_/test_XXX: {C.listing(other)}")
    if unlabeled:
        raise C.ExampleError(f"{ref_path}: no label for test slide(s) {C.listing(unlabeled)}")
    n_train = sum(r["split"] == "train" for r in rows)
    n_test = len(rows) - n_train
    if n_train == 0:
        raise C.ExampleError("no training slide (normal_XXX / tumor_XXX) among the feature files "
                             f"(found: {C.listing(sorted(slide_ids))})")
    if (n_train, n_test) != (N_TRAIN, N_TEST):
        print(f"      note: {n_train} training and {n_test} test slides (the official split has "
              f"{N_TRAIN} and {N_TEST}); results are not comparable to published ones if slides are missing")
    return rows


def run(argv=None) -> int:
    p = EX.parser(__doc__)
    p.add_argument("--reference", metavar="CSV", help="test-set labels (default: DATA/testing/reference.csv)")
    p.add_argument("--annotations", metavar="DIR", nargs="+",
                   help="lesion outline folders or zips (default: DATA/{training,testing}/lesion_annotations[.zip])")
    p.add_argument("--pickles", metavar="PKL", nargs=2, help="the SRMIL train and test pickles")
    args = p.parse_args(argv)
    data, out, missing = EX.start(args, "the folder holding your CAMELYON16 data (--data)")
    print(f"[1/4] looking for CAMELYON16 data in {data}")

    def pickles(miss):
        if args.pickles:
            return [Path(x) for x in args.pickles]
        found = C.find_pickles(data)
        pairs = [(f.with_name(f.stem[:-5] + f.suffix), f) for f in found if f.stem.lower().endswith("_test")]
        pairs = [pr for pr in pairs if pr[0].exists()]
        if len(pairs) > 1:
            raise C.ExampleError(f"several pickle pairs in {data}: {pairs}; choose with --pickles TRAIN TEST")
        if not pairs:
            miss.add(data / "C16_R50.pkl", "SRMIL train pickle (any <name>.pkl beside <name>_test.pkl)")
            miss.add(data / "C16_R50_test.pkl", "SRMIL test pickle")
            return None
        return list(pairs[0])

    def slides(miss):
        found = {s: f for s, f in C.find_slides(data).items() if s.lower().startswith(("normal_", "tumor_", "test_"))}
        if not found:
            for sub, name in (("training/normal", "normal_001.tif"), ("training/tumor", "tumor_001.tif"),
                              ("testing/images", "test_001.tif")):
                miss.add(data / sub / name, f"CAMELYON16 slides ({sub}/*.tif)")
        return found or None

    kind, found = EX.find_start(args, data, {"srmil-pickle": pickles, "slides": slides}, missing)
    ref = find_reference(args, data)
    needs_ref = kind != "srmil-pickle" and any(
        s.lower().startswith("test_") for s in (found.files if kind == "features" else found))
    if needs_ref and ref is None:
        missing.add(args.reference or data / "testing" / "reference.csv",
                    "labels of the test_XXX slides: the challenge's reference.csv (rows test_001,Tumor,...); "
                    f"also looked for {data / 'reference.csv'}; or pass --reference FILE")
    EX.ready(kind, args, missing)
    if kind == "srmil-pickle":
        C.require_trust(EX.name, found, args)
        cohort = C.import_pickles(found, ["train", "test"], CLASSES, out / "srmil_import")
        rows = [{"slide_id": r.slide_id, "label": r.label, "split": r.split} for r in cohort.table.itertuples()]
        feature_dir, annotations = out / "srmil_import" / "features", None
        print("      patch labels come from the pickles' y (when they have it)")
    else:
        folder = C.preprocess(found, out / "preprocess", args) if kind == "slides" else found
        print(f"      {folder.describe()}")
        rows = manifest_rows(folder.files, reference_labels(ref) if ref else None, str(ref))
        feature_dir = folder.path
        annotations = _annotations(args, data)

    print("[3/4] manifest and patch labels")
    C.write_manifest(out / "manifest.csv", rows, CLASSES)
    if kind != "srmil-pickle":
        feature_dir = _localisation(rows, folder, annotations, out)

    EX.benchmark(args, out, [C.cohort_entry(EX.name, out / "manifest.csv", feature_dir)])
    return 0


def _annotations(args, data: Path) -> list[Path]:
    if args.annotations:
        return [Path(a) for a in args.annotations]
    cands = [data / d / f"lesion_annotations{z}" for d in ("training", "testing", ".") for z in ("", ".zip")]
    return [c for c in cands if c.exists()]


def _localisation(rows: list[dict], folder: FeatureFolder, annotations: list[Path], out: Path) -> Path:
    """Patch labels for the test slides whose lesions are known; returns the feature folder for the harness."""
    if not annotations:
        print("      no lesion outlines (testing/lesion_annotations[.zip]): localisation is not scored")
        return folder.path
    from wsigraph.data.annotations import collect_annotations, find_annotation
    from wsigraph.pipeline.patch_labels import label_feature_files

    ann_dir = collect_annotations(annotations, out / "annotations")
    test = [r for r in rows if r["split"] == "test" and r["slide_id"].lower() not in NO_LOCALISATION]
    if not any(find_annotation(ann_dir, r["slide_id"]) for r in test):
        print(f"      no outline of a test slide in {C.listing(str(a) for a in annotations)}: localisation "
              "is not scored (it needs testing/lesion_annotations)")
        return folder.path
    unknown = [r["slide_id"] for r in test if r["label"] == "tumor" and not find_annotation(ann_dir, r["slide_id"])]
    if unknown:
        print(f"      tumour slides without an outline get no patch labels: {C.listing(unknown)}")
    for r in rows:
        if r["slide_id"].lower() in NO_LOCALISATION:
            print(f"      {r['slide_id']}: no patch labels, {NO_LOCALISATION[r['slide_id'].lower()]}")
    chosen = [r["slide_id"] for r in test if r["slide_id"] not in unknown and r["slide_id"] in folder.files]
    labelled = out / "features_labelled"
    used = label_feature_files(folder.files, ann_dir, chosen, labelled)  # slide id -> its outline (None: all 0)
    print(f"      patch labels for {len(used)} slide(s), {sum(a is not None for a in used.values())} with a lesion "
          f"outline -> {labelled}")
    return labelled


def main(argv=None) -> int:
    return EX.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
