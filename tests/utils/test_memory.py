"""wsigraph.utils.memory: freed CPU memory kept in the process (no page faults for the next step's tensors).

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from wsigraph.utils import memory

PROBE = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "reuse":
        from wsigraph.utils.memory import reuse_freed_memory
        assert reuse_freed_memory() and reuse_freed_memory()  # idempotent
    import torch
    torch.set_num_threads(1)
    x = torch.randn(20000, 1024)

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            y = torch.relu(x * 2.0) + 1.0  # 80 MiB temporaries, freed every iteration as in a training step
            del y
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()  # warm-up: the heap grows once
    print(faults())
""")


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(memory._glibc() is None, reason="the C library is not glibc")
def test_freed_memory_is_reused_without_page_faults():
    default, reused = _page_faults("default"), _page_faults("reuse")
    tensor_pages = 20000 * 1024 * 4 // 4096
    # glibc hands every 80 MiB block back to the kernel: each iteration faults its pages in again
    assert default > 5 * 2 * tensor_pages // 2
    # kept: no iteration faults its temporaries in again. The heap may still grow once by one tensor after
    # the warm-up (3 of 12 probes under load, 0 of 46 on another run: its layout varies between processes)
    assert reused <= tensor_pages + 1000


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.reuse_freed_memory() is False
    assert memory._applied is False


def test_a_preloaded_allocator_is_named_and_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "_applied", False)
    maps = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10"]
    monkeypatch.setattr(memory, "mapped_files", lambda: maps)
    assert memory.preloaded_allocator() == "libtcmalloc_minimal.so.4.5.10"
    if memory._glibc() is not None:  # glibc present, but tcmalloc serves malloc: mallopt would govern nothing
        assert memory.reuse_freed_memory() is False and memory._applied is False
    monkeypatch.setattr(memory, "mapped_files", lambda: maps[:1])
    assert memory.preloaded_allocator() is None


def testmapped_files_lists_this_processes_libraries():
    files = memory.mapped_files()
    if not files:
        pytest.skip("no /proc/self/maps on this platform")
    assert any("python" in f for f in files)
    if not os.environ.get("LD_PRELOAD"):
        assert memory.preloaded_allocator() is None


def test_allocator_environment_preloads_the_library_with_its_settings(monkeypatch):
    from wsigraph.errors import InputError

    if not sys.platform.startswith("linux"):
        with pytest.raises(InputError, match="Linux only"):
            memory.allocator_environment("tcmalloc", {})
        return
    found = {"tcmalloc_minimal": None, "tcmalloc": "libtcmalloc.so.4", "jemalloc": "libjemalloc.so.2"}
    monkeypatch.setattr("ctypes.util.find_library", lambda stem: found.get(stem))
    monkeypatch.setattr(memory, "preloaded_allocator", lambda: None)
    env = memory.allocator_environment("tcmalloc", {"LD_PRELOAD": "libother.so", "PATH": "/bin"})
    assert env == {"LD_PRELOAD": "libtcmalloc.so.4 libother.so", "PATH": "/bin"}
    assert memory.allocator_environment("jemalloc", {})["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert memory.allocator_environment("jemalloc", {"MALLOC_CONF": "narenas:1"})["MALLOC_CONF"] == "narenas:1"
    monkeypatch.setattr(memory, "preloaded_allocator", lambda: "libtcmalloc.so.4.5.10")
    assert memory.allocator_environment("tcmalloc", {}) is None  # already under it
    assert memory.allocator_environment("jemalloc", {}) is not None
    found["jemalloc"] = None
    with pytest.raises(InputError, match="no libjemalloc found on this machine .*apt install libjemalloc2"):
        memory.allocator_environment("jemalloc", {})
    with pytest.raises(InputError, match="unknown"):
        memory.allocator_environment("mimalloc", {})
