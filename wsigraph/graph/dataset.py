"""``GraphDataset``: a cohort's feature files as PyG graphs, one slide at a time, with an on-disk cache.

Each item is ``Data(x (N, D) float32, pos (N, 2) float32 lattice units (coords / step), edge_index (2, E)
int64, y (1,) int64 (-1 unlabeled), slide_id str[, edge_attr (E, 1) float32 patch steps][, patch_labels
(N,) int64])``. The features are read from the feature file at ``get()`` time; only the graph tensors
(``edge_index``, ``pos``, optional ``edge_attr``) are cached, one file per slide::

    <cache_dir>/<slide_id>.<key>.pt    dict of tensors, loadable with torch.load(weights_only=True)

``key`` hashes the feature file's absolute path, size and mtime_ns and the graph parameters that change
the graph (:meth:`GraphConfig.cache_fields`). Changing a parameter or the feature file gives a new key
(a rebuild); nothing else does. Files are written atomically; an unreadable or inconsistent cache file
is rebuilt with a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch_geometric.data import Data, Dataset

from wsigraph.data.features import FeatureBag, read_coords, read_features
from wsigraph.errors import ConfigError, InputError, MissingFileError
from wsigraph.graph.build import spatial_graph
from wsigraph.graph.params import GraphConfig
from wsigraph.utils.atomic import atomic_path

log = logging.getLogger("wsigraph")

#: Bump when the cache layout or the graph definition changes: old cache files are then ignored.
CACHE_VERSION = 1
_MAX_LISTED = 10


def graph_cache_key(feature_path: str | os.PathLike, graph: GraphConfig) -> str:
    """Hex key of a slide's cached graph (see the module docstring). Stats the file; never reads it."""
    path = Path(feature_path).resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: feature file does not exist") from None
    payload = {"version": CACHE_VERSION, "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
               "graph": graph.cache_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _as_config(graph: GraphConfig | dict | None) -> GraphConfig:
    if graph is None:
        return GraphConfig()
    if isinstance(graph, GraphConfig):
        graph.validate()
        return graph
    if isinstance(graph, dict):
        valid = list(GraphConfig.__dataclass_fields__)
        unknown = sorted(set(graph) - set(valid))
        if unknown:
            raise ConfigError(f"graph config: unknown key(s) {unknown}; valid keys: {valid}")
        return GraphConfig(**graph)
    raise ConfigError(f"graph: expected a GraphConfig or a dict, got {type(graph).__name__}")


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


class GraphDataset(Dataset):
    """Slides as PyG graphs, read lazily; graphs cached in ``cache_dir`` (None: built on every access).

    With ``graph.mode == "none"`` the items are bags without a graph: ``x``, ``y``, ``slide_id`` and an empty
    ``edge_index`` (2, 0); coordinates are not required (plain ``.pt`` tensors) and nothing is cached.

    Args:
        feature_paths: one feature file per slide (``.h5``/``.hdf5``/``.pt``, see ``read_features``).
        labels: class index per slide (-1 = unlabeled); None: all unlabeled.
        slide_ids: one id per slide; None: the file stems.
        graph: how to build the graphs (a :class:`GraphConfig` or a dict of its fields).
        cache_dir: folder of the graph cache, created when needed.
        transform: PyG transform applied to each item.
    """

    def __init__(
        self,
        feature_paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | None = None,
        slide_ids: Sequence[str] | None = None,
        graph: GraphConfig | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        transform: Callable[[Data], Data] | None = None,
    ):
        self.feature_paths = [Path(p) for p in feature_paths]
        n = len(self.feature_paths)
        if labels is None:
            labels = [-1] * n
        if len(labels) != n:
            raise InputError(f"labels: {len(labels)} value(s) for {n} feature file(s); give one label per file")
        bad = [(i, v) for i, v in enumerate(labels) if isinstance(v, bool) or not _is_int(v)]
        if bad:
            raise InputError(f"labels: must be class indices (int, -1 = unlabeled); "
                             f"position {bad[0][0]} is {bad[0][1]!r}")
        self.labels = [int(v) for v in labels]
        if slide_ids is None:
            slide_ids = [p.stem for p in self.feature_paths]
        if len(slide_ids) != n:
            raise InputError(f"slide_ids: {len(slide_ids)} value(s) for {n} feature file(s); give one id per file")
        self.slide_ids = [str(s) for s in slide_ids]
        self.graph_config = _as_config(graph)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        super().__init__(root=None, transform=transform)

    @classmethod
    def from_cohort(cls, cohort: Any, graph: GraphConfig | dict | None = None,
                    cache_dir: str | os.PathLike | None = None, **kwargs: Any) -> "GraphDataset":
        """From a :class:`~wsigraph.data.manifest.Cohort` (uses ``table`` columns ``slide_id``,
        ``label_index`` and ``feature_path``; the features must be attached)."""
        import pandas as pd

        table = cohort.table
        missing_cols = [c for c in ("slide_id", "label_index", "feature_path") if c not in table.columns]
        if missing_cols:
            raise InputError(f"cohort table lacks column(s) {missing_cols} (columns: {list(table.columns)}); "
                             "attach the feature files first (read_manifest(..., feature_dir=...))")
        paths = list(table["feature_path"])
        sids = [str(s) for s in table["slide_id"]]
        missing = [s for s, p in zip(sids, paths) if p is None or (not isinstance(p, (str, os.PathLike))
                                                                     and bool(pd.isna(p)))]
        if missing:
            raise InputError(f"cohort: {len(missing)} slide(s) have no feature file: {_listing(missing)}; "
                             "attach the feature folder (feature_dir=) or drop those slides")
        labels = [int(v) for v in table["label_index"]]
        return cls(paths, labels=labels, slide_ids=sids, graph=graph, cache_dir=cache_dir, **kwargs)

    # ------------------------------------------------------------------ PyG Dataset API
    def len(self) -> int:
        return len(self.feature_paths)

    def get(self, idx: int) -> Data:
        path = self.feature_paths[idx]
        y = torch.tensor([self.labels[idx]], dtype=torch.long)
        if not self.graph_config.uses_coords:
            bag = read_features(path, require_coords=False)
            data = Data(x=self._x(bag), edge_index=torch.empty((2, 0), dtype=torch.long), y=y,
                        slide_id=self.slide_ids[idx], num_nodes=bag.num_patches)
        else:
            bag = read_features(path)
            edge_index, pos, edge_attr = self.graph_tensors(idx, bag)
            data = Data(x=self._x(bag), pos=pos, edge_index=edge_index, y=y, slide_id=self.slide_ids[idx])
            if edge_attr is not None:
                data.edge_attr = edge_attr
        if bag.patch_labels is not None:
            data.patch_labels = torch.from_numpy(np.asarray(bag.patch_labels).astype(np.int64))
        return data

    @staticmethod
    def _x(bag: FeatureBag) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(bag.features))
        return x if x.dtype == torch.float32 else x.float()

    # ------------------------------------------------------------------ graphs and cache
    def cache_path(self, idx: int) -> Path | None:
        """Where slide ``idx``'s graph is (or would be) cached, or None without a cache folder (or graph)."""
        if self.cache_dir is None or not self.graph_config.uses_coords:
            return None
        key = graph_cache_key(self.feature_paths[idx], self.graph_config)
        from wsigraph.pipeline.paths import slide_file

        return slide_file(self.cache_dir, self.slide_ids[idx], f".{key}.pt")

    def is_cached(self, idx: int, validate: bool = False) -> bool:
        """True when slide ``idx``'s cache file exists (files are written atomically); with ``validate``,
        only when it also loads and fits the slide (its patch count, the edge attributes asked for)."""
        p = self.cache_path(idx)
        if p is None or not p.exists():
            return False
        if not validate:
            return True
        try:
            n = read_coords(self.feature_paths[idx]).num_patches
        except InputError:
            return False  # the slide itself is broken: build_cache reports why
        return self._load(p, n) is not None

    def build_cache(self, idx: int) -> dict[str, int]:
        """Make sure slide ``idx``'s graph is cached; returns its size. The slide's file is read and checked
        as training will read it (feature rows against coordinate rows, NaN/inf, duplicate coordinates)."""
        if not self.graph_config.uses_coords:
            raise ConfigError("graph mode 'none': there are no graphs to build (the slides are read without "
                              "coordinates)")
        bag = read_features(self.feature_paths[idx], require_features=False)
        edge_index, pos, _ = self.graph_tensors(idx, bag)
        return {"num_nodes": int(pos.shape[0]), "num_edges": int(edge_index.shape[1])}

    def graph_tensors(self, idx: int, bag: FeatureBag) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(edge_index, pos, edge_attr or None) of slide ``idx`` from the cache, else built (and cached)."""
        cpath = self.cache_path(idx)
        n = bag.num_patches
        if cpath is not None and cpath.exists():
            cached = self._load(cpath, n)
            if cached is not None:
                return cached
        tensors = self._build(idx, bag)
        if cpath is not None:
            obj = {"edge_index": tensors[0], "pos": tensors[1], "num_nodes": torch.tensor(n)}
            if tensors[2] is not None:
                obj["edge_attr"] = tensors[2]
            with atomic_path(cpath) as tmp:
                torch.save(obj, tmp)
        return tensors

    def _build(self, idx: int, bag: FeatureBag) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        path = self.feature_paths[idx]
        cfg = self.graph_config
        if bag.num_patches == 0:
            raise InputError(f"{path}: empty slide (0 patches)")
        step = bag.patch_size_level0  # its errors already name the file
        try:
            out = spatial_graph(bag.coords, step=step, **cfg.spatial_graph_kwargs())
        except InputError as e:
            raise type(e)(f"{path}: {e}") from e
        edge_attr = None
        if cfg.edge_attr:
            edge_index, dist = out
            edge_attr = dist.reshape(-1, 1)
        else:
            edge_index = out
        pos = torch.from_numpy(bag.coords.astype(np.float64) / step).to(torch.float32)
        return edge_index, pos, edge_attr

    def _load(self, cpath: Path, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        try:
            obj = torch.load(cpath, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file: rebuild it
            log.warning("%s: unreadable graph cache file (%s: %s); rebuilding it", cpath, type(e).__name__, e)
            return None
        problem = _check_cached(obj, n, self.graph_config.edge_attr)
        if problem:
            log.warning("%s: invalid graph cache file (%s); rebuilding it", cpath, problem)
            return None
        return obj["edge_index"], obj["pos"], obj.get("edge_attr")


def _is_int(v: Any) -> bool:
    try:
        return int(v) == v
    except (TypeError, ValueError):
        return False


def _check_cached(obj: Any, n: int, want_edge_attr: bool) -> str | None:
    """What is wrong with a loaded cache object, or None."""
    if not isinstance(obj, dict):
        return f"expected a dict of tensors, got {type(obj).__name__}"
    ei, pos = obj.get("edge_index"), obj.get("pos")
    if not isinstance(ei, torch.Tensor) or ei.dtype != torch.int64 or ei.dim() != 2 or ei.shape[0] != 2:
        return "edge_index missing or not a (2, E) int64 tensor"
    if not isinstance(pos, torch.Tensor) or tuple(pos.shape) != (n, 2):
        return f"pos missing or not of shape ({n}, 2) (the feature file has {n} patches)"
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        return f"edge_index refers to nodes outside 0..{n - 1}"
    ea = obj.get("edge_attr")
    if want_edge_attr and (not isinstance(ea, torch.Tensor) or tuple(ea.shape) != (ei.shape[1], 1)):
        return "edge_attr missing or not of shape (E, 1)"
    return None
