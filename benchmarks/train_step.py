"""Time and peak memory of one training step (forward + backward + AdamW step) per slide size.

Each (model, size) runs in a fresh subprocess so its peak RSS is its own. The slide is a square patch
lattice (row-major, N patches) with the paper's 24-neighbourhood graph plus self loops, built by
``wsigraph.graph.spatial_graph`` when available (else a vectorised lattice builder here), random float32
features of width D.

    python benchmarks/train_step.py                       # srmil + abmil, N = 1k, 10k, 50k, 100k, CPU
    python benchmarks/train_step.py --threads 1           # one torch thread, comparable with graph_build.py
    python benchmarks/train_step.py --sizes 1000 10000 --models srmil --device cuda
    python benchmarks/train_step.py --quick --out train_step.md   # N = 1k, D = 64: a smoke run in seconds
    python benchmarks/train_step.py --models srmil srmil:variant=reference --sizes 870   # model arguments

    python benchmarks/train_step.py --study --models srmil --threads 1 --profile prof/   # N = 500 .. 200k
    python benchmarks/train_step.py --models srmil --sizes 870 --slides-per-step 4   # packed steps: slides/s

Prints Markdown (and writes it atomically to ``--out``): a ``## Training step`` heading, a line naming the
machine, torch thread count and setup, then the table: seconds per step (mean of ``--steps`` after one
warm-up step), peak RSS of the worker process at the end (GiB), its peak RSS before the first step (GiB,
``ru_maxrss`` once the graph, features, model and optimiser exist: the baseline the step adds to) and, on
CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps (GiB). A (model, N) run that fails or
passes ``--timeout`` gets a "failed" row, the others still run, and the exit status is 1.

Distance to the compute floor: each row counts the FLOPs of one step's dense operations (matrix products,
``torch.utils.flop_counter``; the gathers and scatters of message passing are not counted) and times a
dense matrix product of the same thread count in the same process (``matmul GFLOP/s``); ``x floor`` is
the step's time over the time those FLOPs take at that rate (1.0: the step is its matmuls).

A quiet machine: before every run the script measures how many cores other processes keep busy
(``/proc/stat`` over 1 s; the load average lingers after a job ends, this does not) and waits up to
``--wait`` seconds for it to fall to ``--max-busy``; a run on a busy machine is refused (a "failed" row,
exit status 1) unless ``--allow-busy``, which runs it and marks its row. Each row records the busy cores
and the load average at its start. ``--profile DIR`` writes the profiler's table of one step per run
(top operators by self CPU time) to ``DIR/<model>_N<n>.txt``.

CPU memory: by default the workers use glibc's malloc; ``--reuse-cpu-memory`` applies
``train.reuse_cpu_memory`` in each worker, and ``--preload LIB`` starts each worker with ``LD_PRELOAD=LIB``
(e.g. ``/usr/lib/x86_64-linux-gnu/libjemalloc.so.2``, Debian's ``libjemalloc2``), which must show in the
worker's ``/proc/self/maps`` or the run fails: the header line names the allocator every row used.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from machine import busy_cores, load_average  # noqa: E402

TITLE = "Training step"
DEFAULT_SIZES = (1_000, 10_000, 50_000, 100_000)
STUDY_SIZES = (500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000)  # --study
DEFAULT_MODELS = ("srmil", "abmil")
#: environment variables that tune the allocators: the header line names those that are set
ALLOCATOR_VARIABLES = ("MALLOC_CONF", "TCMALLOC_RELEASE_RATE", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX")
# --quick: a smoke run in seconds, not a figure, so it runs on a busy machine without waiting (rows marked)
QUICK = {"sizes": [1_000], "dim": 64, "steps": 1, "allow_busy": True, "wait": 0.0}


def lattice_edges(n: int, window: int = 2):
    """(coords (N, 2) int64 lattice units, edge_index (2, E)): row-major square lattice of N points,
    edges to every point within ``window * 1.42`` lattice steps (the 5 x 5 block for window 2), self
    loops included."""
    import torch

    side = int(torch.tensor(float(n)).sqrt().ceil())
    idx = torch.arange(n)
    xy = torch.stack([idx % side, idx // side], dim=1)
    src, dst = [], []
    for dy in range(-window, window + 1):
        for dx in range(-window, window + 1):
            if dx * dx + dy * dy > (window * 1.42) ** 2:
                continue
            nx, ny = xy[:, 0] + dx, xy[:, 1] + dy
            j = ny * side + nx
            ok = (nx >= 0) & (nx < side) & (ny >= 0) & (j < n) & (j >= 0)
            src.append(j[ok])
            dst.append(idx[ok])
    src, dst = torch.cat(src), torch.cat(dst)
    order = torch.argsort(src * n + dst)
    return xy, torch.stack([src[order], dst[order]])


def build_graph(n: int):
    """(edge_index, builder name)."""
    import torch

    coords, fallback = lattice_edges(n)
    try:
        from wsigraph.graph import spatial_graph

        ei = spatial_graph((coords * 224).numpy(), mode="paper", step=224)
        return torch.as_tensor(ei, dtype=torch.long), "wsigraph.graph.spatial_graph"
    except Exception:  # the graph module may be absent or changing: the fallback is the same graph
        return fallback, "benchmark lattice"


def parse_model_spec(spec: str) -> tuple[str, dict]:
    """``"srmil:variant=reference,w_gen=0"`` -> ``("srmil", {"variant": "reference", "w_gen": 0})`` (values
    read as YAML scalars)."""
    import yaml

    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--models {spec!r}: expected name:key=value,key=value")
        params[key.strip()] = yaml.safe_load(value)
    return name, params


def matmul_gflops(device: str, size: int = 2048, reps: int = 5) -> float:
    """The measured rate of a dense float32 ``size`` x ``size`` matrix product here (GFLOP/s, best of
    ``reps``): the compute floor the steps are compared with."""
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size ** 3 / best / 1e9


def step_flops(step) -> int:
    """FLOPs of the dense operations of one call of ``step`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def profile_table(step, path: Path, rows: int = 15) -> str:
    """Profile one call of ``step`` and write the operators' table (by self CPU time) to ``path``; return
    the name of the operator with the most self CPU time and its share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    avg = prof.key_averages()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(avg.table(sort_by="self_cpu_time_total", row_limit=rows) + "\n")
    total = sum(e.self_cpu_time_total for e in avg) or 1
    top = max(avg, key=lambda e: e.self_cpu_time_total)
    return f"{top.key} {100 * top.self_cpu_time_total / total:.0f}%"


def worker(model_name: str, n: int, dim: int, device: str, steps: int, threads: int | None,
           profile_dir: str | None = None, slides: int = 1) -> dict:
    import torch
    from torch_geometric.data import Data

    from wsigraph.nn import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    edge_index, builder = build_graph(n)
    data = Data(x=torch.randn(n, dim), edge_index=edge_index, slide_id=f"lattice{n}", y=torch.tensor([1])).to(device)
    batch = [data] + [Data(x=torch.randn(n, dim, device=device), edge_index=data.edge_index, y=data.y)
                      for _ in range(slides - 1)]
    name, params = parse_model_spec(model_name)
    model = build_model(name, dim, 2, **params).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-5)
    y = torch.tensor([1], device=device)
    cuda = device.startswith("cuda")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss: KiB on Linux

    from wsigraph.tasks import ClassificationTask
    from wsigraph.train.lightning_module import step_loss

    task = ClassificationTask(["a", "b"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if slides == 1:
            loss, _, _ = model.training_loss(data, y)
        else:  # the trainer's step over several slides: packed where the model supports it
            loss, _ = step_loss(model, batch, task)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - t0) / steps
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    flops = step_flops(step)
    rate = matmul_gflops(device)
    top = None
    if profile_dir:
        safe = "".join(c if c.isalnum() or c in "-_=" else "_" for c in model_name)
        top = profile_table(step, Path(profile_dir) / f"{safe}_N{n}.txt")
    return {
        "model": model_name, "n": n, "edges": int(edge_index.size(1)), "dim": dim, "device": device,
        "graph": builder, "threads": torch.get_num_threads(), "sec_per_step": sec,
        "peak_rss_before_first_step_gib": peak_before,
        "peak_rss_gib": peak_rss,
        "cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "gflop_per_step": flops / 1e9, "gflops": flops / 1e9 / sec, "matmul_gflops": rate,
        "x_floor": sec / (flops / 1e9 / rate) if flops else None, "top_op": top,
        "slides_per_step": slides, "slides_per_s": slides / sec,
        "page_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "kernel_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
        "packed": slides > 1 and bool(getattr(model, "supports_packing", False)),
        "preloaded": preloaded_libraries(),
    }


def preloaded_libraries() -> list[str]:
    """The entries of this process's ``LD_PRELOAD`` (as written there) whose files are mapped into it (Linux;
    symbolic links resolved, as ``/proc/self/maps`` names the files they point to)."""
    from wsigraph.utils.memory import mapped_files

    wanted = [x for x in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if x]
    mapped = set(mapped_files())
    return [w for w in wanted if os.path.realpath(w) in mapped]


def worker_command(model: str, n: int, args: argparse.Namespace) -> list[str]:
    """The command line of one (model, N) run: this script with ``--worker``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--models", model, "--sizes", str(n),
           "--dim", str(args.dim), "--device", args.device, "--steps", str(args.steps)]
    cmd += ["--profile", str(args.profile)] if args.profile else []
    cmd += ["--slides-per-step", str(args.slides_per_step)] if args.slides_per_step != 1 else []
    cmd += ["--reuse-cpu-memory"] if args.reuse_cpu_memory else []
    return cmd + (["--threads", str(args.threads)] if args.threads else [])


def wait_for_quiet(args: argparse.Namespace) -> tuple[float | None, bool]:
    """(cores busy with other processes, quiet enough): measured every few seconds for up to ``--wait`` s."""
    deadline = time.monotonic() + args.wait
    while True:
        busy = busy_cores(1.0)
        if busy is None or busy <= args.max_busy or time.monotonic() >= deadline:
            return busy, busy is None or busy <= args.max_busy
        time.sleep(4.0)


def run_one(model: str, n: int, args: argparse.Namespace) -> dict:
    """One (model, N) run in a fresh process: its result row, or ``{model, n, error}``."""
    busy, quiet = wait_for_quiet(args)
    state = {"busy_cores": busy, "load": load_average()}
    if not quiet and not args.allow_busy:
        return {"model": model, "n": n, **state,
                "error": f"machine busy: {busy:.1f} cores in use by other processes after waiting {args.wait:g} s "
                         f"(--max-busy {args.max_busy:g}; --allow-busy runs anyway and marks the row)"}
    row = _run_worker(model, n, args)
    return {**row, **state, "busy": not quiet}


def _run_worker(model: str, n: int, args: argparse.Namespace) -> dict:
    cmd = worker_command(model, n, args)
    env = {**os.environ, "LD_PRELOAD": args.preload} if args.preload else None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": model, "n": n, "error": f"timed out after {args.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return {"model": model, "n": n, "error": f"exit code {proc.returncode}" + (f": {last}" if last else "")}
    row = json.loads(lines[-1])
    if args.preload and args.preload not in row.get("preloaded", []):
        return {"model": model, "n": n, "error": f"--preload {args.preload}: not loaded in the worker "
                                                   f"(its LD_PRELOAD libraries: {row.get('preloaded')})"}
    return row


def header_line(args: argparse.Namespace) -> str:
    """Date, machine, torch thread count and setup of the run: the line above the table."""
    import torch

    try:
        from importlib.metadata import version

        pyg = version("torch_geometric")
    except Exception:  # noqa: BLE001 - a version string only
        pyg = "?"
    omp = os.environ.get("OMP_NUM_THREADS")
    threads = (f"{args.threads} (--threads)" if args.threads else
               f"{torch.get_num_threads()} (torch default{f', OMP_NUM_THREADS={omp}' if omp else ''}; "
               "pin with --threads)")
    gpu = f", GPU {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else ""
    return (f"{dt.date.today().isoformat()}; CPU {cpu_model()} ({os.cpu_count()} logical cores), torch threads "
            f"{threads}{gpu}; Python {platform.python_version()}, torch {torch.__version__}, torch_geometric "
            f"{pyg}; D = {args.dim}, {args.steps} timed step(s) after 1 warm-up, square lattice with the "
            f"24-neighbourhood + self loops; CPU memory: "
            f"{cpu_memory_setup(args)}")


def cpu_memory_setup(args: argparse.Namespace) -> str:
    """How the workers allocate CPU memory, for the header line."""
    allocator = f"{Path(args.preload).name} (--preload)" if args.preload else "glibc malloc"
    tuning = [f"{k}={os.environ[k]}" for k in ALLOCATOR_VARIABLES if os.environ.get(k)]
    reuse = ", freed memory kept for reuse (--reuse-cpu-memory)" if args.reuse_cpu_memory else ""
    return allocator + (f" with {' '.join(tuning)}" if tuning else "") + reuse


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"## {TITLE}", "", header_line(args), "",
             "| model | N | E | D | device | threads | s/step | peak RSS (GiB) | peak RSS before 1st step (GiB) "
             "| CUDA peak (GiB) | graph | GFLOP/step | GFLOP/s | matmul GFLOP/s | x floor | top operator (self CPU) "
             "| busy cores, load at start | slides/step | slides/s | page faults/step | kernel s/step |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['n']} | | | | | **failed**: {r['error'].replace('|', '/')} "
                         "| | | | | | | | | | | | | | |")
            continue
        cuda = "" if r["cuda_peak_gib"] is None else f"{r['cuda_peak_gib']:.2f}"
        state = (f"{_num(r.get('busy_cores'), '.1f')}, {r.get('load', '')}" + (" **busy**" if r.get("busy") else "")
                 if "load" in r else "")
        lines.append(f"| {r['model']} | {r['n']} | {r['edges']} | {r['dim']} | {r['device']} | {r['threads']} | "
                     f"{r['sec_per_step']:.3f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['peak_rss_before_first_step_gib']:.2f} | {cuda} | {r['graph']} | "
                     f"{_num(r.get('gflop_per_step'), '.2f')} | {_num(r.get('gflops'), '.1f')} | "
                     f"{_num(r.get('matmul_gflops'), '.1f')} | {_num(r.get('x_floor'), '.2f')} | "
                     f"{r.get('top_op') or ''} | {state} | "
                     f"{r.get('slides_per_step', 1)}{' packed' if r.get('packed') else ''} | "
                     f"{_num(r.get('slides_per_s'), '.2f')} | {_num(r.get('page_faults_per_step'), '.0f')} | "
                     f"{_num(r.get('kernel_s_per_step'), '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="patches per slide")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registered model names")
    p.add_argument("--dim", type=int, default=1024, help="feature width D")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each run (default: torch's default; graph_build.py uses 1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per (model, size) run")
    p.add_argument("--out", help="also write the Markdown (heading, header line, table) here, atomically")
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes for a smoke run in seconds: {QUICK} (options given explicitly win)")
    p.add_argument("--study", action="store_true",
                   help=f"the scaling study's sizes: N = {', '.join(map(str, STUDY_SIZES))} (--sizes wins)")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="write the profiler's operator table of one step per run to DIR/<model>_N<n>.txt")
    p.add_argument("--slides-per-step", type=int, default=1,
                   help="slides of N patches per step (train.batch_size): packed as one graph where the model "
                        "supports it, else one by one; the table adds slides/s")
    p.add_argument("--max-busy", type=float, default=0.3,
                   help="most cores other processes may keep busy before a run (default: %(default)s)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for a quiet machine before each run (default: %(default)s)")
    p.add_argument("--allow-busy", action="store_true",
                   help="run on a busy machine anyway; its rows are marked busy")
    p.add_argument("--reuse-cpu-memory", action="store_true",
                   help="CPU workers keep freed memory for the next step (train.reuse_cpu_memory: true); by "
                        "default glibc hands freed blocks above 32 MiB back to the kernel and faults them in again")
    p.add_argument("--preload", metavar="LIB", default=None,
                   help="start each worker with LD_PRELOAD=LIB, e.g. another allocator "
                        "(/usr/lib/x86_64-linux-gnu/libjemalloc.so.2); checked in the worker's memory map")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick or args.study:  # --quick / --study change the defaults only
        p.set_defaults(**(QUICK if args.quick else {"sizes": list(STUDY_SIZES)}))
        args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads}: must be at least 1")
    if args.preload and not args.worker and not Path(args.preload).is_file():
        p.error(f"--preload {args.preload}: no such file")

    if args.worker:
        if args.reuse_cpu_memory and args.device == "cpu":
            from wsigraph.utils.memory import reuse_freed_memory

            reuse_freed_memory()  # this worker is a process of its own
        print(json.dumps(worker(args.models[0], args.sizes[0], args.dim, args.device, args.steps, args.threads,
                                args.profile, args.slides_per_step)))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: CUDA is not available", file=sys.stderr)
            return 2

    rows = []
    for model in args.models:
        for n in args.sizes:
            row = run_one(model, n, args)
            rows.append(row)
            print(f"{model} N={n}: " + (f"FAILED: {row['error']}" if "error" in row else "done"),
                  file=sys.stderr, flush=True)
    table = markdown(rows, args)
    print(table, end="")
    if args.out:
        from wsigraph.utils.atomic import atomic_write_text

        atomic_write_text(args.out, table)
        print(f"written to {args.out}", file=sys.stderr)
    failed = [f"{r['model']} N={r['n']}" for r in rows if "error" in r]
    if failed:
        print(f"{len(failed)} of {len(rows)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
