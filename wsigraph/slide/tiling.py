"""Patch grids on the global lattice of a slide.

A patch of ``patch_size`` pixels at ``target_mpp`` µm/px covers ``step = round(patch_size * target_mpp /
level0_mpp)`` level-0 pixels (``patch_size_level0``). Candidate patches sit at ``(i * step, j * step)``
for every lattice cell of the slide, counted from the slide's (0, 0), never from a tissue region's
bounding box, so that patches of separate tissue pieces fall on one lattice (DESIGN.md, "Global grid").
A patch is kept when the tissue mask covers at least ``min_tissue`` of its footprint; the parts of a
footprint outside the slide count as background.

The tissue fraction of every lattice cell is computed at once from the mask's integral image (the
integral image of a piecewise-constant mask is bilinear inside each mask pixel, so interpolating it at the
cell edges gives exact area-weighted coverage even when cells do not align with mask pixels).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsigraph.errors import InputError
from wsigraph.slide.reader import MPP_TOLERANCE, Slide, mpp_to_magnification
from wsigraph.slide.tissue import TissueMask, segment_tissue

#: Above this upsampling factor (level-0 pixels stretched to patch pixels) tiling refuses to run.
MAX_UPSAMPLE = 4.0


def grid_step(patch_size: int, target_mpp: float, level0_mpp: float) -> int:
    """Lattice step in level-0 pixels: ``round(patch_size * target_mpp / level0_mpp)`` (0 if below 0.5)."""
    return int(round(patch_size * target_mpp / level0_mpp))


def tissue_fraction_grid(mask: TissueMask, step: int, level0_size: tuple[int, int] | None = None) -> np.ndarray:
    """Tissue fraction of every cell of the global lattice.

    Args:
        mask: the slide's tissue mask.
        step: lattice step in level-0 pixels.
        level0_size: (W, H) of the slide (default: ``mask.level0_size``).

    Returns:
        (ny, nx) float64 in [0, 1], ``ny = ceil(H / step)``, ``nx = ceil(W / step)``; cell (j, i) is the
        patch with top-left (i * step, j * step). Area outside the slide counts as background.
    """
    W, H = level0_size or mask.level0_size
    nx, ny = math.ceil(W / step), math.ceil(H / step)
    m = np.asarray(mask.mask, dtype=np.float64)
    h, w = m.shape
    sx, sy = W / w, H / h
    integral = np.zeros((h + 1, w + 1), np.float64)
    np.cumsum(np.cumsum(m, axis=0), axis=1, out=integral[1:, 1:])
    xs = np.clip(np.arange(nx + 1, dtype=np.float64) * step / sx, 0, w)  # cell edges in mask pixels
    ys = np.clip(np.arange(ny + 1, dtype=np.float64) * step / sy, 0, h)
    rows = _interp_axis(integral, ys, axis=0)  # (ny + 1, w + 1)
    corners = _interp_axis(rows, xs, axis=1)  # (ny + 1, nx + 1)
    area = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    cell_area = (step / sx) * (step / sy)  # full footprint, in mask pixels
    return np.clip(area / cell_area, 0.0, 1.0)


def _interp_axis(a: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``pos`` along ``axis``."""
    n = a.shape[axis] - 1
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, max(n - 1, 0))
    t = pos - i0
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, np.minimum(i0 + 1, n), axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    t = t.reshape(shape)
    return lo * (1 - t) + hi * t


