"""Plain images (PNG, JPEG, single-image TIFF) read whole with Pillow, or tifffile for TIFFs Pillow cannot
decode (float or planar data), as 8-bit RGB on white, with their resolution tags."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsigraph.errors import InputError

#: Suffixes of plain image files (the others in a slide folder are whole-slide formats).
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class PlainImageError(Exception):
    """No plain-image reader could decode the file; ``reasons`` holds each reader's error."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def read_plain_image(path: Path) -> tuple[Image.Image, dict[str, Any]]:
    """Load a plain image as RGB (on white if it has alpha) plus its resolution properties.

    Raises:
        PlainImageError: no reader could decode it (with each reader's reason).
        InputError: the image is decodable but unusable (too large, odd shape).
    """
    import warnings

    errors = []
    try:
        with warnings.catch_warnings():  # Pillow warns about corrupt EXIF etc.; the error below says it all
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                props = _pil_resolution_props(im)
                rgb = _pil_to_rgb(im)
        return rgb, props
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: the image is too large to load as a plain image ({e}); convert it to a "
                         "pyramidal TIFF (e.g. with `vips tiffsave --tile --pyramid`)") from e
    except Exception as e:  # noqa: BLE001 - try the next reader
        errors.append(f"Pillow: {e}")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                arr = page.asarray()
                props = _tifffile_resolution_props(page)
            return Image.fromarray(_array_to_rgb8(arr, path), "RGB"), props
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            errors.append(f"tifffile: {e}")
    raise PlainImageError(errors)


def _pil_to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_array_to_rgb8(np.asarray(im), Path(getattr(im, "filename", "") or "image")), "RGB")
    return im.convert("RGB")


def _array_to_rgb8(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) of any numeric dtype -> (H, W, 3) uint8 (higher depths min-max scaled)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):  # planar (C, H, W)
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"{path}: unsupported image shape {arr.shape}; expected a 2-D grey or RGB(A) image")
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float64) / (np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0)
        arr = arr[..., :3]
    else:
        alpha = None
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if hi <= lo:
            arr = np.zeros(a.shape, np.uint8)
        else:
            arr = np.clip((a - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
    if alpha is not None:
        arr = (arr * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def _pil_resolution_props(im: Image.Image) -> dict[str, Any]:
    props: dict[str, Any] = {"image.format": im.format, "image.mode": im.mode}
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 282 in tags:  # TIFF XResolution, YResolution, ResolutionUnit
        unit = {1: None, 2: "inch", 3: "centimeter"}.get(int(tags.get(296, 2)))
        props.update({"tiff.XResolution": float(tags[282]), "tiff.YResolution": float(tags.get(283, tags[282])),
                      "tiff.ResolutionUnit": unit})
    elif "dpi" in im.info:
        dx, dy = im.info["dpi"][:2]
        props.update({"tiff.XResolution": float(dx), "tiff.YResolution": float(dy), "tiff.ResolutionUnit": "inch"})
    return props


def _tifffile_resolution_props(page: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"image.format": "TIFF"}
    tags = page.tags
    if "XResolution" in tags:
        def ratio(v: Any) -> float:
            return v[0] / v[1] if isinstance(v, tuple) and v[1] else float(v)
        unit_tag = tags.get("ResolutionUnit")
        unit = {1: None, 2: "inch", 3: "centimeter"}.get(int(unit_tag.value) if unit_tag is not None else 2)
        x = ratio(tags["XResolution"].value)
        y = ratio(tags["YResolution"].value) if "YResolution" in tags else x
        props.update({"tiff.XResolution": x, "tiff.YResolution": y, "tiff.ResolutionUnit": unit})
    return props
