"""Scored patches as GeoJSON that QuPath imports (File > Import objects, or drag and drop).

Each patch becomes a ``Feature`` with a square ``Polygon`` in level-0 pixels (QuPath's coordinates: origin
at the top-left of the full-resolution image) and QuPath's properties: ``objectType`` (``"detection"`` by
default, so QuPath's *Measure > Show measurement maps* colours patches by score; ``"tile"`` and
``"annotation"`` also work), ``measurements`` as a ``{name: number}`` object (the form QuPath writes since
v0.4 and reads back), and an optional ``classification`` ``{"name", "color"}``.

Tissue outlines (:func:`write_tissue_geojson`, written by ``segment``/``tile``/``preprocess`` beside each mask)
are ``annotation`` polygons with holes, classified ``Tissue``, so they can be edited in QuPath.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_write_text

OBJECT_TYPES = ("detection", "tile", "annotation")
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def write_geojson(
    path: str | os.PathLike,
    coords: np.ndarray,
    scores: np.ndarray | None,
    patch_size_level0: float,
    *,
    properties: Mapping[str, np.ndarray] | None = None,
    score_name: str = "score",
    object_type: str = "detection",
    classification: str | Sequence[str] | np.ndarray | None = None,
    class_colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write a FeatureCollection of patch squares, atomically.

    Args:
        path: output ``.geojson``.
        coords: (N, 2) int, level-0 pixels, top-left.
        scores: (N,) numbers stored as measurement ``score_name`` (None: no score).
        patch_size_level0: square side in level-0 pixels.
        properties: more per-patch numeric measurements, name -> (N,) array.
        object_type: QuPath object type (``"detection"``, ``"tile"`` or ``"annotation"``).
        classification: one class name for all patches, or (N,) names (None/"" = unclassified).
        class_colors: RGB per class name (default: a fixed palette in order of appearance).

    NaN/inf measurements are left out of that patch's ``measurements`` (JSON has no NaN).
    """
    path = Path(path)
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"{path}: coords must have shape (N, 2), got {coords.shape}")
    n = coords.shape[0]
    if object_type not in OBJECT_TYPES:
        raise InputError(f"{path}: object_type must be one of {OBJECT_TYPES}, got {object_type!r}")
    step = float(patch_size_level0)
    if not math.isfinite(step) or step <= 0:
        raise InputError(f"{path}: patch_size_level0 must be positive, got {patch_size_level0}")
    columns: dict[str, np.ndarray] = {}
    if scores is not None:
        columns[score_name] = np.asarray(scores, dtype=np.float64).reshape(-1)
    for name, values in (properties or {}).items():
        columns[str(name)] = np.asarray(values, dtype=np.float64).reshape(-1)
    for name, values in columns.items():
        if values.shape[0] != n:
            raise InputError(f"{path}: measurement {name!r} has {values.shape[0]} values for {n} patches")

    x0 = coords[:, 0].astype(np.float64)
    y0 = coords[:, 1].astype(np.float64)
    x1, y1 = x0 + step, y0 + step
    xs0, ys0, xs1, ys1 = (_num_strings(v) for v in (x0, y0, x1, y1))
    geometry = [f'{{"type":"Polygon","coordinates":[[[{a},{b}],[{c},{b}],[{c},{d}],[{a},{d}],[{a},{b}]]]}}'
                for a, b, c, d in zip(xs0, ys0, xs1, ys1)]

    # measurements: per column "name":value strings, NaN entries empty, then joined per patch
    parts = []
    for name, values in columns.items():
        key = json.dumps(name)
        ok = np.isfinite(values)
        strs = _num_strings(np.where(ok, values, 0.0))
        parts.append([f"{key}:{s}" if good else "" for s, good in zip(strs, ok.tolist())])
    if parts:
        measurements = [",".join(p for p in row if p) for row in zip(*parts)]
    else:
        measurements = [""] * n

    class_json = _classification_strings(classification, n, class_colors, path)
    obj = json.dumps(object_type)
    features = [f'{{"type":"Feature","geometry":{g},"properties":{{"objectType":{obj}{c},'
                f'"measurements":{{{m}}}}}}}'
                for g, c, m in zip(geometry, class_json, measurements)]
    text = '{"type":"FeatureCollection","features":[\n' + ",\n".join(features) + "\n]}\n"
    return atomic_write_text(path, text)


