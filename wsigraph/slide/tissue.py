"""Tissue segmentation on a slide thumbnail.

Brightfield (H&E, IHC; dark tissue on a bright background): HSV saturation, Otsu (or a fixed) threshold
with a floor, median blur (computed as a majority vote of the thresholded pixels, which gives exactly the
thresholded median and is much faster), background (near-white / near-black) and optional pen-mark removal,
morphological closing, removal of small objects, filling of small holes.

Fluorescence (bright signal on a black background, e.g. the Hamamatsu DAPI/TRITC scans): the brightest
channel, smoothed over about one nucleus spacing so that separate nuclei merge into tissue, then Otsu,
then the same clean-up. ``mode="auto"`` (default) picks fluorescence when the thumbnail is mostly dark
(median of the brightest channel below 80 of 255).

All sizes are in micrometres (``close_um``, ``median_um``) and areas in µm² (``min_object_um2``,
``max_hole_um2``), converted with the mask's resolution, so the result does not depend on the
thumbnail size. The mask is computed at ``mask_mpp`` µm/px (default 8, about 1.25x), capped at
``max_size`` pixels on the longest side.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from wsigraph.errors import InputError
from wsigraph.utils.atomic import atomic_path

log = logging.getLogger("wsigraph")

MODES = ("auto", "brightfield", "fluorescence")
METHODS = ("otsu", "threshold")
#: Median (0-255) of the brightest channel below which ``mode="auto"`` calls a thumbnail fluorescence.
DARK_BACKGROUND_LEVEL = 80

# pen-mark hue ranges in degrees (H&E stains lie between about 250 and 360 degrees)
_PEN_HUES = {"green": (70.0, 170.0), "blue": (170.0, 235.0)}


@dataclass
class TissueMask:
    """A boolean tissue mask over the whole slide at low resolution.

    Attributes:
        mask: (h, w) bool, True = tissue.
        level0_size: (W, H) of the slide's level 0, which the mask covers exactly.
        mpp: µm per mask pixel (None when the slide has no known resolution).
        mode: ``"brightfield"`` or ``"fluorescence"`` (what was used).
        threshold: the threshold applied (0-255 scale of the segmented channel).
        params: the segmentation parameters, for the record.
        source: the slide file (or a description), for messages.
    """

    mask: np.ndarray
    level0_size: tuple[int, int]
    mpp: float | None = None
    mode: str = "brightfield"
    threshold: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "slide"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)  # type: ignore[return-value]

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): level-0 pixels per mask pixel along x and y."""
        h, w = self.mask.shape
        return self.level0_size[0] / w, self.level0_size[1] / h

    @property
    def downsample(self) -> float:
        """Level-0 pixels per mask pixel (mean of x and y)."""
        sx, sy = self.scale
        return (sx + sy) / 2

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide area covered by tissue, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def tissue_area_mm2(self) -> float | None:
        if self.mpp is None:
            return None
        return float(self.mask.sum()) * self.mpp ** 2 / 1e6

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())

    def require_tissue(self) -> "TissueMask":
        """Raise :class:`InputError` ``"no tissue found in <file>"`` when the mask is empty; else self."""
        if self.is_empty:
            raise InputError(f"no tissue found in {self.source} (mode={self.mode}, threshold="
                             f"{self.threshold if self.threshold is None else round(self.threshold, 1)}); check the "
                             "slide, or relax the segmentation (e.g. --threshold, --min-object-um2, --mode)")
        return self

    def save_png(self, path: str | os.PathLike) -> Path:
        """Write the mask as an 8-bit PNG (255 = tissue), atomically."""
        img = Image.fromarray(np.where(self.mask, 255, 0).astype(np.uint8), "L")
        return _save_png(img, path)

    def overlay(self, thumbnail: Image.Image, color: tuple[int, int, int] = (0, 200, 0),
                alpha: float = 0.35) -> Image.Image:
        """The thumbnail with tissue tinted and its outline drawn (background dimmed slightly)."""
        from scipy import ndimage as ndi

        rgb = np.asarray(thumbnail.convert("RGB"), dtype=np.float32)
        h, w = rgb.shape[:2]
        m = self.mask
        if m.shape != (h, w):
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 127
        edge = m & ~ndi.binary_erosion(m, iterations=max(1, round(min(h, w) / 400)), border_value=1)
        col = np.asarray(color, np.float32)
        out = rgb.copy()
        out[m] = (1 - alpha) * rgb[m] + alpha * col
        out[~m] = 0.75 * rgb[~m] + 0.25 * 128
        out[edge] = col
        return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")

    def save_overlay(self, path: str | os.PathLike, thumbnail: Image.Image, **kwargs: Any) -> Path:
        """Write :meth:`overlay` of ``thumbnail`` as PNG, atomically."""
        return _save_png(self.overlay(thumbnail, **kwargs), path)

    @classmethod
    def from_png(cls, path: str | os.PathLike, level0_size: tuple[int, int], mpp_level0: float | None = None,
                 source: str | None = None) -> "TissueMask":
        """Load a user-made mask image (nonzero = tissue) covering the whole slide of ``level0_size``."""
        path = Path(path)
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{path}: cannot be read as a mask image ({e})") from e
        h, w = arr.shape
        W, H = level0_size
        if abs((W / w) / (H / h) - 1) > 0.05:
            raise InputError(f"{path}: mask is {w}x{h} but the slide is {W}x{H}: aspect ratios differ, so the mask "
                             "does not cover the whole slide")
        mpp = None if mpp_level0 is None else mpp_level0 * (W / w + H / h) / 2
        return cls(mask=arr > 0, level0_size=(int(W), int(H)), mpp=mpp, mode="user", source=source or str(path))


