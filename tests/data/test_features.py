"""Feature files: our h5 layout, CLAM / TRIDENT / STAMP / .pt files as those tools write them, the real
files in shared/data, every bad-input case, and atomic writes under a kill."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wsigraph.data.features import (
    infer_grid_step,
    is_complete_feature_file,
    list_feature_files,
    read_features,
    write_features,
)
from wsigraph.errors import InputError, MissingFileError

ATTRS = {"patch_size": 224, "patch_level": 0, "patch_size_level0": 224, "mpp": 0.5, "encoder": "test-enc"}


def lattice(h: int, w: int, step: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(h*w, 2) int coords of a full h x w lattice, raster order."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([xs.ravel() * step + offset[0], ys.ravel() * step + offset[1]], axis=1)


def feats(n: int, d: int = 8, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


# ----------------------------------------------------------------------------------------------------
# our layout
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip_our_layout(tmp_path, dtype):
    coords = lattice(6, 7, 224, offset=(448, 224))
    x = feats(len(coords), 16, dtype=dtype)
    labels = (np.arange(len(coords)) % 3 == 0).astype(np.int8)
    path = write_features(tmp_path / "s1.h5", coords, x, attrs=ATTRS, patch_labels=labels)
    bag = read_features(path)
    assert bag.features.dtype == dtype
    np.testing.assert_array_equal(bag.features, x)
    assert bag.coords.dtype == np.int64
    np.testing.assert_array_equal(bag.coords, coords)
    np.testing.assert_array_equal(bag.patch_labels, labels)
    for k, v in ATTRS.items():
        assert bag.attrs[k] == v
    assert bag.patch_size_level0 == 224
    assert bag.slide_id == "s1" and bag.num_patches == 42 and bag.dim == 16
    assert is_complete_feature_file(path)
    with h5py.File(path) as f:  # attributes also on coords, where CLAM/TRIDENT readers look
        assert f["coords"].attrs["patch_size_level0"] == 224


def test_coords_only_file_and_require_features(tmp_path):
    path = write_features(tmp_path / "c.h5", lattice(3, 3, 512), None,
                          attrs={k: v for k, v in ATTRS.items() if k != "encoder"})
    bag = read_features(path, require_features=False)
    assert bag.features is None and bag.num_patches == 9
    with pytest.raises(InputError, match=r"c\.h5.*no embeddings"):
        read_features(path)
    assert not is_complete_feature_file(path)
    assert is_complete_feature_file(path, require_features=False)


def test_write_refuses_missing_attrs_and_float_coords(tmp_path):
    with pytest.raises(InputError, match=r"x\.h5.*missing required attributes.*mpp"):
        write_features(tmp_path / "x.h5", lattice(2, 2, 224), feats(4),
                       attrs={k: v for k, v in ATTRS.items() if k != "mpp"})
    with pytest.raises(InputError, match=r"x\.h5.*integer"):
        write_features(tmp_path / "x.h5", lattice(2, 2, 224).astype(float), feats(4), attrs=ATTRS)
    assert not (tmp_path / "x.h5").exists()


def test_list_feature_files_prefers_h5_and_ignores_temporaries(tmp_path):
    write_features(tmp_path / "a.h5", lattice(2, 2, 224), feats(4), attrs=ATTRS)
    torch.save(torch.zeros(4, 8), tmp_path / "a.pt")
    torch.save(torch.zeros(4, 8), tmp_path / "b.pt")
    (tmp_path / ".c.h5.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    found = list_feature_files(tmp_path)
    assert found == {"a": tmp_path / "a.h5", "b": tmp_path / "b.pt"}
    with pytest.raises(MissingFileError, match="nowhere"):
        list_feature_files(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------------
# other tools' files, written the way those tools write them
# ----------------------------------------------------------------------------------------------------


def test_clam_h5_files_no_attrs(tmp_path):
    """CLAM h5_files/<id>.h5: features f32 + coords int32, no attributes; step inferred from coords."""
    coords = lattice(5, 4, 512, offset=(1000, 37)).astype(np.int32)
    x = feats(len(coords), 1024)
    with h5py.File(tmp_path / "TCGA-01.h5", "w") as f:
        f["features"] = x
        f["coords"] = coords
    bag = read_features(tmp_path / "TCGA-01.h5")
    assert bag.coords.dtype == np.int64
    np.testing.assert_array_equal(bag.coords, coords)
    np.testing.assert_array_equal(bag.features, x)
    assert bag.patch_size_level0 == 512  # inferred: the file has no attributes


def test_clam_patches_h5_attrs_on_coords(tmp_path):
    """CLAM patches/<id>.h5: coords with patch_size / patch_level / downsample on the dataset."""
    coords = lattice(4, 4, 512)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_size"] = 256
        d.attrs["patch_level"] = 1
        d.attrs["downsample"] = np.array([2.0, 2.0])
        d.attrs["level_dim"] = np.array([40000, 30000])
        d.attrs["name"] = "p"
    bag = read_features(tmp_path / "p.h5", require_features=False)
    assert bag.attrs["patch_size"] == 256 and bag.attrs["patch_level"] == 1
    assert bag.patch_size_level0 == 512  # patch_size x downsample
    np.testing.assert_array_equal(bag.coords, coords)


def test_trident_style_attrs(tmp_path):
    """TRIDENT features_<enc>/<id>.h5: fp16 features, coords carrying patch_size_level0 etc."""
    coords = lattice(3, 5, 448)
    x = feats(len(coords), 32, dtype=np.float16)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("features", data=x)
        d = f.create_dataset("coords", data=coords)
        for k, v in {"patch_size": 224, "patch_size_level0": 448, "level0_magnification": 40,
                     "target_magnification": 20, "overlap": 0, "name": "t"}.items():
            d.attrs[k] = v
        f.attrs["encoder"] = "uni_v1"
    bag = read_features(tmp_path / "t.h5")
    assert bag.features.dtype == np.float16
    assert bag.patch_size_level0 == 448
    assert bag.attrs["encoder"] == "uni_v1" and bag.attrs["target_magnification"] == 20


def test_stamp_feats_and_micrometre_coords(tmp_path):
    """STAMP: ``feats`` fp16 and coords in micrometres; converted to pixels at the tile resolution."""
    size_um, size_px = 256.0, 224
    lat = lattice(3, 4, 1)
    coords_um = (lat * size_um + np.array([512.0, 256.0])).astype(np.float64)
    x = feats(len(lat), 16, dtype=np.float16)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["feats"] = x
        f["coords"] = coords_um
        f.attrs.update({"unit": "um", "tile_size_um": size_um, "tile_size_px": size_px, "extractor": "ctranspath",
                        "feat_type": "tile", "stamp_version": "2.5.0"})
    bag = read_features(tmp_path / "s.h5")
    np.testing.assert_array_equal(bag.features, x)
    mpp = size_um / size_px
    assert bag.attrs["mpp"] == pytest.approx(mpp)
    assert bag.patch_size_level0 == size_px
    # lattice units stay exact integers after the conversion
    units = bag.coords / bag.patch_size_level0
    np.testing.assert_allclose(units - units.min(axis=0), lat)


def test_stamp_micrometres_without_tile_size_is_an_error(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["feats"] = feats(4)
        f["coords"] = lattice(2, 2, 256).astype(float)
        f.attrs["unit"] = "um"
    with pytest.raises(InputError, match=r"s\.h5.*micrometres.*tile_size_um"):
        read_features(tmp_path / "s.h5")


def test_pt_with_coords_in_clam_layout(tmp_path):
    """CLAM: feats/pt_files/<id>.pt (tensor) with feats/h5_files/<id>.h5 holding the coords."""
    coords = lattice(4, 3, 256)
    x = feats(len(coords), 12)
    (tmp_path / "pt_files").mkdir()
    (tmp_path / "h5_files").mkdir()
    torch.save(torch.from_numpy(x), tmp_path / "pt_files" / "slideA.pt")
    with h5py.File(tmp_path / "h5_files" / "slideA.h5", "w") as f:
        f["features"] = x
        f["coords"] = coords.astype(np.int32)
    bag = read_features(tmp_path / "pt_files" / "slideA.pt")
    np.testing.assert_array_equal(bag.features, x)
    np.testing.assert_array_equal(bag.coords, coords)
    assert bag.patch_size_level0 == 256


def test_pt_with_coords_in_slideflow_layout(tmp_path):
    """slideflow bags: <slide>.pt + <slide>.index.npz (``arr_0`` = coordinates)."""
    coords = lattice(2, 5, 299)
    x = feats(len(coords), 6)
    torch.save(torch.from_numpy(x), tmp_path / "slideB.pt")
    np.savez(tmp_path / "slideB.index.npz", coords)
    bag = read_features(tmp_path / "slideB.pt")
    np.testing.assert_array_equal(bag.coords, coords)
    np.testing.assert_array_equal(bag.features, x)
    assert bag.patch_size_level0 == 299


def test_pt_dict_with_coords_and_explicit_coords_path(tmp_path):
    coords = lattice(3, 3, 224)
    x = feats(9, 4)
    torch.save({"features": torch.from_numpy(x), "coords": torch.from_numpy(coords)}, tmp_path / "d.pt")
    bag = read_features(tmp_path / "d.pt")
    np.testing.assert_array_equal(bag.coords, coords)
    torch.save(torch.from_numpy(x), tmp_path / "e.pt")
    elsewhere = tmp_path / "elsewhere"
    write_features(elsewhere / "coords_e.h5", coords, None, attrs={k: v for k, v in ATTRS.items() if k != "encoder"})
    bag = read_features(tmp_path / "e.pt", coords_path=elsewhere / "coords_e.h5")
    np.testing.assert_array_equal(bag.coords, coords)
    with pytest.raises(MissingFileError, match=r"nope\.h5"):
        read_features(tmp_path / "e.pt", coords_path=tmp_path / "nope.h5")


class _NotATensor:  # torch.load(weights_only=True) must refuse to build this
    pass


def test_pt_with_arbitrary_pickled_object_is_refused(tmp_path):
    torch.save({"features": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil\.pt.*weights_only=True"):
        read_features(tmp_path / "evil.pt")


# ----------------------------------------------------------------------------------------------------
# the real files in shared/data
# ----------------------------------------------------------------------------------------------------


def test_real_clam_coords_only_files(shared_data):
    folder = shared_data / "features" / "clam-tcga-lihc-coords"
    files = list_feature_files(folder)
    assert len(files) == 5  # the label CSV beside them is not a feature file
    for sid, path in files.items():
        bag = read_features(path, require_features=False)
        with h5py.File(path) as f:
            n = f["coords"].shape[0]
        assert bag.num_patches == n > 0
        assert bag.coords.dtype == np.int64
        assert bag.features is None
        assert bag.patch_size_level0 == 512  # patch_size 512 x downsample 1 at level 0
        assert sid.startswith("TCGA-")
        # per-contour grids: the step is still recovered from the coordinates alone
        assert infer_grid_step(bag.coords) == 512
    with pytest.raises(InputError, match="no embeddings"):
        read_features(next(iter(files.values())))


def test_real_pt_bag_without_coords_names_where_it_looked(shared_data):
    path = shared_data / "features" / "antoni-alpha-prism-embeddings" / "example_slide_features.pt"
    with pytest.raises(InputError) as err:
        read_features(path)
    msg = str(err.value)
    assert str(path) in msg and "no coordinates" in msg
    assert "example_slide_features.index.npz" in msg and "h5_files" in msg and "coords_path" in msg


# ----------------------------------------------------------------------------------------------------
# bad input (issue item 7): every error names the file and what is wrong
# ----------------------------------------------------------------------------------------------------


def _raw_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"absent\.h5.*does not exist"):
        read_features(tmp_path / "absent.h5")


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"123")
    with pytest.raises(InputError, match=r"x\.npy.*unknown feature file type"):
        read_features(tmp_path / "x.npy")


def test_truncated_and_non_h5_files(tmp_path):
    good = write_features(tmp_path / "good.h5", lattice(20, 20, 224), feats(400, 64), attrs=ATTRS)
    data = good.read_bytes()
    for frac in (0.5, 0.05):
        p = tmp_path / f"trunc{int(frac * 100)}.h5"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(InputError, match=rf"{p.name}.*cannot be read as HDF5.*truncated"):
            read_features(p)
        assert not is_complete_feature_file(p)
    text = tmp_path / "text.h5"
    text.write_text("slide_id,label\n")
    with pytest.raises(InputError, match=r"text\.h5.*cannot be read as HDF5"):
        read_features(text)
    assert not is_complete_feature_file(text)


def test_corrupt_h5_metadata_is_an_input_error(tmp_path):
    good = write_features(tmp_path / "good.h5", lattice(20, 20, 224), feats(400, 64), attrs=ATTRS)
    data = bytearray(good.read_bytes())
    data[800:1200] = b"\x07" * 400  # the root group's symbol table (h5py's default layout)
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(bytes(data))
    assert not is_complete_feature_file(bad)
    with pytest.raises(InputError, match=r"corrupt\.h5"):
        read_features(bad)


def test_no_coords_dataset(tmp_path):
    p = _raw_h5(tmp_path / "nocoords.h5", features=feats(4))
    with pytest.raises(InputError, match=r"nocoords\.h5.*no 'coords' dataset.*features"):
        read_features(p)


def test_length_mismatch(tmp_path):
    p = _raw_h5(tmp_path / "mismatch.h5", features=feats(5), coords=lattice(2, 2, 224))
    with pytest.raises(InputError, match=r"mismatch\.h5.*'features' has 5 rows but 'coords' has 4"):
        read_features(p)
    with pytest.raises(InputError, match=r"w\.h5.*5 rows but 'coords' has 4"):
        write_features(tmp_path / "w.h5", lattice(2, 2, 224), feats(5), attrs=ATTRS)
    with pytest.raises(InputError, match=r"w\.h5.*'patch_labels' has 3 rows"):
        write_features(tmp_path / "w.h5", lattice(2, 2, 224), feats(4), attrs=ATTRS, patch_labels=np.zeros(3))
    assert not (tmp_path / "w.h5").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_features(tmp_path, bad):
    x = feats(9, 4)
    x[6, 2] = bad
    p = _raw_h5(tmp_path / "nan.h5", features=x, coords=lattice(3, 3, 224))
    with pytest.raises(InputError, match=r"nan\.h5.*NaN or inf.*row 6"):
        read_features(p)
    with pytest.raises(InputError, match=r"w\.h5.*NaN or inf.*row 6"):
        write_features(tmp_path / "w.h5", lattice(3, 3, 224), x, attrs=ATTRS)
    assert not (tmp_path / "w.h5").exists()


def test_duplicate_coords(tmp_path):
    c = lattice(3, 3, 224)
    c[7] = c[2]
    p = _raw_h5(tmp_path / "dup.h5", features=feats(9), coords=c)
    with pytest.raises(InputError, match=rf"dup\.h5.*duplicate coordinates \({c[2][0]}, {c[2][1]}\) at rows 2 and 7"):
        read_features(p)


def test_empty_slide(tmp_path):
    p = _raw_h5(tmp_path / "empty.h5", features=np.zeros((0, 8), np.float32), coords=np.zeros((0, 2), np.int64))
    with pytest.raises(InputError, match=r"empty\.h5.*empty slide \(0 patches\)"):
        read_features(p)
    with pytest.raises(InputError, match=r"w\.h5.*empty slide"):
        write_features(tmp_path / "w.h5", np.zeros((0, 2), np.int64), np.zeros((0, 8), np.float32), attrs=ATTRS)


def test_bad_coords_shape_and_fractional_coords(tmp_path):
    p = _raw_h5(tmp_path / "shape.h5", features=feats(4), coords=np.zeros((4, 3), np.int64))
    with pytest.raises(InputError, match=r"shape\.h5.*\(N, 2\).*\(4, 3\)"):
        read_features(p)
    p = _raw_h5(tmp_path / "frac.h5", features=feats(4), coords=lattice(2, 2, 224) + 0.5)
    with pytest.raises(InputError, match=r"frac\.h5.*fractional"):
        read_features(p)


# ----------------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------------

_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import h5py, numpy as np
    from wsigraph.data.features import write_features

    target, where = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "rename":  # everything written to the temporary file, killed just before the rename
        os.replace = die
    else:  # killed in the middle of writing the datasets
        original = h5py.Group.create_dataset
        def create(self, name, *args, **kwargs):
            ds = original(self, name, *args, **kwargs)
            if name == "features":
                die()
            return ds
        h5py.Group.create_dataset = create
    rng = np.random.default_rng(1)
    ys, xs = np.meshgrid(np.arange(50), np.arange(50), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel()], 1) * 224
    write_features(target, coords, rng.standard_normal((2500, 64)).astype(np.float32),
                   attrs=dict(patch_size=224, patch_level=0, patch_size_level0=224, mpp=0.5, encoder="new"))
""")


