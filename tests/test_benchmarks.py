"""The speed harness (benchmarks/run_speed.py) and the RESULTS.md section markers (benchmarks/results_md.py)."""
from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from wsigraph.errors import InputError

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCH_DIR / "RESULTS.md"
sys.path.insert(0, str(BENCH_DIR))
import results_md  # noqa: E402
import run_speed  # noqa: E402

SPEED_SECTIONS = ["machine", "graph_build", "train_step", "extract"]


def _outside(text: str, names: list[str]) -> str:
    """``text`` with the bodies of the named sections cut out: what a refresh of them must not change."""
    for n in names:
        text, count = re.subn(rf"(?s)<!-- BEGIN {n} -->\n.*?<!-- END {n} -->", f"[{n}]", text)
        assert count == 1, n
    return text


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "RESULTS.md"
    shutil.copyfile(RESULTS, dst)
    return dst


# --------------------------------------------------------------------------------------------------
# section markers
# --------------------------------------------------------------------------------------------------


def test_results_md_has_every_speed_section_once():
    spans = results_md.find_sections(RESULTS.read_text(), str(RESULTS))
    assert set(SPEED_SECTIONS) <= set(spans)


def test_refresh_replaces_only_its_sections(results_copy: Path):
    before = results_copy.read_text()
    fake = {n: f"## {n}\n\n| a | b |\n|---|---|\n| {n} | {i} |" for i, n in enumerate(SPEED_SECTIONS)}
    results_md.update_results_file(results_copy, fake)
    after = results_copy.read_text()
    assert _outside(after, SPEED_SECTIONS) == _outside(before, SPEED_SECTIONS)  # notes, accuracy: untouched
    assert "## GPU" in after and results_md.read_section(after, "accuracy") == results_md.read_section(
        before, "accuracy")
    for n, body in fake.items():
        assert results_md.read_section(after, n) == body + "\n"
    results_md.update_results_file(results_copy, fake)
    assert results_copy.read_text() == after  # a second refresh with the same tables changes nothing

    results_md.update_results_file(results_copy, {"new_table": "| x |\n|---|"})
    grown = results_copy.read_text()
    assert grown.startswith(after) and grown.rstrip().endswith(results_md.end_marker("new_table"))


