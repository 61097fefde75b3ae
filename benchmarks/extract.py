"""Extraction throughput: the whole pipeline (read + decode + resize + embed + write) vs the encoder alone.

The encoder-alone rate embeds the very same patches, pre-read into memory as uint8 batches, so the gap
between the two rows is the I/O overhead of the pipeline. Patches come from a dense, overlapping grid
over a real slide (every patch unique, so the feature file is valid)::

    python benchmarks/extract.py                       # CPU, ResNet-50-trunc, workers 0 1 2
    python benchmarks/extract.py --device cuda --workers 0 4 8 12 --batch-size 256 --patches 5000 --stride 32
    python benchmarks/extract.py --quick --out extract.md   # 8 patches, one run: a smoke run in seconds

The default slide is ``slides/CMU-1-Small-Region.svs`` of the shared data folder: ``$WSIGRAPH_SHARED_DATA``,
else ``../shared/data`` beside the repository (as in ``tests/conftest.py``). Prints Markdown (and writes it
atomically to ``--out``): a ``## Patch feature extraction`` heading, a line naming the encoder, device and
slide, then the table; ``--json PATH`` writes the numbers (atomically). Encoders are randomly initialised:
throughput does not depend on the weights. Intermediate files go to a temporary folder that is removed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from machine import cpu_model  # noqa: E402
from wsigraph.features import build_encoder, embed_batches, extract_features  # noqa: E402
from wsigraph.features.dataset import PatchDataset, make_loader  # noqa: E402
from wsigraph.features.extract import resolve_amp  # noqa: E402
from wsigraph.utils.device import resolve_device  # noqa: E402
from wsigraph.slide import open_slide, write_coords  # noqa: E402
from wsigraph.utils.atomic import atomic_write_json, atomic_write_text  # noqa: E402

TITLE = "Patch feature extraction"
SLIDE_NAME = "CMU-1-Small-Region.svs"
QUICK = {"patches": 8, "workers": [0], "best_of": 1, "batch_size": 8}  # --quick: a smoke run in seconds


def shared_data_dir() -> Path:
    """The shared test-data folder: ``$WSIGRAPH_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("WSIGRAPH_SHARED_DATA", REPO.parent / "shared" / "data"))


def dense_coords(slide_path: Path, patch_size_level0: int, stride: int, limit: int) -> np.ndarray:
    """Top-left corners of overlapping patches over the whole slide, row-major, at most ``limit``."""
    with open_slide(slide_path) as s:
        W, H = s.dimensions
    xs = np.arange(0, W - patch_size_level0 + 1, stride)
    ys = np.arange(0, H - patch_size_level0 + 1, stride)
    xx, yy = np.meshgrid(xs, ys)
    return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.int64)[:limit]


