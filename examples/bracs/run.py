"""BRACS: breast lesion subtyping, 3 classes and 7 subtypes, on the official train/val/test split (kappa).

    python examples/bracs/run.py --data DIR [--out DIR] [--from features|srmil-pickle|slides] [--task 3|7|both]

Labels and the split come from the official sheet BRACS.xlsx (or its CSV export), or from the folder tree
of the slide download (BRACS_WSI/<train|val|test>/Group_<BT|AT|MT>/Type_<subtype>/BRACS_<n>.svs).
Subtypes group into benign (N, PB, UDH), atypical (FEA, ADH) and malignant (DCIS, IC). See README.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402
from wsigraph.data.tables import read_table  # noqa: E402
from wsigraph.pipeline.slides import feature_folder  # noqa: E402

SUBTYPES = ["N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"]
GROUP = {"N": "benign", "PB": "benign", "UDH": "benign", "FEA": "atypical", "ADH": "atypical",
         "DCIS": "malignant", "IC": "malignant"}
CLASSES3 = ["benign", "atypical", "malignant"]
SETS = {"training": "train", "train": "train", "validation": "val", "val": "val", "testing": "test", "test": "test"}
OFFICIAL = {"train": 395, "val": 65, "test": 87}
LAYOUTS = [
    "features      h5_files/BRACS_<n>.h5 (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/BRACS_<n>.h5",
    "              (TRIDENT) or features/BRACS_<n>.h5 (wsigraph), plus BRACS.xlsx (or BRACS.csv)",
    "slides        BRACS_WSI/<train|val|test>/Group_<BT|AT|MT>/Type_<N|PB|UDH|FEA|ADH|DCIS|IC>/BRACS_<n>.svs",
    "              (the download's tree; needs --encoder NAME --weights FILE)",
    "srmil-pickle  three pickles named *train*.pkl, *val*.pkl, *test*.pkl (3 classes; needs --trust-pickle)",
    "label sheet   BRACS.xlsx / BRACS.csv: columns 'WSI Filename', 'WSI label', 'Set' (Training/Validation/",
    "              Testing), 'Patient Id'; or the slide tree above",
]
EX = C.Example("bracs", LAYOUTS)


def sheet_labels(path: Path) -> dict[str, dict[str, str]]:
    """{slide_id: {subtype, split, case_id}} from the official sheet."""
    df = read_table(path)
    df.columns = [str(c).strip() for c in df.columns]
    need = [c for c in ("WSI Filename", "WSI label", "Set") if c not in df.columns]
    if need:
        raise C.ExampleError(f"{path}: missing column(s) {need}; columns present: {list(df.columns)} (the first "
                             "sheet of the official BRACS.xlsx has 'WSI Filename', 'Patient Id', 'WSI label', 'Set')")
    out = {}
    for line, rec in enumerate(df.to_dict("records"), start=2):
        sid, sub, split = str(rec["WSI Filename"]).strip(), str(rec["WSI label"]).strip().upper(), str(rec["Set"])
        if not sid:
            continue
        if sub not in SUBTYPES:
            raise C.ExampleError(f"{path}, row {line}: 'WSI label' {rec['WSI label']!r} is not one of {SUBTYPES}")
        if split.strip().lower() not in SETS:
            raise C.ExampleError(f"{path}, row {line}: 'Set' {split!r} is not Training, Validation or Testing")
        out[Path(sid).stem] = {"subtype": sub, "split": SETS[split.strip().lower()],
                               "case_id": str(rec.get("Patient Id", "") or "").strip()}
    return out


def tree_labels(slides: dict[str, Path]) -> dict[str, dict[str, str]]:
    """{slide_id: {subtype, split}} from BRACS_WSI/<split>/Group_*/Type_<subtype>/ paths."""
    out = {}
    for sid, path in slides.items():
        parts = [p.lower() for p in path.parts[:-1]]
        sub = next((p[5:].upper() for p in parts if p.startswith("type_")), None)
        split = next((SETS[p] for p in parts if p in SETS), None)
        if sub in SUBTYPES and split:
            out[sid] = {"subtype": sub, "split": split, "case_id": ""}
    return out


def manifests(files: dict[str, Path], labels: dict[str, dict[str, str]], source: str, out: Path,
              tasks: list[str]) -> None:
    unlabeled = sorted(s for s in files if s not in labels)
    if unlabeled:
        print(f"      no label in {source} for {len(unlabeled)} slide(s), left out: {C.listing(unlabeled)}")
    ids = sorted(s for s in files if s in labels)
    if not ids:
        raise C.ExampleError(f"none of the {len(files)} feature files is named in {source} "
                             f"(feature files: {C.listing(sorted(files))})")
    counts = {k: sum(labels[s]["split"] == k for s in ids) for k in OFFICIAL}
    if counts != OFFICIAL:
        print(f"      note: {counts} slides per split (official: {OFFICIAL}); not comparable to published "
              "results if slides are missing")
    for task in tasks:
        def label(sub: str) -> str:  # a pickle's labels are already the 3 groups
            return sub if task == "7" else GROUP.get(sub, sub)

        rows = [{"slide_id": s, "label": label(labels[s]["subtype"]),
                 "case_id": labels[s]["case_id"] or s, "split": labels[s]["split"]} for s in ids]
        C.write_manifest(out / f"manifest_{task}class.csv", rows, SUBTYPES if task == "7" else CLASSES3)


def run(argv=None) -> int:
    p = EX.parser(__doc__)
    p.add_argument("--task", choices=("3", "7", "both"), default="both", help="3 classes, 7 subtypes or both")
    p.add_argument("--sheet", metavar="XLSX|CSV", help="the official sheet (default: DATA/BRACS.xlsx or BRACS.csv)")
    p.add_argument("--classes", nargs=3, default=CLASSES3, metavar="NAME", help="graph_y order of the SRMIL pickles")
    args = p.parse_args(argv)
    data, out, missing = EX.start(args, "the folder holding your BRACS data (--data)")
    tasks = ["3", "7"] if args.task == "both" else [args.task]
    print(f"[1/4] looking for BRACS data in {data}")

    def pickles(miss):
        found = C.find_pickles(data)
        by = {k: [f for f in found if k in f.stem.lower()] for k in ("train", "val", "test")}
        if all(len(v) == 1 for v in by.values()):
            return [by["train"][0], by["val"][0], by["test"][0]]
        if any(len(v) > 1 for v in by.values()):
            raise C.ExampleError(f"ambiguous pickles in {data}: {by}; keep one train, one val, one test file")
        for k in ("train", "val", "test"):
            if not by[k]:
                miss.add(data / f"BRACS_{k}.pkl", f"SRMIL {k} pickle (a .pkl whose name contains '{k}')")
        return None

    def slides(miss):
        found = {s: f for s, f in C.find_slides(data).items() if s.upper().startswith("BRACS_")}
        if not found:
            miss.add(data / "BRACS_WSI" / "train" / "Group_BT" / "Type_N" / "BRACS_<n>.svs",
                     "BRACS slides in the download's tree (train|val|test / Group_* / Type_*)")
        return found or None

    kind, found = EX.find_start(args, data, {"srmil-pickle": pickles, "slides": slides}, missing)
    sheet = Path(args.sheet) if args.sheet else C.first_existing([data / "BRACS.xlsx", data / "BRACS.csv"])
    if args.sheet and not sheet.is_file():
        missing.add(sheet, "the official BRACS sheet (--sheet)")
    labels, source = {}, ""
    if kind != "srmil-pickle" and not missing:
        if sheet is not None:
            labels, source = sheet_labels(sheet), str(sheet)
        else:
            labels, source = tree_labels(C.find_slides(data)), f"the slide folders under {data}"
            if not labels:
                missing.add(data / "BRACS.xlsx", "the official sheet: 'WSI Filename', 'WSI label', 'Set', "
                            "'Patient Id' (or BRACS.csv, or --sheet FILE, or the BRACS_WSI slide tree)")
    EX.ready(kind, args, missing)
    if kind == "srmil-pickle":
        C.require_trust(EX.name, found, args)
        if "7" in tasks:
            print("      the SRMIL pickles carry the 3-class labels only: running the 3-class task")
            tasks = ["3"]
        cohort = C.import_pickles(found, ["train", "val", "test"], args.classes, out / "srmil_import")
        feats = feature_folder(out / "srmil_import" / "features")
        labels = {r.slide_id: {"subtype": r.label, "split": r.split, "case_id": ""} for r in cohort.table.itertuples()}
        source = "the pickles' graph_y"
    else:
        feats = C.preprocess(found, out / "preprocess", args) if kind == "slides" else found
    print(f"      {feats.describe()}")

    print("[3/4] manifests (official split)")
    manifests(feats.files, labels, source, out, tasks)
    cohorts = [C.cohort_entry(f"bracs_{t}class", out / f"manifest_{t}class.csv", feats.path) for t in tasks]
    if kind == "srmil-pickle":
        cohorts[0]["classes"] = list(args.classes)
    EX.benchmark(args, out, cohorts)
    return 0


def main(argv=None) -> int:
    return EX.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
