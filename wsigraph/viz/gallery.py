"""A gallery of the top- (or bottom-) scoring patches, read from the slide at full resolution."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_path
from wsigraph.viz.heatmap import check_scores


def top_k_indices(scores: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Indices of the ``k`` highest (``largest``) or lowest finite scores, best first; ties by index."""
    s = np.asarray(scores, dtype=np.float64)
    idx = np.nonzero(np.isfinite(s))[0]
    key = -s[idx] if largest else s[idx]
    order = np.lexsort((idx, key))
    return idx[order[: max(0, int(k))]]


def topk_gallery(
    slide: Any,
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size_level0: float,
    k: int = 16,
    out_path: str | os.PathLike | None = None,
    *,
    largest: bool = True,
    patch_px: int | None = None,
    ncols: int | None = None,
    caption: bool = True,
) -> Image.Image:
    """Tile the ``k`` best-scoring patches into one image (PNG at ``out_path`` when given).

    Args:
        slide: an open :class:`~wsigraph.slide.reader.Slide` (``read_patch`` is used).
        coords: (N, 2) int level-0 top-left; scores: (N,); patch_size_level0: patch side in level-0 px.
        k: number of patches (fewer when fewer have finite scores).
        largest: top-k (True) or bottom-k (False).
        patch_px: side of each patch in the gallery (default: the level-0 size, i.e. full resolution,
            capped at 512).
        ncols: columns (default: about square).
        caption: write rank, score and (x, y) under each patch.
    """
    coords, scores = check_scores(coords, scores, where="topk_gallery")
    step = int(round(float(patch_size_level0)))
    if step < 1:
        raise InputError(f"topk_gallery: patch_size_level0 must be at least 1, got {patch_size_level0}")
    if int(k) < 1:
        raise InputError(f"topk_gallery: k must be at least 1, got {k}")
    idx = top_k_indices(scores, k, largest)
    size = int(patch_px) if patch_px else min(step, 512)
    ncols = ncols or math.ceil(math.sqrt(idx.size))
    nrows = math.ceil(idx.size / ncols)
    font = ImageFont.load_default()
    cap_h = 14 if caption else 0
    pad = 4
    sheet = Image.new("RGB", (ncols * (size + pad) + pad, nrows * (size + cap_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for rank, i in enumerate(idx.tolist()):  # k patches (small), not all patches
        x, y = (int(v) for v in coords[i])
        patch = slide.read_patch((x, y), step, size)
        r, c = divmod(rank, ncols)
        ox, oy = pad + c * (size + pad), pad + r * (size + cap_h + pad)
        sheet.paste(patch, (ox, oy))
        if caption:
            draw.text((ox, oy + size + 1), f"#{rank + 1} {scores[i]:.3g} ({x},{y})", fill=(0, 0, 0), font=font)
    if out_path is not None:
        path = Path(out_path)
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
    return sheet
