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

Prints Markdown (and writes it atomically to ``--out``): a ``## Training step`` heading, a line naming the
machine, torch thread count and setup, then the table: seconds per step (mean of ``--steps`` after one
warm-up step), peak RSS of the worker process at the end (GiB), its peak RSS before the first step (GiB,
``ru_maxrss`` once the graph, features, model and optimiser exist: the baseline the step adds to) and, on
CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps (GiB). A (model, N) run that fails or
passes ``--timeout`` gets a "failed" row, the others still run, and the exit status is 1.
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

TITLE = "Training step"
DEFAULT_SIZES = (1_000, 10_000, 50_000, 100_000)
DEFAULT_MODELS = ("srmil", "abmil")
QUICK = {"sizes": [1_000], "dim": 64, "steps": 1}  # --quick: a smoke run in seconds


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


def worker(model_name: str, n: int, dim: int, device: str, steps: int, threads: int | None) -> dict:
    import torch
    from torch_geometric.data import Data

    from wsigraph.nn import build_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    edge_index, builder = build_graph(n)
    data = Data(x=torch.randn(n, dim), edge_index=edge_index, slide_id=f"lattice{n}").to(device)
    name, params = parse_model_spec(model_name)
    model = build_model(name, dim, 2, **params).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-5)
    y = torch.tensor([1], device=device)
    cuda = device.startswith("cuda")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss: KiB on Linux

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model.training_loss(data, y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - t0) / steps
    return {
        "model": model_name, "n": n, "edges": int(edge_index.size(1)), "dim": dim, "device": device,
        "graph": builder, "threads": torch.get_num_threads(), "sec_per_step": sec,
        "peak_rss_before_first_step_gib": peak_before,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def worker_command(model: str, n: int, args: argparse.Namespace) -> list[str]:
    """The command line of one (model, N) run: this script with ``--worker``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--models", model, "--sizes", str(n),
           "--dim", str(args.dim), "--device", args.device, "--steps", str(args.steps)]
    return cmd + (["--threads", str(args.threads)] if args.threads else [])


def run_one(model: str, n: int, args: argparse.Namespace) -> dict:
    """One (model, N) run in a fresh process: its result row, or ``{model, n, error}``."""
    cmd = worker_command(model, n, args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "n": n, "error": f"timed out after {args.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return {"model": model, "n": n, "error": f"exit code {proc.returncode}" + (f": {last}" if last else "")}
    return json.loads(lines[-1])


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
            f"24-neighbourhood + self loops")


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"## {TITLE}", "", header_line(args), "",
             "| model | N | E | D | device | threads | s/step | peak RSS (GiB) | peak RSS before 1st step (GiB) "
             "| CUDA peak (GiB) | graph |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['n']} | | | | | **failed**: {r['error'].replace('|', '/')} "
                         "| | | | |")
            continue
        cuda = "" if r["cuda_peak_gib"] is None else f"{r['cuda_peak_gib']:.2f}"
        lines.append(f"| {r['model']} | {r['n']} | {r['edges']} | {r['dim']} | {r['device']} | {r['threads']} | "
                     f"{r['sec_per_step']:.3f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['peak_rss_before_first_step_gib']:.2f} | {cuda} | {r['graph']} |")
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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # --quick changes the defaults only
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads {args.threads}: must be at least 1")

    if args.worker:
        print(json.dumps(worker(args.models[0], args.sizes[0], args.dim, args.device, args.steps, args.threads)))
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
