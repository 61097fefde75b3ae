"""Patch coordinates as a lattice image: shared geometry of heatmaps and synthetic slides."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from wsigraph.errors import InputError


@dataclass
class Lattice:
    """Where each patch falls on a regular grid, and how the grid maps to a canvas.

    Attributes:
        index: (N, 2) int64 lattice cell (column, row) of each patch.
        shape: (ny, nx) of the lattice.
        origin: (x, y) level-0 pixels of cell (0, 0)'s top-left corner.
        step: cell side in level-0 pixels.
        level0_size: (W, H) of the slide.
    """

    index: np.ndarray
    shape: tuple[int, int]
    origin: tuple[float, float]
    step: float
    level0_size: tuple[int, int]

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """(ny, nx) array with ``values[k]`` at patch k's cell and ``fill`` elsewhere."""
        grid = np.full(self.shape, fill, dtype=np.float64)
        grid[self.index[:, 1], self.index[:, 0]] = values
        return grid

    def paste(self, cells: Image.Image, canvas_size: tuple[int, int], resample: int | None = None) -> Image.Image:
        """Scale a lattice-sized RGBA image ``cells`` (nx, ny) onto a transparent canvas of the whole slide."""
        W, H = self.level0_size
        cw, ch = canvas_size
        fx, fy = cw / W, ch / H
        ny, nx = self.shape
        x0, y0 = self.origin[0] * fx, self.origin[1] * fy
        x1, y1 = (self.origin[0] + nx * self.step) * fx, (self.origin[1] + ny * self.step) * fy
        size = (max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0))))
        if resample is None:
            resample = Image.Resampling.NEAREST if size[0] >= nx else Image.Resampling.BOX
        scaled = cells.resize(size, resample)
        out = Image.new("RGBA", (cw, ch), (0, 0, 0, 0))
        out.paste(scaled, (int(round(x0)), int(round(y0))))
        return out


def default_level0_size(coords: np.ndarray, step: float) -> tuple[int, int]:
    """(W, H) just covering every patch: max coordinate + step."""
    coords = np.asarray(coords)
    return int(np.ceil(coords[:, 0].max() + step)), int(np.ceil(coords[:, 1].max() + step))


def build_lattice(coords: np.ndarray, step: float, level0_size: tuple[int, int] | None = None,
                  where: str = "coords") -> Lattice:
    """Lattice of ``coords`` (N, 2) level-0 top-left corners with grid step ``step``.

    Works for the global grid (origin 0) and for grids offset as a whole; patches off the lattice (CLAM's
    per-contour grids) are snapped to the nearest cell.
    """
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise InputError(f"{where}: coords must have shape (N, 2) with N > 0, got {coords.shape}")
    step = float(step)
    if not np.isfinite(step) or step <= 0:
        raise InputError(f"{where}: patch_size_level0 must be positive, got {step}")
    c = coords.astype(np.float64)
    origin = np.mod(c.min(axis=0), step)
    index = np.rint((c - origin) / step).astype(np.int64)
    nx, ny = int(index[:, 0].max()) + 1, int(index[:, 1].max()) + 1
    size = level0_size or default_level0_size(coords, step)
    return Lattice(index=index, shape=(ny, nx), origin=(float(origin[0]), float(origin[1])), step=step,
                   level0_size=(int(size[0]), int(size[1])))


def canvas_size_for(level0_size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """(w, h) of a whole-slide canvas whose longest side is ``max_size``."""
    W, H = level0_size
    f = max_size / max(W, H)
    return max(1, int(round(W * f))), max(1, int(round(H * f)))


def draw_patches(image: Image.Image, coords: np.ndarray, step: float, level0_size: tuple[int, int],
                 color: tuple[int, int, int] = (0, 90, 255), alpha: float = 0.2) -> Image.Image:
    """``image`` (a whole-slide thumbnail of ``level0_size``) with the patches tinted and outlined.

    Vectorised over canvas pixels: each pixel looks up its lattice cell; cell borders are where that
    cell index changes (drawn only when the cells are at least 4 px wide).
    """
    lattice = build_lattice(coords, step, level0_size)
    W, H = lattice.level0_size
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    cx = np.floor(((np.arange(w) + 0.5) * W / w - lattice.origin[0]) / step).astype(np.int64)
    cy = np.floor(((np.arange(h) + 0.5) * H / h - lattice.origin[1]) / step).astype(np.int64)
    ny, nx = lattice.shape
    kept = np.zeros((ny + 2, nx + 2), bool)  # padded by one cell all round
    kept[lattice.index[:, 1] + 1, lattice.index[:, 0] + 1] = True
    ix, iy = np.clip(cx + 1, 0, nx + 1), np.clip(cy + 1, 0, ny + 1)
    inside = kept[iy[:, None], ix[None, :]]
    col = np.asarray(color, np.float32)
    out = rgb.copy()
    out[inside] = (1 - alpha) * rgb[inside] + alpha * col
    if w / max(W / step, 1) >= 4:
        vx = np.zeros(w, bool)
        vx[1:] = cx[1:] != cx[:-1]
        vy = np.zeros(h, bool)
        vy[1:] = cy[1:] != cy[:-1]
        edge = (vx[None, :] | vy[:, None]) & inside
        # also the right/bottom border of a kept cell whose neighbour is not kept
        right = np.zeros_like(inside)
        right[:, :-1] = inside[:, :-1] & ~inside[:, 1:]
        below = np.zeros_like(inside)
        below[:-1] = inside[:-1] & ~inside[1:]
        edge |= right | below
        out[edge] = col
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
