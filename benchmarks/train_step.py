"""Time and peak memory of one training step (forward + backward + AdamW step) per slide size.

Each (model, size) runs in a fresh subprocess so its peak RSS is its own. The slide is a square patch
lattice (row-major, N patches) with the paper's 24-neighbourhood graph plus self loops, built by
``wsigraph.graph.spatial_graph`` when available (else a vectorised lattice builder here), random float32
features of width D.

    python benchmarks/train_step.py                       # srmil + abmil, N = 1k, 10k, 50k, 100k, CPU
    python benchmarks/train_step.py --sizes 1000 10000 --models srmil --device cuda

Prints a Markdown table: seconds per step (mean of ``--steps`` after one warm-up step), peak RSS of the
process (GiB) and, on CUDA, ``torch.cuda.max_memory_allocated`` (GiB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT_SIZES = (1_000, 10_000, 50_000, 100_000)
DEFAULT_MODELS = ("srmil", "abmil")


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


def worker(model_name: str, n: int, dim: int, device: str, steps: int) -> dict:
    import torch
    from torch_geometric.data import Data

    from wsigraph.nn import build_model

    torch.manual_seed(0)
    edge_index, builder = build_graph(n)
    data = Data(x=torch.randn(n, dim), edge_index=edge_index, slide_id=f"lattice{n}").to(device)
    model = build_model(model_name, dim, 2).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=1e-5)
    y = torch.tensor([1], device=device)
    cuda = device.startswith("cuda")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

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
        "rss_before_gib": rss_before,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="patches per slide")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registered model names")
    p.add_argument("--dim", type=int, default=1024, help="feature width D")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per (model, size) run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.models[0], args.sizes[0], args.dim, args.device, args.steps)))
        return 0

    rows = []
    for model in args.models:
        for n in args.sizes:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--models", model, "--sizes", str(n),
                   "--dim", str(args.dim), "--device", args.device, "--steps", str(args.steps)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({"model": model, "n": n, "error": f"timeout after {args.timeout:.0f} s"})
                print(f"{model} N={n}: timeout", file=sys.stderr)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
                rows.append({"model": model, "n": n, "error": err})
                print(f"{model} N={n}: failed: {err}", file=sys.stderr)
                continue
            rows.append(json.loads(lines[-1]))
            print(f"{model} N={n}: done", file=sys.stderr)

    print("| model | N | E | D | device | threads | s/step | peak RSS (GiB) | RSS before step (GiB) | CUDA peak (GiB) "
          "| graph |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['n']} | | | | | failed: {r['error']} | | | | |")
            continue
        cuda = "" if r["cuda_peak_gib"] is None else f"{r['cuda_peak_gib']:.2f}"
        print(f"| {r['model']} | {r['n']} | {r['edges']} | {r['dim']} | {r['device']} | {r['threads']} | "
              f"{r['sec_per_step']:.3f} | {r['peak_rss_gib']:.2f} | {r['rss_before_gib']:.2f} | {cuda} | "
              f"{r['graph']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
