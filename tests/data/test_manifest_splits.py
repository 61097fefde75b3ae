"""Cohort manifests (read, validate, attach features) and splits (manifest column, grouped k-fold, CSV)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsigraph.cli import main
from wsigraph.data.features import write_features
from wsigraph.data.manifest import Cohort, cohort_from_records, read_manifest, write_manifest
from wsigraph.data.splits import Splits, make_splits, read_splits_csv
from wsigraph.errors import ConfigError, InputError, MissingFileError

ATTRS = {"patch_size": 224, "patch_level": 0, "patch_size_level0": 224, "mpp": 0.5, "encoder": "t"}


def write(tmp_path: Path, text: str, name: str = "manifest.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def cohort_csv(tmp_path: Path, n_cases: int = 24, seed: int = 0, name: str = "cohort.csv",
               shuffle: bool = False) -> Path:
    """Cases with 1-3 slides each; labels per case, about 1/3 positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cases):
        label = "tumor" if c % 3 == 0 else "normal"
        for s in range(int(rng.integers(1, 4))):
            rows.append({"case_id": f"P{c:03d}", "slide_id": f"P{c:03d}_{s}", "label": label})
    df = pd.DataFrame(rows)
    if shuffle:
        df = df.sample(frac=1.0, random_state=seed)
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def test_read_basic_manifest_keeps_zero_padded_ids_and_class_order(tmp_path):
    p = write(tmp_path, "slide_id,label\n001,tumor\n002,normal\n010,\n")
    c = read_manifest(p, classes=["tumor", "normal"])
    assert c.slide_ids == ["001", "002", "010"]
    assert c.classes == ["tumor", "normal"]
    assert c.label_indices == [0, 1, -1]
    assert c.table["label"].iloc[2] is None
    assert c.case_ids == c.slide_ids  # case defaults to the slide
    assert c.table["split"].isna().all() and not c.has_split_column
    assert list(c.table.columns[:6]) == ["slide_id", "label", "label_index", "case_id", "split", "feature_path"]
    assert len(c) == 3 and c.class_counts() == {"tumor": 1, "normal": 1, "<unlabeled>": 1}


def test_clam_style_columns_any_order_extra_columns_and_label_column(tmp_path):
    p = write(tmp_path, "case_id,slide_id,diagnosis,site\nP1,S1,IDC,A\nP1,S2,ILC,B\nP2,S3,IDC,A\n")
    c = read_manifest(p, classes=["IDC", "ILC"], label_col="diagnosis")
    assert c.case_ids == ["P1", "P1", "P2"]
    assert c.label_indices == [0, 1, 0]
    assert list(c.table["site"]) == ["A", "B", "A"]  # extra column kept
    with pytest.raises(InputError, match=r"manifest\.csv, line 1: missing required column\(s\) \['label'\].*"
                                         r"columns present: \['case_id', 'slide_id', 'diagnosis', 'site'\]"):
        read_manifest(p, classes=["IDC", "ILC"])


