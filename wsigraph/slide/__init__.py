"""Slide reading, tissue segmentation and patch grids.

``open_slide`` wraps OpenSlide (every format it opens) and plain images (Pillow/tifffile);
``segment_tissue`` makes a low-resolution tissue mask; ``tile_slide`` lays the global patch grid at a
target resolution and keeps the patches with enough tissue; ``write_coords`` saves them in the
feature-file layout (a coords-only file that ``wsigraph extract`` reads).
"""
from wsigraph.slide.discover import find_slides, read_mpp_csv
from wsigraph.slide.reader import PLAUSIBLE_MPP, SLIDE_SUFFIXES, Slide, mpp_to_magnification, open_slide
from wsigraph.slide.tiling import grid_step, tile_slide, tissue_fraction_grid, write_coords
from wsigraph.slide.tissue import TissueMask, otsu_threshold, segment_tissue, tissue_mask_from_rgb

__all__ = [
    "Slide",
    "open_slide",
    "find_slides",
    "read_mpp_csv",
    "mpp_to_magnification",
    "PLAUSIBLE_MPP",
    "SLIDE_SUFFIXES",
    "TissueMask",
    "segment_tissue",
    "tissue_mask_from_rgb",
    "otsu_threshold",
    "tile_slide",
    "tissue_fraction_grid",
    "grid_step",
    "write_coords",
]
