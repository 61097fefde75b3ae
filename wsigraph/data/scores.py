"""Per-patch score files: the one writer (:func:`write_scores`) and reader (:func:`load_scores`).

Accepted (one slide per file; row ``i`` scores patch ``i`` of the slide's feature/coords file unless the
file carries its own coordinates):

* ``.h5`` (preferred; what :func:`write_scores` writes, e.g. ``wsigraph predict``'s ``scores/<slide_id>.h5``):
  dataset ``scores`` (or ``patch_scores``/``attention``/``A``) of shape (N,) or (N, C), optional ``coords``
  (N, 2) int64 level-0 px; optional attributes ``patch_size_level0``, ``slide_id``, ``score_name`` (what the
  scores are: the heatmap's colour-bar label and the GeoJSON measurement), ``class_names`` (the C columns of
  (N, C) scores) and any others (``predict`` adds the slide's prediction: ``model``, ``classes``, ``probs``,
  ``pred``).
* ``.npy``: (N,) or (N, C) array.
* ``.csv``: a score column (``score`` by default) and optionally ``x``, ``y`` coordinates.
* ``.pt``: a tensor (N,) or (N, C), or a dict with ``scores`` (and ``coords``), loaded with
  ``weights_only=True``.

For (N, C) scores pick a class with ``column`` (an index, or a class name when the file lists them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from wsigraph.errors import InputError, MissingFileError

SCORE_KEYS = ("scores", "patch_scores", "attention", "A")


@dataclass
class PatchScores:
    """Scores of one slide's patches.

    Attributes:
        scores: (N,) float64.
        coords: (N, 2) int64 level-0 top-left, or None (then they come from the feature file).
        attrs: file attributes (``patch_size_level0``, ``score_name``, ...).
        name: what the scores are (for the colour bar and GeoJSON measurement).
        path: the file read.
    """

    scores: np.ndarray
    coords: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = "score"
    path: Path | None = None


def load_scores(path: str | os.PathLike, *, key: str | None = None, column: str | int | None = None) -> PatchScores:
    """Read a score file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: score file does not exist")
    suffix = path.suffix.lower()
    coords = None
    attrs: dict[str, Any] = {}
    class_names: list[str] | None = None
    if suffix in (".h5", ".hdf5"):
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"{path}: cannot be read as HDF5 ({e})") from e
        with f:
            k = key or next((c for c in SCORE_KEYS if c in f), None)
            if k is None or k not in f:
                raise InputError(f"{path}: no score dataset (looked for {[key] if key else list(SCORE_KEYS)}; "
                                 f"datasets present: {list(f.keys())}); name it with --key")
            values = np.asarray(f[k][()])
            if "coords" in f:
                coords = np.asarray(f["coords"][()])
            for a, v in f.attrs.items():
                attrs[str(a)] = v.decode() if isinstance(v, bytes) else (v.tolist() if isinstance(v, np.ndarray) else v)
        names = attrs.get("class_names")
        class_names = [str(n) for n in names] if isinstance(names, (list, tuple)) else None
        name = str(attrs.get("score_name", k))
    elif suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: cannot be read as a .npy array ({e})") from e
        name = "score"
    elif suffix == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(path)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: cannot be read as CSV ({e})") from e
        if {"x", "y"} <= set(df.columns):
            coords = df[["x", "y"]].to_numpy()
        col = column if isinstance(column, str) else None
        if col is None:
            numeric = [c for c in df.columns if c not in ("x", "y", "slide_id", "patch") and
                       np.issubdtype(df[c].dtype, np.number)]
            col = "score" if "score" in df.columns else (numeric[0] if len(numeric) == 1 else None)
        if col is None or col not in df.columns:
            raise InputError(f"{path}: cannot tell which column holds the scores (columns: {list(df.columns)}); "
                             "name it with --column")
        values, name, column = df[col].to_numpy(dtype=np.float64), str(col), None
    elif suffix == ".pt":
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: cannot be loaded with weights_only=True ({e})") from e
        if isinstance(obj, dict):
            k = key or next((c for c in SCORE_KEYS if c in obj), None)
            if k is None or k not in obj:
                raise InputError(f"{path}: dict without a score entry (keys: {sorted(obj)}); name it with --key")
            values = obj[k]
            coords = obj.get("coords")
            coords = None if coords is None else np.asarray(coords)
            name = str(k)
        else:
            values, name = obj, "score"
        values = values.detach().float().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    else:
        raise InputError(f"{path}: unknown score file type {suffix!r} (expected .h5, .npy, .csv or .pt)")

    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2:
        if column is None:
            raise InputError(f"{path}: scores have {values.shape[1]} columns (one per class); choose one with "
                             f"--column (an index{', or one of ' + str(class_names) if class_names else ''})")
        idx = _column_index(column, values.shape[1], class_names, path)
        values = values[:, idx]
        name = f"{name}[{class_names[idx] if class_names else idx}]"
    elif column is not None and not (suffix == ".csv"):
        raise InputError(f"{path}: --column given but the scores are one-dimensional {values.shape}")
    if values.ndim != 1:
        raise InputError(f"{path}: expected scores of shape (N,) or (N, C), got {values.shape}")
    if coords is not None:
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != values.shape[0]:
            raise InputError(f"{path}: coords shape {coords.shape} does not match {values.shape[0]} scores")
        if np.issubdtype(coords.dtype, np.floating):
            coords = np.rint(coords)
        coords = coords.astype(np.int64)
    return PatchScores(scores=values, coords=coords, attrs=attrs, name=name, path=path)


def _column_index(column: str | int, n: int, class_names: list[str] | None, path: Path) -> int:
    if isinstance(column, str) and not column.lstrip("-").isdigit():
        if class_names and column in class_names:
            return class_names.index(column)
        raise InputError(f"{path}: column {column!r} is not a class of this file (classes: {class_names})")
    idx = int(column)
    if not -n <= idx < n:
        raise InputError(f"{path}: column {idx} out of range for {n} score columns")
    return idx % n


def write_scores(path: str | os.PathLike, scores: np.ndarray, coords: np.ndarray | None = None, *,
                 patch_size_level0: float | None = None, score_name: str = "score",
                 class_names: Sequence[str] | None = None, slide_id: str | None = None,
                 attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a ``.h5`` scores file (see the module docstring), atomically.

    Args:
        scores: (N,) or (N, C) per-patch scores, stored as float32.
        coords: (N, 2) level-0 px, top-left, of the same patches (None: the feature file's, row by row).
        attrs: more attributes, stored as they are (numbers, strings, flat lists of them).
    """
    import h5py

    from wsigraph.utils.atomic import atomic_path

    path = Path(path)
    scores = np.asarray(scores, dtype=np.float32)
    if coords is not None:
        coords = np.asarray(coords, dtype=np.int64)
        if scores.shape[:1] != coords.shape[:1]:
            raise InputError(f"{path}: {scores.shape[0]} scores for {coords.shape[0]} patches (coords rows)")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("scores", data=scores)
            if coords is not None:
                f.create_dataset("coords", data=coords)
            if patch_size_level0 is not None:
                f.attrs["patch_size_level0"] = float(patch_size_level0)
            if slide_id is not None:
                f.attrs["slide_id"] = str(slide_id)
            f.attrs["score_name"] = score_name
            if class_names:
                f.attrs["class_names"] = [str(c) for c in class_names]
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
    return path
