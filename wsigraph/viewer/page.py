"""The viewer's page for one slide: a Bokeh figure in level-0 pixel units (x right, y = -row) with the
slide's deep-zoom tiles and overlays that the page's controls switch on and off.

Overlays: per-patch scores (squares coloured by score, percentile or raw, with a colour bar; opacity
slider), the tissue mask, the spatial graph's edges (drawn only when zoomed in to about 60 patches across),
lesion annotations and the top-k patches. Clicking a patch shows its index, score and coordinates. Without
an image the overlays sit on a blank canvas of the slide's extent. Everything runs in the browser (Bokeh's
``CustomJS``); BokehJS comes from the installed bokeh package, served by the viewer: no network access.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from wsigraph.viewer.catalog import SlideEntry
from wsigraph.viewer.tiles import TILE_SIZE, TileGeometry

#: the graph's edges are drawn when the view is at most this many patches wide (and the layer is on)
EDGES_WITHIN_PATCHES = 60
#: above this many undirected edges the graph layer is left out (it would not draw at interactive speed)
MAX_EDGES = 1_000_000
LAYERS = ("scores", "tissue mask", "graph edges", "annotations", "top-k patches")


@dataclass
class SlideData:
    """What the page draws: patches (N, 2) level-0 top-left coords with their grid step and scores (or None),
    the slide extent (W, H), the image's tile geometry (None: blank canvas)."""

    coords: np.ndarray | None
    step: float | None
    scores: np.ndarray | None
    score_name: str
    extent: tuple[int, int]
    geometry: TileGeometry | None


def load_slide_data(entry: SlideEntry, geometry: TileGeometry | None, *,
                    level0_mpp: float | None = None) -> SlideData:
    """Read the entry's patches and scores (score file first, then the feature file) and its extent.

    Coordinates come back in level-0 pixels. STAMP's (stored in micrometres; the feature reader gives them in
    pixels of their tile resolution, attribute ``coords_mpp``) are scaled with the slide's level-0 µm/px:
    ``level0_mpp`` when given, else the one the slide image records. An :class:`~wsigraph.errors.InputError`
    naming the file when it is unknown (no image, or an image without a resolution): drawn unscaled, the
    patches would not line up with the tiles, the tissue mask or the annotations.
    """
    from wsigraph.data.features import infer_grid_step, read_features, to_level0
    from wsigraph.data.scores import load_scores
    from wsigraph.errors import InputError
    from wsigraph.viz.lattice import default_level0_size

    coords = scores = None
    attrs: dict[str, Any] = {}
    name = "score"
    where = str(entry.scores or entry.features)  # the file the coordinates come from, for messages
    if entry.scores is not None:
        ps = load_scores(entry.scores)
        coords, scores, attrs, name = ps.coords, ps.scores, dict(ps.attrs), ps.name
    if entry.features is not None and (coords is None or not attrs.get("patch_size_level0")):
        bag = read_features(entry.features, require_features=False)
        for k, v in bag.attrs.items():
            attrs.setdefault(k, v)
        if coords is None:
            coords, where = bag.coords, str(entry.features)
        if scores is not None and len(scores) != len(coords):
            raise InputError(f"{entry.scores}: {len(scores)} scores but {entry.features} has {len(coords)} patches")
    step = None
    if coords is not None and attrs.get("coords_mpp") is not None:  # STAMP: not level-0 pixels yet
        mpp = level0_mpp if level0_mpp is not None else _image_mpp(entry)
        if mpp is None:
            why = "it has no slide image" if entry.image is None else f"{entry.image} records no resolution"
            raise InputError(f"{where}: coordinates are in {attrs.get('coords_unit', 'micrometres')}; the slide's "
                             f"level-0 µm/px is needed to place them and {why} (slide {entry.slide_id!r})")
        coords, step = to_level0(coords, attrs, mpp, where=where)
    if coords is not None and len(coords) and step is None:
        step = float(attrs.get("patch_size_level0") or infer_grid_step(coords, where=where))
    if geometry is not None:
        extent = (geometry.width, geometry.height)
    elif attrs.get("level0_width") and attrs.get("level0_height"):
        extent = (int(attrs["level0_width"]), int(attrs["level0_height"]))
    elif coords is not None and step is not None:
        extent = tuple(default_level0_size(coords, step))  # type: ignore[assignment]
    else:
        extent = (1024, 1024)
    return SlideData(coords, step, scores, name, extent, geometry)


