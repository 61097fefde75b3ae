"""Spatial-graph build time of every backend (``wsigraph.graph.spatial_graph``).

Cases:
  * lattice coordinates with holes (25 % of a square lattice's cells empty, random origin, step 224 px),
    paper graph (24-neighbourhood + self loops); nodes in random order (the worst case for the lattice
    backend, which must then sort each row) and, for the lattice backend, also in raster order as tilers
    write them;
  * irregular points (uniform integer pixels at the same density), k-NN with k = 8.

For each N: median (and min) of the repeats, peak memory of one build (CPU: growth of the process's
peak RSS, reset through /proc/self/clear_refs; CUDA: torch.cuda.max_memory_allocated), edges, a check
that edge_index is symmetric and equal to the kdtree backend's, and the speed-up over kdtree.

    python benchmarks/graph_build.py                      # one CPU thread, N = 1k, 10k, 100k, 200k
    python benchmarks/graph_build.py --device cuda        # lattice vs torch_cluster on the GPU
    python benchmarks/graph_build.py --quick              # N = 1k, 10k, one repeat: a smoke run in seconds
    python benchmarks/graph_build.py --out graph_build.md  # also write the Markdown (heading + table) there

Prints Markdown: a ``## Spatial graph build`` heading, the environment line, the table and the targets.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

TITLE = "Spatial graph build"
STEP = 224
TARGET_N = 100_000
QUICK = {"sizes": [1_000, 10_000], "repeats": 1}  # --quick: a smoke run in seconds


def lattice_with_holes(n: int, rng: np.random.Generator, fill: float = 0.75, order: str = "shuffled") -> np.ndarray:
    """``n`` distinct cells of a square lattice that is ``fill`` full, as level-0 pixels."""
    side = int(np.ceil(np.sqrt(n / fill)))
    cells = np.sort(rng.choice(side * side, size=n, replace=False))  # raster order
    if order == "shuffled":
        cells = rng.permutation(cells)
    xy = np.stack([cells % side, cells // side], axis=1).astype(np.int64)
    return xy * STEP + rng.integers(0, 100, size=2) * STEP


def irregular_points(n: int, rng: np.random.Generator, fill: float = 0.75) -> np.ndarray:
    side_px = int(np.ceil(np.sqrt(n / fill))) * STEP
    flat = rng.choice(side_px * side_px, size=n, replace=False)
    return np.stack([flat % side_px, flat // side_px], axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Extra peak memory of one call, MB (CPU: RSS high-water mark; CUDA: allocator peak)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak / 2 ** 20
    _malloc_trim()  # give freed heap pages back, so that this call's allocations show in the RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return float("nan")
    before = _rss_kb("VmRSS")
    out = fn()
    peak = _rss_kb("VmHWM") - before
    del out
    return peak / 1024


def time_calls(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def is_symmetric(ei: torch.Tensor, n: int) -> bool:
    key = ei[0] * n + ei[1]
    rev = torch.sort(ei[1] * n + ei[0]).values
    return bool(torch.equal(key, rev))


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


def run(sizes: list[int], repeats: int, device: torch.device, seed: int, log: Callable[[str], None]) -> list[dict]:
    from wsigraph.graph import spatial_graph
    from wsigraph.graph.cluster import torch_cluster_available

    have_tc = torch_cluster_available()
    rows: list[dict] = []
    cases = [
        ("lattice with holes, paper (r = 2.84, 24-nbhd + self)", {"mode": "paper"}, "lattice"),
        ("irregular points, knn k = 8", {"mode": "knn", "k": 8}, "irregular"),
    ]
    for case, kw, kind in cases:
        for n in sizes:
            rng = np.random.default_rng(seed + n)
            variants: list[tuple[str, str, np.ndarray]] = []
            if kind == "lattice":
                shuffled = lattice_with_holes(n, rng, order="shuffled")
                raster = np.ascontiguousarray(shuffled[np.lexsort((shuffled[:, 0], shuffled[:, 1]))])
                variants += [("lattice", "random order", shuffled),
                             ("lattice", "raster order", raster),
                             ("kdtree", "random order", shuffled)]
                if have_tc:
                    variants.append(("torch_cluster", "random order", shuffled))
            else:
                pts = irregular_points(n, rng)
                variants += [("kdtree", "random order", pts)]
                if have_tc:
                    variants.append(("torch_cluster", "random order", pts))
                variants.append(("lattice", "n/a (not on a lattice)", pts))
            refs: dict[int, torch.Tensor] = {}  # kdtree's graph of each coordinate array

            def reference(coords: np.ndarray) -> torch.Tensor:
                if id(coords) not in refs:
                    refs[id(coords)] = spatial_graph(coords, step=STEP, backend="kdtree", **kw)
                return refs[id(coords)]

            for backend, order, coords in variants:
                row = {"case": case, "n": n, "backend": backend, "order": order, "device": str(device)}
                if order.startswith("n/a"):
                    rows.append({**row, "skipped": True})
                    continue
                dev = device if backend != "kdtree" else torch.device("cpu")
                x = torch.from_numpy(coords).to(dev)
                fn = lambda: spatial_graph(x, step=STEP, backend=backend, **kw)  # noqa: E731
                ei_cpu = fn().cpu()  # warm-up, and the edges to check
                times = time_calls(fn, repeats if n >= 50_000 else 3 * repeats, dev)
                mem = peak_memory_mb(fn, dev)
                row.update({
                    "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "peak_mb": mem,
                    "edges": int(ei_cpu.shape[1]), "symmetric": is_symmetric(ei_cpu, n),
                    "same_as_kdtree": bool(torch.equal(ei_cpu, reference(coords))), "repeats": len(times)})
                rows.append(row)
                log(f"{case} | N={n} | {backend} ({order}, {dev}): median {row['median_ms']:.1f} ms, "
                    f"peak {mem:.0f} MB, {row['edges']} edges")
    # speed-up over kdtree (same case, N; kdtree on random order)
    for r in rows:
        if r.get("skipped"):
            continue
        kd = next((q for q in rows if q["case"] == r["case"] and q["n"] == r["n"] and q["backend"] == "kdtree"
                   and not q.get("skipped")), None)
        r["vs_kdtree"] = kd["median_ms"] / r["median_ms"] if kd else float("nan")
    return rows


def environment(device: torch.device) -> str:
    try:
        import torch_cluster

        tc = torch_cluster.__version__
    except (ImportError, OSError):
        tc = "not installed"
    import scipy

    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{dt.date.today().isoformat()}; CPU {cpu_model()} ({os.cpu_count()} logical cores), torch threads "
            f"{torch.get_num_threads()}{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {np.__version__}, scipy {scipy.__version__}, torch_cluster {tc}")


def markdown(rows: list[dict], device: torch.device, note: str) -> str:
    lines = [f"## {TITLE}", "", environment(device), ""]
    if note:
        lines += [note, ""]
    lines += ["| case | N | backend | node order | device | median ms | min ms | peak MB | edges | symmetric "
              "| same edges as kdtree | speed-up vs kdtree |",
              "|---|---:|---|---|---|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['case']} | {r['n']:,} | {r['backend']} | {r['order']} | | | | | | | | |")
            continue
        same = ("yes" if r["same_as_kdtree"] else "**NO**") if r["backend"] != "kdtree" else "(reference)"
        lines.append(
            f"| {r['case']} | {r['n']:,} | {r['backend']} | {r['order']} | "
            f"{r['device'] if r['backend'] != 'kdtree' else 'cpu'} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r['peak_mb']:.0f} | {r['edges']:,} | {'yes' if r['symmetric'] else '**NO**'} | {same} | "
            f"{r['vs_kdtree']:.2f}x |")
    lines += ["", *targets(rows), ""]
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    def get(backend: str, order: str = "random order") -> dict | None:
        return next((r for r in rows if r["n"] == TARGET_N and r["backend"] == backend and r.get("order") == order
                     and r["case"].startswith("lattice") and not r.get("skipped")), None)

    lat, kd, tc = get("lattice"), get("kdtree"), get("torch_cluster")
    if lat is None:
        return [f"Targets: not evaluated (N = {TARGET_N:,} not in the run)."]
    out = ["Targets (100k-patch lattice, 24-neighbourhood, random node order):"]
    if lat["device"] == "cpu":
        out.append(f"- lattice under 40 ms on one core: {lat['median_ms']:.1f} ms -> "
                   f"{'met' if lat['median_ms'] < 40 else 'NOT met'}")
    if kd:
        ratio = kd["median_ms"] / lat["median_ms"]
        out.append(f"- lattice >= 2x faster than kdtree: {ratio:.1f}x -> {'met' if ratio >= 2 else 'NOT met'}")
    if tc:
        ratio = tc["median_ms"] / lat["median_ms"]
        need = 5 if lat["device"] == "cpu" else 1
        out.append(f"- lattice vs torch_cluster on {lat['device']}: {ratio:.1f}x"
                   + (f" (target >= 5x on CPU) -> {'met' if ratio >= need else 'NOT met'}" if need == 5 else ""))
    else:
        out.append("- torch_cluster not installed: no comparison")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 200_000])
    p.add_argument("--repeats", type=int, default=7, help="timed runs per case at N >= 50k (3x below)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (lattice and torch_cluster run there)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, the one-core numbers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="", help="a line printed under the environment (e.g. machine load)")
    p.add_argument("--out", help="also write the Markdown (heading, environment, table) here, atomically")
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes for a smoke run in seconds: {QUICK} (options given explicitly win)")
    args = p.parse_args(argv)
    if args.quick:  # --quick changes the defaults only
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    rows = run(args.sizes, args.repeats, device, args.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    table = markdown(rows, device, args.note)
    print(table)
    if args.out:
        from wsigraph.utils.atomic import atomic_write_text

        atomic_write_text(args.out, table + "\n")
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