def test_tab_separated_bom_and_blank_lines_keep_line_numbers(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_bytes("\ufeffslide_id\tlabel\n\nA\tx\n\nB\ty\n".encode("utf-8"))
    c = read_manifest(p, classes=["x", "y"])
    assert c.slide_ids == ["A", "B"] and c.lines == [3, 5]
    p.write_bytes("slide_id\tlabel\n\nA\tx\n\nB\tz\n".encode("utf-8"))
    with pytest.raises(InputError, match=r"m\.tsv, line 5: label 'z'"):
        read_manifest(p, classes=["x", "y"])


def test_inferred_classes_are_sorted_with_a_warning(tmp_path, caplog):
    p = write(tmp_path, "slide_id,label\na,tumor\nb,normal\nc,tumor\n")
    with caplog.at_level(logging.WARNING, logger="wsigraph"):
        c = read_manifest(p)
    assert c.classes == ["normal", "tumor"] and c.label_indices == [1, 0, 1]
    assert "no class list given" in caplog.text and "manifest.csv" in caplog.text


def test_split_column_aliases_and_unlabeled_cohort(tmp_path):
    p = write(tmp_path, "slide_id,split\na,Train\nb,validation\nc,TEST\n")
    c = read_manifest(p, require_labels=False)
    assert list(c.table["split"]) == ["train", "val", "test"]
    assert c.label_indices == [-1, -1, -1] and c.classes == []


@pytest.mark.parametrize("text,pattern", [
    ("slide,label\na,x\n",
     r"line 1: missing required column\(s\) \['slide_id'\]; columns present: \['slide', 'label'\]"),
    ("slide_id,label\na,x\n,y\n", r"line 3: empty 'slide_id'"),
    ("slide_id,label\na,x\nb,y\na,y\n", r"line 4: duplicate slide_id 'a' \(first on line 2\)"),
    ("slide_id,label\na,x\nb,cat\n", r"line 3: label 'cat' \(column 'label'\) is not one of the classes \['x', 'y'\]"),
    ("slide_id,label,split\na,x,train\nb,y,holdout\n", r"line 3: split 'holdout' .*\['train', 'val', 'test'\]"),
    ("slide_id,label,case_id,split\na,x,P1,train\nb,y,P2,test\nc,y,P1,test\n",
     r"line 4: case_id 'P1' is in split 'test' here but in 'train' on line 2"),
    ("slide_id,label\na,x\nb,y,extra\n", r"line 3: malformed row: 3 field\(s\) but the header \(line 1\) has 2"),
    ("slide_id,label\na,x\nb\n", r"line 3: malformed row: 1 field"),
    ("slide_id,label,slide_id\na,x,b\n", r"line 1: duplicate column name"),
    ("", r"empty manifest \(no header line\)"),
    ("slide_id,label\n\n", r"header but no slide rows"),
    ('slide_id,label\n"a,x\n', r"malformed|field"),
])
def test_manifest_errors_name_file_and_line(tmp_path, text, pattern):
    p = write(tmp_path, text, name="bad_manifest.csv")
    with pytest.raises(InputError, match=r"bad_manifest\.csv.*" + pattern if "line" in pattern else pattern) as e:
        read_manifest(p, classes=["x", "y"])
    assert "bad_manifest.csv" in str(e.value)


def test_missing_and_unreadable_manifest(tmp_path):
    with pytest.raises(MissingFileError, match=r"nope\.csv.*does not exist"):
        read_manifest(tmp_path / "nope.csv")
    p = tmp_path / "binary.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(InputError, match=r"binary\.csv.*not a UTF-8 text file"):
        read_manifest(p)
    with pytest.raises(InputError, match="is a folder"):
        read_manifest(tmp_path)


def test_bad_class_lists(tmp_path):
    p = write(tmp_path, "slide_id,label\na,x\n")
    with pytest.raises(ConfigError, match=r"lists \['x'\] more than once"):
        read_manifest(p, classes=["x", "x"])
    with pytest.raises(ConfigError, match="string"):
        read_manifest(p, classes="x")


# ----------------------------------------------------------------------------------------------------
# cohort operations
# ----------------------------------------------------------------------------------------------------


def _feature_dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "features"
    coords = np.array([[0, 0], [224, 0]])
    for n in names:
        write_features(d / f"{n}.h5", coords, np.zeros((2, 3), np.float32), attrs=ATTRS)
    return d


def test_attach_features_raise_names_every_missing_slide(tmp_path):
    d = _feature_dir(tmp_path, ["a", "c"])
    p = write(tmp_path, "slide_id,label\na,x\nb,y\nc.svs,x\nd,y\n")
    with pytest.raises(InputError) as e:
        read_manifest(p, classes=["x", "y"], feature_dir=d)
    msg = str(e.value)
    assert str(d) in msg and "2 of 4" in msg and "b" in msg and "d" in msg and "manifest.csv" in msg
    c = read_manifest(p, classes=["x", "y"], feature_dir=d, on_missing_features="skip")
    assert c.slide_ids == ["a", "c.svs"]  # 'c.svs' matched c.h5
    assert c.feature_paths == [d / "a.h5", d / "c.h5"]
    assert c.missing_features == ["b", "d"] and c.lines == [2, 4]
    with pytest.raises(ConfigError, match="on_missing"):
        c.attach_features(d, on_missing="ignore")


def test_subset_labeled_to_csv_round_trip(tmp_path):
    p = write(tmp_path, "slide_id,label,case_id,split,extra\na,x,P1,train,1\nb,,P2,test,2\nc,y,P3,train,3\n")
    c = read_manifest(p, classes=["x", "y"])
    s = c.subset(["c", "a"])
    assert s.slide_ids == ["c", "a"] and s.lines == [4, 2] and s.classes == ["x", "y"]
    assert c.labeled().slide_ids == ["a", "c"]
    with pytest.raises(InputError, match=r"not in the cohort: zz"):
        c.subset(["a", "zz"])
    with pytest.raises(InputError, match=r"more than once: a"):
        c.subset(["a", "c", "a"])
    assert "line 3" in c.where("b")
    out = c.to_csv(tmp_path / "out" / "m.csv")
    back = read_manifest(out, classes=["x", "y"])
    pd.testing.assert_frame_equal(back.table.drop(columns="feature_path"), c.table.drop(columns="feature_path"))


def test_cohort_from_records():
    c = cohort_from_records([{"slide_id": "007", "label": "b"}, {"slide_id": "8", "label": "a", "case_id": "P"}],
                            classes=["a", "b"])
    assert isinstance(c, Cohort) and c.slide_ids == ["007", "8"] and c.label_indices == [1, 0]
    assert c.case_ids == ["007", "P"] and c.source is None


# ----------------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------------


def _check_fold_invariants(cohort: Cohort, splits: Splits) -> None:
    case_of = dict(zip(cohort.slide_ids, cohort.case_ids))
    for fold in splits.folds:
        parts = {s: set(fold[s]) for s in ("train", "val", "test")}
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        cases = {s: {case_of[x] for x in ids} for s, ids in parts.items()}
        assert not cases["train"] & cases["val"] and not cases["train"] & cases["test"]
        assert not cases["val"] & cases["test"]


def test_kfold_grouped_stratified_complete_and_deterministic(tmp_path):
    cohort = read_manifest(cohort_csv(tmp_path), classes=["normal", "tumor"])
    splits = make_splits(cohort, n_folds=4, val_frac=0.25, seed=3)
    assert len(splits) == 4 and splits.method == "kfold"
    _check_fold_invariants(cohort, splits)
    # every slide is tested exactly once, and each fold covers the whole cohort
    tested = [s for f in splits.folds for s in f["test"]]
    assert sorted(tested) == sorted(cohort.slide_ids)
    label_of = dict(zip(cohort.slide_ids, cohort.table["label"]))
    for f in splits.folds:
        assert sorted(f["train"] + f["val"] + f["test"]) == sorted(cohort.slide_ids)
        assert {label_of[s] for s in f["test"]} == {"normal", "tumor"}  # stratified
        assert {label_of[s] for s in f["val"]} == {"normal", "tumor"}
        assert 0.1 < len(f["val"]) / (len(f["train"]) + len(f["val"])) < 0.45
    # deterministic per seed, independent of manifest row order, different for another seed
    again = make_splits(read_manifest(cohort_csv(tmp_path, name="shuffled.csv", shuffle=True),
                                      classes=["normal", "tumor"]), n_folds=4, val_frac=0.25, seed=3)
    assert again.folds == splits.folds
    other = make_splits(cohort, n_folds=4, val_frac=0.25, seed=4)
    assert other.folds != splits.folds


def test_kfold_too_few_cases_per_class(tmp_path):
    p = write(tmp_path, "slide_id,label,case_id\n" + "".join(
        f"s{i},{'tumor' if i < 4 else 'normal'},{'T' + str(i // 2) if i < 4 else 'N' + str(i)}\n" for i in range(12)))
    cohort = read_manifest(p, classes=["normal", "tumor"])
    with pytest.raises(InputError, match=r"manifest\.csv.*\{'tumor': 2\}.*fewer cases.*n_folds=3"):
        make_splits(cohort, n_folds=3)
    assert len(make_splits(cohort, n_folds=2)) == 2
    with pytest.raises(ConfigError, match="n_folds"):
        make_splits(cohort, n_folds=1)
    with pytest.raises(ConfigError, match="val_frac"):
        make_splits(cohort, val_frac=1.0)


def test_unlabeled_slides_are_left_out_of_kfold(tmp_path, caplog):
    p = cohort_csv(tmp_path, n_cases=12)
    df = pd.read_csv(p, dtype=str)
    df.loc[0, "label"] = ""
    df.to_csv(p, index=False)
    cohort = read_manifest(p, classes=["normal", "tumor"])
    with caplog.at_level(logging.WARNING, logger="wsigraph"):
        splits = make_splits(cohort, n_folds=3)
    assert "1 unlabeled" in caplog.text
    assert df.loc[0, "slide_id"] not in {s for f in splits.folds for part in f.values() for s in part}


def test_manifest_split_column_is_one_fold_and_val_is_carved_grouped(tmp_path):
    rows = ["slide_id,label,case_id,split"]
    for c in range(20):
        split = "test" if c >= 15 else "train"
        for s in range(2):
            rows.append(f"{c}_{s},{'tumor' if c % 2 else 'normal'},P{c},{split}")
    cohort = read_manifest(write(tmp_path, "\n".join(rows) + "\n"), classes=["normal", "tumor"])
    splits = make_splits(cohort, val_frac=0.2, seed=0)
    assert len(splits) == 1 and splits.method == "manifest"
    f = splits[0]
    assert sorted(f["test"]) == sorted(f"{c}_{s}" for c in range(15, 20) for s in range(2))
    assert 4 <= len(f["val"]) <= 10 and len(f["train"]) + len(f["val"]) == 30
    _check_fold_invariants(cohort, splits)
    assert make_splits(cohort, val_frac=0.0)[0]["val"] == []
    # --ignore-split-column: k-fold anyway
    assert len(make_splits(cohort, n_folds=3, use_manifest_split=False)) == 3


def test_manifest_split_column_with_gaps_is_an_error(tmp_path):
    p = write(tmp_path, "slide_id,label,split\na,x,train\nb,y,\nc,y,test\n")
    with pytest.raises(InputError, match=r"manifest\.csv.*1 slide\(s\) have no split value: b"):
        make_splits(read_manifest(p, classes=["x", "y"]))


def test_splits_csv_round_trip(tmp_path):
    cohort = read_manifest(cohort_csv(tmp_path, n_cases=15), classes=["normal", "tumor"])
    splits = make_splits(cohort, n_folds=3, seed=1)
    out = splits.write_csv(tmp_path / "runs" / "splits.csv")
    df = pd.read_csv(out, dtype=str)
    assert list(df.columns) == ["fold", "split", "slide_id", "case_id", "label"]
    assert len(df) == 3 * len(cohort)
    back = read_splits_csv(out, cohort=cohort)
    assert back.folds == splits.folds
    assert back.info == splits.info
    parts = back.subsets(cohort, 2)
    assert sorted(parts["test"].slide_ids) == splits.folds[2]["test"]
    with pytest.raises(ConfigError, match="fold 3 does not exist"):
        back.subsets(cohort, 3)


@pytest.mark.parametrize("text,pattern", [
    ("fold,slide_id\n0,a\n", r"line 1: missing column\(s\) \['split'\]"),
    ("fold,split,slide_id\nx,train,a\n", r"line 2: fold 'x' is not a non-negative integer"),
    ("fold,split,slide_id\n0,train,a\n0,dev,b\n", r"line 3: split 'dev'"),
    ("fold,split,slide_id\n0,train,a\n0,test,a\n", r"line 3: slide 'a' appears twice in fold 0 \(first on line 2\)"),
    ("fold,split,slide_id\n1,train,a\n", r"folds must be numbered 0..K-1, found \[1\]"),
])
def test_splits_csv_errors(tmp_path, text, pattern):
    p = write(tmp_path, text, name="splits.csv")
    with pytest.raises(InputError, match=r"splits\.csv.*" + pattern):
        read_splits_csv(p)


def test_splits_csv_unknown_slide_and_missing_file(tmp_path):
    cohort = read_manifest(write(tmp_path, "slide_id,label\na,x\n"), classes=["x"])
    p = write(tmp_path, "fold,split,slide_id\n0,train,a\n0,test,ghost\n", name="splits.csv")
    with pytest.raises(InputError, match=r"splits\.csv: 1 slide\(s\) not in the cohort.*ghost"):
        read_splits_csv(p, cohort=cohort)
    with pytest.raises(MissingFileError, match=r"none\.csv"):
        read_splits_csv(tmp_path / "none.csv")


def test_cli_split(tmp_path, capsys):
    manifest = cohort_csv(tmp_path, n_cases=15)
    out = tmp_path / "splits.csv"
    assert main(["split", str(manifest), "-o", str(out), "--folds", "3", "--seed", "2",
                 "--classes", "normal", "tumor"]) == 0
    assert "fold 2:" in capsys.readouterr().out
    cohort = read_manifest(manifest, classes=["normal", "tumor"])
    assert read_splits_csv(out, cohort).folds == make_splits(cohort, n_folds=3, seed=2).folds
    bad = write(tmp_path, "slide_id,label\na,x\na,y\n", name="dup.csv")
    assert main(["split", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "dup.csv, line 3: duplicate slide_id 'a'" in err


def test_write_manifest_counts_and_reads_back(tmp_path):
    rows = [{"slide_id": "t1", "label": "tumor", "split": "train", "case_id": "p1"},
            {"slide_id": "n1", "label": "normal", "split": "train", "case_id": "p2"},
            {"slide_id": "t2", "label": "tumor", "split": "test", "case_id": "p3"}]
    by_class, by_split = write_manifest(tmp_path / "manifest.csv", rows, ["normal", "tumor", "other"])
    assert list(by_class.items()) == [("normal", 1), ("tumor", 2), ("other", 0)]
    assert list(by_split.items()) == [("test", 1), ("train", 2)]
    cohort = read_manifest(tmp_path / "manifest.csv", classes=["normal", "tumor"])
    assert list(cohort.table.slide_id) == ["t1", "n1", "t2"] and cohort.has_split_column
    assert list(cohort.table.split) == ["train", "train", "test"]
    # a row without a split (cross-validation): no split counts; labels beyond the classes are counted, sorted
    by_class, by_split = write_manifest(tmp_path / "cv.csv", [*rows[:2], {"slide_id": "x", "label": "b"},
                                                               {"slide_id": "y", "label": "a"}], ["tumor"])
    assert list(by_class.items()) == [("tumor", 1), ("a", 1), ("b", 1), ("normal", 1)] and by_split == {}


def test_write_manifest_bad_rows_are_named(tmp_path):
    path = tmp_path / "m.csv"
    with pytest.raises(InputError, match="m.csv: no slides to write"):
        write_manifest(path, [])
    with pytest.raises(InputError, match=r"m.csv, line 3: the row has no 'label'"):
        write_manifest(path, [{"slide_id": "a", "label": "x"}, {"slide_id": "b", "label": " "}])
    with pytest.raises(InputError, match=r"m.csv, line 3: slide_id 'a' is already on line 2"):
        write_manifest(path, [{"slide_id": "a", "label": "x"}, {"slide_id": "a", "label": "y"}])
    with pytest.raises(InputError, match=r"m.csv, line 2: slide_id '\.\./a'"):
        write_manifest(path, [{"slide_id": "../a", "label": "x"}])
    assert not path.exists()  # nothing written when a row is bad