def tile_slide(
    slide: Slide,
    mask: TissueMask | None = None,
    target_mpp: float = 0.5,
    patch_size: int = 224,
    min_tissue: float = 0.5,
    *,
    max_upsample: float = MAX_UPSAMPLE,
    return_fraction: bool = False,
    **segment_kwargs: Any,
) -> tuple[np.ndarray, dict[str, Any]] | tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Patches of ``patch_size`` px at ``target_mpp`` µm/px on the global grid that hold enough tissue.

    Args:
        slide: an open :class:`Slide` (its mpp must be known or overridden).
        mask: its tissue mask (default: :func:`segment_tissue` with ``segment_kwargs``).
        target_mpp: resolution of the patch pixels (0.5 µm/px ≈ 20x).
        patch_size: patch side in pixels at ``target_mpp``.
        min_tissue: keep patches whose tissue fraction is at least this (0 keeps any tissue at all).
        max_upsample: refuse to tile when the slide is coarser than ``target_mpp`` by more than this factor.
        return_fraction: also return the (N,) tissue fraction of the kept patches.

    Returns:
        ``coords`` (N, 2) int64, level-0 pixels, top-left (x, y), sorted by row then column; ``attrs``
        for :func:`write_coords` (``patch_size``, ``patch_level``, ``patch_size_level0``, ``mpp`` = the
        effective µm/px of the patch pixels, ``target_mpp``, ``level0_mpp``, ``level0_width/height``,
        ``level0_magnification``, ``target_magnification``, ``name``, ...).

    Raises:
        InputError: unknown mpp, a resolution too coarse for ``target_mpp``, an empty tissue mask
            ("no tissue found in <file>"), or no patch passing ``min_tissue``.
    """
    where = str(slide.path)
    patch_size = int(patch_size)
    if patch_size < 1:
        raise InputError(f"{where}: patch_size must be a positive number of pixels, got {patch_size}")
    if not (isinstance(target_mpp, (int, float)) and math.isfinite(target_mpp) and target_mpp > 0):
        raise InputError(f"{where}: target_mpp must be a positive number of µm/px, got {target_mpp!r}")
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise InputError(f"{where}: min_tissue must be in [0, 1], got {min_tissue}")
    level0_mpp = slide.mpp  # raises InputError naming the file when unknown
    step = grid_step(patch_size, target_mpp, level0_mpp)
    upsample = patch_size / step if step > 0 else math.inf
    if upsample > max_upsample * (1 + MPP_TOLERANCE):
        blown_up = ("less than one level-0 pixel" if step == 0 else
                    f"{step} level-0 px upsampled {upsample:.3g}x (limit {max_upsample:g}x)")
        raise InputError(
            f"{where}: the slide's resolution ({level0_mpp:.4g} µm/px) is too coarse for {patch_size}-px patches "
            f"at {target_mpp:g} µm/px: each patch would come from {blown_up}. Check the slide's mpp (override "
            "with --mpp) or choose a coarser --target-mpp")
    if mask is None:
        mask = segment_tissue(slide, **segment_kwargs)
    elif segment_kwargs:
        raise InputError(f"{where}: segmentation options {sorted(segment_kwargs)} given together with a mask")
    if tuple(mask.level0_size) != tuple(slide.dimensions):
        raise InputError(f"{where}: the tissue mask covers {mask.level0_size} level-0 px but the slide is "
                         f"{slide.dimensions}; it belongs to another slide")
    mask.require_tissue()
    frac = tissue_fraction_grid(mask, step, slide.dimensions)
    keep = frac >= float(min_tissue)
    keep &= frac > 0
    jj, ii = np.nonzero(keep)  # row-major: sorted by y then x
    if jj.size == 0:
        raise InputError(f"{where}: no {patch_size}-px patch at {target_mpp:g} µm/px has a tissue fraction of at "
                         f"least {min_tissue:g} (largest: {frac.max():.3f}; tissue covers "
                         f"{mask.tissue_fraction:.1%} of the slide); lower --min-tissue or check the mask")
    coords = np.stack([ii, jj], axis=1).astype(np.int64) * step
    level, _ = slide.best_level_for_mpp(target_mpp)
    power = slide.objective_power
    W, H = slide.dimensions
    level_w, level_h = slide.level_dimensions[level]
    attrs: dict[str, Any] = {
        "patch_size": patch_size,
        "patch_level": int(level),
        "patch_size_level0": int(step),
        "mpp": float(step * level0_mpp / patch_size),
        "target_mpp": float(target_mpp),
        "level0_mpp": float(level0_mpp),
        "mpp_source": slide.mpp_source,
        "level0_width": int(W),
        "level0_height": int(H),
        "level0_magnification": float(power if power is not None else mpp_to_magnification(level0_mpp)),
        "level0_magnification_source": "objective power" if power is not None else "estimated from mpp",
        "target_magnification": float(mpp_to_magnification(target_mpp)),
        "overlap": 0,
        "min_tissue": float(min_tissue),
        "tissue_fraction": float(mask.tissue_fraction),
        "tissue_mode": mask.mode,
        "name": slide.name,
        "slide_path": str(slide.path),
        "grid": "global",
        # CLAM's names for the level read from: its per-axis downsample and size (level 0 / level size)
        "downsample": [float(W) / level_w, float(H) / level_h],
        "level_dim": [int(level_w), int(level_h)],
        "downsampled_level_dim": [int(level_w), int(level_h)],
        # side in pixels read at patch_level before resizing to patch_size: CLAM's patch_size. Readers that
        # read `patch_size` px at `patch_level` (CLAM) cover the patch exactly when the two are equal
        "read_size": int(round(step / slide.level_downsamples[level])),
    }
    if return_fraction:
        return coords, attrs, frac[jj, ii]
    return coords, attrs


def write_coords(path: str | os.PathLike, coords: np.ndarray, attrs: dict[str, Any]) -> Path:
    """Write a coords-only file in the feature-file layout (no ``features``), atomically."""
    from wsigraph.data.features import write_features

    return write_features(path, coords, None, attrs=attrs)
