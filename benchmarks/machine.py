"""What the benchmarks say about the computer they ran on (stdlib only, cheap to import).

Shared by ``run_speed.py`` (its ``machine`` section) and the benchmark scripts (their header lines), so
that every table names the CPU the same way.
"""
from __future__ import annotations

import os
import platform


def proc_field(path: str, key: str) -> str | None:
    """Value of the first ``key: value`` line of a /proc file (``/proc/cpuinfo``, ``/proc/meminfo``), or None."""
    try:
        with open(path) as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.split(":", 1)[0].strip() == key), None)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows, else ``"?"``."""
    return proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine() or "?"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> str:
    """``"1-min / 5-min / 15-min"`` load average."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())