def _image_mpp(entry: SlideEntry) -> float | None:
    """Level-0 µm/px the entry's slide image records (None: no image, or none recorded)."""
    if entry.image is None:
        return None
    from wsigraph.slide import open_slide

    with open_slide(entry.image) as slide:
        return float(slide.mpp) if slide.has_mpp else None


def _percentile(values: np.ndarray) -> np.ndarray:
    from wsigraph.viz.heatmap import normalize_scores

    return normalize_scores(values, "percentile")


def _mask_rgba(path: Any) -> np.ndarray:
    """The tissue mask as a (h, w) uint32 RGBA image, rows bottom-up (Bokeh's image origin)."""
    from PIL import Image

    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) > 127
    rgba = np.zeros(m.shape + (4,), np.uint8)
    rgba[m] = (0, 200, 0, 90)
    return np.flipud(rgba).copy().view(np.uint32).reshape(m.shape)


def build_page(entry: SlideEntry, data: SlideData, *, top_k: int = 16) -> str:
    """The page's HTML (BokehJS loaded from the viewer's ``/static/``)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (CheckboxGroup, ColorBar, ColumnDataSource, CustomJS, Div, HoverTool,
                              LinearColorMapper, RadioButtonGroup, Slider, TapTool, WMTSTileSource)
    from bokeh.palettes import Turbo256
    from bokeh.plotting import figure
    from bokeh.resources import Resources

    W, H = data.extent
    p = figure(x_range=(0, W), y_range=(-H, 0), match_aspect=True, width=960, height=720, name="slide",
               tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom", output_backend="webgl",
               background_fill_color="white" if data.geometry is None else "#f4f4f4")
    p.axis.visible = False
    p.grid.visible = False
    p.toolbar.logo = None
    if data.geometry is not None:
        g = data.geometry
        source = WMTSTileSource(url=f"/tiles/{quote(entry.slide_id, safe='')}/{{Z}}/{{X}}/{{Y}}.jpeg",
                                tile_size=TILE_SIZE, min_zoom=0, max_zoom=g.zoom_levels, x_origin_offset=0,
                                y_origin_offset=g.world, initial_resolution=g.initial_resolution,
                                wrap_around=False)
        p.add_tile(source, name="tiles")
    else:
        p.rect(x=W / 2, y=-H / 2, width=W, height=H, fill_color="white", line_color="#999999")

    renderers: dict[str, list[Any]] = {name: [] for name in LAYERS}
    info = Div(text="click a patch to see its score", name="info", width=960)
    widgets: list[Any] = []
    if entry.mask is not None:
        renderers["tissue mask"].append(p.image_rgba(image=[_mask_rgba(entry.mask)], x=0, y=-H, dw=W, dh=H,
                                                     name="tissue", visible=False))
    if data.coords is not None and len(data.coords):
        c = data.coords.astype(np.float64)
        half = data.step / 2
        cx, cy = c[:, 0] + half, -(c[:, 1] + half)
        if data.scores is not None:
            raw = np.asarray(data.scores, dtype=np.float64)
            pct = _percentile(raw)
            ok = np.isfinite(raw)
            lo, hi = (float(raw[ok].min()), float(raw[ok].max())) if ok.any() else (0.0, 1.0)
            src = ColumnDataSource({"x": cx, "y": cy, "raw": raw, "pct": pct, "value": pct,
                                    "index": np.arange(len(c)), "px": c[:, 0], "py": c[:, 1]}, name="patches")
            mapper = LinearColorMapper(palette=Turbo256, low=0.0, high=1.0, nan_color=(0, 0, 0, 0))
            scores = p.rect(x="x", y="y", width=data.step, height=data.step, source=src, line_color=None,
                            fill_color={"field": "value", "transform": mapper}, fill_alpha=0.5, name="scores")
            renderers["scores"].append(scores)
            bar = ColorBar(color_mapper=mapper, title=f"{data.score_name} (percentile)", width=12, name="colorbar")
            p.add_layout(bar, "right")  # stays when the layer is off: hiding it would resize the frame
            p.add_tools(HoverTool(renderers=[scores], tooltips=[("patch", "@index"), ("score", "@raw{0.0000}"),
                                                                ("x, y", "@px{0}, @py{0}")]))
            p.add_tools(TapTool(renderers=[scores]))
            src.selected.js_on_change("indices", CustomJS(args={"src": src, "info": info}, code="""
                const i = src.selected.indices[0];
                if (i === undefined) { info.text = 'click a patch to see its score'; return; }
                const d = src.data;
                info.text = `patch ${d.index[i]} | score ${d.raw[i].toFixed(4)} (percentile ${(100 * d.pct[i]).toFixed(1)}) | x ${d.px[i]}, y ${d.py[i]} (level-0 px)`;
            """))
            opacity = Slider(start=0.0, end=1.0, step=0.05, value=0.5, title="score opacity", name="opacity")
            opacity.js_on_change("value", CustomJS(args={"r": scores}, code="r.glyph.fill_alpha = cb_obj.value;"))
            norm = RadioButtonGroup(labels=["percentile", "raw"], active=0, name="normalize")
            norm.js_on_change("active", CustomJS(args={"src": src, "mapper": mapper, "bar": bar, "lo": lo, "hi": hi,
                                                       "name": data.score_name}, code="""
                const pct = cb_obj.active === 0;
                src.data = Object.assign({}, src.data, {value: pct ? src.data.pct : src.data.raw});
                mapper.low = pct ? 0 : lo; mapper.high = pct ? 1 : hi;
                bar.title = name + (pct ? ' (percentile)' : '');
            """))
            widgets += [opacity, norm]
            k = min(int(top_k), int(ok.sum()))
            if k > 0:
                top = np.argsort(np.where(ok, raw, -np.inf))[::-1][:k]
                renderers["top-k patches"].append(p.rect(x=cx[top], y=cy[top], width=data.step, height=data.step,
                                                         fill_alpha=0, line_color="black", line_width=2,
                                                         name="topk", visible=False))
        edges = _edges(c, data.step)
        if edges is not None:
            renderers["graph edges"].append(p.segment(x0=cx[edges[0]], y0=cy[edges[0]], x1=cx[edges[1]],
                                                      y1=cy[edges[1]], line_color="#333333", line_alpha=0.6,
                                                      line_width=1, name="edges", visible=False))
    if entry.annotation is not None:
        from wsigraph.data.annotations import read_annotations

        polys = read_annotations(entry.annotation)
        if polys:
            xs = [list(r[:, 0]) for poly in polys for r in poly.rings]
            ys = [list(-r[:, 1]) for poly in polys for r in poly.rings]
            renderers["annotations"].append(p.patches(xs, ys, fill_alpha=0, line_color="#1f3fff", line_width=2,
                                                      name="annotations"))
    present = [name for name in LAYERS if renderers[name]]
    active = [i for i, name in enumerate(present) if renderers[name][0].visible]
    layers = CheckboxGroup(labels=present, active=active, name="layers", inline=True)
    wide = EDGES_WITHIN_PATCHES * (data.step or 1.0)
    show = CustomJS(args={"layers": layers, "groups": [renderers[n] for n in present], "names": present,
                          "xr": p.x_range, "wide": wide}, code="""
        for (let j = 0; j < names.length; j++) {
            let on = layers.active.includes(j);
            if (names[j] === 'graph edges') on = on && (xr.end - xr.start) <= wide;
            for (const r of groups[j]) r.visible = on;
        }
    """)
    layers.js_on_change("active", show)
    p.x_range.js_on_change("start", show)
    p.x_range.js_on_change("end", show)
    title = html.escape(entry.slide_id)
    if entry.pred is not None:
        title += f" | predicted {html.escape(entry.pred)}" + (f" (p = {entry.prob:.2f})" if entry.prob is not None else "")
    if entry.label is not None:
        title += f" | label {html.escape(entry.label)}"
    head = Div(text=f'<a href="/">all slides</a> &nbsp; <b>{title}</b>', width=960)
    layout = column(head, row(layers, *widgets), p, info)
    return file_html(layout, resources=Resources(mode="server", root_url="/"), title=f"wsigraph view - {entry.slide_id}")


def _edges(coords: np.ndarray, step: float | None) -> np.ndarray | None:
    """(2, E) undirected edges (i < j) of the paper's spatial graph, or None when too many to draw."""
    from wsigraph.graph.build import spatial_graph

    if step is None or len(coords) < 2:
        return None
    ei = spatial_graph(coords.astype(np.int64), mode="paper", self_loops=False, step=step).numpy()
    ei = ei[:, ei[0] < ei[1]]
    return ei if ei.shape[1] <= MAX_EDGES else None


__all__ = ["EDGES_WITHIN_PATCHES", "LAYERS", "SlideData", "build_page", "load_slide_data"]
