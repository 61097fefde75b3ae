"""Tests of the shared utilities: atomic writes (wsigraph.utils.atomic) and cohort jobs (wsigraph.utils.jobs)."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from wsigraph.utils.jobs import ON_ERROR_CHOICES, JobReport, run_per_slide


def _strict_json(text: str):
    """Parse JSON refusing the non-standard NaN / Infinity tokens that json.dumps writes by default."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------------------------------
# atomic_path
# ----------------------------------------------------------------------------------------------------


def test_atomic_path_success_replaces_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.h5"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # the target only changes on success
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_atomic_path_temp_name_is_hidden_tmp_beside_target(tmp_path):
    target = tmp_path / "slide_1.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent  # same folder: the rename is atomic (same file system)
        assert tmp.name.startswith(".")
        assert tmp.name.startswith(f".{target.name}.")
        assert tmp.name.endswith(".tmp")
        assert tmp.exists()
        tmp.write_bytes(b"x")
        # a folder scan for outputs never sees the temporary file
        assert list(tmp_path.glob("*.h5")) == []
    assert list(tmp_path.glob("*.h5")) == [target]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_path_failure_leaves_target_untouched_and_removes_temp(tmp_path, exc):
    target = tmp_path / "report.csv"
    target.write_text("complete old content")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise exc
    assert target.read_text() == "complete old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_atomic_path_failure_without_previous_target_creates_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(ValueError, match="bad"):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError("bad")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_after_temp_was_deleted_by_body(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.unlink()
            raise OSError("writer removed its own file")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hi")
    assert target.read_text() == "hi"


def test_atomic_write_text_roundtrips_utf8(tmp_path):
    text = "µm/px — slide α\n"
    path = atomic_write_text(tmp_path / "t.txt", text)
    assert path == tmp_path / "t.txt"
    assert path.read_bytes().decode("utf-8") == text



@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_path_output_gets_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "t.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask

# ----------------------------------------------------------------------------------------------------
# atomic_write_json
# ----------------------------------------------------------------------------------------------------


def test_atomic_write_json_turns_nan_into_null(tmp_path):
    obj = {"auc": float("nan"), "nested": {"vals": [1.5, float("nan")], "pair": (float("nan"), 2)},
           "np64": np.float64("nan"), "ok": 0.25}
    path = atomic_write_json(tmp_path / "m.json", obj)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    back = _strict_json(text)
    assert back == {"auc": None, "nested": {"vals": [1.5, None], "pair": [None, 2]}, "np64": None, "ok": 0.25}


def test_atomic_write_json_converts_numpy_and_paths(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "arr": np.arange(3), "p": tmp_path / "f.h5"}
    back = _strict_json(atomic_write_json(tmp_path / "m.json", obj).read_text())
    assert back == {"n": 3, "x": 0.5, "arr": [0, 1, 2], "p": str(tmp_path / "f.h5")}


def test_atomic_write_json_unserialisable_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="set"):
        atomic_write_json(tmp_path / "m.json", {"s": {1, 2}})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_turns_numpy_nan_into_null(tmp_path):
    obj = {"f32": np.float32("nan"), "arr": np.array([1.0, np.nan])}
    back = _strict_json(atomic_write_json(tmp_path / "m.json", obj).read_text())
    assert back == {"f32": None, "arr": [1.0, None]}


# ----------------------------------------------------------------------------------------------------
# run_per_slide
# ----------------------------------------------------------------------------------------------------


def _items(n: int = 4) -> list[tuple[str, int]]:
    return [(f"slide_{i}", i) for i in range(n)]


def _fail_on(bad: set[str], calls: list[str]):
    def fn(slide_id: str, item: int) -> int:
        calls.append(slide_id)
        if slide_id in bad:
            raise ValueError(f"corrupt tile in {slide_id}, row {item}")
        return item * 10

    return fn


def test_run_per_slide_runs_all_and_keeps_results():
    calls: list[str] = []
    report = run_per_slide(_items(3), _fail_on(set(), calls), progress=False)
    assert calls == ["slide_0", "slide_1", "slide_2"]
    assert report.done == calls
    assert report.results == {"slide_0": 0, "slide_1": 10, "slide_2": 20}
    assert report.failed == {} and report.resumed == []


def test_run_per_slide_raise_stops_at_first_failure(tmp_path):
    calls: list[str] = []
    report_path = tmp_path / "failures.csv"
    with pytest.raises(ValueError, match="corrupt tile in slide_1, row 1"):
        run_per_slide(_items(4), _fail_on({"slide_1"}, calls), on_error="raise", report_path=report_path,
                      progress=False)
    assert calls == ["slide_0", "slide_1"]  # nothing after the bad slide ran
    assert not report_path.exists()


def test_run_per_slide_default_is_raise():
    with pytest.raises(ValueError):
        run_per_slide(_items(2), _fail_on({"slide_0"}, []), progress=False)


