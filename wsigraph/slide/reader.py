"""Open whole-slide images and plain images behind one small interface.

``open_slide(path)`` returns a :class:`Slide`. Every format OpenSlide opens (Aperio SVS, generic tiled
TIFF, Hamamatsu NDPI/VMS, MIRAX, Leica SCN, Philips TIFF, Ventana BIF, DICOM WSI, ...) goes through
openslide-python (the ``openslide-bin`` wheel supplies the library, so nothing is needed from the
system). Files OpenSlide does not recognise are tried as plain images (PNG, JPEG, single-image TIFF)
with Pillow and then tifffile, and exposed as a one-level slide.

Resolution (``mpp``, micrometres per level-0 pixel) is looked up in this order:

1. ``mpp=`` given by the caller: always wins (logged when it disagrees with the file by more than 5%).
2. ``openslide.mpp-x`` / ``openslide.mpp-y`` (vendor metadata, or OpenSlide's reading of TIFF tags).
   Accepted even when outside :data:`PLAUSIBLE_MPP` (that is what the file says), with a warning:
   e.g. ``boxes.tiff`` reports 352.78 µm/px (72 dpi tags of a synthetic image).
3. TIFF resolution tags (``tiff.XResolution`` + ``tiff.ResolutionUnit`` centimeter/inch, or the same
   tags of a plain TIFF/PNG read by Pillow): used only when inside :data:`PLAUSIBLE_MPP`; values
   outside it are almost always a software default (72/96/300 dpi) and are ignored.
4. ``default_mpp=`` given by the caller (a fallback for files without any).

Without any of these, ``slide.mpp`` raises :class:`~wsigraph.errors.InputError` naming the file and
telling the user to pass ``mpp=`` (``--mpp`` on the command line).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from wsigraph.errors import InputError, MissingFileError
from wsigraph.slide.plain_image import PLAIN_SUFFIXES, PlainImageError, read_plain_image

log = logging.getLogger("wsigraph")

#: Range of µm/px that a microscope image can plausibly have (0.5x overview ~ 20 µm/px, 100x oil ~ 0.06).
PLAUSIBLE_MPP = (0.02, 20.0)
#: Relative tolerance when matching a level's resolution to a target (a 0.499 µm/px level serves 0.5).
MPP_TOLERANCE = 0.02

#: File suffixes a folder scan treats as slides (OpenSlide formats and plain images).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
                  ".dcm", ".png", ".jpg", ".jpeg")
#: Whole-slide formats wsigraph does not open but whose file names users leave on slide ids (manifests).
OTHER_SLIDE_SUFFIXES = (".czi", ".isyntax", ".qptiff")

#: Above this many pixels a whole level is downscaled tile by tile instead of read at once.
_MAX_LEVEL_READ_PIXELS = 64_000_000

_UNIT_UM = {"centimeter": 1e4, "cm": 1e4, "inch": 25400.0, "in": 25400.0, "millimeter": 1e3, "mm": 1e3}


def _import_openslide():
    try:
        import openslide
    except (ImportError, OSError) as e:  # OSError: shared library not found
        from wsigraph.errors import MissingDependencyError

        raise MissingDependencyError(
            f"reading whole-slide images needs openslide-python and openslide-bin ({e}); "
            "install them with `pip install openslide-python openslide-bin`") from e
    return openslide


class Slide:
    """A whole-slide image (or a plain image seen as a one-level slide).

    Attributes:
        path: the file.
        name: slide id (the file name without its extension).
        backend: ``"openslide"`` or ``"image"``.
        dimensions: (W, H) of level 0 in pixels.
        level_count, level_dimensions, level_downsamples: the pyramid, level 0 first.
        properties: the file's metadata (OpenSlide properties, or TIFF/PNG info of a plain image).
        vendor: OpenSlide's format name (``aperio``, ``hamamatsu``, ``generic-tiff`` ...) or ``"image"``.
        mpp_source: where :attr:`mpp` comes from (``"override"``, ``"openslide.mpp-x"``,
            ``"tiff resolution tags"``, ``"default"``) or None when unknown.

    A ``Slide`` pickles as (path, mpp settings) and reopens the file in the receiving process, so it can
    be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None, default_mpp: float | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(f"{self.path}: slide file does not exist")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a slide file (for DICOM give one .dcm file of the slide)")
        self._mpp_override = _check_mpp_arg(mpp, "mpp", self.path)
        self._default_mpp = _check_mpp_arg(default_mpp, "default_mpp", self.path)
        self._warned: set[float] = set()
        self._osr = None
        self._image: Image.Image | None = None
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        openslide = _import_openslide()
        try:
            fmt = openslide.OpenSlide.detect_format(str(self.path))
        except Exception:  # noqa: BLE001 - detection failure = not a slide
            fmt = None
        if fmt is not None:
            try:
                self._osr = openslide.OpenSlide(str(self.path))
            except Exception as e:  # OpenSlideError, OpenSlideUnsupportedFormatError
                raise InputError(f"{self.path}: OpenSlide recognises the format ({fmt}) but cannot open the file: "
                                 f"{e}. The file may be truncated or corrupt, or use an encoding OpenSlide "
                                 "does not support") from e
            self.backend = "openslide"
            self.vendor = str(self._osr.properties.get("openslide.vendor", fmt))
            self.properties = dict(self._osr.properties)
            self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._osr.level_dimensions)
            self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        else:
            self._image, self.properties = _open_plain(self.path)
            self.backend = "image"
            self.vendor = "image"
            self.level_dimensions = (tuple(int(v) for v in self._image.size),)
            self.level_downsamples = (1.0,)
        self._file_mpp, self._file_mpp_source, self._mpp_note = self._mpp_from_file()
        if self._mpp_override is not None and self._file_mpp is not None:
            if abs(self._mpp_override / self._file_mpp - 1) > 0.05:
                log.info("%s: using mpp=%.4g given by the caller instead of %.4g from the file (%s)", self.path,
                         self._mpp_override, self._file_mpp, self._file_mpp_source)

    def _mpp_from_file(self) -> tuple[float | None, str | None, str]:
        """(mpp, source, note) read from the file's metadata; note explains a rejected value."""
        props = self.properties
        mx, my = _to_float(props.get("openslide.mpp-x")), _to_float(props.get("openslide.mpp-y"))
        if mx and mx > 0:
            mpp = mx if not (my and my > 0) else (mx + my) / 2
            if my and my > 0 and abs(mx / my - 1) > 0.01:
                log.warning("%s: non-square pixels (mpp-x %.4g, mpp-y %.4g); using their mean %.4g",
                            self.path, mx, my, mpp)
            if not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] and self._mpp_override is None:
                log.warning("%s: the file says %.4g µm/px, outside the usual microscope range %s; it is used as "
                            "given (pass mpp= / --mpp to override)", self.path, mpp, PLAUSIBLE_MPP)
            return float(mpp), "openslide.mpp-x", ""
        tag_mpp = _mpp_from_resolution(props.get("tiff.XResolution"), props.get("tiff.YResolution"),
                                       props.get("tiff.ResolutionUnit"))
        if tag_mpp is not None:
            if PLAUSIBLE_MPP[0] <= tag_mpp <= PLAUSIBLE_MPP[1]:
                return tag_mpp, "tiff resolution tags", ""
            return None, None, (f" (its resolution tags say {tag_mpp:.4g} µm/px, which is a software default, "
                                "not a microscope resolution)")
        return None, None, ""

    # ------------------------------------------------------------------ metadata
    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def has_mpp(self) -> bool:
        return self.mpp_source is not None

    @property
    def mpp_source(self) -> str | None:
        if self._mpp_override is not None:
            return "override"
        if self._file_mpp is not None:
            return self._file_mpp_source
        if self._default_mpp is not None:
            return "default"
        return None

    @property
    def mpp(self) -> float:
        """µm per level-0 pixel. Raises InputError naming the file when unknown and not overridden."""
        for v in (self._mpp_override, self._file_mpp, self._default_mpp):
            if v is not None:
                return float(v)
        raise InputError(f"{self.path}: the file does not record its resolution (microns per pixel){self._mpp_note}; "
                         "pass it explicitly: mpp=... in Python, --mpp on the command line "
                         "(or --mpp-csv with one value per slide)")

    @property
    def objective_power(self) -> float | None:
        """Scanner objective power (e.g. 20.0, 40.0) as the file records it, else None."""
        for key in ("openslide.objective-power", "aperio.AppMag", "hamamatsu.SourceLens"):
            v = _to_float(self.properties.get(key))
            if v and v > 0:
                return float(v)
        return None

    @property
    def magnification(self) -> float | None:
        """Objective power if recorded, else an estimate 10 / mpp (None when mpp is unknown too)."""
        power = self.objective_power
        if power is not None:
            return power
        return None if not self.has_mpp else mpp_to_magnification(self.mpp)

    def level_mpp(self, level: int) -> float:
        """µm/px at ``level`` (level-0 mpp times the level's downsample)."""
        self._check_level(level)
        return self.mpp * self.level_downsamples[level]

    def best_level_for_downsample(self, downsample: float, tol: float = MPP_TOLERANCE) -> int:
        """Coarsest level whose downsample is at most ``downsample`` (within ``tol``); level 0 if none is."""
        ds = np.asarray(self.level_downsamples)
        ok = np.nonzero(ds <= downsample * (1 + tol))[0]
        return int(ok[np.argmax(ds[ok])]) if ok.size else 0

    def best_level_for_mpp(self, target_mpp: float, tol: float = MPP_TOLERANCE) -> tuple[int, float]:
        """Level to read for pixels of ``target_mpp`` µm/px, and the resize factor to apply after reading.

        The level is the lowest-resolution one that still has at least the target resolution (its mpp is
        at most ``target_mpp``, within ``tol``); ``scale = level_mpp / target_mpp`` (<= 1 + tol: shrink by
        that factor). When even level 0 is coarser than the target, level 0 is returned with scale > 1
        (an upsampling; logged once).
        """
        if not (isinstance(target_mpp, (int, float)) and math.isfinite(target_mpp) and target_mpp > 0):
            raise InputError(f"{self.path}: target mpp must be a positive number, got {target_mpp!r}")
        level = self.best_level_for_downsample(target_mpp / self.mpp, tol)
        scale = self.level_mpp(level) / target_mpp
        if scale > 1 + tol and target_mpp not in self._warned:
            self._warned.add(target_mpp)
            log.warning("%s: level 0 is %.4g µm/px, coarser than the %.4g µm/px asked for; patches will be "
                        "upsampled %.2fx", self.path, self.mpp, target_mpp, scale)
        return level, float(scale)

    def info(self) -> dict[str, Any]:
        """A plain summary (for ``wsigraph slide-info`` and logs); never raises on a missing mpp."""
        mpp = self.mpp if self.has_mpp else None
        return {
            "path": str(self.path),
            "slide_id": self.name,
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 6) for d in self.level_downsamples],
            "level_mpp": None if mpp is None else [round(mpp * d, 6) for d in self.level_downsamples],
            "mpp": mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "magnification": self.magnification,
        }

    # ------------------------------------------------------------------ pixels
    def read_region(self, xy_level0: Sequence[int], level: int, size: Sequence[int]) -> Image.Image:
        """RGB pixels of a region, transparent and out-of-slide pixels composited on white.

        Args:
            xy_level0: (x, y) top-left in level-0 pixels.
            level: pyramid level to read.
            size: (w, h) in pixels of ``level``.
        """
        self._check_level(level)
        x, y = (int(v) for v in xy_level0)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {(w, h)}")
        if self._osr is not None:
            try:
                rgba = self._osr.read_region((x, y), level, (w, h))  # OpenSlide handles are thread-safe
            except Exception as e:  # OpenSlideError: corrupt tile data
                raise InputError(f"{self.path}: cannot read the region at {(x, y)} level {level} size {(w, h)}: "
                                 f"{e}. The slide file is probably corrupt") from e
            return _rgba_on_white(rgba)
        return self._crop_image(x, y, w, h)

    def read_patch(self, xy_level0: Sequence[int], size_level0: int | Sequence[int],
                   out_size: int | Sequence[int]) -> Image.Image:
        """A patch covering ``size_level0`` level-0 pixels from ``xy_level0``, returned at ``out_size``.

        Reads the lowest-resolution level that still has at least ``out_size`` pixels over the footprint
        and resizes with Pillow (antialiased bilinear); no resize when the level matches exactly.
        """
        sw, sh = _pair(size_level0)
        ow, oh = _pair(out_size)
        level = self.best_level_for_downsample(min(sw / ow, sh / oh))
        ds = self.level_downsamples[level]
        rw, rh = max(1, int(round(sw / ds))), max(1, int(round(sh / ds)))
        img = self.read_region(xy_level0, level, (rw, rh))
        if (rw, rh) != (ow, oh):
            img = img.resize((ow, oh), Image.Resampling.BILINEAR)
        return img

    def thumbnail(self, max_size: int | Sequence[int] = 1024) -> Image.Image:
        """Whole-slide RGB image fitting in ``max_size`` (an int = longest side), aspect ratio kept."""
        mw, mh = _pair(max_size)
        W, H = self.dimensions
        f = min(mw / W, mh / H, 1.0)
        tw, th = max(1, int(round(W * f))), max(1, int(round(H * f)))
        return self.get_image_at_size((tw, th))

    def get_image_at_size(self, size: Sequence[int]) -> Image.Image:
        """The whole slide resized to exactly ``size`` = (w, h), read from the best level."""
        tw, th = (int(v) for v in size)
        W, H = self.dimensions
        if self._osr is None:
            img = self._rgb_image()
            return img if img.size == (tw, th) else img.resize((tw, th), Image.Resampling.BILINEAR)
        level = self.best_level_for_downsample(min(W / tw, H / th))
        lw, lh = self.level_dimensions[level]
        if lw * lh <= _MAX_LEVEL_READ_PIXELS:
            img = self.read_region((0, 0), level, (lw, lh))
            return img if (lw, lh) == (tw, th) else img.resize((tw, th), Image.Resampling.BILINEAR)
        return self._tiled_image_at_size(level, (tw, th))

    def _tiled_image_at_size(self, level: int, size: tuple[int, int], tile: int = 4096) -> Image.Image:
        """Downscale a level too large to hold in memory (a non-pyramidal slide) tile by tile."""
        tw, th = size
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        fx, fy = tw / lw, th / lh
        out = Image.new("RGB", (tw, th), (255, 255, 255))
        for y0 in range(0, lh, tile):  # loop over a few large tiles, not over patches
            for x0 in range(0, lw, tile):
                x1, y1 = min(x0 + tile, lw), min(y0 + tile, lh)
                ox0, oy0 = int(round(x0 * fx)), int(round(y0 * fy))
                ox1, oy1 = int(round(x1 * fx)), int(round(y1 * fy))
                if ox1 <= ox0 or oy1 <= oy0:
                    continue
                region = self.read_region((int(x0 * ds), int(y0 * ds)), level, (x1 - x0, y1 - y0))
                out.paste(region.resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BILINEAR), (ox0, oy0))
        return out

    # ------------------------------------------------------------------ plain images
    def _rgb_image(self) -> Image.Image:
        assert self._image is not None
        return self._image

    def _crop_image(self, x: int, y: int, w: int, h: int) -> Image.Image:
        img = self._rgb_image()
        W, H = img.size
        if x >= 0 and y >= 0 and x + w <= W and y + h <= H:
            return img.crop((x, y, x + w, y + h))
        out = Image.new("RGB", (w, h), (255, 255, 255))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out.paste(img.crop((x0, y0, x1, y1)), (x0 - x, y0 - y))
        return out

    # ------------------------------------------------------------------ lifecycle
    def _check_level(self, level: int) -> None:
        if not 0 <= int(level) < self.level_count:
            raise InputError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
            self._osr = None
        self._image = None

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mpp": self._mpp_override, "default_mpp": self._default_mpp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], mpp=state["mpp"], default_mpp=state["default_mpp"])

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.4g}" if self.has_mpp else "unknown"
        return (f"Slide('{self.path.name}', {self.vendor}, {self.dimensions[0]}x{self.dimensions[1]}, "
                f"levels={self.level_count}, mpp={mpp})")


