"""Per-slide feature files: read ours, CLAM's, TRIDENT's, STAMP's and ``.pt`` bags; write ours atomically.

Our layout (one HDF5 file per slide, ``<slide_id>.h5``)::

    features      (N, D) float32 or float16   patch embeddings (absent in coords-only files)
    coords        (N, 2) int64                (x, y) top-left of each patch, level-0 pixels
    patch_labels  (N,)   int8, optional       patch-level ground truth where known (synthetic cohorts)
    attrs (file root, mirrored on ``coords``): patch_size, patch_level, patch_size_level0, mpp, encoder, ...;
          files tiled by wsigraph add TRIDENT's level0/target_magnification and CLAM's downsample,
          level_dim, downsampled_level_dim (of patch_level) and read_size (CLAM's patch_size: pixels read
          at patch_level; equal to patch_size where a pyramid level sits at the target mpp)

Readers accept the other tools' files as they are:

* CLAM ``h5_files/<id>.h5``: ``features`` + ``coords`` (int32), no attributes; CLAM ``patches/<id>.h5``:
  ``coords`` with ``patch_size``/``patch_level``/``downsample`` attributes on the dataset.
* TRIDENT: ``features`` + ``coords`` with ``patch_size_level0`` etc. on ``coords``.
* STAMP: ``feats`` (fp16) + ``coords`` in micrometres with ``tile_size_um``/``tile_size_px``; converted to
  pixels at the tile resolution (``mpp = tile_size_um / tile_size_px``), so lattice units stay exact.
* ``.pt`` tensors (CLAM ``pt_files``, slideflow bags) with coordinates found beside them.

A file's grid step (``patch_size_level0``) comes from its attributes or, when absent, is inferred from the
coordinates (the most common gap between neighbouring patches in a row or column).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from wsigraph.errors import InputError, MissingFileError
from wsigraph.utils.atomic import atomic_path

FEATURE_KEYS = ("features", "feats")
H5_SUFFIXES = (".h5", ".hdf5")
_NAN_CHECK_ROWS = 65536


@dataclass
class FeatureBag:
    """One slide's patches.

    Attributes:
        coords: (N, 2) int64, level-0 pixels, top-left (x, y); None only for a bag read with
            ``require_coords=False`` that has none (a plain ``.pt`` tensor; set-based models only).
        features: (N, D) float32/float16 embeddings, or None for a coords-only file.
        attrs: file attributes (``patch_size_level0``, ``mpp``, ``encoder``, ...), plain Python values.
        patch_labels: (N,) int, patch-level ground truth, or None.
        path: the file read, if any.
    """

    coords: np.ndarray | None
    features: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    patch_labels: np.ndarray | None = None
    path: Path | None = None

    @property
    def num_patches(self) -> int:
        rows = self.coords if self.coords is not None else self.features
        return 0 if rows is None else int(rows.shape[0])

    @property
    def dim(self) -> int | None:
        return None if self.features is None else int(self.features.shape[1])

    @property
    def patch_size_level0(self) -> float:
        """Grid step in level-0 pixels (from the attributes, else inferred from ``coords``)."""
        step = self.attrs.get("patch_size_level0")
        if step:
            return float(step)
        return float(infer_grid_step(self.coords, where=str(self.path or "coords")))

    @property
    def slide_id(self) -> str | None:
        return None if self.path is None else self.path.stem


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def read_features(
    path: str | os.PathLike,
    *,
    require_features: bool = True,
    coords_path: str | os.PathLike | None = None,
    validate: bool = True,
    require_coords: bool = True,
) -> FeatureBag:
    """Read one slide's feature file (``.h5``/``.hdf5`` or ``.pt``) into a :class:`FeatureBag`.

    Args:
        path: the file.
        require_features: raise if the file has no embeddings (coords-only files are fine for tiling).
        coords_path: for ``.pt`` files, where the coordinates are (default: looked up beside the file,
            see :func:`find_coords_for_pt`).
        validate: run :func:`validate_bag` (lengths, NaN/inf, duplicates, empty slide).
        require_coords: False accepts a file without coordinates (``bag.coords`` None): a ``.pt`` tensor
            with no coordinates beside it, an ``.h5`` without ``coords``; for models that need no graph.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: feature file does not exist")
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        bag = _read_h5(path, require_coords=require_coords)
    elif suffix == ".pt":
        bag = _read_pt(path, coords_path, require_coords=require_coords)
    else:
        raise InputError(f"{path}: unknown feature file type {suffix!r} (expected .h5, .hdf5 or .pt)")
    if require_features and bag.features is None:
        raise InputError(f"{path}: no embeddings in this file (looked for datasets {list(FEATURE_KEYS)}); "
                         "it looks like a coords-only file: run `wsigraph extract` on it first")
    if validate:
        validate_bag(bag, where=str(path))
    return bag