def test_new_file_gets_header_and_sections(tmp_path: Path):
    path = results_md.update_results_file(tmp_path / "sub" / "R.md", {"one": "1", "two": "2"})
    text = path.read_text()
    assert text.startswith(results_md.DEFAULT_HEADER)
    assert [results_md.read_section(text, n) for n in ("one", "two")] == ["1\n", "2\n"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("text, words", [
    ("intro\n<!-- BEGIN a -->\nx\n", ["line 2", "'a'", "no '<!-- END a -->'"]),
    ("<!-- BEGIN a -->\nx\n<!-- END b -->\n", ["line 3", "'<!-- END b -->'"]),
    ("<!-- BEGIN a -->\n<!-- END a -->\n<!-- BEGIN a -->\n<!-- END a -->\n", ["line 3", "'a'", "twice"]),
    ("<!-- BEGIN a -->\n<!-- BEGIN b -->\n<!-- END b -->\n<!-- END a -->\n", ["line 2", "'b'", "inside", "'a'"]),
])
def test_broken_markers_name_file_line_and_section(tmp_path: Path, text: str, words: list[str]):
    path = tmp_path / "broken.md"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        results_md.update_results_file(path, {"a": "new"})
    for w in [str(path), *words]:
        assert w in str(e.value)
    assert path.read_text() == text  # left as it was


def test_bad_section_name_or_body_is_refused():
    with pytest.raises(InputError, match="'bad name'"):
        results_md.replace_sections("", {"bad name": "x"})
    with pytest.raises(InputError, match="'a'.*marker"):
        results_md.replace_sections("", {"a": "<!-- END a -->"})


# --------------------------------------------------------------------------------------------------
# run_speed.py with fake benchmarks
# --------------------------------------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def test_run_speed_refreshes_tables_and_reports_failures(tmp_path: Path, results_copy: Path, monkeypatch):
    stdout_table = _script(tmp_path / "prints.py", """
        import sys
        print("caption line\\n")
        print("| args |\\n|---|\\n| " + " ".join(sys.argv[1:]) + " |")
        print("progress on stderr", file=sys.stderr)
    """)
    out_file = _script(tmp_path / "writes.py", """
        import sys
        out = sys.argv[sys.argv.index("--out") + 1]
        open(out, "w").write("## Own heading\\n\\n| n |\\n|---|\\n| 7 |\\n")
        print("not the table")
    """)
    crashing = _script(tmp_path / "crashes.py", """
        import sys
        print("| half a table |")
        raise RuntimeError("benchmark exploded at N=1000")
    """)
    monkeypatch.setattr(run_speed, "BENCHMARKS", {
        "graph_build": run_speed.Benchmark("Graph", out_file, quick=["--small"], out_option="--out"),
        "train_step": run_speed.Benchmark("Train", crashing, quick=[]),
        "extract": run_speed.Benchmark("Extract", stdout_table, quick=["--patches", "4"]),
    })
    before = results_copy.read_text()

    code = run_speed.main(["--quick", "--results", str(results_copy)])

    after = results_copy.read_text()
    assert code == 1  # one benchmark failed, the others still ran
    assert _outside(after, SPEED_SECTIONS) == _outside(before, SPEED_SECTIONS)
    sec = {n: results_md.read_section(after, n) for n in SPEED_SECTIONS}
    assert sec["graph_build"].startswith("## Own heading\n") and "| 7 |" in sec["graph_build"]
    assert "not the table" not in sec["graph_build"]  # --out wins over stdout
    assert "--device cpu --small" in sec["graph_build"]  # the run line shows the command
    assert "| --device cpu --patches 4 |" in sec["extract"] and "caption line" in sec["extract"]
    assert "progress on stderr" not in sec["extract"]
    assert "**Failed: exit code 1.**" in sec["train_step"]
    assert "RuntimeError: benchmark exploded at N=1000" in sec["train_step"]
    assert f"| cores | {os.cpu_count()} logical" in sec["machine"]
    assert "quick sizes, device cpu" in sec["machine"]


def test_run_speed_kills_a_benchmark_past_its_timeout(tmp_path: Path, results_copy: Path, monkeypatch):
    hangs = _script(tmp_path / "hangs.py", """
        import sys, threading
        print("started", file=sys.stderr, flush=True)
        threading.Event().wait()
    """)
    monkeypatch.setattr(run_speed, "BENCHMARKS", {"train_step": run_speed.Benchmark("Train", hangs, quick=[])})
    assert run_speed.main(["--only", "train_step", "--timeout", "1", "--results", str(results_copy)]) == 1
    sec = results_md.read_section(results_copy.read_text(), "train_step")
    assert "**Failed: timed out after 1 s.**" in sec and "started" in sec


def test_run_speed_rejects_unknown_benchmark(results_copy: Path, capsys):
    with pytest.raises(SystemExit):
        run_speed.main(["--only", "graph_build,nope", "--results", str(results_copy)])
    assert "'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# the real benchmark scripts, in their --quick configuration (about 20 s together on 2 cores)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(run_speed.BENCHMARKS))
def test_quick_benchmark_runs(name: str, results_copy: Path):
    if name == "extract":  # extract.py's default slide, beside the repository
        if not (run_speed.REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs").exists():
            pytest.skip("benchmarks/extract.py reads shared/data/slides/CMU-1-Small-Region.svs, absent here")
    assert run_speed.main(["--only", name, "--quick", "--results", str(results_copy)]) == 0
    sec = results_md.read_section(results_copy.read_text(), name)
    rows = [ln for ln in sec.splitlines() if ln.startswith("|")]
    assert len(rows) >= 3 and "Failed" not in sec  # header, rule, at least one measured row
    assert "--quick" not in sec and "--device cpu" in sec
