"""The example scripts (examples/<dataset>/run.py) on tiny stand-ins with the real layouts, made here.

Each stand-in has the folder and file names of the public dataset (CAMELYON16 normal_/tumor_/test_ CLAM
files with reference.csv and lesion XMLs, TCGA barcodes under LUAD/ and LUSC/, the BRACS sheet, a folder of
slides with a labels CSV) but a few slides of 30-60 patches with 8-d features. The scripts run with
``--quick``; the results table must list every model of the run. Without data they must exit with 2 and
name each missing path.
"""
from __future__ import annotations

import importlib.util
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


C16_MODELS = ["SRMIL", "ABMIL", "CLAM-SB", "TransMIL", "DSMIL", "Patch-GCN", "MeanPool", "MaxPool"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bags(rng, n_lo=30, n_hi=61, side=8, step=224, dim=8, shift=0.0):
    """(coords (N, 2) level-0 px on a global grid, features (N, dim), lattice ij (N, 2))."""
    n = int(rng.integers(n_lo, n_hi))
    ij = np.stack(np.unravel_index(rng.choice(side * side, n, replace=False), (side, side)), 1)
    coords = ij[:, ::-1] * step + 4 * step
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    feats[ij[:, 0] < 3] += shift  # a "lesion" band in the top rows
    return coords, feats, ij


def _clam(folder: Path, sid: str, rng, shift=0.0, pt=False) -> None:
    """CLAM h5_files/<sid>.h5 (features float32, coords int32, no attributes) and optionally pt_files/<sid>.pt."""
    coords, feats, _ = _bags(rng, shift=shift)
    (folder / "h5_files").mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "h5_files" / f"{sid}.h5", "w") as f:
        f["features"] = feats
        f["coords"] = coords.astype(np.int32)
    if pt:
        import torch

        (folder / "pt_files").mkdir(exist_ok=True)
        torch.save(torch.from_numpy(feats), folder / "pt_files" / f"{sid}.pt")


def _trident(folder: Path, sid: str, rng, shift=0.0) -> None:
    """TRIDENT 20x_256px_0px_overlap/features_uni_v1/<sid>.h5 with its coords attributes (40x slide)."""
    coords, feats, _ = _bags(rng, step=512, shift=shift)
    d = folder / "20x_256px_0px_overlap" / "features_uni_v1"
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(d / f"{sid}.h5", "w") as f:
        f["features"] = feats
        ds = f.create_dataset("coords", data=coords.astype(np.int64))
        for k, v in dict(patch_size=256, patch_size_level0=512, level0_magnification=40, target_magnification=20,
                         overlap=0, name=sid).items():
            ds.attrs[k] = v
        f.attrs["encoder"] = "uni_v1"


