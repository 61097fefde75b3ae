"""Lesion annotations (ASAP XML, QuPath GeoJSON) turned into patch labels and lesion ids.

CAMELYON16 ships its lesion outlines as ASAP XML in level-0 pixels::

    <ASAP_Annotations><Annotations>
      <Annotation Name="_0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
        <Coordinates><Coordinate Order="0" X="55486.6016" Y="59360.1992"/> ...</Coordinates>
      </Annotation> ...

Groups ``Tumor``, ``_0`` and ``_1`` are lesions; ``_2`` are normal regions cut out of them (exclusions).
QuPath exports GeoJSON (a ``FeatureCollection``, or a bare list of features) of ``Polygon`` /
``MultiPolygon`` geometries with ``properties.classification.name``; inner rings are holes.

A patch's label is whether enough of its area is lesion (inside a lesion polygon, outside its holes and
outside every exclusion region). The area is sampled on an ``s x s`` sub-grid of points per patch (or at
the centre only); points are tested with an even-odd scanline rule, vectorised over all points and
polygon edges (a Python loop runs over polygons only). Boundaries are half-open like pixels: a polygon
covering x in [0, 200) contains a point at x = 0 but not one at x = 200.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from wsigraph.errors import InputError, MissingFileError

log = logging.getLogger("wsigraph")

#: ASAP groups / QuPath classes (case-insensitive, ``fnmatch`` patterns) that mark exclusion regions.
EXCLUSION_GROUPS = ("_2", "exclusion", "exclude", "ignore*")
#: ASAP annotation types read as areas (a ``Spline`` is read as the polygon of its control points);
#: points (``Dot``, ``PointSet``) are skipped.
ASAP_AREA_TYPES = ("polygon", "spline", "rectangle")
XML_SUFFIXES = (".xml",)
GEOJSON_SUFFIXES = (".geojson", ".json")


@dataclass(eq=False)
class AnnotationPolygon:
    """One annotated region.

    Attributes:
        exterior: (M, 2) float64, level-0 pixels (x, y), M >= 3, not repeated at the end.
        holes: inner rings, each (K, 2) float64, K >= 3.
        name: the annotation's name (ASAP ``Name``, GeoJSON ``properties.name`` or ``feature <i>``).
        group: ASAP ``PartOfGroup`` or QuPath class name ("" when unclassified).
        exclude: True for an exclusion region (see :data:`EXCLUSION_GROUPS`).
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = field(default_factory=tuple)
    name: str = ""
    group: str = ""
    exclude: bool = False

    @property
    def rings(self) -> list[np.ndarray]:
        return [self.exterior, *self.holes]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in level-0 pixels."""
        (x0, y0), (x1, y1) = self.exterior.min(axis=0), self.exterior.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        """Area in level-0 px^2 (exterior minus holes; shoelace formula)."""
        return abs(_ring_area(self.exterior)) - sum(abs(_ring_area(h)) for h in self.holes)


def _ring_area(r: np.ndarray) -> float:
    x, y = r[:, 0], r[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def is_exclusion_group(group: str) -> bool:
    """True when an ASAP group / QuPath class name marks an exclusion region."""
    g = (group or "").strip().lower()
    return any(fnmatch.fnmatchcase(g, pat) for pat in EXCLUSION_GROUPS)


def _clean_ring(xy: np.ndarray, where: str) -> np.ndarray:
    """Drop a closing vertex and consecutive duplicates; require 3 distinct vertices and finite values."""
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"{where}: expected a list of (x, y) points, got an array of shape {xy.shape}")
    if not np.all(np.isfinite(xy)):
        raise InputError(f"{where}: coordinates contain NaN or inf")
    if len(xy) > 1:
        keep = np.ones(len(xy), dtype=bool)
        keep[1:] = np.any(xy[1:] != xy[:-1], axis=1)
        xy = xy[keep]
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    if len(np.unique(xy, axis=0)) < 3:
        raise InputError(f"{where}: a polygon needs at least 3 distinct points, got {len(np.unique(xy, axis=0))}")
    return np.ascontiguousarray(xy, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# ASAP XML (CAMELYON16/17)
# ----------------------------------------------------------------------------------------------------


def _check_no_dtd(data: bytes, path: Path) -> None:
    """Refuse DTDs (entity expansion, external entities) before the parser sees the file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    else:
        text = data.decode("utf-8", "replace")
    low = text.lower()
    if "<!doctype" in low or "<!entity" in low:
        raise InputError(f"{path}: XML with a DTD (<!DOCTYPE>/<!ENTITY>) is refused; "
                         "ASAP annotation files have none")


