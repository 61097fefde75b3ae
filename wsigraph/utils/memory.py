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

An allocator that keeps freed memory without fragmenting as much does better than both: started under
tcmalloc (``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4``, Debian's
``libtcmalloc-minimal4``) the 200k-patch step took 54 s against glibc's 116 s on a faster machine, linear
from 10k, at 13.1 against 12.0 GiB. Under such an allocator ``mallopt`` governs nothing, so
:func:`reuse_freed_memory` leaves it alone (:func:`preloaded_allocator`). ``wsigraph --allocator tcmalloc``
starts the command under it (:func:`allocator_environment`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: file-name stems of allocators that replace glibc's malloc when preloaded (``LD_PRELOAD``)
OTHER_ALLOCATORS = ("libtcmalloc", "libjemalloc", "libmimalloc")
#: allocators ``wsigraph --allocator`` can start a command under: the library names ``ctypes.util.find_library``
#: looks up, in order, and the environment each needs to keep freed memory (jemalloc hands it back to the
#: kernel after 10 s by default; a 200k-patch step then faults as often as under glibc)
ALLOCATORS = {
    "tcmalloc": (("tcmalloc_minimal", "tcmalloc"), {}),
    "jemalloc": (("jemalloc",), {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
}
#: where to get them, for the error message
ALLOCATOR_PACKAGES = {"tcmalloc": "Debian/Ubuntu: apt install libtcmalloc-minimal4; conda: gperftools",
                      "jemalloc": "Debian/Ubuntu: apt install libjemalloc2; conda: jemalloc"}
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


def mapped_files() -> list[str]:
    """Paths of the files mapped into this process (``/proc/self/maps``; empty where there is none)."""
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return [line.split()[-1] for line in text.splitlines() if "/" in line]


def preloaded_allocator() -> str | None:
    """File name of an allocator that replaced glibc's malloc in this process (tcmalloc, jemalloc, mimalloc),
    or None."""
    for path in mapped_files():
        name = Path(path).name
        if name.startswith(OTHER_ALLOCATORS):
            return name
    return None


def allocator_environment(name: str, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to start a process under the allocator ``name`` (``tcmalloc`` | ``jemalloc``):
    ``environ`` (default ``os.environ``) with the library prepended to ``LD_PRELOAD`` and its settings added
    (a setting already in ``environ`` wins). None when this process already runs under it. Raises
    ``InputError`` for an unknown name, off Linux, or when the library is not installed (naming the
    package)."""
    from wsigraph.errors import InputError

    if name not in ALLOCATORS:
        raise InputError(f"allocator {name!r}: unknown; choose one of {sorted(ALLOCATORS)}")
    if not sys.platform.startswith("linux"):
        raise InputError(f"allocator {name!r}: preloading an allocator is supported on Linux only")
    stems, settings = ALLOCATORS[name]
    current = preloaded_allocator()
    if current is not None and any(current.startswith(f"lib{s}.") for s in stems):
        return None
    library = next((found for s in stems if (found := ctypes.util.find_library(s))), None)
    if library is None:
        raise InputError(f"allocator {name!r}: no {' or '.join(f'lib{s}' for s in stems)} found on this "
                         f"machine ({ALLOCATOR_PACKAGES[name]})")
    env = dict(os.environ if environ is None else environ)
    env["LD_PRELOAD"] = " ".join([library, *env.get("LD_PRELOAD", "").split()])
    for key, value in settings.items():
        env.setdefault(key, value)
    return env


def reuse_freed_memory() -> bool:
    """Serve every allocation of this process from glibc's heap and keep freed memory for reuse
    (``mallopt(M_MMAP_MAX, 0)``, and ``M_TRIM_THRESHOLD`` -1, which glibc reads as SIZE_MAX: never trim).
    Process-wide and not undone: resident memory then stays near its peak instead of falling between
    steps, and the peak grows where the heap fragments (see the module docstring). Returns True when
    applied (now or before), False where the C library is not glibc (macOS, Windows, musl) or another
    allocator serves ``malloc`` (:func:`preloaded_allocator`): nothing changes there."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    other = preloaded_allocator()
    if other is not None:
        log.info("%s serves malloc in this process, not glibc: reuse_cpu_memory leaves it alone (tcmalloc keeps "
                 "freed memory by default; jemalloc with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1)", other)
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    if not ok:
        log.warning("glibc mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD; freed memory goes back to the kernel")
    _applied = ok
    return ok


__all__ = ["ALLOCATORS", "allocator_environment", "mapped_files", "preloaded_allocator", "reuse_freed_memory"]
