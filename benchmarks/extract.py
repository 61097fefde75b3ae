"""Extraction throughput: the whole pipeline (read + decode + resize + embed + write) vs the encoder alone.

The encoder-alone rate embeds the very same patches, pre-read into memory as uint8 batches, so the gap
between the two rows is the I/O overhead of the pipeline. Patches come from a dense, overlapping grid
over a real slide (every patch unique, so the feature file is valid)::

    python benchmarks/extract.py                       # CPU, ResNet-50-trunc, workers 0 1 2
    python benchmarks/extract.py --device cuda --workers 0 4 8 --batch-size 256 --repeat 4

Prints a Markdown table (and ``--json PATH`` writes the numbers). Encoders are randomly initialised:
throughput does not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsigraph.features import build_encoder, embed_batches, extract_features  # noqa: E402
from wsigraph.features.dataset import PatchDataset, make_loader  # noqa: E402
from wsigraph.features.extract import resolve_amp, resolve_device  # noqa: E402
from wsigraph.slide import open_slide, write_coords  # noqa: E402

DEFAULT_SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
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
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    encoder = build_encoder(args.encoder, random_init=True, device=device)
    amp_dtype = resolve_amp(args.amp, device, encoder)
    step = 224
    coords = dense_coords(args.slide, step, args.stride, args.patches)
    n = len(coords)
    tmp = Path(tempfile.mkdtemp(prefix="wsigraph-bench-"))
    coords_h5 = tmp / "coords.h5"
    write_coords(coords_h5, coords, dict(patch_size=224, patch_level=0, patch_size_level0=step, mpp=0.5))

    # pre-read every patch once, as the uint8 batches the loader would deliver
    ds = PatchDataset(args.slide, coords, step, encoder.read_size, transform=encoder.transform)
    t0 = time.perf_counter()
    batches = list(make_loader(ds, batch_size=args.batch_size, num_workers=0,
                               pin_memory=device.type == "cuda"))
    read_s = time.perf_counter() - t0
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
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} torch threads)"
    print(f"\n{args.encoder} (random init), input {encoder.input_size} px, batch {args.batch_size}, "
          f"amp {amp_dtype}, device {dev_name}, slide {args.slide.name}\n")
    print("| mode | workers | patches | seconds | patches/s | vs encoder alone |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        rate = r["patches"] / r["seconds"]
        r["patches_per_s"] = rate
        r["ratio"] = rate / enc_rate
        print(f"| {r['mode']} | {r['workers']} | {r['patches']} | {r['seconds']:.2f} | {rate:.1f} | "
              f"{100 * r['ratio']:.0f}% |")
    if args.json:
        args.json.write_text(json.dumps(dict(device=dev_name, encoder=args.encoder, batch_size=args.batch_size,
                                             rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