@pytest.mark.parametrize("where", ["datasets", "rename"])
def test_kill_during_write_leaves_no_final_file(tmp_path, where):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = tmp_path / "fresh.h5"
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(target), where], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not target.exists()
    assert list_feature_files(tmp_path) == {}  # the leftover temporary file is hidden
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(n.startswith(".fresh.h5.") and n.endswith(".tmp") for n in leftovers)

    # overwriting an existing file: a kill leaves the old, complete file in place
    old = write_features(tmp_path / "old.h5", lattice(2, 2, 224), feats(4, 3), attrs={**ATTRS, "encoder": "old"})
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(old), where], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    bag = read_features(old)
    assert bag.attrs["encoder"] == "old" and bag.num_patches == 4


def test_exception_during_write_keeps_old_file(tmp_path, monkeypatch):
    old = write_features(tmp_path / "s.h5", lattice(2, 2, 224), feats(4, 3), attrs=ATTRS)
    before = old.read_bytes()
    original = h5py.Group.create_dataset

    def failing(self, name, *args, **kwargs):
        if name == "features":
            raise OSError("disk full")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_features(old, lattice(3, 3, 224), feats(9, 3), attrs=ATTRS)
    assert old.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # temporary file removed


def test_stamp_coords_are_placed_at_level_0_for_heatmaps(tmp_path, shared_data):
    """STAMP micrometres become level-0 pixels with the slide's own resolution (defect: they were drawn at the
    tile resolution, misplaced by tile mpp / slide mpp)."""
    import json

    from wsigraph.cli import main
    from wsigraph.data.features import to_level0
    from wsigraph.slide import open_slide

    slide_path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    with open_slide(slide_path) as s:
        level0_mpp = s.mpp
    size_um, size_px = 112.0, 224  # 0.5 um/px tiles on a ~0.499 um/px slide
    lat = lattice(3, 4, 1)
    coords_um = (lat * size_um + np.array([300.0, 400.0])).astype(np.float64)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["feats"] = feats(len(lat), 8)
        f["coords"] = coords_um
        f.attrs.update({"unit": "um", "tile_size_um": size_um, "tile_size_px": size_px})
    bag = read_features(tmp_path / "s.h5")
    coords, step = to_level0(bag.coords, bag.attrs, level0_mpp, where="s.h5")
    np.testing.assert_array_equal(coords, np.rint(coords_um / level0_mpp).astype(np.int64))
    assert step == pytest.approx(size_um / level0_mpp)
    with pytest.raises(InputError, match=r"s\.h5: coordinates are in pixels at 0\.5 um/px.*--mpp"):
        to_level0(bag.coords, bag.attrs, None, where="s.h5")
    np.save(tmp_path / "s.npy", np.linspace(0, 1, len(lat)))
    out = tmp_path / "maps"
    # --mpp 0.25 (a 40x scan): the tile-resolution pixels would sit at half the level-0 position
    assert main(["heatmap", "--scores", str(tmp_path / "s.npy"), "--features", str(tmp_path / "s.h5"),
                 "--slide", str(slide_path), "--mpp", "0.25", "--out", str(out), "--top-k", "0"]) == 0
    first = json.loads((out / "s.geojson").read_text())["features"][0]["geometry"]["coordinates"][0][0]
    assert first == pytest.approx(list(coords_um[0] / 0.25), abs=1)
