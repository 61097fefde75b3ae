"""wsigraph.utils.memory: freed CPU memory kept in the process (no page faults for the next step's tensors).

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone."""
from __future__ import annotations

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
