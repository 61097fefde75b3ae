"""``wsigraph --allocator``: the command restarts itself under tcmalloc or jemalloc (``LD_PRELOAD``)."""
from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

import wsigraph.cli as cli
from wsigraph.utils import memory


def test_main_restarts_once_with_the_allocators_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "allocator_environment", lambda name: {"LD_PRELOAD": f"lib{name}.so"})
    monkeypatch.delenv(cli.RESTARTED, raising=False)
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)) or sys.exit(0))
    with pytest.raises(SystemExit):
        cli.main(["--allocator", "tcmalloc", "encoders"])
    (exe, argv, env), = calls
    assert exe == sys.executable and argv == [sys.executable, "-m", "wsigraph", "--allocator", "tcmalloc", "encoders"]
    assert env == {"LD_PRELOAD": "libtcmalloc.so", cli.RESTARTED: "1"}


def test_a_restart_whose_preload_did_not_take_is_an_error_not_a_loop(monkeypatch, capsys):
    monkeypatch.setattr(memory, "allocator_environment", lambda name: {"LD_PRELOAD": "libjemalloc.so.2"})
    monkeypatch.setenv(cli.RESTARTED, "1")
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("restarted again"))
    assert cli.main(["--allocator", "jemalloc", "encoders"]) == 2
    assert "--allocator jemalloc: restarted with LD_PRELOAD=" in capsys.readouterr().err


def test_already_under_the_allocator_runs_the_command(monkeypatch, capsys):
    monkeypatch.setattr(memory, "allocator_environment", lambda name: None)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("restarted"))
    assert cli.main(["--allocator", "tcmalloc", "encoders"]) == 0
    assert "resnet50_trunc" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("tcmalloc_minimal") is None,
                    reason="tcmalloc is not installed (Debian: libtcmalloc-minimal4; .ci/run installs it)")
def test_the_restarted_command_runs_under_tcmalloc():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", cli.RESTARTED)}
    p = subprocess.run([sys.executable, "-m", "wsigraph", "-v", "--allocator", "tcmalloc", "encoders"], env=env,
                       capture_output=True, text=True, timeout=120)
    # the restarted process found tcmalloc mapped (else it would have exited 2 instead of restarting again)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("restarting under tcmalloc") == 1 and "resnet50_trunc" in p.stdout