def test_run_per_slide_skip_goes_on_and_writes_report(tmp_path):
    calls: list[str] = []
    report_path = tmp_path / "logs" / "failures.csv"
    report = run_per_slide(_items(4), _fail_on({"slide_1", "slide_3"}, calls), on_error="skip",
                           report_path=report_path, stage="graph", progress=False)
    assert calls == ["slide_0", "slide_1", "slide_2", "slide_3"]
    assert report.done == ["slide_0", "slide_2"]
    assert set(report.results) == {"slide_0", "slide_2"}
    assert report.failed == {"slide_1": "ValueError: corrupt tile in slide_1, row 1",
                             "slide_3": "ValueError: corrupt tile in slide_3, row 3"}
    assert report.summary() == "2 done, 0 already complete (skipped), 2 failed"

    df = pd.read_csv(report_path)
    assert list(df.columns) == ["slide_id", "stage", "error"]
    assert df["slide_id"].tolist() == ["slide_1", "slide_3"]
    assert df["stage"].tolist() == ["graph", "graph"]
    assert df["error"].tolist() == ["ValueError: corrupt tile in slide_1, row 1",
                                    "ValueError: corrupt tile in slide_3, row 3"]
    assert [p.name for p in report_path.parent.iterdir()] == ["failures.csv"]  # no temp left


def test_run_per_slide_report_stage_defaults_to_desc(tmp_path):
    report_path = tmp_path / "f.csv"
    run_per_slide(_items(2), _fail_on({"slide_0"}, []), on_error="skip", report_path=report_path,
                  desc="extract", progress=False)
    assert pd.read_csv(report_path)["stage"].tolist() == ["extract"]


def test_run_per_slide_report_survives_commas_quotes_and_newlines(tmp_path):
    msg = 'bad value "a,b"\nsecond line'

    def fn(slide_id, item):
        raise InputError(msg)

    report_path = tmp_path / "f.csv"
    report = run_per_slide([("s,1", None)], fn, on_error="skip", report_path=report_path, progress=False)
    df = pd.read_csv(report_path)
    assert df["slide_id"].tolist() == ["s,1"]
    assert df["error"].tolist() == [f"InputError: {msg}"]
    assert report.failed["s,1"] == f"InputError: {msg}"


def test_run_per_slide_no_failure_writes_no_report(tmp_path):
    report_path = tmp_path / "f.csv"
    run_per_slide(_items(2), _fail_on(set(), []), on_error="skip", report_path=report_path, progress=False)
    assert not report_path.exists()


def test_run_per_slide_skip_without_report_path_still_records(tmp_path):
    report = run_per_slide(_items(2), _fail_on({"slide_1"}, []), on_error="skip", progress=False)
    assert list(report.failed) == ["slide_1"]
    assert list(tmp_path.iterdir()) == []


def test_run_per_slide_resume_skips_done_slides():
    calls: list[str] = []
    checked: list[str] = []

    def is_done(slide_id, item):
        checked.append(slide_id)
        return item % 2 == 0

    report = run_per_slide(_items(5), _fail_on(set(), calls), is_done=is_done, progress=False)
    assert checked == [f"slide_{i}" for i in range(5)]
    assert report.resumed == ["slide_0", "slide_2", "slide_4"]
    assert calls == report.done == ["slide_1", "slide_3"]
    assert report.summary() == "2 done, 3 already complete (skipped), 0 failed"


def test_run_per_slide_resume_and_failures_are_counted_separately(tmp_path):
    report = run_per_slide(_items(4), _fail_on({"slide_3"}, []), on_error="skip",
                           is_done=lambda sid, item: sid == "slide_0", report_path=tmp_path / "f.csv",
                           progress=False)
    assert (report.resumed, report.done, list(report.failed)) == (["slide_0"], ["slide_1", "slide_2"], ["slide_3"])
    assert pd.read_csv(tmp_path / "f.csv")["slide_id"].tolist() == ["slide_3"]


def test_run_per_slide_accepts_a_generator():
    report = run_per_slide(((f"s{i}", i) for i in range(3)), lambda sid, i: i + 1, progress=False)
    assert report.results == {"s0": 1, "s1": 2, "s2": 3}


@pytest.mark.parametrize("bad", ["ignore", "Skip", ""])
def test_run_per_slide_invalid_on_error(bad):
    calls: list[str] = []
    with pytest.raises(InputError) as info:
        run_per_slide(_items(2), _fail_on(set(), calls), on_error=bad, progress=False)
    msg = str(info.value)
    assert "on_error" in msg and repr(bad) in msg
    assert all(choice in msg for choice in ON_ERROR_CHOICES)
    assert calls == []  # refused before any slide ran


def test_run_per_slide_keyboard_interrupt_is_not_skipped():
    def fn(slide_id, item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_per_slide(_items(2), fn, on_error="skip", progress=False)


def test_job_report_write_empty_has_header_only(tmp_path):
    path = JobReport().write(tmp_path / "f.csv", stage="x")
    df = pd.read_csv(path)
    assert list(df.columns) == ["slide_id", "stage", "error"] and len(df) == 0

