"""Walking a data folder a bounded number of levels down (slide finders, feature-folder discovery)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

#: folders that hold no slides or feature files of their own (CLAM / TRIDENT side outputs, VCS, caches)
SIDE_FOLDERS = frozenset({".git", "__pycache__", "masks", "thumbnails", "contours", "contours_geojson",
                          "visualization"})


def walk_folders(root: str | os.PathLike, depth: int, *, skip: Iterable[str] = SIDE_FOLDERS,
                 exclude: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """``root`` and its sub-folders, breadth first, at most ``depth`` levels down; hidden folders, those
    named in ``skip`` and those in ``exclude`` (resolved paths) are not entered; unreadable ones are passed."""
    skip, excluded = set(skip), {Path(e).resolve() for e in exclude}
    level = [Path(root)]
    for _ in range(max(0, int(depth)) + 1):
        nxt: list[Path] = []
        for d in level:
            yield d
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and c.name not in skip
                              and not c.name.startswith(".") and c.resolve() not in excluded)
            except OSError:
                continue
        level = nxt


__all__ = ["SIDE_FOLDERS", "walk_folders"]