def _parse_number(s: str | None, what: str) -> float:
    if s is None:
        raise InputError(f"{what} is missing")
    t = s.strip()
    if "," in t and "." not in t:  # decimal comma written by some locales
        t = t.replace(",", ".")
    try:
        v = float(t)
    except ValueError:
        raise InputError(f"{what}={s!r} is not a number") from None
    if not np.isfinite(v):
        raise InputError(f"{what}={s!r} is not finite")
    return v


def _numbers(values: list[str | None], what: str) -> np.ndarray:
    """Parse attribute strings to float64 in one go; slow path (per value, naming the culprit) on failure."""
    try:
        text = [v.replace(",", ".") if "," in v and "." not in v else v for v in values]  # type: ignore[union-attr]
        arr = np.asarray(text, dtype=np.float64)
        if np.all(np.isfinite(arr)):
            return arr
    except (AttributeError, TypeError, ValueError):
        pass
    return np.array([_parse_number(v, what.format(j=j)) for j, v in enumerate(values)], dtype=np.float64)


def _vertex_arrays(points: list[ET.Element], where: str) -> tuple[np.ndarray, np.ndarray]:
    xs = _numbers([p.get("X") for p in points], f"{where}, coordinate {{j}}: X")
    ys = _numbers([p.get("Y") for p in points], f"{where}, coordinate {{j}}: Y")
    orders = [p.get("Order") for p in points]
    order = (_numbers(orders, f"{where}, coordinate {{j}}: Order") if all(o is not None for o in orders)
             else np.arange(len(points), dtype=np.float64))
    return np.stack([xs, ys], axis=1), order


