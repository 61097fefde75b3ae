"""Label tables (wsigraph.data.tables): CSV, TSV and .xlsx read alike, as strings; bad files named."""
from __future__ import annotations

import pytest

from wsigraph.data.tables import read_table
from wsigraph.errors import InputError, MissingFileError

ROWS = [["WSI Filename", "Patient Id", "WSI label", "RoI ", "Set"], ["BRACS_1", "P1", "DCIS", "3", "Training"],
        ["BRACS_2", "P2", "N", "", "Testing"]]


def test_xlsx_sheet_is_read_as_strings_with_stripped_headers(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in ROWS:
        ws.append([int(v) if v.isdigit() else (v or None) for v in row])  # a number and an empty cell, as typed
    second = wb.create_sheet("clinical")
    second.append(["case_id", "days_to_death"])
    second.append(["TCGA-01", 120])
    wb.save(tmp_path / "s.xlsx")
    df = read_table(tmp_path / "s.xlsx")
    assert list(df.columns) == [c.strip() for c in ROWS[0]]
    assert df.values.tolist() == ROWS[1:]
    assert read_table(tmp_path / "s.xlsx", sheet="clinical").values.tolist() == [["TCGA-01", "120"]]


@pytest.mark.parametrize("sep", [",", "\t"])
def test_delimited_text_with_bom(tmp_path, sep):
    path = tmp_path / "labels.txt"
    path.write_text("\ufeff" + "\n".join(sep.join(r) for r in ROWS) + "\n", encoding="utf-8")
    df = read_table(path)
    assert list(df.columns) == [c.strip() for c in ROWS[0]] and df.values.tolist() == ROWS[1:]


def test_bad_tables_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="nowhere.csv"):
        read_table(tmp_path / "nowhere.csv")
    (tmp_path / "broken.xlsx").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="broken.xlsx: cannot be read as a table"):
        read_table(tmp_path / "broken.xlsx")


def test_write_csv_rows_columns_in_first_seen_order_and_empty_cells(tmp_path):
    from wsigraph.data.tables import write_csv_rows

    rows = [{"slide_id": "s1", "label": "a"}, {"slide_id": "s2", "label": "b", "case_id": None},
            {"split": "test", "slide_id": "007", "label": "a,b", "score": float("nan"), "n": 3}]
    path = write_csv_rows(tmp_path / "sub" / "t.csv", rows)
    assert path == tmp_path / "sub" / "t.csv"
    assert path.read_text().splitlines() == ["slide_id,label,case_id,split,score,n", "s1,a,,,,", "s2,b,,,,",
                                             '007,"a,b",,test,,3']
    df = read_table(path)  # read back as written: zero-padded ids stay as they are
    assert df["slide_id"].tolist() == ["s1", "s2", "007"] and df["label"].tolist() == ["a", "b", "a,b"]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # written atomically: no temporary file left
    assert write_csv_rows(tmp_path / "empty.csv", []).read_text() == "\n"
