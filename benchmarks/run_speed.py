"""Run the speed benchmarks and refresh their sections of ``benchmarks/RESULTS.md``.

Each benchmark script runs in its own process (so its peak memory is its own) with ``--device``,
``--out FILE`` and, for a quick run, ``--quick``. What it writes to ``--out`` (a ``## <title>`` heading
line, then its setup line(s) and its Markdown table) replaces the section of the same name in RESULTS.md,
with a line on how and under which load it ran inserted below the heading; the ``machine`` section
describes the computer of this run. Everything else in the file (the accuracy section, hand-written notes)
is left as it is. A benchmark that fails, times out or writes no heading and table gets its error tail
(and whatever it wrote) in its section and does not stop the others (exit code 1).

    python benchmarks/run_speed.py                          # all, full sizes, CPU (~14 min on 2 cores)
    python benchmarks/run_speed.py --quick                  # small sizes: a check that all of it works
    python benchmarks/run_speed.py --only graph_build --device cuda
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from machine import cpu_model, load_average, proc_field, usable_cores  # noqa: E402
from results_md import update_results_file  # noqa: E402

TAIL_LINES = 25  # lines of stderr kept in a failed benchmark's section


@dataclasses.dataclass
class Benchmark:
    """One benchmark script. It takes ``--device``, ``--quick`` and ``--out FILE``, and writes to FILE a
    ``## <title>`` line followed by its Markdown table (``title`` is also the heading of a failed run)."""

    title: str
    script: Path
    cuda: list[str] = dataclasses.field(default_factory=list)  # extra arguments on a GPU (full runs)


BENCHMARKS: dict[str, Benchmark] = {
    "graph_build": Benchmark("Spatial graph build", HERE / "graph_build.py"),
    "train_step": Benchmark("Training step", HERE / "train_step.py"),
    "extract": Benchmark("Patch feature extraction", HERE / "extract.py",
                         cuda=["--workers", "0", "4", "8", "12", "--batch-size", "256", "--patches", "5000",
                               "--stride", "32"]),
}


# --------------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_markdown(when: dt.datetime, names: list[str], quick: bool, device: str) -> str:
    """The ``machine`` section: hardware, software versions, commit and load of this run."""
    import torch

    mem_kib = {k: proc_field("/proc/meminfo", k) for k in ("MemTotal", "MemAvailable")}
    gib = {k: f"{int(v.split()[0]) / 2 ** 20:.1f} GiB" if v else "?" for k, v in mem_kib.items()}
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        gpu = "; ".join(f"{p.name}, {p.total_memory / 2 ** 30:.0f} GiB" for p in gpus)
        gpu += f" (CUDA {torch.version.cuda})"
    else:
        gpu = "none (CUDA not available)"
    load1, cores = os.getloadavg()[0], usable_cores()
    busy = " (other work was running: timings are indicative)" if load1 > 0.25 * cores else ""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {cores} usable by this process"),
        ("RAM", f"{gib['MemTotal']} total, {gib['MemAvailable']} available at start"),
        ("GPU", gpu),
        ("load average at start (1 / 5 / 15 min)", load_average() + busy),
        ("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "unset")),
        ("Python / torch / torch_geometric / torch_cluster",
         f"{platform.python_version()} / {torch.__version__} / {_version('torch_geometric')} / "
         f"{_version('torch_cluster')}"),
        ("git commit", commit or "not a git checkout"),
    ]
    lines = ["## Machine" + (" (GPU runs)" if device.startswith("cuda") else ""), "",
             f"Last `run_speed.py` run: {when:%Y-%m-%d %H:%M %Z}, sections {', '.join(names)}, "
             f"{'quick' if quick else 'full'} sizes, device {device}.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# running one benchmark
# --------------------------------------------------------------------------------------------------


def run_benchmark(name: str, bench: Benchmark, args: list[str], timeout: float) -> tuple[str, bool]:
    """Run one benchmark script: (the Markdown of its section, its table or its failure; whether it worked)."""
    shown = ["python", os.path.relpath(bench.script, REPO), *args]
    with tempfile.TemporaryDirectory(prefix=f"wsigraph-{name}-") as tmp:
        out_file = Path(tmp) / "table.md"
        load_start, t0 = load_average(), time.perf_counter()
        code, tail = _run_tee([sys.executable, str(bench.script), *args, "--out", str(out_file)], timeout,
                              prefix=f"[{name}] ")
        seconds = time.perf_counter() - t0
        written = out_file.read_text(encoding="utf-8") if out_file.exists() else ""
    heading, body = split_heading(written)
    run_line = (f"_{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: `{' '.join(shown)}` took {seconds:.0f} s; "
                f"load average {load_start} at start, {load_average()} at end "
                f"({usable_cores()} usable cores)._")
    has_table = any(line.startswith("|") for line in body.splitlines())
    if code is None:
        failed = f"timed out after {timeout:g} s"
    elif code != 0:
        failed = f"exit code {code}"
    elif not written.strip():
        failed = "it wrote nothing to --out"
    elif heading is None:
        failed = "what it wrote to --out does not start with a '## ' heading line"
    elif not has_table:
        failed = "no Markdown table in what it wrote to --out"
    else:
        return "\n".join([heading, "", run_line, "", body]), True
    lines = [f"## {bench.title}", "", run_line, "", f"**Failed: {failed}.** Last lines of its standard error:", "",
             "```", *tail, "```"]
    if has_table:  # e.g. the rows measured before one run failed
        lines += ["", "What it wrote to `--out`:", "", body]
    return "\n".join(lines), False


def split_heading(markdown: str) -> tuple[str | None, str]:
    """(the ``## ...`` line that opens ``markdown``, or None; the rest, blank lines around it stripped)."""
    text = markdown.strip("\n")
    first, _, rest = text.partition("\n")
    if first.startswith("## "):
        return first.rstrip(), rest.strip("\n")
    return None, text


def _run_tee(cmd: list[str], timeout: float, prefix: str) -> tuple[int | None, list[str]]:
    """Run ``cmd`` with stderr echoed live (stdout discarded: tables come from --out); (exit code or None on
    timeout, stderr tail)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)  # own process group: a timeout kills its workers
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            print(prefix + line, end="", file=sys.stderr, flush=True)
        code = proc.wait()
    finally:
        timer.cancel()
    return (None if killed.is_set() else code), list(tail)


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    p.add_argument("--quick", action="store_true", help="small sizes: a fast check, not numbers to keep")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]; passed to every benchmark")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="the Markdown file to refresh")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark before it is killed")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        p.error(f"--only {args.only!r}: unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    gpu = args.device.startswith("cuda")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: CUDA is not available on this machine")

    suffix = "_cuda" if gpu else ""  # GPU tables sit beside the CPU ones: graph_build_cuda, machine_cuda, ...
    machine = "machine" + suffix
    sections = {machine: machine_markdown(dt.datetime.now().astimezone(), names, args.quick, args.device)}
    failed = []
    for name in names:
        bench = BENCHMARKS[name]
        extra = ["--quick"] if args.quick else (bench.cuda if gpu else [])
        print(f"== {name}", file=sys.stderr, flush=True)
        section, ok = run_benchmark(name, bench, ["--device", args.device, *extra], args.timeout)
        sections[name + suffix] = section
        if not ok:
            failed.append(name)
        update_results_file(args.results, {machine: sections[machine], name + suffix: section})  # keep what is done
    print(f"refreshed {', '.join(sections)} in {args.results}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