def read_asap_xml(path: str | os.PathLike, groups: Sequence[str] | None = None) -> list[AnnotationPolygon]:
    """Read the area annotations of an ASAP XML file (CAMELYON16/17 lesion outlines).

    Args:
        path: the ``.xml`` file.
        groups: lesion groups to keep (``PartOfGroup`` values, case-insensitive); None keeps every group. Exclusion groups
            (``_2``, ``Exclusion``, ...) are always kept, flagged ``exclude=True``.

    Returns:
        polygons in file order; coordinates are level-0 pixels, sorted by their ``Order`` attribute.
        Decimal commas (``X="10,5"``) are accepted.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: annotation file does not exist")
    data = path.read_bytes()
    _check_no_dtd(data, path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise InputError(f"{path}: malformed XML ({e})") from None
    if root.tag != "ASAP_Annotations":
        raise InputError(f"{path}: root element is <{root.tag}>, expected <ASAP_Annotations> (an ASAP XML file)")
    block = root.find("Annotations")
    if block is None:
        raise InputError(f"{path}: no <Annotations> element under <ASAP_Annotations>")
    keep = None if groups is None else {g.strip().lower() for g in groups}
    out: list[AnnotationPolygon] = []
    skipped: dict[str, int] = {}
    for i, ann in enumerate(block.findall("Annotation")):
        name = ann.get("Name", f"annotation {i}")
        where = f"{path}: annotation {i} (Name={name!r})"
        kind = (ann.get("Type") or "Polygon").strip()
        if kind.lower() not in ASAP_AREA_TYPES:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        group = ann.get("PartOfGroup", "") or ""
        exclude = is_exclusion_group(group)
        if keep is not None and not exclude and group.strip().lower() not in keep:
            continue
        coords_el = ann.find("Coordinates")
        points = [] if coords_el is None else coords_el.findall("Coordinate")
        if len(points) < 3:
            raise InputError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
        xy, order = _vertex_arrays(points, where)
        xy = xy[np.argsort(order, kind="stable")]
        out.append(AnnotationPolygon(_clean_ring(xy, where), (), name, group, exclude))
    if not out:
        extra = f" (skipped non-area annotations: {skipped})" if skipped else ""
        wanted = "" if groups is None else f" in groups {list(groups)}"
        raise InputError(f"{path}: no polygon annotations{wanted}{extra}")
    if skipped:
        log.debug("%s: skipped non-area annotations %s", path, skipped)
    return out


# ----------------------------------------------------------------------------------------------------
# QuPath GeoJSON
# ----------------------------------------------------------------------------------------------------


def _feature_class(props: dict[str, Any]) -> str:
    c = props.get("classification")
    if isinstance(c, dict):
        return str(c.get("name") or "")
    if isinstance(c, str):
        return c
    return ""


def _ring_array(ring: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: coordinates are not a list of [x, y] numbers") from None
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError(f"{where}: coordinates are not a list of [x, y] points (array shape {arr.shape})")
    return _clean_ring(arr[:, :2], where)


def _polygon_from_rings(rings: Any, where: str, name: str, group: str) -> AnnotationPolygon:
    if not isinstance(rings, list) or not rings:
        raise InputError(f"{where}: a Polygon's coordinates must be a non-empty list of rings")
    arrs = [_ring_array(r, f"{where}, ring {k}" if k else f"{where}, outer ring") for k, r in enumerate(rings)]
    return AnnotationPolygon(arrs[0], tuple(arrs[1:]), name, group, is_exclusion_group(group))


def _geometry_polygons(geom: Any, where: str, name: str, group: str) -> list[AnnotationPolygon]:
    if geom is None:
        return []
    if not isinstance(geom, dict) or "type" not in geom:
        raise InputError(f"{where}: 'geometry' must be an object with a 'type'")
    kind = geom["type"]
    if kind == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list):
            raise InputError(f"{where}: GeometryCollection without a 'geometries' list")
        return [p for k, g in enumerate(parts) for p in _geometry_polygons(g, f"{where}, geometry {k}", name, group)]
    if kind not in ("Polygon", "MultiPolygon"):
        return []  # points and lines carry no area
    if "coordinates" not in geom:
        raise InputError(f"{where}: {kind} geometry without 'coordinates'")
    coords = geom["coordinates"]
    if kind == "Polygon":
        return [_polygon_from_rings(coords, where, name, group)]
    if not isinstance(coords, list):
        raise InputError(f"{where}: a MultiPolygon's coordinates must be a list of polygons")
    return [_polygon_from_rings(rings, f"{where}, polygon {k}", f"{name} [{k}]", group)
            for k, rings in enumerate(coords)]


def read_geojson_annotations(path: str | os.PathLike, classes: Sequence[str] | None = None) -> list[AnnotationPolygon]:
    """Read the area annotations of a GeoJSON file (QuPath export; level-0 pixel coordinates).

    Args:
        path: ``.geojson``/``.json``: a ``FeatureCollection``, a list of features, one feature or a geometry.
        classes: lesion class names to keep (``properties.classification.name``, case-insensitive); None keeps every
            feature. Exclusion classes (``Exclusion``, ``Ignore*``, ...) are always kept, flagged
            ``exclude=True``.

    Returns:
        one :class:`AnnotationPolygon` per polygon (a MultiPolygon gives several), inner rings as holes.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: annotation file does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise InputError(f"{path}: FeatureCollection without a 'features' list")
    elif isinstance(obj, list):
        features = obj
    elif isinstance(obj, dict) and obj.get("type") == "Feature":
        features = [obj]
    elif isinstance(obj, dict) and obj.get("type") in ("Polygon", "MultiPolygon", "GeometryCollection"):
        features = [{"type": "Feature", "geometry": obj, "properties": {}}]
    else:
        kind = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: expected a GeoJSON FeatureCollection, feature list, Feature or geometry, got {kind!r}")
    keep = None if classes is None else {c.strip().lower() for c in classes}
    out: list[AnnotationPolygon] = []
    for i, feat in enumerate(features):
        where = f"{path}: feature {i}"
        if not isinstance(feat, dict):
            raise InputError(f"{where}: expected a GeoJSON Feature object, got {type(feat).__name__}")
        if "geometry" not in feat:
            raise InputError(f"{where}: no 'geometry' (keys: {sorted(feat)})")
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise InputError(f"{where}: 'properties' must be an object")
        group = _feature_class(props)
        if keep is not None and group.strip().lower() not in keep and not is_exclusion_group(group):
            continue
        name = str(props.get("name") or f"feature {i}")
        out.extend(_geometry_polygons(feat["geometry"], where, name, group))
    if not out:
        wanted = "" if classes is None else f" of classes {list(classes)}"
        raise InputError(f"{path}: no Polygon/MultiPolygon features{wanted} ({len(features)} features read)")
    return out


