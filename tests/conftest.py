"""Shared pytest fixtures.

Real slide and feature files live in ``../shared/data`` beside the repository (override with the
``WSIGRAPH_SHARED_DATA`` environment variable). Tests that need them are skipped when the folder is
absent, unless ``WSIGRAPH_REQUIRE_SHARED=1`` (set by ``.ci/run``), where a missing folder fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N worker processes share the cores; one torch thread each (oversubscribed small-graph
    # steps run many times slower). Subprocesses started by tests inherit it through the environment.
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WSIGRAPH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``shared/data`` (slides/, features/, images/)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("WSIGRAPH_REQUIRE_SHARED") == "1":
            pytest.fail(f"shared test data folder {SHARED_DATA} is missing")
        pytest.skip(f"shared test data folder {SHARED_DATA} not present")
    return SHARED_DATA