def open_slide(path: str | os.PathLike, mpp: float | None = None, default_mpp: float | None = None) -> Slide:
    """Open a whole-slide image or plain image; see the module docstring for the mpp rules.

    Args:
        path: the slide file (for a multi-file DICOM slide, any one of its ``.dcm`` files).
        mpp: µm/px of level 0, overriding the file's metadata.
        default_mpp: µm/px to use only when the file records none.

    Raises:
        MissingFileError: the file does not exist.
        InputError: the file is neither a slide OpenSlide opens nor an image Pillow/tifffile reads.
    """
    return Slide(path, mpp=mpp, default_mpp=default_mpp)


def mpp_to_magnification(mpp: float) -> float:
    """Nominal objective power of a resolution: 10 / mpp, snapped to 40/20/10/5/2.5/1.25 within 25%."""
    mag = 10.0 / mpp
    for nominal in (80.0, 60.0, 40.0, 20.0, 10.0, 5.0, 2.5, 1.25):
        if abs(mag / nominal - 1) <= 0.25:
            return nominal
    return float(round(mag, 3))


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, (int, np.integer, float)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _to_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _check_mpp_arg(v: float | None, name: str, path: Path) -> float | None:
    if v is None:
        return None
    f = _to_float(v)
    if f is None or f <= 0:
        raise InputError(f"{path}: {name} must be a positive number of microns per pixel, got {v!r}")
    if not PLAUSIBLE_MPP[0] <= f <= PLAUSIBLE_MPP[1]:
        log.warning("%s: %s=%g µm/px is outside the usual microscope range %s", path, name, f, PLAUSIBLE_MPP)
    return f