def read_annotations(path: str | os.PathLike, classes: Sequence[str] | None = None) -> list[AnnotationPolygon]:
    """Read ASAP XML (``.xml``) or GeoJSON (``.geojson``/``.json``) annotations; ``classes`` filters lesion groups."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in XML_SUFFIXES:
        return read_asap_xml(path, groups=classes)
    if suffix in GEOJSON_SUFFIXES:
        return read_geojson_annotations(path, classes=classes)
    raise InputError(f"{path}: unknown annotation file type {suffix!r} "
                     f"(expected {list(XML_SUFFIXES + GEOJSON_SUFFIXES)})")


# ----------------------------------------------------------------------------------------------------
# patch labels
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Samples:
    """Sample points of all patches, sorted by scanline.

    ys: (R,) sorted y of every scanline; row/x/patch: (M,) scanline index, x and owning patch of each point.
    """

    ys: np.ndarray
    row: np.ndarray
    x: np.ndarray
    patch: np.ndarray
    per_patch: int


def _sample_points(coords: np.ndarray, size: float, per_side: int, centre_only: bool) -> _Samples:
    s = 1 if centre_only else per_side
    off = (np.arange(s) + 0.5) / s * size
    uy, inv = np.unique(coords[:, 1], return_inverse=True)
    ys = (uy[:, None].astype(np.float64) + off[None, :]).ravel()  # scanline uy_i * s + j
    order = np.argsort(ys, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    n = coords.shape[0]
    rows = rank[inv.reshape(-1)[:, None] * s + np.arange(s)[None, :]]  # (N, s): scanline of each sub-row
    row = np.broadcast_to(rows[:, :, None], (n, s, s)).ravel()
    x = np.broadcast_to(coords[:, 0].astype(np.float64)[:, None, None] + off[None, None, :], (n, s, s)).ravel()
    patch = np.repeat(np.arange(n, dtype=np.int64), s * s)
    srt = np.argsort(row, kind="stable")
    return _Samples(ys=ys[order], row=row[srt], x=x[srt], patch=patch[srt], per_patch=s * s)


def _inside(rings: Sequence[np.ndarray], sp: _Samples) -> np.ndarray:
    """Indices of the sample points inside one polygon (all its rings, even-odd rule).

    Each edge is intersected with the scanlines y in [ymin, ymax) it spans (vectorised); a point is
    inside when an odd number of its scanline's crossings lie at x <= the point's x. Only the points in
    the polygon's bounding box are tested.
    """
    x0 = np.concatenate([r[:, 0] for r in rings])
    y0 = np.concatenate([r[:, 1] for r in rings])
    x1 = np.concatenate([np.roll(r[:, 0], -1) for r in rings])
    y1 = np.concatenate([np.roll(r[:, 1], -1) for r in rings])
    lo = np.searchsorted(sp.ys, np.minimum(y0, y1), side="left")
    hi = np.searchsorted(sp.ys, np.maximum(y0, y1), side="left")
    cnt = hi - lo
    total = int(cnt.sum())
    empty = np.zeros(0, dtype=np.int64)
    if total == 0:
        return empty
    r_min, r_max = int(lo.min()), int(hi.max())
    a, b = np.searchsorted(sp.row, [r_min, r_max], side="left")
    xmin, xmax = float(x0.min()), float(x0.max())
    idx = a + np.flatnonzero((sp.x[a:b] >= xmin) & (sp.x[a:b] <= xmax))
    if idx.size == 0:
        return empty
    edge = np.repeat(np.arange(cnt.size), cnt)
    row = lo[edge] + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    t = (sp.ys[row] - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    span = xmax - xmin + 1.0  # keys (scanline, x) -> one sortable float; scanlines never overlap
    key_c = np.sort((row - r_min) * span + (np.clip(xc, xmin, xmax) - xmin))
    row_c = np.sort(row)
    prow = sp.row[idx]
    key_p = (prow - r_min) * span + (sp.x[idx] - xmin)
    n_left = np.searchsorted(key_c, key_p, side="right") - np.searchsorted(row_c, prow, side="left")
    return idx[n_left % 2 == 1]


def _as_polygon(p: Any, exclude: bool = False) -> AnnotationPolygon:
    if isinstance(p, AnnotationPolygon):
        return p
    return AnnotationPolygon(_clean_ring(np.asarray(p, dtype=np.float64), "polygon"), exclude=exclude)


def _check_coords(coords: np.ndarray, patch_size_level0: float) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must have shape (N, 2), got {coords.shape}")
    if not np.all(np.isfinite(coords)):
        raise InputError("coords contain NaN or inf")
    if not (np.isfinite(patch_size_level0) and patch_size_level0 > 0):
        raise InputError(f"patch_size_level0 must be a positive number, got {patch_size_level0!r}")
    return coords


def lesion_fraction(
    coords: np.ndarray,
    patch_size_level0: float,
    polygons: Iterable[AnnotationPolygon | np.ndarray],
    exclusions: Iterable[AnnotationPolygon | np.ndarray] | None = None,
    *,
    samples_per_side: int = 4,
    centre_only: bool = False,
) -> np.ndarray:
    """(N,) float32: fraction of each patch's sample points that lie in a lesion.

    Args:
        coords: (N, 2) level-0 pixels, top-left (x, y).
        patch_size_level0: patch side in level-0 pixels.
        polygons: lesion regions; those flagged ``exclude=True`` act as exclusions. Plain (M, 2) arrays
            are accepted.
        exclusions: more exclusion regions (whatever their flag).
        samples_per_side: the sub-grid is ``samples_per_side`` x ``samples_per_side`` points per patch.
        centre_only: one sample point, the patch centre (fractions are then 0 or 1).
    """
    coords = _check_coords(coords, patch_size_level0)
    if samples_per_side < 1:
        raise InputError(f"samples_per_side must be >= 1, got {samples_per_side}")
    polys = [_as_polygon(p) for p in polygons]
    pos = [p for p in polys if not p.exclude]
    excl = [p for p in polys if p.exclude] + [_as_polygon(p, True) for p in (exclusions or [])]
    n = coords.shape[0]
    if n == 0 or not pos:
        return np.zeros(n, dtype=np.float32)
    sp = _sample_points(coords, float(patch_size_level0), samples_per_side, centre_only)
    inside = np.zeros(sp.row.size, dtype=bool)
    excluded = np.zeros(sp.row.size, dtype=bool)
    for target, group in ((inside, pos), (excluded, excl)):
        for p in group:  # a loop over polygons; points and edges are vectorised
            target[_inside(p.rings, sp)] = True
    hit = np.bincount(sp.patch[inside & ~excluded], minlength=n)
    return (hit / sp.per_patch).astype(np.float32)


def patch_labels_from_polygons(
    coords: np.ndarray,
    patch_size_level0: float,
    polygons: Iterable[AnnotationPolygon | np.ndarray],
    exclusions: Iterable[AnnotationPolygon | np.ndarray] | None = None,
    min_fraction: float | str = 0.5,
    *,
    samples_per_side: int = 4,
) -> np.ndarray:
    """(N,) int8 patch labels: 1 where at least ``min_fraction`` of the patch is lesion.

    Args:
        coords: (N, 2) level-0 pixels, top-left (x, y).
        patch_size_level0: patch side in level-0 pixels.
        polygons: lesion regions (:class:`AnnotationPolygon` or (M, 2) arrays); ``exclude=True`` ones
            are exclusions.
        exclusions: more exclusion regions.
        min_fraction: a number in (0, 1] (fraction of the ``samples_per_side``^2 sample points that must
            be lesion), or ``"center"`` (the patch centre must be lesion).
        samples_per_side: sub-grid resolution for the fraction.
    """
    if isinstance(min_fraction, str):
        if min_fraction.lower() not in ("center", "centre"):
            raise InputError(f"min_fraction must be a number in (0, 1] or 'center', got {min_fraction!r}")
        frac = lesion_fraction(coords, patch_size_level0, polygons, exclusions, centre_only=True)
        return (frac > 0).astype(np.int8)
    mf = float(min_fraction)
    if not 0 < mf <= 1:
        raise InputError(f"min_fraction must be in (0, 1] or 'center', got {min_fraction!r}")
    frac = lesion_fraction(coords, patch_size_level0, polygons, exclusions, samples_per_side=samples_per_side)
    return (frac >= mf - 1e-6).astype(np.int8)


# ----------------------------------------------------------------------------------------------------
# lesions as connected components of positive patches
# ----------------------------------------------------------------------------------------------------


def lesion_components(coords: np.ndarray, patch_labels: np.ndarray, patch_size_level0: float) -> np.ndarray:
    """(N,) int64 lesion id of each patch (-1 for negative patches).

    Lesions are the 8-connected components of the positive patches: two positive patches belong to the
    same lesion when their top-left corners are at most 1.5 grid steps apart (side and diagonal
    neighbours on a lattice). Ids are 0..L-1, numbered by each lesion's first patch. Works for
    per-contour grids with offsets too (neighbours are found by distance, not by lattice index).

    Args:
        coords: (N, 2), any unit consistent with ``patch_size_level0`` (level-0 px, or lattice units with
            a step of 1).
        patch_labels: (N,) 0/1 (any value > 0 counts as positive).
        patch_size_level0: the grid step.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    coords = _check_coords(coords, patch_size_level0)
    labels = np.asarray(patch_labels).reshape(-1)
    if labels.shape[0] != coords.shape[0]:
        raise InputError(f"patch_labels has {labels.shape[0]} entries but coords has {coords.shape[0]} rows")
    out = np.full(coords.shape[0], -1, dtype=np.int64)
    pos = np.flatnonzero(labels > 0)
    if pos.size == 0:
        return out
    pts = coords[pos].astype(np.float64)
    pairs = cKDTree(pts).query_pairs(r=1.5 * float(patch_size_level0), output_type="ndarray")
    m = pos.size
    adj = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    _, comp = connected_components(adj, directed=False)
    _, first = np.unique(comp, return_index=True)  # renumber by first patch
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    out[pos] = rank[comp]
    return out


