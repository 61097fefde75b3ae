"""Reading the SRMIL paper's released feature pickles (the import job is :mod:`wsigraph.pipeline.imports`).

The paper's code reads a pickled ``list`` of ``torch_geometric.data.Data``, one per slide, with ``x``
(N, D) patch features, ``pos`` (N, 2) level-0 pixel coordinates on a global 224-px grid, ``graph_y``
one-hot (1, C) slide label, ``slide_index`` (the slide's name or number) and optionally ``y`` (N,) patch
labels. :func:`load_srmil_pickle` reads such a file and :func:`convert_item` checks and converts one item.

Unpickling runs code chosen by whoever wrote the file, so it needs ``trust_pickle=True``
(``--trust-pickle``); only use it on files from a source you trust.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from wsigraph.errors import InputError, MissingDependencyError, MissingFileError
from wsigraph.pipeline.paths import check_slide_id

log = logging.getLogger("wsigraph")

PICKLE_WARNING = (
    "unpickling a file can execute arbitrary code chosen by whoever made it, so wsigraph does not do it "
    "unless asked: pass trust_pickle=True (CLI: --trust-pickle), and only for files from a source you trust "
    "(e.g. the SRMIL authors' release, checked against its published checksum)")


def item_field(item: Any, key: str) -> Any:
    """``item.key`` for PyG ``Data`` of any version (old pickles keep fields in ``__dict__``)."""
    try:
        value = getattr(item, key)
    except (AttributeError, RuntimeError, KeyError):
        value = None
    if value is None and hasattr(item, "__dict__"):
        d = item.__dict__
        value = d.get(key)
        if value is None and isinstance(d.get("_store"), dict):
            value = d["_store"].get(key)
    if value is None and isinstance(item, dict):
        value = item.get(key)
    return value


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def slide_name(value: Any, default: str) -> str:
    """``slide_index`` -> slide id: strings kept (basename, no slide extension), numbers formatted."""
    from wsigraph.data.manifest import _strip_slide_suffix

    if value is None:
        return default
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        arr = _to_numpy(value).reshape(-1)
        if arr.size != 1:
            raise InputError(f"slide_index has {arr.size} values, expected one")
        value = arr[0].item()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    name = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    name = _strip_slide_suffix(name)
    if not name or name.startswith("."):
        raise InputError(f"slide_index {value!r} does not give a usable file name")
    return check_slide_id(name, f"slide_index {value!r}")


def load_srmil_pickle(pkl_path: str | os.PathLike, trust_pickle: bool = False) -> list[Any]:
    """Unpickle an SRMIL feature file (a list of PyG ``Data``). Refuses unless ``trust_pickle``."""
    pkl_path = Path(pkl_path)
    if not trust_pickle:
        raise InputError(f"{pkl_path}: refusing to unpickle: {PICKLE_WARNING}")
    if not pkl_path.exists():
        raise MissingFileError(f"{pkl_path}: SRMIL pickle does not exist")
    try:
        import torch  # noqa: F401 - tensors inside the pickle
        import torch_geometric.data  # noqa: F401 - the pickled classes
    except ImportError as e:
        raise MissingDependencyError(f"reading {pkl_path} needs torch_geometric importable ({e})") from e
    if zipfile.is_zipfile(pkl_path):
        raise InputError(f"{pkl_path}: this is a torch.save archive, not a plain pickle of a list of Data; "
                         "SRMIL's release files are plain pickles")
    try:
        with open(pkl_path, "rb") as fh:
            obj = pickle.load(fh)  # noqa: S301 - the user vouched for the file with trust_pickle
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ModuleNotFoundError, TypeError,
            ValueError) as e:
        raise InputError(f"{pkl_path}: cannot be unpickled as an SRMIL feature list "
                         f"({type(e).__name__}: {e}); the file may be truncated or of another kind") from e
    if isinstance(obj, tuple):
        obj = list(obj)
    if not isinstance(obj, list):
        raise InputError(f"{pkl_path}: expected a list of torch_geometric Data, got {type(obj).__name__}")
    if not obj:
        raise InputError(f"{pkl_path}: the pickle holds an empty list (no slides)")
    return obj


def convert_item(item: Any, where: str, num_classes: int | None, patch_size_level0: int) -> dict[str, Any]:
    """One ``Data`` -> ``{coords, features, label_index, patch_labels}``; errors are prefixed with ``where``."""
    x, pos = item_field(item, "x"), item_field(item, "pos")
    if x is None or pos is None:
        present = sorted(k for k in ("x", "pos", "graph_y", "y", "slide_index") if item_field(item, k) is not None)
        raise InputError(f"{where}: missing {'x' if x is None else 'pos'} (fields present: {present})")
    features = _to_numpy(x)
    if features.ndim != 2:
        raise InputError(f"{where}: x must have shape (N, D), got {tuple(features.shape)}")
    features = features.astype(np.float32, copy=False)
    pos_np = _to_numpy(pos)
    if pos_np.ndim != 2 or pos_np.shape[1] != 2:
        raise InputError(f"{where}: pos must have shape (N, 2), got {tuple(pos_np.shape)}")
    if np.issubdtype(pos_np.dtype, np.floating):
        if not np.isfinite(pos_np).all():
            raise InputError(f"{where}: pos contains NaN or inf")
        rounded = np.rint(pos_np)
        if np.abs(pos_np - rounded).max(initial=0.0) > 1e-3:
            raise InputError(f"{where}: pos has fractional values; expected level-0 pixel coordinates")
        pos_np = rounded
    coords = pos_np.astype(np.int64)
    if len(coords) > 1 and patch_size_level0 > 1:
        from wsigraph.data.features import infer_grid_step

        try:
            step = infer_grid_step(coords, where=where)
        except InputError:
            step = None
        if step == 1:  # positions in lattice units, not pixels
            log.warning("%s: pos looks like lattice units (grid step 1); multiplying by %d", where, patch_size_level0)
            coords = coords * int(patch_size_level0)

    label_index = -1
    gy = item_field(item, "graph_y")
    if gy is not None:
        g = _to_numpy(gy).reshape(-1)
        if g.size == 1:  # a class index rather than one-hot
            label_index = int(g[0])
            if label_index < 0 or (num_classes is not None and label_index >= num_classes):
                raise InputError(f"{where}: graph_y {label_index} is not a class index in 0..{(num_classes or 1) - 1}")
        else:
            if not np.isfinite(g.astype(np.float64)).all() or g.max() <= 0:
                raise InputError(f"{where}: graph_y {g.tolist()} is not a one-hot label")
            if num_classes is not None and g.size != num_classes:
                raise InputError(f"{where}: graph_y has {g.size} classes but the class list has {num_classes}")
            label_index = int(np.argmax(g))

    patch_labels = None
    y = item_field(item, "y")
    if y is not None:  # patch labels (N,) or one-hot (N, K); a graph-level y (1,) is ignored
        yn = _to_numpy(y)
        if yn.ndim == 2 and yn.shape[1] == 1:
            yn = yn[:, 0]
        if yn.shape[0] == coords.shape[0] and coords.shape[0] > 1:
            patch_labels = (np.argmax(yn, axis=1) if yn.ndim == 2 else yn).astype(np.int64)
    return {"coords": coords, "features": features, "label_index": label_index, "patch_labels": patch_labels}


def num_classes_of_items(jobs: list[tuple[str, tuple[Any, ...]]]) -> int:
    """Width of the one-hot ``graph_y`` (so class names cover classes absent from the data); ``jobs``:
    ``(slide_id, (where, item, ...))`` pairs."""
    for _, (_, item, *_) in jobs:
        gy = item_field(item, "graph_y")
        if gy is not None:
            g = _to_numpy(gy).reshape(-1)
            if g.size > 1:
                return int(g.size)
    return 0


__all__ = ["PICKLE_WARNING", "load_srmil_pickle", "convert_item", "item_field", "slide_name", "num_classes_of_items"]
