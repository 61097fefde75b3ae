"""Per-patch scores drawn over a slide thumbnail (PNG with a colour bar)."""
from __future__ import annotations

import os
from pathlib import Path
import numpy as np
from PIL import Image

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_path
from wsigraph.viz.lattice import build_lattice, canvas_size_for

NORMALIZE = (None, "minmax", "percentile")


def check_scores(coords: np.ndarray, scores: np.ndarray, where: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, 2) coords and (N,) scores; returns them as int64 / float64 arrays."""
    coords = np.asarray(coords)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise InputError(f"{where}: expected one score per patch, shape (N,), got {scores.shape}; pick a column")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"{where}: coords must have shape (N, 2), got {coords.shape}")
    if coords.shape[0] != scores.shape[0]:
        raise InputError(f"{where}: {scores.shape[0]} scores for {coords.shape[0]} patches")
    if coords.shape[0] == 0:
        raise InputError(f"{where}: no patches to draw")
    if not np.isfinite(scores).any():
        raise InputError(f"{where}: every score is NaN or infinite")
    return coords.astype(np.int64, copy=False), scores


def normalize_scores(scores: np.ndarray, how: str | None = None) -> np.ndarray:
    """``None``: as is; ``"minmax"``: to [0, 1]; ``"percentile"``: rank / (N - 1) (ties share a rank)."""
    if how not in NORMALIZE:
        raise InputError(f"normalize must be one of {NORMALIZE}, got {how!r}")
    s = np.asarray(scores, dtype=np.float64)
    if how is None:
        return s
    ok = np.isfinite(s)
    out = np.full_like(s, np.nan)
    if how == "minmax":
        lo, hi = s[ok].min(), s[ok].max()
        out[ok] = (s[ok] - lo) / (hi - lo) if hi > lo else 0.5
    else:
        from scipy.stats import rankdata

        r = rankdata(s[ok], method="average")
        out[ok] = (r - 1) / max(ok.sum() - 1, 1)
    return out


def blur_on_lattice(grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (ny, nx) score grid with NaN holes, ``sigma`` in patches (normalised convolution).

    Empty cells neither contribute nor receive a value, so blurring does not spread scores onto background.
    """
    if sigma <= 0:
        return grid
    from scipy import ndimage as ndi

    valid = np.isfinite(grid)
    num = ndi.gaussian_filter(np.where(valid, grid, 0.0), sigma=sigma, mode="constant")
    den = ndi.gaussian_filter(valid.astype(np.float64), sigma=sigma, mode="constant")
    out = np.full_like(grid, np.nan)
    ok = valid & (den > 1e-12)
    out[ok] = num[ok] / den[ok]
    return out


def heatmap_overlay(
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size_level0: float,
    *,
    background: Image.Image | None = None,
    level0_size: tuple[int, int] | None = None,
    cmap: str = "jet",
    blur: float = 0.0,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    normalize: str | None = None,
    max_size: int = 1024,
) -> tuple[Image.Image, float, float]:
    """The heatmap composited on the background (no axes). Returns (RGB image, vmin, vmax)."""
    import matplotlib

    coords, scores = check_scores(coords, scores)
    if background is not None and level0_size is None:
        raise InputError("render_heatmap: level0_size=(W, H) of the slide is needed to place scores on a background")
    lattice = build_lattice(coords, patch_size_level0, level0_size)
    values = normalize_scores(scores, normalize)
    grid = blur_on_lattice(lattice.to_grid(values), float(blur))
    finite = grid[np.isfinite(grid)]
    lo = float(finite.min()) if vmin is None else float(vmin)
    hi = float(finite.max()) if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1e-9
    if background is None:
        canvas = Image.new("RGB", canvas_size_for(lattice.level0_size, max_size), (255, 255, 255))
    else:
        canvas = background.convert("RGB")
        if max(canvas.size) > max_size:
            canvas = canvas.resize(canvas_size_for(canvas.size, max_size), Image.Resampling.BILINEAR)
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as e:
        raise InputError(f"unknown colour map {cmap!r} (any matplotlib colormap name, e.g. 'jet', 'viridis')") from e
    valid = np.isfinite(grid)
    rgba = colormap(np.clip((np.where(valid, grid, lo) - lo) / (hi - lo), 0, 1))
    rgba[..., 3] = np.where(valid, float(alpha), 0.0)
    cells = Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA")
    layer = lattice.paste(cells, canvas.size)
    out = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return out, lo, hi


def render_heatmap(
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size_level0: float,
    *,
    background: Image.Image | None = None,
    level0_size: tuple[int, int] | None = None,
    out_path: str | os.PathLike | None = None,
    cmap: str = "jet",
    blur: float = 0.0,
    colorbar: bool = True,
    title: str | None = None,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    normalize: str | None = None,
    label: str = "score",
    max_size: int = 1024,
    dpi: int = 100,
) -> Image.Image:
    """Draw per-patch scores over a slide thumbnail; write a PNG with colour bar and title if ``out_path``.

    Args:
        coords: (N, 2) int, level-0 pixels, top-left.
        scores: (N,) float (NaN = not drawn).
        patch_size_level0: grid step in level-0 pixels.
        background: whole-slide thumbnail (any size; covers ``level0_size``), or None for white.
        level0_size: (W, H) of the slide (needed with a background; default: just covering the patches).
        cmap: matplotlib colour map. blur: Gaussian sigma in patches on the lattice (0 = none).
        colorbar, title, label: decorations of the PNG. alpha: opacity of the scores.
        vmin, vmax: colour range (default: range of the drawn values). normalize: None, "minmax", "percentile".
        max_size: longest side of the drawn slide in pixels.

    Returns:
        the composited RGB image (without colour bar or title), as large as the (resized) background.
    """
    image, lo, hi = heatmap_overlay(coords, scores, patch_size_level0, background=background,
                                    level0_size=level0_size, cmap=cmap, blur=blur, alpha=alpha, vmin=vmin,
                                    vmax=vmax, normalize=normalize, max_size=max_size)
    if out_path is not None:
        _save_figure(image, out_path, cmap=cmap, vmin=lo, vmax=hi, colorbar=colorbar, title=title,
                     label=label if normalize != "percentile" else f"{label} (percentile)", dpi=dpi)
    return image


def _save_figure(image: Image.Image, out_path: str | os.PathLike, *, cmap: str, vmin: float, vmax: float,
                 colorbar: bool, title: str | None, label: str, dpi: int) -> Path:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    w, h = image.size
    extra_w = 1.2 if colorbar else 0.2
    extra_h = 0.5 if title else 0.1
    fig = Figure(figsize=(w / dpi + extra_w, h / dpi + extra_h), dpi=dpi)
    ax = fig.add_axes((0.1 / (w / dpi + extra_w), 0.05 / (h / dpi + extra_h),
                       (w / dpi) / (w / dpi + extra_w), (h / dpi) / (h / dpi + extra_h)))
    ax.imshow(np.asarray(image), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
        fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.02, label=label)
    path = Path(out_path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def save_image_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path