# ----------------------------------------------------------------------------------------------------
# feature files
# ----------------------------------------------------------------------------------------------------


def add_patch_labels(
    feature_h5: str | os.PathLike,
    annotation_file: str | os.PathLike | None,
    out_h5: str | os.PathLike | None = None,
    *,
    min_fraction: float | str = 0.5,
    classes: Sequence[str] | None = None,
    samples_per_side: int = 4,
    link: bool = False,
) -> np.ndarray:
    """Write a copy of a feature file with a ``patch_labels`` dataset; returns the (N,) int8 labels.

    The copy keeps every dataset and attribute of the original (extra per-patch datasets, CLAM/TRIDENT
    attributes) and replaces any earlier ``patch_labels``; it is written atomically. With ``link=True``
    the output holds only ``patch_labels`` and the root attributes, and every other dataset is an HDF5
    external link to the original (absolute path): a few kB instead of a copy of the embeddings, read
    like any feature file for as long as the original stays where it is.

    Args:
        feature_h5: an ``.h5`` feature (or coords-only) file with level-0 pixel coordinates.
        annotation_file: ASAP ``.xml`` or GeoJSON; None gives all-zero labels (a slide without lesions,
            e.g. a CAMELYON16 ``normal_*`` slide).
        out_h5: where to write; None replaces ``feature_h5`` (atomically; not with ``link``).
        min_fraction, samples_per_side: see :func:`patch_labels_from_polygons`.
        classes: lesion groups/classes to keep (see :func:`read_annotations`).
        link: link to the original's datasets instead of copying them.
    """
    import shutil

    import h5py

    from wsigraph.data.features import H5_SUFFIXES, read_features
    from wsigraph.utils.atomic import atomic_path

    src = Path(feature_h5)
    if src.suffix.lower() not in H5_SUFFIXES and src.exists():
        raise InputError(f"{src}: patch labels can only be added to .h5/.hdf5 feature files")
    bag = read_features(src, require_features=False)
    if "coords_unit" in bag.attrs:
        raise InputError(f"{src}: coordinates are not level-0 pixels ({bag.attrs['coords_unit']}); "
                         "annotations are in level-0 pixels, so labels cannot be computed from this file")
    step = bag.patch_size_level0
    if annotation_file is None:
        labels = np.zeros(bag.num_patches, dtype=np.int8)
    else:
        polys = read_annotations(annotation_file, classes=classes)
        labels = patch_labels_from_polygons(bag.coords, step, polys, min_fraction=min_fraction,
                                            samples_per_side=samples_per_side)
    dst = Path(out_h5) if out_h5 is not None else src
    if link and dst.resolve() == src.resolve():
        raise InputError(f"{src}: linked labels need another output file (out_h5), not the original itself")
    with atomic_path(dst) as tmp:
        if link:
            _write_links(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        with h5py.File(tmp, "a") as f:
            if "patch_labels" in f:
                del f["patch_labels"]
            ds = f.create_dataset("patch_labels", data=labels)
            ds.attrs["source"] = "none (no lesion)" if annotation_file is None else Path(annotation_file).name
            ds.attrs["min_fraction"] = str(min_fraction)
    log.info("%s: %d of %d patches labelled positive -> %s", src.name, int(labels.sum()), labels.size, dst)
    return labels


def _write_links(src: Path, out: Path) -> None:
    """``out``: the root attributes of ``src`` and an external link to each of its top-level objects."""
    import h5py

    target = str(src.resolve())
    with h5py.File(src, "r") as f, h5py.File(out, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for name in f:
            if name != "patch_labels":
                g[name] = h5py.ExternalLink(target, f"/{name}")


def collect_annotations(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Gather lesion outline files (``.xml``/``.geojson``/``.json``) from folders and ``.zip`` archives into
    one folder ``out``, the ``annotation_dir`` of :func:`find_annotation`; returns ``out``.

    Args:
        sources: folders (searched recursively), ``.zip`` archives, or single outline files.
        out: the folder to fill (made when missing); files already there with the same name are replaced.

    Only a file's base name is used (``a/b/test_001.xml`` and a zip entry ``../../test_001.xml`` both
    become ``out/test_001.xml``), so nothing is written outside ``out``; hidden names (``.x.xml``, macOS
    ``._x.xml``, and in source folders anything under a hidden folder) are skipped. Every file is written
    atomically. When two sources hold the same name, the later one wins (a warning names both).

    Raises:
        MissingFileError: a source does not exist. InputError: a source file that is neither an archive
        nor an outline file, or an unreadable archive (naming it).
    """
    import shutil
    import zipfile

    from wsigraph.utils.atomic import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keep = XML_SUFFIXES + GEOJSON_SUFFIXES
    seen: dict[str, str] = {}

    def wanted(name: str) -> bool:
        return bool(name) and not name.startswith(".") and Path(name).suffix.lower() in keep

    def target(name: str, origin: str) -> Path:
        if name in seen:
            log.warning("annotation %s from %s replaces the one from %s", name, origin, seen[name])
        seen[name] = origin
        return out / name

    for src in map(Path, sources):
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                hidden = any(part.startswith(".") for part in f.relative_to(src).parts)
                if f.is_file() and not hidden and wanted(f.name) and f.resolve().parent != out.resolve():
                    with atomic_path(target(f.name, str(f))) as tmp:
                        shutil.copyfile(f, tmp)
        elif not src.exists():
            raise MissingFileError(f"{src}: annotation folder or archive does not exist")
        elif zipfile.is_zipfile(src):
            try:
                with zipfile.ZipFile(src) as z:
                    for info in z.infolist():
                        name = info.filename.replace("\\", "/").rsplit("/", 1)[-1]  # the base name only
                        if not info.is_dir() and wanted(name):
                            with atomic_path(target(name, f"{src}:{info.filename}")) as tmp, \
                                    z.open(info) as fin, open(tmp, "wb") as fout:
                                shutil.copyfileobj(fin, fout)
            except (zipfile.BadZipFile, NotImplementedError, EOFError) as e:  # corrupt, unsupported compression
                raise InputError(f"{src}: cannot read the archive ({e})") from e
        elif wanted(src.name):
            with atomic_path(target(src.name, str(src))) as tmp:
                shutil.copyfile(src, tmp)
        else:
            raise InputError(f"{src}: not a folder, a .zip archive or an outline file ({', '.join(keep)})")
    return out


def find_annotation(annotation_dir: str | os.PathLike, slide_id: str) -> Path | None:
    """The annotation file of ``slide_id`` in ``annotation_dir`` (``<slide_id>.xml``/``.geojson``/``.json``)."""
    from wsigraph.pipeline.paths import slide_file

    folder = Path(annotation_dir)
    for suffix in XML_SUFFIXES + GEOJSON_SUFFIXES:
        cand = slide_file(folder, slide_id, suffix)
        if cand.exists():
            return cand
    return None