# ------------------------------------------------------------------------------------------------------
# segmentation
# ------------------------------------------------------------------------------------------------------


def mask_size_for(level0_size: tuple[int, int], level0_mpp: float, mask_mpp: float,
                  max_size: int = 4096) -> tuple[int, int]:
    """(w, h) of a whole-slide thumbnail at ``mask_mpp`` µm/px, no larger than level 0 or ``max_size``."""
    W, H = level0_size
    f = min(level0_mpp / mask_mpp, 1.0, max_size / max(W, H))
    return max(1, int(round(W * f))), max(1, int(round(H * f)))


def segment_tissue(
    slide: Any,
    *,
    mode: str = "auto",
    method: str = "otsu",
    threshold: float | None = None,
    min_saturation: float = 15.0,
    mask_mpp: float = 8.0,
    max_size: int = 4096,
    median_um: float = 24.0,
    close_um: float = 48.0,
    min_object_um2: float = 10_000.0,
    max_hole_um2: float = 20_000.0,
    exclude_background: bool = True,
    white_level: int = 230,
    black_level: int = 40,
    exclude_pen: bool = False,
    thumbnail: Image.Image | None = None,
) -> TissueMask:
    """Segment tissue on a thumbnail of ``slide`` and return a :class:`TissueMask`.

    Args:
        slide: a :class:`~wsigraph.slide.reader.Slide` (its ``mpp`` must be known or overridden).
        mode: ``"auto"``, ``"brightfield"`` or ``"fluorescence"`` (see the module docstring).
        method: ``"otsu"`` (per slide) or ``"threshold"`` (use ``threshold``).
        threshold: fixed threshold (0-255) for ``method="threshold"``; with ``"otsu"`` it is ignored.
        min_saturation: brightfield floor under the Otsu threshold, so a blank slide yields no tissue.
        mask_mpp: µm per mask pixel (default 8 ≈ 1.25x); ``max_size`` caps the longest side.
        median_um: median-blur window (µm); ``close_um``: closing disk diameter (µm).
        min_object_um2: tissue pieces smaller than this are dropped; ``max_hole_um2``: holes smaller
            than this are filled (larger ones, e.g. vessels and tears, stay excluded).
        exclude_background: drop near-white (all channels >= ``white_level``) and near-black (all
            channels < ``black_level``) pixels (brightfield only).
        exclude_pen: drop blue/green/black marker ink (brightfield; off by default because IHC
            counterstains can be as blue as a pen).
        thumbnail: a precomputed whole-slide RGB image to segment instead of reading one (any size;
            its resolution is derived from the slide size and mpp).

    This signature is where the segmentation options and their defaults are declared;
    :func:`tissue_mask_from_rgb` takes the same options.
    """
    arguments = dict(locals())  # the first statement: exactly the arguments
    options = _segmentation_options({k: v for k, v in arguments.items() if k not in _NOT_SEGMENTATION_OPTIONS})
    W, H = slide.dimensions
    level0_mpp = slide.mpp  # raises InputError naming the file when unknown
    if thumbnail is None:
        thumbnail = slide.get_image_at_size(mask_size_for((W, H), level0_mpp, mask_mpp, max_size))
    rgb = np.asarray(thumbnail.convert("RGB"))
    h, w = rgb.shape[:2]
    px_mpp = level0_mpp * (W / w + H / h) / 2
    mask, used_mode, thr = tissue_mask_from_rgb(rgb, px_mpp, **options)
    params = {**options, "mask_mpp": px_mpp, "mode_used": used_mode}
    return TissueMask(mask=mask, level0_size=(int(W), int(H)), mpp=px_mpp, mode=used_mode, threshold=thr,
                      params=params, source=str(getattr(slide, "path", "slide")))


