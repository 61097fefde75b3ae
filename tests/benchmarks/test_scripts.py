"""The speed harness (benchmarks/run_speed.py) and the RESULTS.md section markers (benchmarks/results_md.py)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsigraph.errors import InputError

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
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


# a fake benchmark writes this to --out, with its arguments in the table
WRITES_OUT = """
    import sys
    out = sys.argv[sys.argv.index("--out") + 1]
    args = " ".join(a for a in sys.argv[1:sys.argv.index("--out")])
    open(out, "w").write("## {heading}\\n\\nsetup line\\n\\n| args |\\n|---|\\n| " + args + " |\\n")
    print("stdout is not the table")
    print("progress on stderr", file=sys.stderr)
"""


def test_run_speed_refreshes_tables_and_reports_failures(tmp_path: Path, results_copy: Path, monkeypatch):
    writes = _script(tmp_path / "writes.py", WRITES_OUT.format(heading="Graph"))
    crashing = _script(tmp_path / "crashes.py", """
        import sys
        out = sys.argv[sys.argv.index("--out") + 1]
        open(out, "w").write("## Train\\n\\n| N | s |\\n|---|---|\\n| 1000 | 0.5 |\\n| 9999 | **failed** |\\n")
        raise RuntimeError("benchmark exploded at N=9999")
    """)
    no_heading = _script(tmp_path / "no_heading.py", """
        import sys
        open(sys.argv[sys.argv.index("--out") + 1], "w").write("| n |\\n|---|\\n| 7 |\\n")
    """)
    monkeypatch.setattr(run_speed, "BENCHMARKS", {
        "graph_build": run_speed.Benchmark("Graph", writes, cuda=["--not-on-cpu"]),
        "train_step": run_speed.Benchmark("Train", crashing),
        "extract": run_speed.Benchmark("Extract", no_heading),
    })
    before = results_copy.read_text()

    code = run_speed.main(["--quick", "--results", str(results_copy)])

    after = results_copy.read_text()
    assert code == 1  # two benchmarks failed, the other still ran
    assert _outside(after, SPEED_SECTIONS) == _outside(before, SPEED_SECTIONS)
    sec = {n: results_md.read_section(after, n) for n in SPEED_SECTIONS}
    graph = sec["graph_build"].splitlines()
    assert graph[:2] == ["## Graph", ""] and graph[2].startswith("_")  # the run line goes below the heading
    assert "`python " + os.path.relpath(writes, run_speed.REPO) + " --device cpu --quick`" in graph[2]
    assert graph[3:] == ["", "setup line", "", "| args |", "|---|", "| --device cpu --quick |"]
    assert "stdout is not the table" not in sec["graph_build"] and "progress" not in sec["graph_build"]
    assert sec["train_step"].startswith("## Train\n") and "**Failed: exit code 1.**" in sec["train_step"]
    assert "RuntimeError: benchmark exploded at N=9999" in sec["train_step"]
    assert "| 1000 | 0.5 |" in sec["train_step"]  # the rows measured before the failure are kept
    assert sec["extract"].startswith("## Extract\n") and "does not start with a '## ' heading" in sec["extract"]
    assert f"| cores | {os.cpu_count()} logical" in sec["machine"]
    assert "quick sizes, device cpu" in sec["machine"]


@pytest.mark.parametrize("body, failure", [
    ("print('| a |\\n|---|\\n| 1 |')", "it wrote nothing to --out"),  # a table on stdout only
    ("import sys; open(sys.argv[sys.argv.index('--out') + 1], 'w').write('## T\\n\\nno table\\n')",
     "no Markdown table"),
])
def test_run_benchmark_needs_heading_and_table_in_out_file(tmp_path: Path, body: str, failure: str):
    script = _script(tmp_path / "bench.py", body)
    section, ok = run_speed.run_benchmark("x", run_speed.Benchmark("Title", script), ["--device", "cpu"], 60)
    assert not ok and section.startswith("## Title\n") and f"**Failed: {failure}" in section


def test_run_speed_kills_a_benchmark_past_its_timeout(tmp_path: Path, results_copy: Path, monkeypatch):
    hangs = _script(tmp_path / "hangs.py", """
        import sys, threading
        print("started", file=sys.stderr, flush=True)
        threading.Event().wait()
    """)
    monkeypatch.setattr(run_speed, "BENCHMARKS", {"train_step": run_speed.Benchmark("Train", hangs)})
    assert run_speed.main(["--only", "train_step", "--timeout", "1", "--results", str(results_copy)]) == 1
    sec = results_md.read_section(results_copy.read_text(), "train_step")
    assert "**Failed: timed out after 1 s.**" in sec and "started" in sec


def test_run_speed_rejects_unknown_benchmark(results_copy: Path, capsys):
    with pytest.raises(SystemExit):
        run_speed.main(["--only", "graph_build,nope", "--results", str(results_copy)])
    assert "'nope'" in capsys.readouterr().err


def test_one_cpu_model_function_for_harness_and_scripts():
    import machine

    assert run_speed.cpu_model is machine.cpu_model
    assert f"| CPU | {machine.cpu_model()} |" in run_speed.machine_markdown(
        run_speed.dt.datetime.now(), ["graph_build"], True, "cpu")
    for script in ("graph_build.py", "train_step.py", "extract.py"):
        text = (BENCH_DIR / script).read_text()
        assert "from machine import cpu_model" in text and "/proc/cpuinfo" not in text, script


# --------------------------------------------------------------------------------------------------
# train_step.py: failures, threads (fake workers: no training)
# --------------------------------------------------------------------------------------------------


def _fake_worker(monkeypatch, tmp_path: Path, body: str):
    import train_step

    worker = _script(tmp_path / "worker.py", body)
    seen: list[list[str]] = []
    real = train_step.worker_command

    def command(model, n, args):
        seen.append(real(model, n, args))
        return [sys.executable, str(worker), model, str(n)]

    monkeypatch.setattr(train_step, "worker_command", command)
    monkeypatch.setattr(train_step, "busy_cores", lambda seconds=1.0: 0.0)  # a quiet machine (the suite is not)
    return train_step, seen


def test_train_step_failed_run_keeps_others_and_exits_nonzero(tmp_path: Path, monkeypatch, capsys):
    row = dict(model="abmil", n=1000, edges=23128, dim=64, device="cpu", graph="fake", threads=3,
               sec_per_step=0.25, peak_rss_before_first_step_gib=0.5, peak_rss_gib=0.75, cuda_peak_gib=None)
    train_step, seen = _fake_worker(monkeypatch, tmp_path, f"""
        import json, sys
        if sys.argv[1] == "srmil":
            sys.exit("RuntimeError: out of memory at N=" + sys.argv[2])
        print(json.dumps({row!r}))
    """)
    out = tmp_path / "ts.md"
    code = train_step.main(["--quick", "--models", "srmil", "abmil", "--threads", "3", "--out", str(out)])
    assert code == 1
    table = out.read_text()
    assert table.startswith(f"## {train_step.TITLE}\n") and table == capsys.readouterr().out
    lines = table.splitlines()
    assert "torch threads 3 (--threads)" in lines[2]
    assert "| peak RSS before 1st step (GiB) |" in lines[4] and "RSS before step" not in table
    assert "| srmil | 1000 | | | | | **failed**: exit code 1: RuntimeError: out of memory at N=1000 |" in table
    assert "| abmil | 1000 | 23128 | 64 | cpu | 3 | 0.250 | 0.75 | 0.50 |  | fake |" in table
    assert all(cmd[-2:] == ["--threads", "3"] and "--worker" in cmd for cmd in seen) and len(seen) == 2


def test_train_step_timeout_exits_nonzero(tmp_path: Path, monkeypatch):
    train_step, _ = _fake_worker(monkeypatch, tmp_path, "import threading; threading.Event().wait()")
    out = tmp_path / "ts.md"
    assert train_step.main(["--quick", "--models", "abmil", "--timeout", "0.5", "--out", str(out)]) == 1
    assert "| abmil | 1000 | | | | | **failed**: timed out after 0.5 s |" in out.read_text()


def test_train_step_refuses_a_busy_machine_unless_allowed_and_marks_the_row(tmp_path: Path, monkeypatch):
    row = dict(model="abmil", n=1000, edges=10, dim=64, device="cpu", graph="fake", threads=1, sec_per_step=0.25,
               peak_rss_before_first_step_gib=0.5, peak_rss_gib=0.75, cuda_peak_gib=None)
    train_step, seen = _fake_worker(monkeypatch, tmp_path, f"import json; print(json.dumps({row!r}))")
    monkeypatch.setattr(train_step, "busy_cores", lambda seconds=1.0: 1.7)  # another job on 1.7 cores
    out = tmp_path / "ts.md"
    assert train_step.main(["--quick", "--models", "abmil", "--sizes", "1000", "--out", str(out)]) == 0  # smoke
    assert "**busy**" in out.read_text()
    assert train_step.main(["--models", "abmil", "--sizes", "1000", "--wait", "0", "--out", str(out)]) == 1
    assert "**failed**: machine busy: 1.7 cores in use by other processes after waiting 0 s" in out.read_text()
    assert len(seen) == 1  # refused before a worker started
    assert train_step.main(["--models", "abmil", "--sizes", "1000", "--wait", "0", "--allow-busy",
                            "--out", str(out)]) == 0
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("| abmil"))
    assert "| 1.7, " in line and "**busy** |" in line


def test_train_step_preload_runs_workers_under_the_library_and_fails_when_it_is_not_mapped(
        tmp_path: Path, monkeypatch):
    lib = tmp_path / "liballoc.so"
    lib.write_bytes(b"")  # not a library: the loader skips it with a warning, and the worker's map decides
    row = dict(model="abmil", n=1000, edges=10, dim=64, device="cpu", graph="fake", threads=1, sec_per_step=0.25,
               peak_rss_before_first_step_gib=0.5, peak_rss_gib=0.75, cuda_peak_gib=None)
    train_step, _ = _fake_worker(monkeypatch, tmp_path, f"""
        import json, os
        row = {row!r}
        row["preloaded"] = [os.environ["LD_PRELOAD"]] if os.environ.get("FAKE_MAPPED") else []
        print(json.dumps(row))
    """)
    out = tmp_path / "ts.md"
    args = ["--models", "abmil", "--sizes", "1000", "--wait", "0", "--preload", str(lib), "--out", str(out)]
    assert train_step.main(args) == 1
    assert f"**failed**: --preload {lib}: not loaded in the worker (its LD_PRELOAD libraries: [])" in out.read_text()
    monkeypatch.setenv("FAKE_MAPPED", "1")
    monkeypatch.setenv("MALLOC_CONF", "dirty_decay_ms:-1")
    assert train_step.main(args) == 0
    text = out.read_text()
    assert "CPU memory: liballoc.so (--preload) with MALLOC_CONF=dirty_decay_ms:-1" in text
    assert "| abmil | 1000 | 10 |" in text
    with pytest.raises(SystemExit):
        train_step.main(["--preload", str(tmp_path / "missing.so")])


def test_preloaded_libraries_lists_only_what_is_mapped(tmp_path: Path):
    import train_step

    libc = next(Path(line.split()[-1]) for line in Path("/proc/self/maps").read_text().splitlines()
                if "/libc.so" in line or "/libc-" in line)
    code = ("import sys; sys.path.insert(0, %r); import train_step; print(train_step.preloaded_libraries())"
            % str(Path(train_step.__file__).parent))
    link = tmp_path / "libc-link.so"  # named through a symbolic link, as Debian's libtcmalloc_minimal.so.4 is
    link.symlink_to(libc)
    env = {**os.environ, "LD_PRELOAD": f"{link} {tmp_path / 'libnothere.so'}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([str(link)])


def test_train_step_worker_counts_flops_against_the_matmul_rate_and_profiles(tmp_path: Path):
    import train_step

    r = train_step.worker("abmil", 200, 64, "cpu", 1, threads=1, profile_dir=str(tmp_path / "prof"))
    # abmil's dense work: 200 x 64 -> its embedding and attention layers, forward and backward
    assert r["gflop_per_step"] > 3 * 2 * 200 * 64 * 1e-9 and r["matmul_gflops"] > 0.1
    assert r["x_floor"] == pytest.approx(r["sec_per_step"] / (r["gflop_per_step"] / r["matmul_gflops"]))
    table = (tmp_path / "prof" / "abmil_N200.txt").read_text()
    assert "Self CPU" in table and r["top_op"].split()[0] in table
    assert r["slides_per_step"] == 1 and r["slides_per_s"] == pytest.approx(1 / r["sec_per_step"])


def test_train_step_worker_packs_several_slides_per_step():
    import train_step

    r = train_step.worker("srmil:hidden=16,heads=2", 60, 16, "cpu", 1, threads=1, slides=3)
    assert r["packed"] and r["slides_per_step"] == 3 and r["slides_per_s"] == pytest.approx(3 / r["sec_per_step"])
    assert not train_step.worker("mean", 60, 16, "cpu", 1, threads=1, slides=2)["packed"]  # one by one


def test_train_step_worker_pins_threads_and_reports_peak_before_first_step():
    import torch
    import train_step

    before = torch.get_num_threads()
    try:
        r = train_step.worker("abmil", 64, 8, "cpu", 1, threads=before + 1)
        assert r["threads"] == before + 1
    finally:
        torch.set_num_threads(before)
    assert 0 < r["peak_rss_before_first_step_gib"] <= r["peak_rss_gib"]


def test_train_step_model_spec_passes_arguments():
    import train_step

    assert train_step.parse_model_spec("srmil:variant=reference,w_gen=0,residual=false") == (
        "srmil", {"variant": "reference", "w_gen": 0, "residual": False})
    assert train_step.parse_model_spec("abmil") == ("abmil", {})
    with pytest.raises(SystemExit, match="key=value"):
        train_step.parse_model_spec("srmil:variant")
    r = train_step.worker("srmil:variant=reference,hidden=16,heads=2", 40, 8, "cpu", 1, threads=None)
    assert r["model"] == "srmil:variant=reference,hidden=16,heads=2" and r["sec_per_step"] > 0


# --------------------------------------------------------------------------------------------------
# extract.py: default slide, temporary folder, --json
# --------------------------------------------------------------------------------------------------


def test_extract_default_slide_follows_shared_data_env(tmp_path: Path, monkeypatch, capsys):
    import extract

    monkeypatch.setenv("WSIGRAPH_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert extract.shared_data_dir() == tmp_path / "elsewhere"
    assert extract.main(["--quick", "--out", str(tmp_path / "e.md")]) == 2
    assert str(tmp_path / "elsewhere" / "slides" / extract.SLIDE_NAME) in capsys.readouterr().err
    assert not (tmp_path / "e.md").exists()


def test_extract_quick_writes_out_and_json_and_cleans_up(shared_data: Path, tmp_path: Path, monkeypatch):
    import extract

    monkeypatch.setenv("WSIGRAPH_SHARED_DATA", str(shared_data))
    monkeypatch.setattr(extract.tempfile, "tempdir", str(tmp_path))  # where its temporary folder goes
    out, js = tmp_path / "res" / "e.md", tmp_path / "res" / "e.json"
    assert extract.main(["--quick", "--out", str(out), "--json", str(js)]) == 0
    assert not list(tmp_path.glob("wsigraph-bench-*"))  # its temporary folder is gone
    assert sorted(p.name for p in out.parent.iterdir()) == ["e.json", "e.md"]  # no .tmp left
    table = out.read_text()
    assert table.startswith(f"## {extract.TITLE}\n")
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| mode")]
    data = json.loads(js.read_text())
    assert data["slide"] == str(shared_data / "slides" / extract.SLIDE_NAME)
    assert [r["mode"] for r in data["rows"]] == [ln.split(" | ")[0][2:] for ln in rows]
    assert all(r["patches"] == extract.QUICK["patches"] for r in data["rows"])


# --------------------------------------------------------------------------------------------------
# the real benchmark scripts through the harness, in their --quick configuration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["graph_build", "train_step"])
def test_quick_benchmark_runs(name: str, results_copy: Path):
    assert run_speed.main(["--only", name, "--quick", "--results", str(results_copy)]) == 0
    sec = results_md.read_section(results_copy.read_text(), name)
    lines = sec.splitlines()
    assert lines[0] == f"## {run_speed.BENCHMARKS[name].title}"  # the script's heading is the harness's title
    assert lines[2].startswith("_") and f"benchmarks/{name}.py --device cpu --quick`" in lines[2]
    rows = [ln for ln in lines if ln.startswith("|")]
    assert len(rows) >= 3 and "Failed" not in sec and "failed" not in sec  # header, rule, measured rows


def test_script_titles_match_the_harness():
    for name, bench in run_speed.BENCHMARKS.items():
        assert f'TITLE = "{bench.title}"' in bench.script.read_text(), name


@pytest.mark.parametrize("path", sorted((BENCH_DIR / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_bench_configs_load_and_name_valid_models(path):
    from wsigraph.bench.config import load_bench_config

    cfg = load_bench_config(path)  # strict keys, model names and constructor arguments checked
    assert cfg.cohorts and cfg.models
    labels = [m.label for m in cfg.models]
    assert len(set(labels)) == len(labels) and cfg.reference in labels


@pytest.mark.parametrize("name", ["realistic_contiguity.yaml", "realistic_camelyon.yaml"])
def test_realistic_configs_have_the_scale_of_real_data(name):
    """The realistic cohorts as the issue sizes them: 1024-d, 400-1500 patches on every slide of every
    seed's cohort, >= 80 training slides in the fold each seed runs, 5 seeds each with its own cohort, the
    five models."""
    import check_cohorts

    from wsigraph.bench.config import load_bench_config
    from wsigraph.data.synthetic import SyntheticConfig, _assign_labels, _make_space, generate_slide

    cfg = load_bench_config(BENCH_DIR / "configs" / name)
    assert len(cfg.cohorts) == 1 and len(cfg.seeds) == 5
    assert {m.label for m in cfg.models} == {"srmil", "srmil_reference", "abmil", "mean", "graph_abmil"}
    assert cfg.model("srmil_reference").params["variant"] == "reference" and not cfg.model("abmil").params
    spec = cfg.cohorts[0]
    assert spec.vary_synthetic_seed and spec.synthetic["dim"] == 1024 and spec.synthetic["latent_dim"] > 0
    for seed in cfg.seeds:
        syn = SyntheticConfig(**{**spec.synthetic, "seed": spec.base_synthetic_seed() + seed})
        train, val, test = check_cohorts.split_sizes(spec, syn, seed, list(cfg.seeds))
        assert train >= 80 and test >= 40 and val >= 10, (seed, train, val, test)
        # the layout does not depend on the feature geometry: count patches on 4-d features
        small = SyntheticConfig(**{**syn.to_dict(), "dim": 4, "latent_dim": 0, "ambient_noise": 0.0,
                                   "stain_shift": 0.0, "stain_mix": 0.0})
        space, labels = _make_space(small), _assign_labels(small)
        n = [len(generate_slide(small, i, int(lab), space).coords) for i, lab in enumerate(labels)]
        assert 400 <= min(n) and max(n) <= 1500, (seed, min(n), max(n))


# --------------------------------------------------------------------------------------------------
# survival_oracle.py: the C-index of the true hazard on each seed's test slides
# --------------------------------------------------------------------------------------------------


def test_survival_oracle_scores_the_true_hazard_on_the_test_slides(tmp_path: Path, capsys):
    import pandas as pd
    import survival_oracle

    out = tmp_path / "bench"
    (out / "splits" / "surv").mkdir(parents=True)
    (out / "cohorts" / "surv" / "seed_0").mkdir(parents=True)
    # test slides t0-t3: the hazard orders the times exactly except one pair; the train slide would break it
    pd.DataFrame({"slide_id": ["t0", "t1", "t2", "t3", "tr"], "time": [1.0, 2.0, 3.0, 4.0, 0.5],
                  "event": [1, 1, 1, 0, 1], "log_hazard": [3.0, 1.0, 2.0, 0.0, -5.0]}).to_csv(
        out / "cohorts" / "surv" / "seed_0" / "manifest.csv", index=False)
    pd.DataFrame({"fold": 0, "split": ["test"] * 4 + ["train"], "slide_id": ["t0", "t1", "t2", "t3", "tr"]}).to_csv(
        out / "splits" / "surv" / "seed_0.csv", index=False)
    rows = survival_oracle.oracle_rows(out, "surv", 0)
    # comparable pairs (an event before the other's time): (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); (1,2) discordant
    assert rows == [(0, 4, 3, pytest.approx(5 / 6))]
    assert survival_oracle.main([str(out), "--cohort", "surv"]) == 0
    assert "| 0 | 4 | 3 | 0.833 |" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# classification_oracle.py: a patch-label oracle scored on each seed's test slides
# --------------------------------------------------------------------------------------------------


def test_hanley_mcneil_standard_error_of_an_auc():
    import classification_oracle

    # AUC 0.5 on 25 + 25 slides: Q1 = Q2 = 1/3, var = (0.25 + 2 * 24 * (1/3 - 1/4)) / 625
    assert classification_oracle.hanley_mcneil_se(0.5, 25, 25) == pytest.approx(((0.25 + 4.0) / 625) ** 0.5)
    assert classification_oracle.hanley_mcneil_se(1.0, 25, 25) == 0.0
    # more slides, smaller error
    assert classification_oracle.hanley_mcneil_se(0.8, 100, 100) < classification_oracle.hanley_mcneil_se(0.8, 25, 25)


def test_classification_oracle_trains_on_the_train_split_and_scores_the_test_split(tmp_path: Path, capsys):
    import numpy as np
    import pandas as pd
    import classification_oracle

    from wsigraph.data.synthetic import make_synthetic_cohort

    out = tmp_path / "bench"
    cohort = make_synthetic_cohort(out / "cohorts" / "cam" / "seed_3", mode="camelyon", n_slides=16, dim=8,
                                   grid=(14, 14), lesion_size=(8, 16), micro_fraction=0.0, lesion_strength=8.0,
                                   decoy_fraction=0.0, seed=5)
    table = cohort.table.sort_values(["label", "slide_id"])
    pos = table[table["label_index"] == 1]["slide_id"].tolist()
    neg = table[table["label_index"] == 0]["slide_id"].tolist()
    train, test = pos[::2] + neg[::2], pos[1::2] + neg[1::2]
    (out / "splits" / "cam").mkdir(parents=True)
    pd.DataFrame({"fold": 0, "split": ["train"] * len(train) + ["test"] * len(test), "slide_id": train + test}).to_csv(
        out / "splits" / "cam" / "seed_3.csv", index=False)
    rows = classification_oracle.oracle_rows(out, "cam", 0)
    assert [(r["seed"], r["n_test"], r["n_pos"]) for r in rows] == [(3, len(test), len(pos[1::2]))]
    assert rows[0]["auc"] == 1.0 and rows[0]["se"] == 0.0  # strong macro lesions, no decoys: separable
    assert list(rows[0]["kind"]) == ["macro"] * len(pos[1::2]) + [""] * len(neg[1::2])
    # a model's test predictions: right on every slide but the first positive, which it scores lowest
    run = out / "runs" / "cam" / "m1" / "seed_3" / "fold_0"
    run.mkdir(parents=True)
    prob = np.where(np.isin(test, pos), 0.9, 0.2)
    prob[0] = 0.1
    pd.DataFrame({"slide_id": test, "prob_normal": 1 - prob, "prob_tumor": prob}).to_csv(
        run / "predictions_test.csv", index=False)
    table = {m: (n, v) for m, n, v in classification_oracle.subgroup_table(out, "cam", 0, rows)}
    n_pos, n_neg = len(pos[1::2]), len(neg[1::2])
    assert table["m1"][0] == 1 and table["m1"][1]["all"] == pytest.approx(1 - n_neg / (n_pos * n_neg))
    assert table["oracle (3 x 3 neighbourhood)"][1]["macro"] == 1.0
    assert np.isnan(table["m1"][1]["micro"])  # no micro-only positive in this cohort
    assert classification_oracle.main([str(out), "--cohort", "cam"]) == 0
    printed = capsys.readouterr().out
    assert f"| 3 | {len(test)} | {len(pos[1::2])} | 1.000 |" in printed and "| m1 | 1 |" in printed
    # a split naming a slide the cohort does not hold is an error that names the file
    pd.DataFrame({"fold": 0, "split": ["train", "test"], "slide_id": ["syn_000", "nope"]}).to_csv(
        out / "splits" / "cam" / "seed_3.csv", index=False)
    with pytest.raises(SystemExit, match="seed_3.csv.*nope"):
        classification_oracle.oracle_rows(out, "cam", 0)
    # no cohort with splits: exit 2
    assert classification_oracle.main([str(out), "--cohort", "other"]) == 2


def test_classification_oracle_reads_one_cohort_shared_by_every_seed(tmp_path: Path, capsys):
    import pandas as pd
    import classification_oracle

    from wsigraph.data.synthetic import make_synthetic_cohort

    out = tmp_path / "bench"
    cohort = make_synthetic_cohort(out / "cohorts" / "fixed", mode="camelyon", n_slides=12, dim=8, grid=(14, 14),
                                   lesion_size=(8, 16), micro_fraction=0.0, lesion_strength=8.0,
                                   decoy_fraction=0.0, seed=2)
    table = cohort.table.sort_values(["label", "slide_id"])
    ids = table["slide_id"].tolist()
    (out / "splits").mkdir(parents=True)
    pd.DataFrame({"fold": 0, "split": ["train", "test"] * (len(ids) // 2), "slide_id": ids}).to_csv(
        out / "splits" / "fixed.csv", index=False)
    test = ids[1::2]
    for seed, prob in ((0, 0.9), (1, 0.1)):  # run seed 0 ranks every slide the same; seed 1 too
        run = out / "runs" / "fixed" / "m" / f"seed_{seed}" / "fold_0"
        run.mkdir(parents=True)
        pd.DataFrame({"slide_id": test, "prob_a": 1 - prob, "prob_b": prob}).to_csv(run / "predictions_test.csv",
                                                                                   index=False)
    rows = classification_oracle.oracle_rows(out, "fixed", 0)
    assert [(r["seed"], r["n_test"]) for r in rows] == [(None, len(test))]
    got = {m: (n, v) for m, n, v in classification_oracle.subgroup_table(out, "fixed", 0, rows)}
    assert got["m"][0] == 2 and got["m"][1]["all"] == 0.5  # both runs of the one cohort, each at chance
    assert classification_oracle.main([str(out), "--cohort", "fixed"]) == 0
    assert f"| all | {len(test)} |" in capsys.readouterr().out


def test_subgroup_aucs_separate_macro_and_micro_only_positives():
    import numpy as np
    import classification_oracle

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    kind = np.array(["macro", "macro", "micro", "micro", "", "", "", ""])
    score = np.array([0.9, 0.8, 0.1, 0.5, 0.4, 0.3, 0.2, 0.6])  # finds the macro slides, misses the micro ones
    got = classification_oracle.subgroup_aucs(y, score, kind)
    assert got["macro"] == 1.0
    assert got["micro"] == pytest.approx(3 / 8)  # 0.1 beats no negative, 0.5 beats three
    assert got["all"] == pytest.approx(11 / 16)
