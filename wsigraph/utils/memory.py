"""Keep freed CPU memory in the process, so that large training steps stop paying the kernel for it.

glibc's malloc hands every block above its mmap threshold (at most 32 MiB) to the kernel on ``free`` and
asks for fresh pages on the next ``malloc``, which the kernel faults in and zeroes one 4 KiB page at a
time. A 1024-d SRMIL step on 200k patches allocates and frees about 67 GiB that way: 17.6 million page
faults and 49 s of kernel time in a 180 s step (``benchmarks/RESULTS.md``). Smaller slides pay less
(20k patches: 2.3 s in a 15 s step), because more of their tensors fall below the threshold and are
recycled from the heap; that is why the step time per patch grew with the slide.
:func:`reuse_freed_memory` makes every block come from the heap and keeps freed memory there for the next
step: measured quiet, a 200k-patch step takes 103 s instead of 179 s. The cost is memory: the heap
fragments, so peak resident memory grows (200k patches: 21.9 instead of 11.9 GiB; 10k: 1.79 instead of
1.63), so it is opt-in (``train.reuse_cpu_memory``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter numbers (``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_applied = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # absent in musl and other C libraries
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def reuse_freed_memory() -> bool:
    """Serve every allocation of this process from glibc's heap and keep freed memory for reuse
    (``mallopt(M_MMAP_MAX, 0)``, and ``M_TRIM_THRESHOLD`` -1, which glibc reads as SIZE_MAX: never trim).
    Process-wide and not undone: resident memory then stays near its peak instead of falling between
    steps, and the peak grows where the heap fragments (see the module docstring). Returns True when
    applied (now or before), False where the C library is not glibc (macOS, Windows, musl): nothing
    changes there."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    if not ok:
        log.warning("glibc mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD; freed memory goes back to the kernel")
    _applied = ok
    return ok


__all__ = ["reuse_freed_memory"]