def _mpp_from_resolution(xres: Any, yres: Any, unit: Any) -> float | None:
    """µm/px from TIFF-style resolution (pixels per unit) and unit name; None if absent or unitless."""
    x, y = _to_float(xres), _to_float(yres)
    per_unit = _UNIT_UM.get(str(unit).strip().lower()) if unit is not None else None
    if not x or x <= 0 or per_unit is None:
        return None
    res = x if not (y and y > 0) else (x + y) / 2
    return per_unit / res


def _rgba_on_white(img: Image.Image) -> Image.Image:
    """RGB of an OpenSlide RGBA region with transparent pixels on white (alpha is not premultiplied)."""
    if img.mode != "RGBA":
        return img.convert("RGB")
    a = np.asarray(img)
    alpha = a[..., 3]
    if alpha.min() == 255:
        return Image.fromarray(a[..., :3].copy(), "RGB")
    out = Image.new("RGB", img.size, (255, 255, 255))
    out.paste(img, mask=img.getchannel("A"))
    return out


def _open_plain(path: Path) -> tuple[Image.Image, dict[str, Any]]:
    """Read a file OpenSlide does not recognise as a plain image, or explain why it cannot be read."""
    try:
        return read_plain_image(path)
    except PlainImageError as e:
        reasons = "; ".join(e.reasons)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES and suffix not in PLAIN_SUFFIXES:
        raise InputError(f"{path}: not a slide that wsigraph can read: OpenSlide does not recognise this {suffix} "
                         f"file, which usually means it is truncated or corrupt (plain-image readers: {reasons})")
    raise InputError(f"{path}: not a slide or image that wsigraph can read: OpenSlide does not recognise the "
                     f"format and the plain-image readers failed ({reasons}). The file may be truncated, corrupt, "
                     "or of an unsupported type")
