"""``wsigraph view``: a local web viewer of slides with model overlays (scores, tissue, graph, annotations).

:func:`~wsigraph.viewer.catalog.build_catalog` finds what can be shown, :class:`~wsigraph.viewer.server.ViewerServer`
serves it (Flask; deep-zoom tiles from OpenSlide; pages drawn with Bokeh). Flask and Bokeh are imported only
when the viewer starts.
"""
from wsigraph.viewer.catalog import SlideEntry, build_catalog

__all__ = ["SlideEntry", "build_catalog"]
