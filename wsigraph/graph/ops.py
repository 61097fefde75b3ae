"""The few array primitives the graph backends need, for numpy (CPU) and torch (any device).

The lattice backend and the shared edge post-processing are written once against this small interface:
on CPU they run on numpy (whose row sorts and boolean selections are several times faster than torch's
on one core), on CUDA on torch tensors of the input's device. Arithmetic, comparisons, slicing and
boolean indexing are written directly (numpy and torch share that syntax); everything else goes here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class NumpyOps:
    """Primitives on numpy arrays (CPU)."""

    name = "numpy"
    int32 = np.int32
    int64 = np.int64
    float64 = np.float64
    device = torch.device("cpu")

    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)

    def arange(self, n: int, dtype: Any = np.int64) -> np.ndarray:
        return np.arange(n, dtype=dtype)

    def full(self, n: int, value: int, dtype: Any) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    def astype(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return a.astype(dtype, copy=False)

    def take(self, a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``a`` (1-D) gathered at ``idx`` (any shape)."""
        return np.take(a, idx)

    def take_along_rows(self, a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx, axis=1)

    def sort_rows_neg_last(self, a: np.ndarray) -> np.ndarray:
        """Each row sorted ascending, negative entries (the -1 "no node" marks) moved to the end."""
        if a.dtype == np.int32:
            return np.sort(a.view(np.uint32), axis=1).view(np.int32)
        return np.sort(a.view(np.uint64), axis=1).view(np.int64)

    def sort_rows(self, a: np.ndarray) -> np.ndarray:
        return np.sort(a, axis=1)

    def argsort_rows_lex(self, primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
        """Per row, the column order sorting by ``primary`` then ``secondary``."""
        return np.lexsort((secondary, primary), axis=1)

    def count_rows(self, mask: np.ndarray) -> np.ndarray:
        return np.count_nonzero(mask, axis=1)

    def repeat(self, a: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return np.repeat(a, counts)

    def concat(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)

    def unique(self, a: np.ndarray) -> np.ndarray:
        """Sorted unique values (sort + neighbour test: numpy 2's hash-based ``np.unique`` is far slower
        on millions of int64 keys)."""
        s = np.sort(a)
        if s.size < 2:
            return s
        keep = np.empty(s.size, dtype=bool)
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
        return s[keep]

    def sort(self, a: np.ndarray) -> np.ndarray:
        return np.sort(a)

    def argsort(self, a: np.ndarray, stable: bool = False) -> np.ndarray:
        return np.argsort(a, kind="stable" if stable else None)

    def searchsorted(self, sorted_a: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.searchsorted(sorted_a, q)

    def where(self, cond: np.ndarray, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def nonzero(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask)

    def sqrt(self, a: np.ndarray) -> np.ndarray:
        return np.sqrt(a)

    def edge_index(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        out = np.empty((2, src.shape[0]), dtype=np.int64)
        out[0] = src
        out[1] = dst
        return out

    def to_torch(self, a: np.ndarray, device: torch.device) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t if device.type == "cpu" else t.to(device)


class TorchOps:
    """Primitives on torch tensors of one device (the CUDA path; also runs on CPU, for tests)."""

    name = "torch"
    int32 = torch.int32
    int64 = torch.int64
    float64 = torch.float64

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def asarray(self, x: Any, dtype: Any = None) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=dtype or x.dtype)
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    def arange(self, n: int, dtype: Any = torch.int64) -> torch.Tensor:
        return torch.arange(n, dtype=dtype, device=self.device)

    def full(self, n: int, value: int, dtype: Any) -> torch.Tensor:
        return torch.full((n,), value, dtype=dtype, device=self.device)

    def astype(self, a: torch.Tensor, dtype: Any) -> torch.Tensor:
        return a.to(dtype)

    def take(self, a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return a[idx]

    def take_along_rows(self, a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(a, 1, idx)

    def sort_rows_neg_last(self, a: torch.Tensor) -> torch.Tensor:
        big = torch.iinfo(a.dtype).max
        s = torch.sort(torch.where(a < 0, big, a), dim=1).values
        return torch.where(s == big, -1, s)

    def sort_rows(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a, dim=1).values

    def argsort_rows_lex(self, primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(secondary, dim=1, stable=True)
        p = torch.gather(primary, 1, order)
        return torch.gather(order, 1, torch.argsort(p, dim=1, stable=True))

    def count_rows(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.sum(dim=1)

    def repeat(self, a: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(a, counts)

    def concat(self, arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(arrays))

    def unique(self, a: torch.Tensor) -> torch.Tensor:
        return torch.unique(a, sorted=True)

    def sort(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sort(a).values

    def argsort(self, a: torch.Tensor, stable: bool = False) -> torch.Tensor:
        return torch.argsort(a, stable=stable)

    def searchsorted(self, sorted_a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sorted_a, q)

    def where(self, cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(mask.reshape(-1), as_tuple=False).squeeze(1)

    def sqrt(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(a)

    def edge_index(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        return torch.stack([src.to(torch.int64), dst.to(torch.int64)])

    def to_torch(self, a: torch.Tensor, device: torch.device) -> torch.Tensor:
        return a.to(device)


def ops_for(device: torch.device | None) -> NumpyOps | TorchOps:
    """numpy on CPU (``device`` None or cpu), torch elsewhere."""
    if device is None or torch.device(device).type == "cpu":
        return NumpyOps()
    return TorchOps(device)
