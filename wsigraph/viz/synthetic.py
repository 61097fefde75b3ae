"""A stand-in slide image drawn from patch coordinates alone (synthetic cohorts have no image file)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from wsigraph.viz.lattice import build_lattice, canvas_size_for

#: H&E-like colours per patch label: 0 = stroma/normal (pink), 1 = tumour (purple), then others.
LABEL_COLORS = np.array([(236, 170, 205), (150, 95, 175), (205, 120, 150), (120, 70, 140), (225, 200, 215),
                         (170, 130, 190)], dtype=np.float64)


def render_synthetic_slide(
    coords: np.ndarray,
    patch_labels: np.ndarray | None,
    patch_size_level0: float,
    *,
    level0_size: tuple[int, int] | None = None,
    max_size: int = 1024,
    seed: int = 0,
) -> Image.Image:
    """Draw tissue where the patches are, coloured by label, on a white slide.

    Args:
        coords: (N, 2) int level-0 top-left; patch_size_level0: grid step in level-0 px.
        patch_labels: (N,) int label per patch (None = all 0). Negative labels are drawn as 0.
        level0_size: (W, H) of the slide (default: just covering the patches, as
            :func:`~wsigraph.viz.heatmap.render_heatmap` assumes when it is not given either).
        max_size: longest side of the image. seed: texture noise seed.

    Returns:
        RGB image covering ``level0_size``; pass it as ``background=`` with the same ``level0_size``.
    """
    coords = np.asarray(coords)
    lattice = build_lattice(coords, patch_size_level0, level0_size, where="render_synthetic_slide")
    labels = np.zeros(coords.shape[0], np.int64) if patch_labels is None else np.asarray(patch_labels, np.int64)
    labels = np.clip(labels, 0, None) % len(LABEL_COLORS)
    rgb = np.full(lattice.shape + (3,), 255.0)
    rgb[lattice.index[:, 1], lattice.index[:, 0]] = LABEL_COLORS[labels]
    alpha = np.zeros(lattice.shape)
    alpha[lattice.index[:, 1], lattice.index[:, 0]] = 1.0
    cells = Image.fromarray(np.concatenate([rgb, alpha[..., None] * 255], axis=2).round().astype(np.uint8), "RGBA")
    size = canvas_size_for(lattice.level0_size, max_size)
    layer_img = lattice.paste(cells, size)
    cell_px = lattice.step * size[0] / lattice.level0_size[0]
    if cell_px >= 4:  # soften the square edges a little, as tissue borders are
        layer_img = layer_img.filter(ImageFilter.GaussianBlur(radius=0.12 * cell_px))
    layer = np.asarray(layer_img, dtype=np.float64)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 12.0, size=layer.shape[:2])[..., None]  # stain texture
    tissue = np.clip(layer[..., :3] + noise, 0, 255)
    a = layer[..., 3:4] / 255.0
    out = tissue * a + 248.0 * (1 - a)  # slide glass is slightly off-white
    return Image.fromarray(out.round().astype(np.uint8), "RGB")
