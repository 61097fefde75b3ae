"""Outputs to look at: score heatmaps on slide thumbnails, QuPath GeoJSON, top-k patch galleries,
and synthetic slide images for cohorts that have no image files.

Nothing here imports matplotlib at module import; it is loaded when a PNG with a colour bar is drawn.
"""
from wsigraph.viz.gallery import top_k_indices, topk_gallery
from wsigraph.viz.geojson import read_geojson_patches, tissue_contours, write_geojson, write_tissue_geojson
from wsigraph.viz.heatmap import blur_on_lattice, heatmap_overlay, normalize_scores, render_heatmap
from wsigraph.viz.lattice import Lattice, build_lattice, default_level0_size, draw_patches
from wsigraph.viz.synthetic import render_synthetic_slide

__all__ = [
    "render_heatmap",
    "heatmap_overlay",
    "blur_on_lattice",
    "normalize_scores",
    "write_geojson",
    "read_geojson_patches",
    "tissue_contours",
    "write_tissue_geojson",
    "topk_gallery",
    "top_k_indices",
    "render_synthetic_slide",
    "Lattice",
    "build_lattice",
    "default_level0_size",
    "draw_patches",
]
