"""Deep-zoom tiles of slide images for the viewer, read lazily through OpenSlide's ``DeepZoomGenerator``.

Tile pyramid: OpenSlide's Deep Zoom levels (level ``L`` is the slide downsampled by ``2**(max_level - L)``),
256-px tiles without overlap. The viewer's zoom ``z`` (0 = the whole slide in one tile) is Deep Zoom level
``z + first_level`` with ``first_level = min(8, max_level)``, so one tile at zoom 0 covers
``256 * 2**zoom_levels`` level-0 pixels (:attr:`TileGeometry.world`).

Only a few slides stay open at once (least recently used closed first); each tile is read from the slide
when asked for, never the whole slide.
"""
from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsigraph.errors import InputError

TILE_SIZE = 256


@dataclass(frozen=True)
class TileGeometry:
    """How a slide of ``width`` x ``height`` level-0 pixels maps to the viewer's zoom levels.

    Attributes:
        zoom_levels: the highest zoom (full resolution); zoom 0 shows the whole slide in one tile.
        first_level: the Deep Zoom level of zoom 0.
    """

    width: int
    height: int
    zoom_levels: int
    first_level: int

    @classmethod
    def of(cls, width: int, height: int) -> "TileGeometry":
        max_level = int(math.ceil(math.log2(max(width, height, 1))))
        first = min(8, max_level)  # Deep Zoom level 8 fits in one 256-px tile
        return cls(int(width), int(height), max_level - first, first)

    @property
    def world(self) -> int:
        """Level-0 pixels covered by the one tile of zoom 0 (the tile source's y origin)."""
        return TILE_SIZE * 2 ** self.zoom_levels

    @property
    def initial_resolution(self) -> float:
        """Level-0 pixels per tile pixel at zoom 0."""
        return float(2 ** self.zoom_levels)


class TileStore:
    """Open slides and their ``DeepZoomGenerator`` s, at most ``max_open`` at a time; thread-safe."""

    def __init__(self, max_open: int = 8) -> None:
        self.max_open = int(max_open)
        self._open: OrderedDict[Path, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _generator(self, path: Path) -> Any:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        with self._lock:
            if path in self._open:
                self._open.move_to_end(path)
                return self._open[path][1]
            try:
                osr = openslide.open_slide(str(path))  # OpenSlide formats, or a plain image as an ImageSlide
            except Exception as e:  # noqa: BLE001 - unreadable file: a clear error for the page
                raise InputError(f"{path}: cannot be opened for tiles ({e})") from e
            dz = DeepZoomGenerator(osr, tile_size=TILE_SIZE, overlap=0, limit_bounds=False)
            self._open[path] = (osr, dz)
            while len(self._open) > self.max_open:
                _, (old, _) = self._open.popitem(last=False)
                old.close()
            return dz

    def geometry(self, path: Path) -> TileGeometry:
        w, h = self._generator(path).level_dimensions[-1]
        return TileGeometry.of(w, h)

    def tile_jpeg(self, path: Path, zoom: int, col: int, row: int, quality: int = 80) -> bytes | None:
        """The JPEG of tile (``col``, ``row``) at viewer zoom ``zoom`` (None outside the slide)."""
        dz = self._generator(path)
        geo = TileGeometry.of(*dz.level_dimensions[-1])
        if not 0 <= zoom <= geo.zoom_levels:
            return None
        level = zoom + geo.first_level
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            return None
        tile = dz.get_tile(level, (col, row))
        if tile.size != (TILE_SIZE, TILE_SIZE):  # edge tiles: pad on white so every tile is 256 x 256
            from PIL import Image

            full = Image.new("RGB", (TILE_SIZE, TILE_SIZE), (255, 255, 255))
            full.paste(tile.convert("RGB"), (0, 0))
            tile = full
        buf = io.BytesIO()
        tile.convert("RGB").save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    def close(self) -> None:
        with self._lock:
            for osr, _ in self._open.values():
                osr.close()
            self._open.clear()


__all__ = ["TILE_SIZE", "TileGeometry", "TileStore"]
