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


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy over the next ``seconds`` by every process on the machine (``/proc/stat``; None where
    it cannot be read). Unlike the load average, it does not linger after a job ends, so a benchmark can
    check the machine between its own runs."""
    import time

    try:
        b0, t0 = _cpu_times()
        time.sleep(seconds)
        b1, t1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1)
