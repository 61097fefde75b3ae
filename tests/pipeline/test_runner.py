"""Tests of the cohort-job runner (wsigraph.pipeline.runner): errors, resume with a parameter check, reports."""
from __future__ import annotations

import pandas as pd
import pytest

from wsigraph.errors import InputError
from wsigraph.pipeline.runner import ON_ERROR_CHOICES, JobReport, StaleOutputError, run_per_slide


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


def test_run_per_slide_default_is_skip():
    report = run_per_slide(_items(2), _fail_on({"slide_0"}, []), progress=False)
    assert list(report.failed) == ["slide_0"] and report.done == ["slide_1"]


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

    df = pd.read_csv(report_path, keep_default_na=False)
    assert list(df.columns) == ["slide_id", "stage", "status", "error"]
    assert df["slide_id"].tolist() == ["slide_0", "slide_1", "slide_2", "slide_3"]
    assert df["stage"].tolist() == ["graph"] * 4
    assert df["status"].tolist() == ["done", "failed", "done", "failed"]
    assert df["error"].tolist() == ["", "ValueError: corrupt tile in slide_1, row 1",
                                    "", "ValueError: corrupt tile in slide_3, row 3"]
    assert [p.name for p in report_path.parent.iterdir()] == ["failures.csv"]  # no temp left


def test_run_per_slide_report_stage_defaults_to_desc(tmp_path):
    report_path = tmp_path / "f.csv"
    run_per_slide(_items(2), _fail_on({"slide_0"}, []), on_error="skip", report_path=report_path,
                  desc="extract", progress=False)
    assert pd.read_csv(report_path)["stage"].tolist() == ["extract", "extract"]


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


def test_run_per_slide_report_of_a_rerun_no_longer_lists_a_slide_it_finished(tmp_path):
    report_path = tmp_path / "f.csv"
    finished: set[str] = set()

    def fn(slide_id, item):
        if slide_id == "slide_1" and not finished:
            finished.add("first run")
            raise ValueError("transient")
        return item

    run_per_slide(_items(2), fn, report_path=report_path, progress=False,
                  is_done=lambda sid, item: sid == "slide_0" and bool(finished))
    assert pd.read_csv(report_path)["status"].tolist() == ["done", "failed"]
    run_per_slide(_items(2), fn, report_path=report_path, progress=False,
                  is_done=lambda sid, item: sid == "slide_0" and bool(finished))
    df = pd.read_csv(report_path)
    assert df["status"].tolist() == ["already complete", "done"]


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
    df = pd.read_csv(tmp_path / "f.csv")
    assert df.loc[df["status"] == "failed", "slide_id"].tolist() == ["slide_3"]
    assert df.loc[df["status"] == "already complete", "slide_id"].tolist() == ["slide_0"]


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
    assert list(df.columns) == ["slide_id", "stage", "status", "error"] and len(df) == 0



def test_status_resumes_done_slides_and_refuses_stale_ones_before_any_work():
    calls: list[str] = []
    states = {"slide_0": "done", "slide_1": "missing", "slide_2": ["patch_size: 224 -> 256"], "slide_3": "missing"}
    with pytest.raises(StaleOutputError) as info:
        run_per_slide(_items(4), _fail_on(set(), calls), status=lambda sid, item: states[sid], progress=False)
    msg = str(info.value)
    assert "1 of 4" in msg and "slide_2: patch_size: 224 -> 256" in msg and "--overwrite" in msg
    assert calls == []  # nothing ran
    states["slide_2"] = "missing"
    report = run_per_slide(_items(4), _fail_on(set(), calls), status=lambda sid, item: states[sid], progress=False)
    assert report.resumed == ["slide_0"] and calls == ["slide_1", "slide_2", "slide_3"]


def test_overwrite_recomputes_without_consulting_status():
    calls: list[str] = []

    def status(sid, item):
        raise AssertionError("status must not be consulted with overwrite")

    report = run_per_slide(_items(2), _fail_on(set(), calls), status=status, is_done=status, overwrite=True,
                           progress=False)
    assert report.done == calls == ["slide_0", "slide_1"]