#: Arguments of :func:`segment_tissue` that are not segmentation options (those of :func:`tissue_mask_from_rgb`).
_NOT_SEGMENTATION_OPTIONS = ("slide", "mask_mpp", "max_size", "thumbnail")


@functools.cache
def _segmentation_defaults() -> dict[str, Any]:
    """The segmentation options and their defaults, read from :func:`segment_tissue`'s signature."""
    return {k: p.default for k, p in inspect.signature(segment_tissue).parameters.items()
            if k not in _NOT_SEGMENTATION_OPTIONS}


def _segmentation_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` completed with the defaults and checked (names, ``mode``, ``method``, threshold)."""
    defaults = _segmentation_defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"unknown tissue segmentation option(s) {unknown}; valid options: {sorted(defaults)}")
    opts = {**defaults, **options}
    if opts["mode"] not in MODES:
        raise InputError(f"tissue mode must be one of {MODES}, got {opts['mode']!r}")
    if opts["method"] not in METHODS:
        raise InputError(f"tissue method must be one of {METHODS}, got {opts['method']!r}")
    if opts["method"] == "threshold" and opts["threshold"] is None:
        raise InputError("tissue method 'threshold' needs a threshold value (0-255)")
    return opts


def tissue_mask_from_rgb(rgb: np.ndarray, mpp: float, **options: Any) -> tuple[np.ndarray, str, float]:
    """Tissue mask of an RGB image (h, w, 3) uint8 at ``mpp`` µm/px. Returns (mask, mode used, threshold).

    ``options``: the segmentation options of :func:`segment_tissue` (``mode``, ``method``, ``threshold``,
    ``min_saturation``, ``median_um``, ``close_um``, ``min_object_um2``, ``max_hole_um2``,
    ``exclude_background``, ``white_level``, ``black_level``, ``exclude_pen``), with the same defaults.
    """
    from scipy import ndimage as ndi

    o = SimpleNamespace(**_segmentation_options(options))
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    if not mpp or mpp <= 0:
        raise InputError(f"mask resolution must be a positive number of µm/px, got {mpp!r}")
    rgb = rgb.astype(np.uint8, copy=False)
    maxc = rgb.max(axis=2)
    minc = rgb.min(axis=2)
    mode = o.mode
    if mode == "auto":
        mode = "fluorescence" if float(np.median(maxc)) < DARK_BACKGROUND_LEVEL else "brightfield"
    k = _odd(o.median_um / mpp)

    if mode == "brightfield":
        sat = ((maxc.astype(np.int32) - minc) * 255 // np.maximum(maxc, 1)).astype(np.uint8)
        sat[maxc == 0] = 0
        thr = float(o.threshold) if o.method == "threshold" else max(otsu_threshold(sat), float(o.min_saturation))
        mask = median_threshold(sat, thr, k)
        if o.exclude_background:
            mask &= ~((minc >= o.white_level) | (maxc < o.black_level))
        if o.exclude_pen:
            pen = pen_mask(rgb, sat)
            if pen.any():
                pen = ndi.binary_dilation(pen, iterations=max(1, round(16.0 / mpp)))
                mask &= ~pen
    else:
        # Fluorescence: nuclei/cells are points of light; smooth over ~2 nucleus spacings (~30 µm) so a
        # region of scattered cells becomes one blob, then threshold the smoothed brightness.
        # Otsu runs on log intensity: bright nuclear clusters would otherwise form the upper class alone
        # and sparse-cell tissue would fall to the background side.
        sigma = max(15.0 / mpp, 0.5)
        signal = ndi.gaussian_filter(maxc.astype(np.float32), sigma=sigma)
        if o.method == "threshold":
            thr = float(o.threshold)
        else:
            log_scale = 255.0 / np.log(256.0)
            log_signal = np.clip(np.log1p(np.clip(signal, 0, 255)) * log_scale, 0, 255).astype(np.uint8)
            thr = max(float(np.expm1(otsu_threshold(log_signal) / log_scale)), 2.0)
        mask = signal > thr

    mask = close_mask(mask, o.close_um / 2 / mpp)
    px_area = mpp * mpp
    mask = remove_small_objects(mask, o.min_object_um2 / px_area)
    mask = fill_small_holes(mask, o.max_hole_um2 / px_area)
    return mask, mode, thr


def median_threshold(values: np.ndarray, thr: float, size: int) -> np.ndarray:
    """``median_filter(values, size) > thr`` computed as a majority vote of ``values > thr``.

    The median of the ``size x size`` window exceeds ``thr`` exactly when more than half of the window
    does, so a box sum of the thresholded image gives the same mask several times faster than a median
    filter (both reflect at the border).
    """
    from scipy import ndimage as ndi

    above = np.asarray(values) > thr
    if size <= 1:
        return above
    return ndi.uniform_filter(above.astype(np.float32), size=size, mode="reflect") > 0.5


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values: pixels ``> t`` form the upper class. Vectorised on the histogram."""
    hist = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    p = hist / total
    omega = np.cumsum(p)  # weight of class <= t
    mu = np.cumsum(p * np.arange(256))
    mu_t = mu[-1]
    denom = omega * (1 - omega)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(denom > 0, (mu_t * omega - mu) ** 2 / denom, 0.0)
    return float(np.argmax(between))


def pen_mask(rgb: np.ndarray, sat: np.ndarray | None = None) -> np.ndarray:
    """Pixels of blue, green or black marker ink (rules on HSV hue/saturation/value)."""
    hsv = np.asarray(Image.fromarray(rgb, "RGB").convert("HSV"))
    hue = hsv[..., 0].astype(np.float32) * (360.0 / 255.0)
    s = hsv[..., 1] if sat is None else sat
    v = hsv[..., 2]
    pen = np.zeros(rgb.shape[:2], bool)
    for lo, hi in _PEN_HUES.values():
        pen |= (hue >= lo) & (hue < hi) & (s > 60) & (v > 40)
    # black ink: dark and grey (dense haematoxylin is as dark but strongly saturated); pure 0 is off-scan
    pen |= (v < 60) & (v > 0) & (s < 90)
    return pen


def close_mask(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Morphological closing with a disk of ``radius_px``, without shrinking tissue at the image border."""
    from scipy import ndimage as ndi

    r = int(round(radius_px))
    if r < 1 or not mask.any():
        return mask
    disk = _disk(r)
    dil = ndi.binary_dilation(mask, structure=disk, border_value=0)
    return ndi.binary_erosion(dil, structure=disk, border_value=1)


def remove_small_objects(mask: np.ndarray, min_area_px: float) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_area_px`` pixels."""
    from scipy import ndimage as ndi

    if min_area_px <= 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_area_px
    keep[0] = False
    return keep[labels]


def fill_small_holes(mask: np.ndarray, max_area_px: float) -> np.ndarray:
    """Fill 4-connected background holes (not touching the border) smaller than ``max_area_px`` pixels."""
    from scipy import ndimage as ndi

    if max_area_px <= 0 or not mask.any():
        return mask
    holes = ndi.binary_fill_holes(mask) & ~mask
    if not holes.any():
        return mask
    labels, n = ndi.label(holes)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    fill = areas < max_area_px
    fill[0] = False
    return mask | fill[labels]


def _disk(r: int) -> np.ndarray:
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r + r  # slightly rounder than <= r*r at small radii


def _odd(size: float) -> int:
    k = max(1, int(round(size)))
    return k if k % 2 == 1 else k + 1


def _save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
