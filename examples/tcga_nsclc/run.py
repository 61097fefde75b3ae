"""TCGA-NSCLC: lung adenocarcinoma (LUAD) vs squamous cell carcinoma (LUSC), 5-fold patient-level CV.

    python examples/tcga_nsclc/run.py --data DIR [--out DIR] [--from features|srmil-pickle|slides] [--quick]

Labels come from the TCGA project: a labels CSV, a GDC sample sheet, or LUAD/ and LUSC/ folders (one per
project, holding slides or a feature folder). A patient is the first 12 characters of the TCGA barcode
(TCGA-XX-XXXX), so all slides of a patient fall in the same fold. See README.md beside this file.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402
from wsigraph.data.tables import read_table  # noqa: E402
from wsigraph.pipeline.slides import FeatureFolder, feature_folder, strip_slide_suffix  # noqa: E402

CLASSES = ["LUAD", "LUSC"]
BARCODE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)
PROJECT_DIR = re.compile(r"^(tcga-)?(luad|lusc)$", re.IGNORECASE)
LAYOUTS = [
    "features      LUAD/<feature folder>/ and LUSC/<feature folder>/, or one feature folder + a label table;",
    "              a feature folder is h5_files/ (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/ (TRIDENT)",
    "              or features/ (wsigraph), files named by the slide: TCGA-05-4244-01Z-00-DX1.<uuid>.h5",
    "slides        LUAD/**/TCGA-*.svs and LUSC/**/TCGA-*.svs (GDC download folders), or slides + a label table",
    "              (needs --encoder NAME --weights FILE)",
    "srmil-pickle  one <name>.pkl (graph_y order LUAD, LUSC; --classes to change) (needs --trust-pickle)",
    "label table   labels.csv (slide_id,label[,case_id], label LUAD|LUSC) or gdc_sample_sheet*.tsv (GDC portal)",
]
EX = C.Example("tcga_nsclc", LAYOUTS)


def project_of(path: Path, root: Path) -> str | None:
    """LUAD / LUSC from a folder named LUAD, TCGA-LUAD, LUSC or TCGA-LUSC on the way to ``path``."""
    try:
        parts = path.resolve().relative_to(root.resolve()).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    hits = {PROJECT_DIR.match(p).group(2).upper() for p in parts if PROJECT_DIR.match(p)}
    return hits.pop() if len(hits) == 1 else None


def label_table(args, data: Path) -> tuple[dict[str, str], dict[str, str], str] | None:
    """({slide_id: LUAD|LUSC}, {slide_id: case_id}, source) from --labels / labels.csv or a GDC sample sheet."""
    labels_csv = Path(args.labels) if args.labels else C.first_existing([data / "labels.csv"])
    if labels_csv is not None:
        df = read_table(labels_csv)
        need = [c for c in ("slide_id", "label") if c not in df.columns]
        if need:
            raise C.ExampleError(f"{labels_csv}: missing column(s) {need}; columns present: {list(df.columns)}")
        lab, cases = {}, {}
        case_col = df["case_id"] if "case_id" in df.columns else [""] * len(df)
        for line, (sid, value, case) in enumerate(zip(df["slide_id"], df["label"], case_col), start=2):
            value = value.strip().upper().replace("TCGA-", "")
            if value not in CLASSES:
                raise C.ExampleError(f"{labels_csv}, line {line}: label {value!r} is not LUAD or LUSC")
            sid = strip_slide_suffix(sid.strip())
            lab[sid] = value
            if case.strip():
                cases[sid] = case.strip()
        return lab, cases, str(labels_csv)
    sheets = sorted(data.glob("gdc_sample_sheet*.tsv")) + sorted(data.glob("gdc_sample_sheet*.csv"))
    if args.sample_sheet or sheets:
        sheet = Path(args.sample_sheet) if args.sample_sheet else sheets[0]
        df = read_table(sheet)
        need = [c for c in ("File Name", "Project ID") if c not in df.columns]
        if need:
            raise C.ExampleError(f"{sheet}: missing GDC column(s) {need}; columns present: {list(df.columns)}")
        lab, cases = {}, {}
        for name, proj, case in zip(df["File Name"], df["Project ID"], df.get("Case ID", [""] * len(df))):
            proj = proj.strip().upper().replace("TCGA-", "")
            if proj in CLASSES:
                sid = Path(name.strip()).stem
                lab[sid], cases[sid] = proj, case.split(",")[0].strip()
        return lab, cases, str(sheet)
    return None


def manifest_rows(files: dict[str, Path], data: Path, table) -> list[dict]:
    """One row per slide with a label; case_id from the table, else the barcode (first 12 characters)."""
    labels, cases, source = table if table else ({}, {}, "the LUAD/ and LUSC/ folders")
    rows, unlabeled, no_case = [], [], []
    for sid, path in sorted(files.items()):
        label = labels.get(sid) or project_of(path, data)
        if label is None:
            unlabeled.append(sid)
            continue
        case = cases.get(sid) or (BARCODE.match(sid).group(0).upper() if BARCODE.match(sid) else None)
        if case is None:
            no_case.append(sid)
            continue
        rows.append({"slide_id": sid, "label": label, "case_id": case})
    if unlabeled:
        print(f"      no LUAD/LUSC label in {source} for {len(unlabeled)} slide(s), left out: {C.listing(unlabeled)}")
    if no_case:
        raise C.ExampleError(f"slide id(s) {C.listing(no_case)} are not TCGA barcodes (TCGA-XX-XXXX-...), so the "
                             "patient is unknown; add a case_id column to labels.csv")
    if not rows:
        raise C.ExampleError(f"no slide has a LUAD/LUSC label from {source}")
    return rows


def run(argv=None) -> int:
    p = EX.parser(__doc__)
    p.add_argument("--labels", metavar="CSV", help="slide_id,label[,case_id] table (default: DATA/labels.csv)")
    p.add_argument("--sample-sheet", metavar="TSV", help="GDC sample sheet (default: DATA/gdc_sample_sheet*.tsv)")
    p.add_argument("--classes", nargs=2, default=CLASSES, metavar="NAME", help="graph_y order of the SRMIL pickle")
    args = p.parse_args(argv)
    data, out, missing = EX.start(args, "the folder holding your TCGA-NSCLC data (--data)")
    print(f"[1/4] looking for TCGA-NSCLC data in {data}")

    def features(miss):
        folders = C.find_feature_folders(data)
        if len(folders) > 1 and all(project_of(f.path / "x", data) for f in folders):
            files = {s: p for f in folders for s, p in f.files.items()}
            print("      " + "; ".join(f"{project_of(f.path / 'x', data)}: {f.describe()}" for f in folders))
            from wsigraph.pipeline.patch_labels import gather_feature_files

            return FeatureFolder("merged", gather_feature_files(files, out / "features"), files)
        return C.find_one_feature_folder(data, miss)

    def pickles(miss):
        found = C.find_pickles(data)
        if len(found) > 1:
            raise C.ExampleError(f"several pickles in {data}: {C.listing(found)}; keep one (TCGA is one file)")
        if not found:
            miss.add(data / "TCGA_R50.pkl", "the SRMIL TCGA-NSCLC pickle (any single <name>.pkl)")
        return found or None

    def slides(miss):
        found = {s: f for s, f in C.find_slides(data).items() if BARCODE.match(s)}
        if not found:
            miss.add(data / "LUAD" / "TCGA-XX-XXXX-01Z-00-DX1.<uuid>.svs", "TCGA-LUAD slides (GDC download)")
            miss.add(data / "LUSC" / "TCGA-XX-XXXX-01Z-00-DX1.<uuid>.svs", "TCGA-LUSC slides (GDC download)")
        return found or None

    kind, found = EX.find_start(args, data, {"features": features, "srmil-pickle": pickles, "slides": slides},
                                missing)
    for opt, given in (("--labels", args.labels), ("--sample-sheet", args.sample_sheet)):
        if given and not Path(given).is_file():
            missing.add(given, f"the label table given with {opt}")
    table = label_table(args, data) if not missing else None
    if kind != "srmil-pickle" and table is None:
        paths = found.files.values() if kind == "features" else found.values()
        if not any(project_of(p, data) for p in paths):
            missing.add(data / "labels.csv", "slide_id,label (LUAD|LUSC)[,case_id] for every slide (or --labels)")
            missing.add(data / "gdc_sample_sheet.<date>.tsv", "or the GDC sample sheet of your download "
                        "(columns File Name, Project ID, Case ID)")
            missing.add(data / "LUAD", "or LUAD/ and LUSC/ folders holding the slides or feature folders")
    EX.ready(kind, args, missing)
    if kind == "srmil-pickle":
        C.require_trust(EX.name, found, args)
        cohort = C.import_pickles(found, None, args.classes, out / "srmil_import")
        feats = feature_folder(out / "srmil_import" / "features")
        ids = list(cohort.table.slide_id)
        cases = {s: s for s in ids if not BARCODE.match(s)}  # numbered items: no patient known
        if cases:
            print(f"      {len(cases)} pickle item(s) are not named by TCGA barcode: their folds are grouped by "
                  "slide, not patient")
        table = (dict(zip(ids, cohort.table.label)), cases, "the pickle's graph_y")
        label_paths = feats.files
    elif kind == "slides":  # labels from where the slides are
        feats = C.preprocess(found, out / "preprocess", args)
        label_paths = {s: found[s] for s in feats.files if s in found}
    else:
        feats, label_paths = found, found.files
    print(f"      {feats.describe()}")
    rows = manifest_rows(label_paths, data, table)
    print("[3/4] manifest (5-fold cross-validation grouped by patient)")
    C.write_manifest(out / "manifest.csv", rows, CLASSES)
    EX.benchmark(args, out, [C.cohort_entry(EX.name, out / "manifest.csv", feats.path)])
    return 0


def main(argv=None) -> int:
    return EX.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