_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)


def read_coords(path: str | os.PathLike, *, coords_path: str | os.PathLike | None = None) -> FeatureBag:
    """A slide's coordinates and attributes without its embeddings (``bag.features`` is None).

    For HDF5 files only ``coords`` is read, so graph building never loads the (N, D) embeddings.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: feature file does not exist")
    if path.suffix.lower() in H5_SUFFIXES:
        return _read_h5(path, coords_only=True)
    bag = read_features(path, require_features=False, coords_path=coords_path, validate=False)
    bag.features = None
    return bag


def _read_h5(path: Path, coords_only: bool = False, require_coords: bool = True) -> FeatureBag:
    try:
        return _read_h5_unchecked(path, coords_only, require_coords)
    except InputError:
        raise
    except _H5_ERRORS as e:  # h5py raises these for truncated files and corrupt internals
        raise InputError(f"{path}: cannot be read as HDF5 ({type(e).__name__}: {e}); "
                         "the file may be truncated, corrupt or not an HDF5 file") from e


def _check_external_links(f: h5py.File, path: Path) -> None:
    """A dataset that is an HDF5 external link to a file that cannot be opened: an InputError naming both."""
    for name in f:
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            try:
                f[name]
            except (KeyError, OSError) as e:
                raise InputError(f"{path}: dataset {name!r} links to {link.filename}:{link.path}, which cannot "
                                 f"be opened ({e}); was the original feature file moved or deleted?") from e


def _read_h5_unchecked(path: Path, coords_only: bool, require_coords: bool = True) -> FeatureBag:
    with h5py.File(path, "r") as f:
        _check_external_links(f, path)
        keys = list(f.keys())
        attrs = _plain_attrs(f.attrs)
        coords: np.ndarray | None = None
        if "coords" in f:
            coords_ds = f["coords"]
            for k, v in _plain_attrs(coords_ds.attrs).items():
                attrs.setdefault(k, v)
            coords = np.asarray(coords_ds[()])
        elif require_coords or coords_only:
            raise InputError(f"{path}: no 'coords' dataset (datasets present: {keys})")
        feat_key = None if coords_only else next((k for k in FEATURE_KEYS if k in f), None)
        features = None
        if feat_key is not None:
            features = np.asarray(f[feat_key][()])
            if features.ndim == 3 and features.shape[0] == 1:  # some tools save (1, N, D)
                features = features[0]
        patch_labels = np.asarray(f["patch_labels"][()]) if "patch_labels" in f and not coords_only else None
    if coords is not None:
        coords = _normalise_coords(coords, attrs, path)
    _normalise_attrs(attrs)
    return FeatureBag(coords=coords, features=features, attrs=attrs, patch_labels=patch_labels, path=path)


def _read_pt(path: Path, coords_path: str | os.PathLike | None, require_coords: bool = True) -> FeatureBag:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise InputError(f"{path}: cannot be loaded as a tensor file with weights_only=True ({e}). "
                         "wsigraph never unpickles arbitrary objects from feature files") from e
    if isinstance(obj, dict):
        key = next((k for k in ("features", "feats", "x") if k in obj), None)
        if key is None:
            raise InputError(f"{path}: dict without a 'features' key (keys: {sorted(obj)})")
        tensor = obj[key]
        coords_obj = obj.get("coords")
    else:
        tensor, coords_obj = obj, None
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"{path}: expected a tensor of shape (N, D), got {type(tensor).__name__}")
    features = tensor.detach().cpu().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().cpu().numpy()
    attrs: dict[str, Any] = {}
    coords: np.ndarray | None = None
    if coords_obj is not None:
        coords = np.asarray(coords_obj)
    else:
        found = Path(coords_path) if coords_path is not None else find_coords_for_pt(path)
        if found is None and not require_coords:
            _normalise_attrs(attrs)
            return FeatureBag(coords=None, features=features, attrs=attrs, path=path)
        if found is None:
            raise InputError(
                f"{path}: a .pt bag has no coordinates; looked for {[str(p) for p in _coords_candidates(path)]}. "
                "Pass coords_path= (the CLAM patches .h5 or slideflow .index.npz of this slide), or, for a "
                "model that needs no graph, read it without coordinates (CLI: --no-coords; config: "
                "graph.mode: none)")
        if not found.exists():
            raise MissingFileError(f"{found}: coordinates file for {path} does not exist")
        if found.suffix == ".npz":
            with np.load(found, allow_pickle=False) as z:
                coords = np.asarray(z[z.files[0]])
        else:
            coords_bag = _read_h5(found, coords_only=True)
            coords, attrs = coords_bag.coords, coords_bag.attrs
    coords = _normalise_coords(coords, attrs, path)
    _normalise_attrs(attrs)
    return FeatureBag(coords=coords, features=features, attrs=attrs, path=path)


def _coords_candidates(pt_path: Path) -> list[Path]:
    stem, parent = pt_path.stem, pt_path.parent
    return [
        parent / f"{stem}.index.npz",  # slideflow
        parent.parent / "h5_files" / f"{stem}.h5",  # CLAM features folder
        parent.parent / "patches" / f"{stem}.h5",  # CLAM patching output next to features
        parent / f"{stem}.h5",
    ]


def find_coords_for_pt(pt_path: str | os.PathLike) -> Path | None:
    """Where the coordinates of a ``.pt`` bag live (slideflow ``.index.npz``, CLAM ``h5_files``/``patches``)."""
    for cand in _coords_candidates(Path(pt_path)):
        if cand.exists():
            return cand
    return None


def _plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[str(k)] = v
    return out


def _normalise_coords(coords: np.ndarray, attrs: dict[str, Any], path: Path) -> np.ndarray:
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"{path}: 'coords' must have shape (N, 2), got {tuple(coords.shape)}")
    if attrs.get("unit") == "um" or "tile_size_um" in attrs:  # STAMP: micrometres -> tile-resolution pixels
        size_um = float(attrs.get("tile_size_um") or attrs.get("tile_size") or 0)
        size_px = float(attrs.get("tile_size_px") or 0)
        if size_um <= 0 or size_px <= 0:
            raise InputError(f"{path}: coords are in micrometres but 'tile_size_um'/'tile_size_px' attributes are missing")
        mpp = size_um / size_px
        attrs.setdefault("mpp", mpp)
        attrs["patch_size_level0"] = size_px
        attrs.setdefault("patch_size", int(size_px))
        attrs["coords_unit"] = f"pixels at {mpp:.4g} um/px (converted from micrometres)"
        attrs["coords_mpp"] = mpp  # µm per coordinate unit: to_level0 turns them into level-0 pixels
        return np.rint(coords.astype(np.float64) / mpp).astype(np.int64)
    if np.issubdtype(coords.dtype, np.floating):
        if not np.all(np.isfinite(coords)):
            raise InputError(f"{path}: 'coords' contain NaN or inf")
        rounded = np.rint(coords)
        if np.abs(coords - rounded).max(initial=0.0) > 1e-3:
            raise InputError(f"{path}: 'coords' are fractional; expected integer level-0 pixels")
        coords = rounded
    return coords.astype(np.int64, copy=False)


def to_level0(coords: np.ndarray, attrs: Mapping[str, Any], level0_mpp: float | None, where: str
              ) -> tuple[np.ndarray, float | None]:
    """``(coords, patch_size_level0)`` in level-0 pixels of a slide with ``level0_mpp`` µm/px.

    Coordinates that are already level-0 pixels (every layout but STAMP's) come back unchanged. STAMP's,
    read in pixels of their tile resolution (attribute ``coords_mpp``), are scaled by ``coords_mpp /
    level0_mpp``; an :class:`InputError` naming ``where`` when the slide's resolution is unknown.
    """
    step = attrs.get("patch_size_level0")
    cmpp = attrs.get("coords_mpp")
    if cmpp is None:
        return coords, None if step is None else float(step)
    if level0_mpp is None or not level0_mpp > 0:
        raise InputError(f"{where}: coordinates are in {attrs.get('coords_unit', 'tile pixels')}; the slide's "
                         "level-0 resolution is needed to place them (pass --mpp)")
    scale = float(cmpp) / float(level0_mpp)
    return np.rint(coords.astype(np.float64) * scale).astype(np.int64), float(step or 0) * scale or None


def _normalise_attrs(attrs: dict[str, Any]) -> None:
    """Fill ``patch_size_level0`` from CLAM's ``patch_size`` x ``downsample`` when it is missing."""
    if attrs.get("patch_size_level0"):
        return
    if "patch_size" in attrs and "downsample" in attrs:
        ds = attrs["downsample"]
        ds0 = float(ds[0] if isinstance(ds, (list, tuple)) else ds)
        custom = float(attrs.get("custom_downsample", 1) or 1)
        attrs["patch_size_level0"] = int(round(float(attrs["patch_size"]) * ds0 * custom))
    elif "patch_size" in attrs and int(attrs.get("patch_level", 0) or 0) == 0:
        attrs["patch_size_level0"] = int(attrs["patch_size"])


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------


def validate_bag(bag: FeatureBag, where: str = "feature bag") -> None:
    """Raise :class:`InputError` naming ``where`` if the bag is empty or inconsistent.

    Checks: at least one patch; ``features`` is (N, D) with N equal to the coordinate rows; no NaN/inf
    features (checked in chunks, so a 200k x 1024 bag costs no extra copy); no duplicate coordinates;
    ``patch_labels`` length. A bag without coordinates (``coords`` None) is checked on its features.
    """
    if bag.coords is None and bag.features is None:
        raise InputError(f"{where}: neither coordinates nor features")
    n = bag.num_patches
    if n == 0:
        raise InputError(f"{where}: empty slide (0 patches)")
    if bag.features is not None:
        if bag.features.ndim != 2:
            raise InputError(f"{where}: 'features' must have shape (N, D), got {tuple(bag.features.shape)}")
        if bag.coords is not None and bag.features.shape[0] != n:
            raise InputError(f"{where}: 'features' has {bag.features.shape[0]} rows but 'coords' has {n}")
        bad = first_nonfinite_row(bag.features)
        if bad is not None:
            raise InputError(f"{where}: 'features' contain NaN or inf (first at row {bad})")
    if bag.patch_labels is not None and bag.patch_labels.shape[0] != n:
        raise InputError(f"{where}: 'patch_labels' has {bag.patch_labels.shape[0]} rows but the bag has {n} patches")
    dup = None if bag.coords is None else first_duplicate_coord(bag.coords)
    if dup is not None:
        i, j = dup
        raise InputError(f"{where}: duplicate coordinates {tuple(int(v) for v in bag.coords[i])} at rows {i} and {j}")


def first_nonfinite_row(features: np.ndarray) -> int | None:
    """Index of the first row holding NaN or inf, or None. Works in chunks of rows."""
    if not np.issubdtype(features.dtype, np.floating):
        return None
    for start in range(0, features.shape[0], _NAN_CHECK_ROWS):
        chunk = features[start:start + _NAN_CHECK_ROWS]
        ok = np.isfinite(chunk).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def first_duplicate_coord(coords: np.ndarray) -> tuple[int, int] | None:
    """Rows ``(i, j)``, ``i < j``, of the first repeated coordinate pair, or None. O(N log N)."""
    if coords.shape[0] < 2:
        return None
    order = np.lexsort((coords[:, 1], coords[:, 0]))
    s = coords[order]
    same = np.all(s[1:] == s[:-1], axis=1)
    if not same.any():
        return None
    k = int(np.argmax(same))
    i, j = sorted((int(order[k]), int(order[k + 1])))
    return i, j


def infer_grid_step(coords: np.ndarray, where: str = "coords") -> int:
    """Grid step in the units of ``coords``: the most common gap between row- or column-neighbours.

    Robust to CLAM's per-contour grids (offsets differ between tissue regions but the step is shared).
    """
    coords = np.asarray(coords)
    gaps = []
    for a, b in ((0, 1), (1, 0)):  # gaps along x within a row, along y within a column
        order = np.lexsort((coords[:, a], coords[:, b]))
        s = coords[order]
        same_line = s[1:, b] == s[:-1, b]
        d = (s[1:, a] - s[:-1, a])[same_line]
        gaps.append(d[d > 0])
    d = np.concatenate(gaps)
    if d.size == 0:
        raise InputError(f"{where}: cannot infer the patch grid step (fewer than two patches share a row or "
                         "column); set the 'patch_size_level0' attribute")
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------

REQUIRED_ATTRS = ("patch_size", "patch_level", "patch_size_level0", "mpp", "encoder")


def write_features(
    path: str | os.PathLike,
    coords: np.ndarray,
    features: np.ndarray | None = None,
    *,
    attrs: Mapping[str, Any],
    patch_labels: np.ndarray | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    compression: str | None = None,
    validate: bool = True,
) -> Path:
    """Write one slide's file in our layout, atomically (temp file + rename).

    Args:
        path: target ``<slide_id>.h5``.
        coords: (N, 2) integer level-0 pixels, top-left.
        features: (N, D) float32/float16, or None for a coords-only file.
        attrs: must hold ``patch_size``, ``patch_level``, ``patch_size_level0``, ``mpp``; ``encoder`` is
            required when ``features`` is given. Written on the file root and on ``coords`` (CLAM/TRIDENT
            readers look there).
        patch_labels: optional (N,) patch-level ground truth.
        extra: more per-patch datasets, name -> (N, ...) array (e.g. synthetic ``tissue_type``).
        compression: h5py compression for ``features`` (e.g. ``"lzf"``), default none.
    """
    path = Path(path)
    coords = np.asarray(coords)
    if not np.issubdtype(coords.dtype, np.integer):
        raise InputError(f"{path}: coords must be integer level-0 pixels, got dtype {coords.dtype}")
    coords = coords.astype(np.int64, copy=False)
    needed = [k for k in REQUIRED_ATTRS if k not in attrs and not (k == "encoder" and features is None)]
    if needed:
        raise InputError(f"{path}: missing required attributes {needed} (given: {sorted(attrs)})")
    if features is not None:
        features = np.asarray(features)
        if features.dtype not in (np.float32, np.float16):
            features = features.astype(np.float32)
    bag = FeatureBag(coords=coords, features=features, attrs=dict(attrs), patch_labels=patch_labels, path=path)
    if validate:
        validate_bag(bag, where=str(path))
    for k, v in attrs.items():
        if v is not None and not _storable_attr(v):
            raise InputError(f"{path}: attribute {k!r} has a value of type {type(v).__name__} that HDF5 cannot "
                             "store (use numbers, strings or flat lists of them)")
    for k, v in (extra or {}).items():
        if k in ("coords", "features", "patch_labels") or np.asarray(v).shape[:1] != (len(coords),):
            raise InputError(f"{path}: extra dataset {k!r} must be a new name with {len(coords)} rows")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            cds = f.create_dataset("coords", data=coords)
            if features is not None:
                f.create_dataset("features", data=features, compression=compression,
                                 chunks=(min(len(features), 4096), features.shape[1]) if compression else None)
            if patch_labels is not None:
                f.create_dataset("patch_labels", data=np.asarray(patch_labels).astype(np.int8))
            for k, v in (extra or {}).items():
                f.create_dataset(k, data=np.asarray(v))
            for k, v in attrs.items():
                if v is None:
                    continue
                f.attrs[k] = v
                cds.attrs[k] = v
    return path


def _storable_attr(v: Any) -> bool:
    if isinstance(v, (str, bytes, bool, int, float, np.generic)):
        return True
    if isinstance(v, (list, tuple, np.ndarray)):
        return all(isinstance(x, (str, bool, int, float, np.generic)) for x in np.asarray(v, dtype=object).ravel())
    return False


def is_complete_feature_file(path: str | os.PathLike, require_features: bool = True) -> bool:
    """True when ``path`` is a readable h5 with ``coords`` (and ``features``) of matching length.

    Used by resumable jobs to skip finished slides; files are written atomically, so this is a cheap check.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                return False
            if require_features:
                key = next((k for k in FEATURE_KEYS if k in f), None)
                return key is not None and f[key].shape[0] == f["coords"].shape[0]
            return True
    except _H5_ERRORS:
        return False


def list_feature_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Map slide_id -> feature file for every ``*.h5``/``*.hdf5``/``*.pt`` in ``folder`` (h5 wins over pt)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: feature folder does not exist")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        suf = p.suffix.lower()
        if suf in H5_SUFFIXES or (suf == ".pt" and p.stem not in out):
            out[p.stem] = p
    return out
