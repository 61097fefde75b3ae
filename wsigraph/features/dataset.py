"""Patches of one slide as a torch ``Dataset``, read in parallel by DataLoader worker processes.

Each process (the main one with ``num_workers=0``, else every worker) opens its own slide handle on first
use: OpenSlide handles must not be shared across a fork. Items are uint8 ``(3, S, S)`` tensors (the
encoder scales and normalises them on the device, see :mod:`wsigraph.features.encoders`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsigraph.errors import InputError, WsigraphError


def open_slide_default(path: str | os.PathLike, mpp: float | None = None) -> Any:
    """``wsigraph.slide.open_slide`` (imported lazily, so this module loads without the slide stack)."""
    from wsigraph.slide import open_slide

    return open_slide(path, mpp=mpp)


class PatchDataset(Dataset):
    """The patches of one slide at the given level-0 coordinates.

    Args:
        slide_path: the slide file.
        coords: (N, 2) int64, level-0 pixels, top-left (x, y).
        size_level0: patch footprint in level-0 pixels.
        out_size: side in pixels of the patches read (the encoder's ``read_size``).
        transform: PIL RGB -> tensor (default: ``PilToUint8(out_size)``).
        mpp: level-0 µm/px override passed to the opener (only needed for slides without metadata).
        opener: ``opener(path, mpp) -> slide`` with ``read_patch(xy, size_level0, out_size)``; must pickle
            (a module-level function) when workers are spawned.

    Item ``i`` is ``transform(slide.read_patch(coords[i], size_level0, out_size))``. A read error becomes an
    :class:`InputError` naming the slide, the row and the coordinates.
    """

    def __init__(
        self,
        slide_path: str | os.PathLike,
        coords: np.ndarray,
        size_level0: int,
        out_size: int,
        transform: Callable[[Any], torch.Tensor] | None = None,
        mpp: float | None = None,
        opener: Callable[..., Any] | None = None,
    ) -> None:
        from wsigraph.features.encoders import PilToUint8

        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise InputError(f"{slide_path}: coords must have shape (N, 2), got {tuple(coords.shape)}")
        self.slide_path = Path(slide_path)
        self.coords = coords.astype(np.int64, copy=False)
        self.size_level0 = int(size_level0)
        self.out_size = int(out_size)
        self.transform = transform if transform is not None else PilToUint8(self.out_size)
        self.mpp = mpp
        self.opener = opener or open_slide_default
        self._slide = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def slide(self) -> Any:
        """This process's slide handle, opened on first use (and reopened after a fork)."""
        if self._slide is None or self._pid != os.getpid():
            self._slide = self.opener(self.slide_path, self.mpp)
            self._pid = os.getpid()
        return self._slide

    def __getitem__(self, i: int) -> torch.Tensor:
        x, y = (int(v) for v in self.coords[i])
        try:
            img = self.slide.read_patch((x, y), self.size_level0, self.out_size)
        except WsigraphError as e:
            raise type(e)(f"{e} (patch row {i}, level-0 (x, y) = ({x}, {y}))") from e
        except Exception as e:  # noqa: BLE001 - any reader failure becomes a message naming slide and patch
            raise InputError(f"{self.slide_path}: cannot read patch row {i} at level-0 (x, y) = ({x}, {y}): "
                             f"{type(e).__name__}: {e}") from e
        return self.transform(img)

    def close(self) -> None:
        if self._slide is not None and self._pid == os.getpid():
            close = getattr(self._slide, "close", None)
            if close is not None:
                close()
        self._slide = None

    def __getstate__(self) -> dict[str, Any]:  # never ship an open handle to another process
        state = self.__dict__.copy()
        state["_slide"] = None
        state["_pid"] = None
        return state


def worker_init_fn(worker_id: int) -> None:
    """Per-worker setup: one torch thread (workers decode and resize; the main process computes)."""
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, PatchDataset):
        info.dataset._slide = None  # a forked copy of a handle opened by the parent is not ours to use


def make_loader(
    dataset: PatchDataset,
    batch_size: int = 64,
    num_workers: int = 2,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A sequential loader over ``dataset`` (order kept), with ``num_workers`` reader processes."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise InputError(f"num_workers must be 0 or more, got {num_workers}")
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=worker_init_fn, prefetch_factor=prefetch_factor, persistent_workers=False)
        if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
            # one loader per slide: forking starts workers in milliseconds, where Python 3.14's default
            # (forkserver) would re-import torch in each one. Workers only read patches (no CUDA, 1 thread).
            kwargs["multiprocessing_context"] = mp.get_context("fork")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                      pin_memory=pin_memory, **kwargs)
