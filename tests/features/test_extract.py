"""Feature extraction of one slide (``wsigraph.features.extract``); the cohort stage and the CLI commands are
tested in tests/pipeline/test_extract.py and test_preprocess.py. Fixtures: tests/conftest.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsigraph.data.features import read_features
from wsigraph.errors import InputError
from wsigraph.features import extract_features
from wsigraph.slide import open_slide, write_coords

SMALL = "CMU-1-Small-Region"  # the slides are the conftest's extract_slides
INPUT = 32  # the tiny encoder's input: the tests check the plumbing, not the features


@pytest.mark.parametrize("num_workers", [0, 2])
def test_extract_real_slide(tmp_path, extract_slides, extract_coords, tiny_encoder, num_workers):
    out = tmp_path / f"{SMALL}.h5"
    res = extract_features(extract_slides["small"], extract_coords / f"{SMALL}.h5", out, tiny_encoder, batch_size=16,
                           num_workers=num_workers, device="cpu")
    coords = read_features(extract_coords / f"{SMALL}.h5", require_features=False)
    bag = read_features(out)
    n = coords.num_patches
    assert res.n_patches == n > 10
    assert bag.features.shape == (n, 1024) and bag.features.dtype == np.float32
    np.testing.assert_array_equal(bag.coords, coords.coords)
    for key in ("patch_size", "patch_level", "patch_size_level0", "mpp", "target_mpp"):
        assert bag.attrs[key] == coords.attrs[key]
    assert bag.attrs["encoder"] == "resnet50_trunc" and bag.attrs["encoder_weights"] == "random-init"
    assert "encoder_weights_sha256" not in bag.attrs  # no weights file, no digest (random init is seeded)
    assert bag.attrs["encoder_input_size"] == INPUT
    # the stored row of a patch is the encoder's output on that patch read directly from the slide
    k = n // 2
    step = int(bag.attrs["patch_size_level0"])
    with open_slide(extract_slides["small"]) as s:
        x = tiny_encoder.transform(s.read_patch(tuple(bag.coords[k]), step, tiny_encoder.read_size))
    with torch.inference_mode():
        direct = tiny_encoder(x[None])[0].numpy()
    np.testing.assert_allclose(bag.features[k], direct, rtol=1e-4, atol=1e-4)
    assert not np.allclose(bag.features[0], bag.features[k])  # patches differ, so features differ


def test_float16_output(tmp_path, extract_slides, extract_coords, tiny_encoder):
    out = tmp_path / "f16.h5"
    extract_features(extract_slides["small"], extract_coords / f"{SMALL}.h5", out, tiny_encoder, num_workers=0,
                     features_dtype="float16")
    assert read_features(out).features.dtype == np.float16


def test_coords_of_another_slide_are_refused(tmp_path, extract_slides, tiny_encoder):
    coords = tmp_path / "far.h5"
    write_coords(coords, np.array([[0, 0], [50_000, 0]]),
                 dict(patch_size=224, patch_level=0, patch_size_level0=224, mpp=0.5))
    with pytest.raises(InputError) as e:
        extract_features(extract_slides["small"], coords, tmp_path / "o.h5", tiny_encoder, num_workers=0)
    msg = str(e.value)
    assert "far.h5" in msg and "row 1" in msg and "(50000, 0)" in msg
    assert not (tmp_path / "o.h5").exists()


def test_unreadable_slide_error_is_clean_with_workers(tmp_path, extract_slides, extract_coords, tiny_encoder):
    with pytest.raises(InputError) as e:
        extract_features(extract_slides["unreadable"], extract_coords / "unreadable.h5", tmp_path / "u.h5",
                         tiny_encoder, num_workers=1)
    msg = str(e.value)
    assert "unreadable.svs" in msg and "(0, 0)" in msg and "Traceback" not in msg
    assert not (tmp_path / "u.h5").exists()  # nothing half-written


def test_clam_coords_without_mpp(tmp_path, extract_slides, tiny_encoder):
    """CLAM patch files keep patch_size/patch_level/downsample on the coords dataset and no resolution:
    the grid step comes from them and the mpp from the slide."""
    import h5py

    path = tmp_path / f"{SMALL}.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]], dtype=np.int64))
        ds.attrs.update(patch_size=512, patch_level=0, downsample=[1.0, 1.0])
    out = tmp_path / "out.h5"
    extract_features(extract_slides["small"], path, out, tiny_encoder, num_workers=0)
    bag = read_features(out)
    with open_slide(extract_slides["small"]) as s:
        slide_mpp = s.mpp
    assert bag.features.shape == (3, 1024)
    assert bag.attrs["patch_size_level0"] == 512 and bag.attrs["mpp"] == pytest.approx(slide_mpp)
