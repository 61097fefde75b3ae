"""TCGA survival: a wsigraph survival manifest (slide_id,case_id,time,event) from TCGA features + clinical table.

    python examples/tcga_survival/run.py --data DIR [--out DIR] [--months] [--train [--quick]]
    python examples/tcga_survival/run.py --features FEATURE_DIR --clinical clinical.tsv [--out DIR] ...

The features are CLAM or TRIDENT files named by the slide (TCGA-AB-1234-01Z-00-DX1.<uuid>.h5); the clinical
table is the GDC clinical download (clinical.tsv) or a cBioPortal patient table. Per patient (the first 12
characters of the barcode, TCGA-AB-1234): event 1 and time days_to_death when vital_status is Dead and
days_to_death is a number, else event 0 and time days_to_last_follow_up. Patients without a usable time and
slides without a clinical row are left out and listed in OUT/manifest_report.csv. Then the script prints the
`wsigraph init-config --task survival` and `wsigraph train` commands, or runs them with --train.
See README.md beside this file.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402
from wsigraph.data.tables import read_table, write_csv_rows  # noqa: E402
from wsigraph.pipeline.slides import feature_folder  # noqa: E402

BARCODE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)
DAYS_PER_MONTH = 365.25 / 12
#: accepted header names per role, in order of preference (compared without case). GDC's ``case_id`` is
#: the case UUID, not the barcode, so it is not among them.
COLUMNS = {
    "patient": ["case_submitter_id", "cases.submitter_id", "bcr_patient_barcode", "submitter_id", "patient_id",
                "patient id"],
    "vital": ["vital_status", "demographic.vital_status"],
    "death": ["days_to_death", "demographic.days_to_death"],
    "follow_up": ["days_to_last_follow_up", "diagnoses.days_to_last_follow_up", "days_to_last_followup"],
    "os_status": ["os_status", "overall survival status"],  # cBioPortal
    "os_months": ["os_months", "overall survival (months)"],
}
CLINICAL_NAMES = ("clinical.tsv", "clinical*.tsv", "clinical*.csv", "clinical*.txt", "data_clinical_patient.txt")
LAYOUTS = [
    "features  one feature folder: h5_files/ (CLAM), <mag>x_<ps>px_<ov>px_overlap/features_<enc>/ (TRIDENT)",
    "          or features/ (wsigraph), files named by the slide: TCGA-AB-1234-01Z-00-DX1.<uuid>.h5",
    "clinical  clinical.tsv (GDC clinical download: case_submitter_id, vital_status, days_to_death,",
    "          days_to_last_follow_up) or data_clinical_patient.txt (cBioPortal: PATIENT_ID, OS_STATUS, OS_MONTHS)",
]
EX = C.Example("tcga_survival", LAYOUTS)
REPORT_COLUMNS = ["slide_id", "case_id", "status", "reason"]


# ---- the clinical table --------------------------------------------------------------------------
def read_clinical(path: Path):
    """The table as strings; cBioPortal's leading ``#`` description lines are skipped."""
    text = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    if not text.startswith("#"):
        return read_table(path)
    import pandas as pd

    lines = text.splitlines()
    while lines and lines[0].startswith("#"):  # the description lines above the header
        lines.pop(0)
    body = "\n".join(lines)
    first = body.split("\n", 1)[0]
    sep = "\t" if first.count("\t") > first.count(",") else ","
    try:
        df = pd.read_csv(io.StringIO(body), sep=sep, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise C.ExampleError(f"{path}: cannot be read as a table ({type(e).__name__}: {e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df.fillna("")


def find_columns(df, path: Path) -> dict[str, str]:
    """role -> header of ``df``; a clear error naming the file and the missing columns otherwise."""
    lower = {c.lower(): c for c in df.columns}
    found = {role: next((lower[n] for n in names if n in lower), None) for role, names in COLUMNS.items()}
    present = ", ".join(df.columns[:30]) + (f", ... ({len(df.columns)} in all)" if len(df.columns) > 30 else "")
    if found["patient"] is None:
        raise C.ExampleError(f"{path}: no patient column (one of {', '.join(COLUMNS['patient'])}, holding the "
                             f"TCGA barcode TCGA-XX-XXXX); columns present: {present}")
    gdc = [r for r in ("vital", "death", "follow_up") if found[r] is None]
    if gdc and (found["os_status"] is None or found["os_months"] is None):
        need = " and ".join(COLUMNS[r][0] for r in gdc)
        raise C.ExampleError(f"{path}: missing column(s) {need} (GDC clinical table; or cBioPortal's OS_STATUS "
                             f"and OS_MONTHS); columns present: {present}")
    roles = ("patient", "vital", "death", "follow_up") if not gdc else ("patient", "os_status", "os_months")
    return {r: found[r] for r in roles}


def number(text: str) -> float | None:
    """A finite number, or None for GDC's ``'--``, ``[Not Available]``, ``NA``, an empty cell, ..."""
    try:
        v = float(str(text).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def gdc_outcome(rows: list[dict], col: dict[str, str]) -> tuple[float, int, str] | str:
    """``(time in days, event, note)`` of one patient from its GDC rows (one per diagnosis / treatment), or why
    there is none. The latest follow-up of the rows is used; rows that disagree on death are refused."""
    status = {r[col["vital"]].strip().lower() for r in rows} - {"", "'--", "--"}
    dead = "dead" in status
    if dead and "alive" in status:
        return f"rows disagree on {col['vital']} (Dead and Alive)"
    deaths = sorted({v for v in (number(r[col["death"]]) for r in rows) if v is not None})
    follow = [v for v in (number(r[col["follow_up"]]) for r in rows) if v is not None]
    if dead and deaths:
        if len(deaths) > 1:
            return f"rows disagree on {col['death']} ({', '.join(f'{d:g}' for d in deaths)})"
        if deaths[0] < 0:
            return f"{col['death']} is {deaths[0]:g} (negative)"
        return deaths[0], 1, ""
    if not follow:
        if dead:
            return f"{col['vital']} Dead but {col['death']} and {col['follow_up']} are missing"
        return f"{col['vital']} {', '.join(sorted(status)) or 'missing'} and {col['follow_up']} missing"
    t = max(follow)
    if t < 0:
        return f"{col['follow_up']} is {t:g} (negative)"
    if dead:
        return t, 0, f"{col['vital']} Dead without {col['death']}: censored at the last follow-up"
    if status - {"alive"}:
        return t, 0, f"{col['vital']} {', '.join(sorted(status))}: censored at the last follow-up"
    return t, 0, ""


def cbio_outcome(rows: list[dict], col: dict[str, str]) -> tuple[float, int, str] | str:
    """``(time in days, event, note)`` from cBioPortal's OS_STATUS (1:DECEASED / 0:LIVING) and OS_MONTHS."""
    seen = set()
    for r in rows:
        s, months = r[col["os_status"]].strip().upper(), number(r[col["os_months"]])
        event = 1 if s.startswith("1") or "DECEASED" in s else 0 if s.startswith("0") or "LIVING" in s else None
        if event is None:
            return f"{col['os_status']} is {r[col['os_status']]!r}"
        if months is None:
            return f"{col['os_months']} is {r[col['os_months']]!r}, not a number"
        if months < 0:
            return f"{col['os_months']} is {months:g} (negative)"
        seen.add((months, event))
    if len(seen) > 1:
        return f"rows disagree on {col['os_status']} / {col['os_months']}"
    months, event = seen.pop()
    return months * DAYS_PER_MONTH, event, ""


def clinical_outcomes(path: Path) -> tuple[dict[str, tuple[float, int, str] | str], str]:
    """``({patient barcode: (time in days, event, note) or why it has none}, which rule)``."""
    df = read_clinical(path)
    col = find_columns(df, path)
    by_patient: dict[str, list[dict]] = {}
    for r in df.to_dict("records"):
        m = BARCODE.match(r[col["patient"]].strip())
        if m:
            by_patient.setdefault(m.group(0).upper(), []).append(r)
    if not by_patient:
        raise C.ExampleError(f"{path}: column {col['patient']!r} holds no TCGA barcode (TCGA-XX-XXXX...), e.g. "
                             f"{C.listing(df[col['patient']].head(3).tolist())}")
    rule = gdc_outcome if "vital" in col else cbio_outcome
    name = (f"{col['vital']} / {col['death']} / {col['follow_up']}" if "vital" in col
            else f"{col['os_status']} / {col['os_months']}")
    return {p: rule(rows, col) for p, rows in by_patient.items()}, name


# ---- the manifest --------------------------------------------------------------------------------
def fmt(t: float):
    r = round(t, 4)
    return int(r) if r.is_integer() else r


def manifest_rows(slides: dict[str, Path], outcomes: dict, months: bool) -> tuple[list[dict], list[dict]]:
    """``(manifest rows, report rows)``: one row per slide with a usable outcome (several slides of a patient
    all kept); the report lists every slide left out, and the kept ones with a note, with the reason."""
    rows, report = [], []
    for sid in sorted(slides):
        m = BARCODE.match(sid)
        case = m.group(0).upper() if m else ""
        out = outcomes.get(case) if case else None
        if not case:
            reason = "not a TCGA barcode (TCGA-XX-XXXX-...): patient unknown"
        elif out is None:
            reason = "no row in the clinical table"
        else:
            reason = out if isinstance(out, str) else None
        if reason is not None:
            report.append({"slide_id": sid, "case_id": case, "status": "left_out", "reason": reason})
            continue
        days, event, note = out
        rows.append({"slide_id": sid, "case_id": case, "time": fmt(days / DAYS_PER_MONTH if months else days),
                     "event": event})
        if note:
            report.append({"slide_id": sid, "case_id": case, "status": "kept", "reason": note})
    return rows, report


def write_report(path: Path, report: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(report, columns=REPORT_COLUMNS).to_csv(path, index=False)


# ---- the commands --------------------------------------------------------------------------------
def commands(args, manifest: Path, features: Path, out: Path) -> tuple[list[str], list[str], Path]:
    """``(init-config argv, train argv, run folder)``: the wsigraph commands for this manifest."""
    cfg = out / "survival.yaml"
    run_dir = out / ("run-quick" if args.quick else "run")
    init = ["init-config", "--task", "survival", "--model", args.model, "--manifest", str(manifest.resolve()),
            "--features", str(features.resolve()), "-o", str(cfg)]
    train = ["train", "--config", str(cfg), f"output_dir={run_dir}"]
    if args.loss == "cox":
        train += ["data.survival.loss=cox", f"train.batch_size={args.batch_size}"]
    if args.quick:
        train += ["train.epochs=2", "data.n_folds=2", "train.bootstrap=100", "--fold", "0"]
    return init, train, run_dir


def show_results(run_dir: Path) -> None:
    """Each fold's test C-index with its 95% CI (slides, and patients where a patient has several slides)."""
    for res in sorted(run_dir.glob("fold_*/results.json")):
        metrics = json.loads(res.read_text()).get("metrics", {})
        parts = []
        for split in ("test", "test_patient"):
            m = metrics.get(split, {})
            if "c_index" in m:
                ci, c = m.get("c_index_ci95") or [None, None], m["c_index"]
                parts.append(f"{split} C-index " + ("n/a" if c is None else f"{c:.3f}")
                             + ("" if None in ci else f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"))
        print(f"      {res.parent.name}: " + ("; ".join(parts) or "no test metrics"))
    print(f"      per fold: predictions_test.csv (risk, surv_bin<k>), predictions_test_patients.csv, plots/km_test.png,"
          f" results.json; all folds: {run_dir / 'summary.csv'}")


# ---- the script ----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python examples/tcga_survival/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", metavar="DIR", help="folder holding one feature folder and the clinical table")
    p.add_argument("--features", metavar="DIR", help="the feature folder (<slide_id>.h5 / .pt), anywhere")
    p.add_argument("--clinical", metavar="FILE", help="the clinical table (TSV / CSV / cBioPortal .txt)")
    p.add_argument("--out", default="wsigraph-examples/tcga_survival", metavar="DIR",
                   help="where manifest.csv, manifest_report.csv, survival.yaml and run/ go (default: %(default)s)")
    p.add_argument("--months", action="store_true", help="write time in months (days / 30.4375), not days")
    g = p.add_argument_group("training (the printed commands; --train runs them)")
    g.add_argument("--train", action="store_true", help="run wsigraph init-config and wsigraph train now")
    g.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 2 folds, fold 0 only (not results)")
    g.add_argument("--model", default="srmil",
                   help="model of init-config (e.g. abmil, patch_gcn; default: %(default)s)")
    g.add_argument("--loss", choices=("nll", "cox"), default="nll",
                   help="nll: discrete-time likelihood (Patch-GCN); cox: partial likelihood (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=16, help="slides per step with --loss cox (default: %(default)s)")
    return p


def locate(args, missing: C.Missing) -> tuple[Path | None, Path | None]:
    """The feature folder and the clinical table, from --features / --clinical or found under --data."""
    data = Path(args.data).expanduser() if args.data else None
    if data is not None:
        C.paths(argparse.Namespace(data=str(data), out=args.out))  # --out is never searched
        if not data.is_dir():
            missing.add(data, "the folder holding your feature folder and clinical table (--data)")
            missing.check()
    features = clinical = None
    if args.features:
        ff = feature_folder(args.features)
        if ff.files:
            features = ff.path
        else:
            missing.add(args.features, "a folder of <slide_id>.h5 / .pt feature files (--features)")
    elif data is not None:
        ff = C.find_one_feature_folder(data, missing)
        features = ff.path if ff else None
    else:
        missing.add("--features DIR", "the feature folder (or --data DIR holding it)")
    if args.clinical:
        clinical = Path(args.clinical).expanduser()
        if not clinical.is_file():
            missing.add(clinical, "the clinical table given with --clinical")
            clinical = None
    elif data is not None:
        found = sorted({p for pat in CLINICAL_NAMES for p in data.glob(pat) if p.is_file()})
        if len(found) > 1:
            raise C.ExampleError(f"several clinical tables in {data}: {C.listing(found)}; choose one with --clinical")
        clinical = found[0] if found else None
        if clinical is None:
            missing.add(data / "clinical.tsv", "the GDC clinical table (case_submitter_id, vital_status, "
                        "days_to_death, days_to_last_follow_up), or --clinical FILE")
            missing.add(data / "data_clinical_patient.txt", "or cBioPortal's patient table (PATIENT_ID, OS_STATUS, "
                        "OS_MONTHS)")
    else:
        missing.add("--clinical FILE", "the clinical table (or --data DIR holding it)")
    missing.check()
    return features, clinical


def run(argv=None) -> int:
    args = parser().parse_args(argv)
    missing = C.Missing(EX.name)
    print("[1/3] looking for the features and the clinical table")
    features, clinical = locate(args, missing)
    slides = feature_folder(features).files
    print(f"      {feature_folder(features).describe()}\n      clinical table {clinical}")
    outcomes, rule = clinical_outcomes(clinical)
    usable = sum(not isinstance(o, str) for o in outcomes.values())
    print(f"[2/3] outcomes from {rule}: {len(outcomes)} patients, {usable} with a usable time")
    rows, report = manifest_rows(slides, outcomes, args.months)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_report(out / "manifest_report.csv", report)
    left = [r for r in report if r["status"] == "left_out"]
    if not rows:
        raise C.ExampleError(f"no slide has a usable outcome; reasons in {out / 'manifest_report.csv'}: "
                             f"{C.listing(sorted({r['reason'] for r in left}), 4)}")
    manifest = write_csv_rows(out / "manifest.csv", rows)
    patients = {r["case_id"] for r in rows}
    print(f"      manifest {manifest}: {len(rows)} slides of {len(patients)} patients, "
          f"{sum(r['event'] for r in {r['case_id']: r for r in rows}.values())} patients with an event; "
          f"time in {'months' if args.months else 'days'}")
    if report:
        print(f"      {len(left)} slide(s) left out, {len(report) - len(left)} kept with a note: "
              f"{out / 'manifest_report.csv'}")
    init, train, run_dir = commands(args, manifest, features, out)
    if not args.train:
        print("[3/3] next: write the config (it checks every row), edit it, train:")
        print("  wsigraph " + shlex.join(init))
        print("  wsigraph " + shlex.join(train))
        return 0
    from wsigraph.cli import main as wsigraph

    cfg = Path(init[init.index("-o") + 1])
    if cfg.is_file():  # keep the user's edits
        print(f"[3/3] using the existing {cfg} (delete it to write a new one)")
    else:
        print("[3/3] wsigraph " + shlex.join(init))
        if wsigraph(init):
            return C.EXIT_MISSING
    print("      wsigraph " + shlex.join(train))
    if wsigraph(train):
        return C.EXIT_MISSING
    show_results(run_dir)
    return 0


def _run_listing_missing(argv=None) -> int:
    try:
        return run(argv)
    except C.MissingInputs as e:  # the shared message speaks of starting points; this script has one layout
        lines = [f"{EX.name}: cannot start, input data missing:"]
        lines += [f"  MISSING {path}\n          {what}" for path, what in e.missing.items]
        lines += ["Expected under --data (or give --features DIR and --clinical FILE):"]
        lines += [f"  {line}" for line in LAYOUTS] + [f"The layout is described in {EX.readme}."]
        print("\n".join(lines), file=sys.stderr)
        return C.EXIT_MISSING


def main(argv=None) -> int:
    return EX.main(_run_listing_missing, argv)


if __name__ == "__main__":
    sys.exit(main())