def read_geojson_patches(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read back a file written by :func:`write_geojson`: (N, 2) top-left coords and measurement columns."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot be read as GeoJSON ({e})") from e
    feats = data.get("features") if isinstance(data, dict) else None
    if not isinstance(feats, list):
        raise InputError(f"{path}: not a GeoJSON FeatureCollection")
    coords = np.array([f["geometry"]["coordinates"][0][0] for f in feats], dtype=np.float64).reshape(-1, 2)
    names = sorted({k for f in feats for k in f.get("properties", {}).get("measurements", {})})
    cols = {k: np.array([f["properties"]["measurements"].get(k, np.nan) for f in feats], np.float64) for k in names}
    return coords, cols


def _num_strings(values: np.ndarray) -> list[str]:
    """Numbers as JSON text: integers without a decimal point, others with up to 6 significant digits."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and np.all(values == np.round(values)) and np.abs(values).max() < 2 ** 53:
        return [str(v) for v in values.astype(np.int64).tolist()]
    return [f"{v:.6g}" for v in values.tolist()]


def _classification_strings(classification: str | Sequence[str] | np.ndarray | None, n: int,
                            class_colors: Mapping[str, tuple[int, int, int]] | None, path: Path) -> list[str]:
    if classification is None:
        return [""] * n
    if isinstance(classification, str):
        names = np.full(n, classification, dtype=object)
    else:
        names = np.asarray(classification, dtype=object).reshape(-1)
        if names.shape[0] != n:
            raise InputError(f"{path}: {names.shape[0]} class names for {n} patches")
    uniq, inverse = np.unique(names.astype(str), return_inverse=True)
    colors = dict(class_colors or {})
    order = [u for u in dict.fromkeys(names.astype(str).tolist())]  # order of appearance
    for i, u in enumerate(order):
        colors.setdefault(u, _PALETTE[i % len(_PALETTE)])
    snippets = []
    for u in uniq.tolist():
        if u in ("", "None", "nan"):
            snippets.append("")
        else:
            r, g, b = (int(c) for c in colors[u])
            snippets.append(f',"classification":{{"name":{json.dumps(u)},"color":[{r},{g},{b}]}}')
    table = np.asarray(snippets, dtype=object)
    return table[inverse].tolist()


def tissue_contours(mask: np.ndarray, scale: tuple[float, float]) -> list[list[list[list[float]]]]:
    """Polygons of a boolean mask in level-0 pixels: one ``[outer ring, hole rings...]`` per tissue piece.

    Traced by OpenCV (``findContours``, two-level hierarchy: outer boundaries and their holes); ring points
    are the centres of the boundary mask pixels, scaled by ``scale`` = (level-0 px per mask px in x, in y);
    rings are closed (first point repeated) and pieces of fewer than 3 boundary points are left out.
    """
    import cv2

    m = np.ascontiguousarray(np.asarray(mask, dtype=bool), dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = float(scale[0]), float(scale[1])

    def ring(c: np.ndarray) -> list[list[float]] | None:
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            return None
        pts = (pts + 0.5) * (sx, sy)
        return [[round(float(x), 2), round(float(y), 2)] for x, y in np.vstack([pts, pts[:1]])]

    polygons: list[list[list[list[float]]]] = []
    h = hierarchy.reshape(-1, 4)  # next, previous, first child, parent
    for i in np.nonzero(h[:, 3] < 0)[0]:  # outer boundaries
        outer = ring(contours[i])
        if outer is None:
            continue
        holes, child = [], int(h[i, 2])
        while child >= 0:
            r = ring(contours[child])
            if r is not None:
                holes.append(r)
            child = int(h[child, 0])
        polygons.append([outer, *holes])
    return polygons


def write_tissue_geojson(path: str | os.PathLike, mask: np.ndarray, scale: tuple[float, float], *,
                         mpp: float | None = None, name: str = "Tissue",
                         color: tuple[int, int, int] = (0, 200, 0)) -> Path:
    """Tissue outlines as a QuPath-editable FeatureCollection of ``annotation`` polygons (level-0 pixels),
    one per tissue piece with its holes, classified ``name``; ``area_um2`` is measured where ``mpp`` (µm per
    level-0 pixel) is known. Written atomically. See :func:`tissue_contours`."""
    features = []
    for poly in tissue_contours(mask, scale):
        props: dict = {"objectType": "annotation", "classification": {"name": name, "color": list(color)},
                       "isLocked": False}
        if mpp is not None:
            area = _ring_area(poly[0]) - sum(_ring_area(r) for r in poly[1:])
            props["measurements"] = {"area_um2": round(area * float(mpp) ** 2, 1)}
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": poly},
                         "properties": props})
    return atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area of a closed ring, in squared coordinate units."""
    a = np.asarray(ring, dtype=np.float64)
    return float(abs(np.dot(a[:-1, 0], a[1:, 1]) - np.dot(a[1:, 0], a[:-1, 1])) / 2)