ASAP = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="_0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58"><Coordinates>
<Coordinate Order="0" X="{x0}" Y="{y0}"/><Coordinate Order="1" X="{x1}" Y="{y0}"/>
<Coordinate Order="2" X="{x1}" Y="{y1}"/><Coordinate Order="3" X="{x0}" Y="{y1}"/>
</Coordinates></Annotation></Annotations><AnnotationGroups/></ASAP_Annotations>"""


def _camelyon16(root: Path, rng) -> None:
    """6 training + 4 test CLAM files, test_049 (removed officially), reference.csv, a zipped lesion XML."""
    for i in range(1, 4):
        _clam(root, f"normal_{i:03d}", rng, pt=True)
        _clam(root, f"tumor_{i:03d}", rng, shift=2.0, pt=True)
    truth = {"test_001": "Tumor", "test_002": "Normal", "test_003": "Tumor", "test_004": "Normal"}
    for sid, lab in truth.items():
        _clam(root, sid, rng, shift=2.0 if lab == "Tumor" else 0.0)
    _clam(root, "test_049", rng)
    (root / "testing").mkdir()
    (root / "testing" / "reference.csv").write_text(
        "".join(f"{s},{lab},{'Macro' if lab == 'Tumor' else 'None'},\n" for s, lab in truth.items()))
    # the lesion of test_001 covers lattice rows 0-2 (y from 4*224 to 7*224), all columns
    xml = ASAP.format(x0=4 * 224, y0=4 * 224, x1=12 * 224, y1=7 * 224)
    with zipfile.ZipFile(root / "testing" / "lesion_annotations.zip", "w") as z:
        z.writestr("lesion_annotations/test_001.xml", xml)


def _run(script: str, argv: list[str], capsys) -> tuple[int, str, str]:
    rc = _script(script).main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _check_table(rc: int, out_dir: Path, labels: list[str], err: str, cohorts: int = 1) -> None:
    """End to end: the script wrote its bench config and the table lists every model."""
    assert (out_dir / "bench.yaml").exists()
    assert rc == 0, err
    table = (out_dir / "results-quick" / "table.md").read_text()
    for label in labels:
        assert label in table, f"{label} missing from table.md:\n{table}"
    runs = pd.read_csv(out_dir / "results-quick" / "runs.csv")
    assert len(runs) >= len(labels) * cohorts


# ------------------------------------------------------------------------------------------------------
# CAMELYON16
# ------------------------------------------------------------------------------------------------------


def test_camelyon16_clam_features_to_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data, out = tmp_path / "c16", tmp_path / "out"
    _camelyon16(data, rng)
    rc, stdout, err = _run("camelyon16", ["--data", str(data), "--out", str(out), "--quick"], capsys)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert "test_049" not in set(manifest.slide_id) and "test_049" in stdout
    train = manifest[manifest.split == "train"]
    assert sorted(train.slide_id) == sorted(f"{k}_{i:03d}" for k in ("normal", "tumor") for i in range(1, 4))
    assert (train.label == train.slide_id.str.split("_").str[0]).all()
    ref = pd.read_csv(data / "testing" / "reference.csv", header=None, dtype=str)
    expected = dict(zip(ref[0], ref[1].str.lower()))
    test = manifest[manifest.split == "test"]
    assert dict(zip(test.slide_id, test.label)) == expected
    # patch labels: test_001's lesion band (lattice rows < 3) from the zipped XML; normal test slides all 0
    from wsigraph.data.features import read_features

    labelled = out / "features_labelled"
    with h5py.File(data / "h5_files" / "test_001.h5") as f:
        rows = (f["coords"][:, 1] // 224 - 4)
    assert np.array_equal(read_features(labelled / "test_001.h5").patch_labels, (rows < 3).astype(np.int8))
    assert read_features(labelled / "test_002.h5").patch_labels.sum() == 0
    assert read_features(labelled / "test_003.h5").patch_labels is None  # tumour without an outline
    assert (labelled / "normal_001.h5").is_symlink()  # training slides are linked, not copied
    _check_table(rc, out, C16_MODELS, err)
    # localisation scored on the outlined test slide, for every model
    loc = pd.read_csv(out / "results-quick" / "localization.csv", dtype={"slide_id": str})
    scored = loc[loc.slide_id == "test_001"]
    assert sorted(scored.model) == sorted(C16_MODELS) and (scored.n_positive == int((rows < 3).sum())).all()


def test_camelyon16_without_data_names_what_is_missing(tmp_path):
    def run(*argv):
        p = subprocess.run([sys.executable, str(EXAMPLES / "camelyon16" / "run.py"), *argv],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
        return p.returncode, p.stderr

    rc, err = run("--data", str(tmp_path / "nowhere"))
    assert rc == 2 and str(tmp_path / "nowhere") in err and "Accepted starting points" in err
    (tmp_path / "empty").mkdir()
    rc, err = run("--data", str(tmp_path / "empty"))
    assert rc == 2
    for name in ("h5_files", "<mag>x_<ps>px_<ov>px_overlap/features_<encoder>", "C16_R50.pkl", "C16_R50_test.pkl",
                 "training/normal/normal_001.tif", "testing/images/test_001.tif"):
        assert f"MISSING {tmp_path / 'empty'}/{name}" in err, (name, err)


def test_camelyon16_missing_reference_and_encoder(tmp_path, capsys):
    data = tmp_path / "c16"
    rng = np.random.default_rng(1)
    for sid in ("normal_001", "tumor_001", "test_001"):
        _clam(data, sid, rng)
    rc, _, err = _run("camelyon16", ["--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"MISSING {data / 'testing' / 'reference.csv'}" in err
    slides = data / "training" / "normal"
    slides.mkdir(parents=True)
    (slides / "normal_001.tif").write_bytes(b"")
    rc, _, err = _run("camelyon16", ["--data", str(data), "--from", "slides"], capsys)
    assert rc == 2 and "MISSING --encoder NAME --weights FILE" in err


def test_camelyon16_srmil_pickles_need_trust_then_import(tmp_path, capsys):
    import torch
    from torch_geometric.data import Data

    rng = np.random.default_rng(2)
    data, out = tmp_path / "c16", tmp_path / "out"
    data.mkdir()

    def items(names, tumour):
        res = []
        for name, t in zip(names, tumour):
            coords, feats, ij = _bags(rng, shift=2.0 if t else 0.0)
            y = torch.from_numpy(((ij[:, 0] < 3) & t).astype(np.int64))
            res.append(Data(x=torch.from_numpy(feats), pos=torch.from_numpy(coords).float(),
                            graph_y=torch.eye(2)[[int(t)]], slide_index=name, y=y))
        return res

    train = items([f"{k}_{i:03d}" for k in ("normal", "tumor") for i in range(1, 4)], [0, 0, 0, 1, 1, 1])
    test = items(["test_001", "test_002", "test_003"], [1, 0, 1])
    for name, obj in (("C16_R50.pkl", train), ("C16_R50_test.pkl", test)):
        with open(data / name, "wb") as fh:
            pickle.dump(obj, fh)
    argv = ["--data", str(data), "--out", str(out), "--quick", "--models", "SRMIL"]
    rc, _, err = _run("camelyon16", argv, capsys)
    assert rc == 2 and "--trust-pickle" in err and "C16_R50.pkl" in err
    rc, _, err = _run("camelyon16", argv + ["--trust-pickle"], capsys)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert dict(zip(manifest.slide_id, manifest.split)) == {**{d.slide_index: "train" for d in train},
                                                            **{d.slide_index: "test" for d in test}}
    assert dict(zip(manifest.slide_id, manifest.label))["test_002"] == "normal"
    _check_table(rc, out, ["SRMIL"], err)


# ------------------------------------------------------------------------------------------------------
# TCGA-NSCLC
# ------------------------------------------------------------------------------------------------------


def _tcga_ids() -> dict[str, list[str]]:
    """Per project, TCGA slide ids; the first patient of each project has two slides (DX1, DX2)."""
    ids = {}
    for proj, tss in (("LUAD", "05"), ("LUSC", "18")):
        ids[proj] = [f"TCGA-{tss}-{4240 + k:04d}-01Z-00-DX{dx}.{k:08X}-0A1B-4C2D-8E9F-{dx:012d}"
                     for k in range(4) for dx in ((1, 2) if k == 0 else (1,))]
    return ids


def test_tcga_trident_project_folders_to_table(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data, out = tmp_path / "tcga", tmp_path / "out"
    ids = _tcga_ids()
    for proj, sids in ids.items():
        for sid in sids:
            _trident(data / f"TCGA-{proj}", sid, rng, shift=1.0 if proj == "LUSC" else 0.0)
    rc, _, err = _run("tcga_nsclc", ["--data", str(data), "--out", str(out), "--quick"], capsys)
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert dict(zip(manifest.slide_id, manifest.label)) == {s: p for p, ss in ids.items() for s in ss}
    assert (manifest.case_id == manifest.slide_id.str[:12]).all()
    assert manifest.case_id.nunique() == len(manifest) - 2  # the two DX2 slides share their patient
    _check_table(rc, out, C16_MODELS, err)


def test_tcga_flat_clam_folder_with_gdc_sample_sheet(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(4)
    data, out = tmp_path / "tcga", tmp_path / "out"
    ids = _tcga_ids()
    for sids in ids.values():
        for sid in sids:
            _clam(data, sid, rng)
    rc, _, err = _run("tcga_nsclc", ["--data", str(data), "--out", str(out)], capsys)
    assert rc == 2
    for name in ("labels.csv", "gdc_sample_sheet.<date>.tsv", "LUAD"):
        assert f"MISSING {data / name}" in err
    rows = [{"File ID": f"uuid-{i}", "File Name": f"{sid}.svs", "Data Category": "Biospecimen",
             "Data Type": "Slide Image", "Project ID": f"TCGA-{proj}", "Case ID": sid[:12],
             "Sample ID": sid[:16], "Sample Type": "Primary Tumor"}
            for i, (proj, sid) in enumerate((p, s) for p, ss in ids.items() for s in ss)]
    pd.DataFrame(rows).to_csv(data / "gdc_sample_sheet.2026-01-01.tsv", sep="\t", index=False)
    seen = {}
    module = _script("tcga_nsclc")
    monkeypatch.setattr(sys.modules["_common"], "run_bench", lambda raw, o, e, **kw: seen.update(raw))
    assert module.main(["--data", str(data), "--out", str(out), "--quick"]) == 0
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert dict(zip(manifest.slide_id, manifest.label)) == {s: p for p, ss in ids.items() for s in ss}
    cohort = seen["cohorts"][0]
    assert cohort["split_mode"] == "kfold" and cohort["n_folds"] == 2 and seen["seeds"] == [0]
    assert Path(cohort["feature_dir"]) == (data / "h5_files").resolve()


# ------------------------------------------------------------------------------------------------------
# BRACS
# ------------------------------------------------------------------------------------------------------


def _xlsx(path: Path, rows: list[list[str]]) -> None:
    """A one-sheet .xlsx written by openpyxl (what the BRACS sheet is)."""
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    wb.save(path)


BRACS_SUBTYPES = ["N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"]
BRACS_GROUP = {"N": "benign", "PB": "benign", "UDH": "benign", "FEA": "atypical", "ADH": "atypical",
               "DCIS": "malignant", "IC": "malignant"}


def test_bracs_official_sheet_both_tasks_to_table(tmp_path, capsys):
    rng = np.random.default_rng(5)
    data, out = tmp_path / "bracs", tmp_path / "out"
    sheet = [["WSI Filename", "Patient Id", "WSI label", "RoI ", "Set"]]
    n = 0
    for split, reps in (("Training", 2), ("Validation", 1), ("Testing", 1)):
        for k, sub in enumerate(BRACS_SUBTYPES):
            for r in range(reps):
                n += 1
                sid = f"BRACS_{1000 + n}"
                sheet.append([sid, f"P{split[:2]}{k}{r}", sub, "1", split])
                _clam(data, sid, rng, shift=0.3 * k)
    _xlsx(data / "BRACS.xlsx", sheet)
    rc, _, err = _run("bracs", ["--data", str(data), "--out", str(out), "--quick",
                                "--models", "SRMIL,ABMIL,MeanPool"], capsys)
    split_of = {"Training": "train", "Validation": "val", "Testing": "test"}
    for task, classes in (("7", BRACS_SUBTYPES), ("3", ["benign", "atypical", "malignant"])):
        m = pd.read_csv(out / f"manifest_{task}class.csv", dtype=str)
        want = {r[0]: (r[2] if task == "7" else BRACS_GROUP[r[2]], split_of[r[4]], r[1]) for r in sheet[1:]}
        assert {s: (lab, sp, c) for s, lab, sp, c in zip(m.slide_id, m.label, m.split, m.case_id)} == want
        assert set(m.label) == set(classes)
    import yaml

    cfg = yaml.safe_load((out / "bench.yaml").read_text())
    assert [c["name"] for c in cfg["cohorts"]] == ["bracs_3class", "bracs_7class"]
    assert all(c["ordinal"] and c["split_mode"] == "manifest" for c in cfg["cohorts"])
    _check_table(rc, out, ["SRMIL", "ABMIL", "MeanPool"], err, cohorts=2)


def test_bracs_without_sheet_names_it(tmp_path, capsys):
    data = tmp_path / "bracs"
    _clam(data, "BRACS_1", np.random.default_rng(6))
    rc, _, err = _run("bracs", ["--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"MISSING {data / 'BRACS.xlsx'}" in err and "'WSI label'" in err


# ------------------------------------------------------------------------------------------------------
# your own cohort
# ------------------------------------------------------------------------------------------------------


def test_own_cohort_slides_and_labels_to_table(tmp_path, capsys, shared_data):
    data, out = tmp_path / "cohort", tmp_path / "out"
    (data / "slides").mkdir(parents=True)
    small = shared_data / "slides" / "CMU-1-Small-Region.svs"
    for sid in ("case1_a", "case2_a", "case3_b", "case4_b"):
        shutil.copyfile(small, data / "slides" / f"{sid}.svs")
    (data / "labels.csv").write_text("slide_id,label\ncase1_a.svs,a\ncase2_a,a\ncase3_b,b\ncase4_b,b\nextra_9,b\n")
    rc, _, err = _run("own_cohort", ["--data", str(data), "--out", str(out)], capsys)
    assert rc == 2 and "MISSING --encoder NAME --weights FILE" in err
    argv = ["--data", str(data), "--out", str(out), "--quick", "--models", "SRMIL,ABMIL", "--encoder",
            "resnet50_trunc", "--random-init", "--input-size", "32", "--device", "cpu"]
    rc, stdout, err = _run("own_cohort", argv, capsys)
    assert "extra_9" in stdout  # in the CSV without a slide: named and left out
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert dict(zip(manifest.slide_id, manifest.label)) == {"case1_a": "a", "case2_a": "a", "case3_b": "b",
                                                            "case4_b": "b"}
    assert sorted(p.stem for p in (out / "preprocess" / "features_resnet50_trunc").glob("*.h5")) == \
        sorted(manifest.slide_id)
    _check_table(rc, out, ["SRMIL", "ABMIL"], err)


def test_own_cohort_without_data_names_labels_and_slides(tmp_path, capsys):
    data = tmp_path / "cohort"
    data.mkdir()
    rc, _, err = _run("own_cohort", ["--data", str(data)], capsys)
    assert rc == 2
    for name in ("labels.csv", "slides/<slide_id>.svs", "h5_files"):
        assert f"MISSING {data / name}" in err


def test_own_cohort_trident_features_and_options(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(7)
    data = tmp_path / "cohort"
    for sid in ("s1", "s2", "s3", "s4"):
        _trident(data, sid, rng)
    (data / "labels.csv").write_text("slide_id,label,case_id,split\ns1,x,p1,train\ns2,y,p2,train\n"
                                     "s3,x,p3,test\ns4,y,p4,test\n")
    seen = []
    module = _script("own_cohort")
    monkeypatch.setattr(sys.modules["_common"], "run_bench", lambda raw, o, e, **kw: seen.append(raw))
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), "--classes", "y", "x", "--ordinal"]
    assert module.main(argv) == 0, capsys.readouterr().err
    cohort = seen[-1]["cohorts"][0]
    assert cohort["classes"] == ["y", "x"] and cohort["ordinal"] is True
    assert Path(cohort["feature_dir"]) == (data / "20x_256px_0px_overlap" / "features_uni_v1").resolve()
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert list(manifest.split) == ["train", "train", "test", "test"]


def test_rerun_with_out_inside_data_ignores_own_outputs(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(9)
    data = tmp_path / "tcga"
    for proj, sids in _tcga_ids().items():
        for sid in sids:
            _clam(data / proj, sid, rng)
    module = _script("tcga_nsclc")
    monkeypatch.setattr(sys.modules["_common"], "run_bench", lambda raw, o, e, **kw: None)
    argv = ["--data", str(data), "--out", str(data / "runs")]
    for _ in range(2):  # the second run must not take the first run's runs/features/ for a third folder
        assert module.main(argv) == 0, capsys.readouterr().err
    assert len(list((data / "runs" / "features").iterdir())) == sum(len(v) for v in _tcga_ids().values())


def test_tcga_labels_csv_bad_label_is_named(tmp_path, capsys):
    data = tmp_path / "tcga"
    sid = _tcga_ids()["LUAD"][0]
    _clam(data, sid, np.random.default_rng(8))
    (data / "labels.csv").write_text(f"slide_id,label\n{sid}.svs,LUNG\n")
    rc, _, err = _run("tcga_nsclc", ["--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"{data / 'labels.csv'}, line 2" in err and "'LUNG'" in err


@pytest.mark.parametrize("example", ["camelyon16", "tcga_nsclc", "bracs", "own_cohort"])
def test_bench_yaml_is_a_valid_bench_config(example, tmp_path):
    """Each example's bench.yaml (and its --quick form) passes the harness's strict loader."""
    import argparse

    import yaml

    from wsigraph.bench import config

    sys.path.insert(0, str(EXAMPLES))
    import _common

    raw = yaml.safe_load((EXAMPLES / example / "bench.yaml").read_text())
    fill = [{"name": c["name"], "manifest": str(tmp_path / "m.csv"), "feature_dir": str(tmp_path)}
            for c in raw["cohorts"]]
    for quick in (False, True):
        args = argparse.Namespace(models=None if not quick else "ABMIL,MeanPool", quick=quick)
        cfg = config.load_bench_config(_common.bench_config(EXAMPLES / example / "bench.yaml", fill, tmp_path, args))
        assert [m.label for m in cfg.models][:2] == (["SRMIL", "ABMIL"] if not quick else ["ABMIL", "MeanPool"])
        assert cfg.reference in [m.label for m in cfg.models]
        assert cfg.seeds == ([0, 1, 2, 3, 4] if not quick else [0])
        assert cfg.train.epochs == (100 if not quick else 2)
    full = config.load_bench_config(_common.bench_config(EXAMPLES / example / "bench.yaml", fill, tmp_path,
                                                         argparse.Namespace(models=None, quick=False)))
    assert (full.train.lr, full.train.weight_decay, full.train.select_after) == (5e-4, 1e-5, 0.6)
    assert full.model("SRMIL").params == {} and full.graph.mode == "paper"


# ------------------------------------------------------------------------------------------------------
# TCGA survival (manifest from features + clinical table)
# ------------------------------------------------------------------------------------------------------


def _surv_sid(k: int, dx: int = 1) -> str:
    return f"TCGA-AB-{5000 + k:04d}-01Z-00-DX{dx}.{k:08X}-1A2B-4C3D-8E9F-{dx:012d}"


#: GDC clinical.tsv rows (case_submitter_id, vital_status, days_to_death, days_to_last_follow_up) and what
#: the manifest must hold for that patient: (time in days, event), or None when the patient is left out
SURV_CLINICAL = [
    (0, "Dead", "120", "'--", (120, 1)),      # two slides
    (1, "Alive", "'--", "900", (1200, 0)),    # a second row (another treatment) with a later follow-up
    (1, "Alive", "'--", "1200", (1200, 0)),
    (2, "Dead", "45", "30", (45, 1)),
    (3, "Alive", "'--", "'--", None),         # no usable time
    (4, "Dead", "'--", "300", (300, 0)),      # Dead without days_to_death: censored at the last follow-up
    (5, "Alive", "'--", "-10", None),         # negative follow-up
    *[(k, "Dead", str(100 + 60 * k), "'--", (100 + 60 * k, 1)) if k % 2 == 0
      else (k, "Alive", "'--", str(800 + 40 * k), (800 + 40 * k, 0)) for k in range(6, 16)],
    (99, "Dead", "10", "'--", None),          # a patient without a slide
]


def _survival_layout(root: Path) -> dict[str, tuple[int, int] | None]:
    """TRIDENT features under ``root`` for patients 0-15 (patient 0 with DX1 and DX2) plus patient 20 without a
    clinical row, and ``root/clinical.tsv`` in the GDC layout; returns slide_id -> expected (time, event)."""
    rng = np.random.default_rng(11)
    expected: dict[str, tuple[int, int] | None] = {}
    for k, *_, want in SURV_CLINICAL:
        if k != 99:
            for dx in ((1, 2) if k == 0 else (1,)):
                expected[_surv_sid(k, dx)] = want
    expected[_surv_sid(20)] = None
    for sid in expected:
        _trident(root, sid, rng)
    rows = [{"project_id": "TCGA-XX", "case_id": f"{k:08x}-0000-4000-8000-000000000000",
             "case_submitter_id": f"TCGA-AB-{5000 + k:04d}", "age_at_index": "60", "vital_status": vital,
             "days_to_death": death, "days_to_last_follow_up": follow, "treatment_type": "Radiation Therapy"}
            for k, vital, death, follow, _ in SURV_CLINICAL]
    pd.DataFrame(rows).to_csv(root / "clinical.tsv", sep="\t", index=False)
    return expected


def test_tcga_survival_manifest_from_trident_features_and_gdc_clinical(tmp_path, capsys):
    data, out = tmp_path / "tcga", tmp_path / "out"
    expected = _survival_layout(data)
    rc, stdout, err = _run("tcga_survival", ["--data", str(data), "--out", str(out)], capsys)
    assert rc == 0, err
    manifest = pd.read_csv(out / "manifest.csv", dtype={"slide_id": str, "case_id": str})
    assert list(manifest.columns) == ["slide_id", "case_id", "time", "event"]
    got = {s: (t, e) for s, t, e in zip(manifest.slide_id, manifest.time, manifest.event)}
    assert got == {s: w for s, w in expected.items() if w is not None}
    assert (manifest.case_id == manifest.slide_id.str[:12]).all()
    assert (manifest.case_id == "TCGA-AB-5000").sum() == 2  # both slides of patient 0 kept
    report = pd.read_csv(out / "manifest_report.csv", dtype=str).set_index("slide_id")
    left = report[report.status == "left_out"]
    assert set(left.index) == {s for s, w in expected.items() if w is None}
    assert "missing" in left.loc[_surv_sid(3), "reason"] and "negative" in left.loc[_surv_sid(5), "reason"]
    assert left.loc[_surv_sid(20), "reason"] == "no row in the clinical table"
    assert "censored" in report.loc[_surv_sid(4), "reason"] and report.loc[_surv_sid(4), "status"] == "kept"
    feats = data / "20x_256px_0px_overlap" / "features_uni_v1"
    assert "wsigraph init-config --task survival" in stdout and f"--features {feats.resolve()}" in stdout
    assert f"wsigraph train --config {out / 'survival.yaml'}" in stdout
    # in months: the same rows, time / 30.4375
    rc, _, err = _run("tcga_survival", ["--features", str(feats), "--clinical", str(data / "clinical.tsv"),
                                        "--out", str(tmp_path / "m"), "--months"], capsys)
    assert rc == 0, err
    months = pd.read_csv(tmp_path / "m" / "manifest.csv")
    assert np.allclose(months.time, manifest.time / 30.4375, atol=1e-4)


def test_tcga_survival_clinical_errors_and_cbioportal_table(tmp_path, capsys):
    data = tmp_path / "tcga"
    _trident(data, _surv_sid(0), np.random.default_rng(12))
    _trident(data, _surv_sid(1), np.random.default_rng(13))
    rc, _, err = _run("tcga_survival", ["--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and f"MISSING {data / 'clinical.tsv'}" in err
    bad = data / "clinical.tsv"
    bad.write_text("case_submitter_id\tvital_status\tdays_to_death\nTCGA-AB-5000\tDead\t10\n")
    rc, _, err = _run("tcga_survival", ["--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and str(bad) in err and "days_to_last_follow_up" in err
    bad.unlink()
    # cBioPortal's data_clinical_patient.txt: '#' description lines, OS_STATUS / OS_MONTHS
    (data / "data_clinical_patient.txt").write_text(
        "#Patient Identifier\tOverall Survival Status\tOverall Survival (Months)\n#x\tx\tx\n#STRING\tSTRING\tNUMBER\n"
        "#1\t1\t1\nPATIENT_ID\tOS_STATUS\tOS_MONTHS\nTCGA-AB-5000\t1:DECEASED\t12.5\nTCGA-AB-5001\t0:LIVING\t"
        "[Not Available]\n")
    rc, _, err = _run("tcga_survival", ["--data", str(data), "--out", str(tmp_path / "c"), "--months"], capsys)
    assert rc == 0, err
    manifest = pd.read_csv(tmp_path / "c" / "manifest.csv")
    assert list(zip(manifest.slide_id, manifest.time, manifest.event)) == [(_surv_sid(0), 12.5, 1)]
    report = pd.read_csv(tmp_path / "c" / "manifest_report.csv")
    assert list(report.slide_id) == [_surv_sid(1)] and "OS_MONTHS" in report.reason[0]


def test_tcga_survival_manifest_trains_one_epoch(tmp_path, capsys):
    from wsigraph.train.config import load_experiment_config
    from wsigraph.train.runner import train_experiment

    data, out = tmp_path / "tcga", tmp_path / "out"
    _survival_layout(data)
    rc, _, err = _run("tcga_survival", ["--data", str(data), "--out", str(out)], capsys)
    assert rc == 0, err
    cfg = load_experiment_config({
        "data": {"manifest": str(out / "manifest.csv"),
                 "feature_dir": str(data / "20x_256px_0px_overlap" / "features_uni_v1"),
                 "task": "survival", "n_folds": 2},
        "model": {"name": "abmil", "embed_dim": 16, "attn_dim": 8},
        "train": {"epochs": 1, "bootstrap": 0, "progress_bar": False, "accelerator": "cpu"},
        "output_dir": str(out / "run")})
    train_experiment(cfg, folds=[0])
    pred = pd.read_csv(out / "run" / "fold_0" / "predictions_test.csv")
    assert "risk" in pred.columns and pred["risk"].notna().all()
    manifest = pd.read_csv(out / "manifest.csv").set_index("slide_id")
    assert np.allclose(pred["time"], manifest.loc[pred["slide_id"], "time"])
