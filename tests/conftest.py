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


# ------------------------------------------------------------------ feature extraction (features/, pipeline/)

#: the real slide the extraction tests read, and the encoder input of their tiny encoder
EXTRACT_SLIDE = "CMU-1-Small-Region"
TINY_INPUT = 32  # the tests check the plumbing, not the features


@pytest.fixture(scope="session")
def extract_slides(shared_data) -> dict[str, Path]:
    """The small real slide and a corrupt fixture that opens but cannot be decoded."""
    d = shared_data / "slides"
    return {"small": d / f"{EXTRACT_SLIDE}.svs", "unreadable": d / "openslide-python-fixtures" / "unreadable.svs"}


@pytest.fixture(scope="session")
def tiny_encoder():
    """A randomly initialised ``resnet50_trunc`` (seeded) with a 32-px input."""
    import torch

    from wsigraph.features import build_encoder

    torch.manual_seed(0)
    return build_encoder("resnet50_trunc", random_init=True, input_size=TINY_INPUT)


@pytest.fixture(scope="session")
def extract_coords(tmp_path_factory, extract_slides) -> Path:
    """Coords files made by the slide stage: the real small slide tiled at 0.5 µm/px, and one patch of
    the corrupt fixture (it opens, but its pixels cannot be decoded)."""
    import numpy as np

    from wsigraph.slide import open_slide, segment_tissue, tile_slide, write_coords

    d = tmp_path_factory.mktemp("extract_coords")
    with open_slide(extract_slides["small"]) as s:
        coords, attrs = tile_slide(s, segment_tissue(s), target_mpp=0.5, patch_size=224)
    write_coords(d / f"{EXTRACT_SLIDE}.h5", coords, attrs)
    write_coords(d / "unreadable.h5", np.array([[0, 0]]),
                 dict(patch_size=16, patch_level=0, patch_size_level0=16, mpp=0.499))
    return d


@pytest.fixture
def extract_slide_dir(tmp_path, extract_slides) -> Path:
    """A slide folder (links) holding the two slides of :func:`extract_slides`."""
    d = tmp_path / "slides"
    d.mkdir()
    os.symlink(extract_slides["small"], d / f"{EXTRACT_SLIDE}.svs")
    os.symlink(extract_slides["unreadable"], d / "unreadable.svs")
    return d