def time_encoder_alone(encoder, batches, n, device, amp_dtype, repeats: int) -> float:
    """Best-of-``repeats`` seconds to embed pre-read uint8 batches (no reading, no decoding)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        embed_batches(encoder, batches, n, device, amp_dtype)
        best = min(best, time.perf_counter() - t0)
    return best


def measure(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict]:
    """Run every configuration, intermediate files in ``tmp``: (rows, setup of the run)."""
    device = resolve_device(args.device)
    encoder = build_encoder(args.encoder, random_init=True, device=device)
    amp_dtype = resolve_amp(args.amp, device, encoder)
    step = 224
    coords = dense_coords(args.slide, step, args.stride, args.patches)
    n = len(coords)
    coords_h5 = tmp / "coords.h5"
    write_coords(coords_h5, coords, dict(patch_size=224, patch_level=0, patch_size_level0=step, mpp=0.5))

    # pre-read every patch once, as the uint8 batches the loader would deliver
    ds = PatchDataset(args.slide, coords, step, encoder.read_size, transform=encoder.transform)
    try:
        t0 = time.perf_counter()
        batches = list(make_loader(ds, batch_size=args.batch_size, num_workers=0,
                                   pin_memory=device.type == "cuda"))
        read_s = time.perf_counter() - t0
    finally:
        ds.close()
    batches = batches * args.repeat
    total = n * args.repeat
    embed_batches(encoder, batches[:1], int(batches[0].shape[0]), device, amp_dtype)  # warm-up
    enc_s = time_encoder_alone(encoder, batches, total, device, amp_dtype, args.best_of)
    rows = [dict(mode="encoder alone (pre-read batches)", workers="-", patches=total, seconds=enc_s)]
    rows.append(dict(mode="read + decode + resize only (1 process)", workers=0, patches=n, seconds=read_s))

    for w in args.workers:
        best = float("inf")
        for _ in range(args.best_of):
            t0 = time.perf_counter()
            for r in range(args.repeat):
                extract_features(args.slide, coords_h5, tmp / f"out{r}.h5", encoder, batch_size=args.batch_size,
                                 num_workers=w, device=device, amp=args.amp)
            best = min(best, time.perf_counter() - t0)
        rows.append(dict(mode="whole pipeline (extract_features)", workers=w, patches=total, seconds=best))

    enc_rate = total / enc_s
    for r in rows:
        r["patches_per_s"] = r["patches"] / r["seconds"]
        r["ratio"] = r["patches_per_s"] / enc_rate
    dev_name = (f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else
                f"CPU {cpu_model()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)")
    setup = dict(device=dev_name, encoder=args.encoder, input_size=encoder.input_size, batch_size=args.batch_size,
                 amp=str(amp_dtype), slide=str(args.slide))
    return rows, setup


def markdown(rows: list[dict], setup: dict) -> str:
    lines = [f"## {TITLE}", "",
             f"{dt.date.today().isoformat()}; {setup['encoder']} (random init), input {setup['input_size']} px, "
             f"batch {setup['batch_size']}, amp {setup['amp']}, device {setup['device']}, slide "
             f"{Path(setup['slide']).name}", "",
             "| mode | workers | patches | seconds | patches/s | vs encoder alone |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['workers']} | {r['patches']} | {r['seconds']:.2f} | "
                     f"{r['patches_per_s']:.1f} | {100 * r['ratio']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slide", type=Path, default=None,
                   help=f"slide to read (default: $WSIGRAPH_SHARED_DATA/slides/{SLIDE_NAME}, "
                        "$WSIGRAPH_SHARED_DATA defaulting to ../shared/data beside the repository)")
    p.add_argument("--encoder", default="resnet50_trunc")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--patches", type=int, default=320, help="number of (overlapping) patches to embed")
    p.add_argument("--stride", type=int, default=112, help="grid stride in level-0 px (224-px patches)")
    p.add_argument("--repeat", type=int, default=1, help="embed the patch list this many times per run "
                                                         "(more patches per worker start-up on fast devices)")
    p.add_argument("--best-of", type=int, default=2, help="runs per configuration; the best is reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    p.add_argument("--out", type=Path, help="also write the Markdown (heading, setup line, table) here, atomically")
    p.add_argument("--json", type=Path, help="also write the results here as JSON, atomically")
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes for a smoke run in seconds: {QUICK} (options given explicitly win)")
    args = p.parse_args(argv)
    if args.quick:  # --quick changes the defaults only
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)

    if args.slide is None:
        args.slide = shared_data_dir() / "slides" / SLIDE_NAME
        if not args.slide.is_file():
            print(f"default slide {args.slide} not found: set WSIGRAPH_SHARED_DATA to the shared data folder "
                  "or pass --slide", file=sys.stderr)
            return 2
    elif not args.slide.is_file():
        print(f"--slide {args.slide}: no such file", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="wsigraph-bench-") as tmp:
        rows, setup = measure(args, Path(tmp))
    table = markdown(rows, setup)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"written to {args.out}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, dict(setup, rows=rows))
        print(f"written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
