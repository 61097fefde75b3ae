"""Batched patch-feature extraction for one slide (:func:`extract_features`).

Read the slide's coords file, read its patches with DataLoader workers, embed them in batches under
``torch.inference_mode`` (bf16 autocast on GPU, fp32 on CPU), and write ``<slide_id>.h5`` atomically with
the coords, the features and the attributes of the feature-file layout. Cohorts: :mod:`wsigraph.pipeline.extract`.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from wsigraph.errors import InputError, MissingFileError, WsigraphError
from wsigraph.features.dataset import PatchDataset, make_loader
from wsigraph.features.encoders import PatchEncoder
from wsigraph.pipeline.provenance import PROVENANCE_ATTR
from wsigraph.utils.device import resolve_device

log = logging.getLogger("wsigraph")

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
FEATURE_DTYPES = ("float32", "float16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------------------
# devices, precision, threads
# ----------------------------------------------------------------------------------------------------


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_num_workers(device: str | torch.device = "auto") -> int:
    """Reader processes worth starting: on a GPU, all cores but one (at most 16: on an H200 the pipeline is
    bound by reading, and 4 / 8 / 12 readers gave 3.3x / 4.4x / 5.4x one process's rate, see
    ``benchmarks/RESULTS.md``); on the CPU, where the encoder itself needs the cores, one per 8 cores and at
    least one (reading a patch costs a few % of embedding it, and one reader overlaps it with the encoder)."""
    cpus = available_cpus()
    if resolve_device(device).type == "cuda":
        return max(1, min(16, cpus - 1))
    return min(4, max(1, cpus // 8))


def amp_name(dtype: torch.dtype | None) -> str:
    """``"fp32"`` (no autocast), ``"bf16"`` or ``"fp16"``: how :func:`resolve_amp`'s answer is recorded."""
    return next((k for k, v in _AMP_DTYPES.items() if v == dtype), "fp32")


def resolve_amp(amp: str, device: torch.device, encoder: PatchEncoder | None = None) -> torch.dtype | None:
    """Autocast dtype: ``"auto"`` = the encoder's precision (bf16 by default) on CUDA, none on CPU."""
    if amp not in AMP_CHOICES:
        raise InputError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return None
        amp = encoder.precision if encoder is not None else "bf16"
    return _AMP_DTYPES.get(amp)


# ----------------------------------------------------------------------------------------------------
# one slide
# ----------------------------------------------------------------------------------------------------


@dataclass
class ExtractResult:
    """What one slide's extraction did: patches embedded, wall time, throughput and the file written."""

    slide_id: str
    path: Path
    n_patches: int
    seconds: float

    @property
    def patches_per_s(self) -> float:
        return self.n_patches / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "n_patches": self.n_patches, "seconds": round(self.seconds, 3),
                "patches_per_s": round(self.patches_per_s, 2)}


def embed_batches(
    encoder: PatchEncoder,
    batches: Iterable[torch.Tensor],
    n: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    out_dtype: torch.dtype = torch.float32,
    progress: Any = None,
) -> np.ndarray:
    """Embed ``n`` patches arriving in uint8 batches; returns ``(n, encoder.dim)`` in ``out_dtype``.

    Batches go to the device with non-blocking copies (from pinned memory when the loader pins), the
    forward runs under ``inference_mode`` (+ autocast), and results land in a preallocated CPU buffer
    (pinned on CUDA, so the device->host copies do not stall the next batch).
    """
    cuda = device.type == "cuda"
    out = torch.empty((n, encoder.dim), dtype=out_dtype, pin_memory=cuda)
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    i = 0
    with torch.inference_mode(), autocast:
        for batch in batches:
            b = int(batch.shape[0])
            if i + b > n:
                raise InputError(f"received more than the {n} expected patches")
            feats = encoder(batch.to(device, non_blocking=cuda))
            out[i:i + b].copy_(feats.to(out_dtype), non_blocking=cuda)
            i += b
            if progress is not None:
                progress.update(b)
    if cuda:
        torch.cuda.synchronize(device)
    if i != n:
        raise InputError(f"received {i} patches, expected {n}")
    return out.numpy()


def _clean_worker_error(e: BaseException) -> BaseException:
    """A DataLoader re-raises a worker's exception with the worker traceback in its message; keep the
    original message (its last line) so that reports stay readable."""
    msg = str(e)
    if "Original Traceback" not in msg:
        return e
    text = msg.strip().splitlines()[-1]
    for prefix in (f"{type(e).__module__}.{type(e).__qualname__}: ", f"{type(e).__name__}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    try:
        return type(e)(text)
    except Exception:  # noqa: BLE001 - exception types with other constructors
        return e


def _read_coords_file(coords_path: Path) -> tuple[np.ndarray, dict[str, Any], int]:
    """``(coords (N, 2) int64, attrs, patch_size_level0)`` of a coords (or feature) file of any supported
    layout, read without embeddings; an empty slide, duplicate coordinates or a step under 1 px are errors."""
    from wsigraph.data.features import read_coords, validate_bag

    bag = read_coords(coords_path)
    validate_bag(bag, where=str(coords_path))
    step = int(round(bag.patch_size_level0))
    if step < 1:
        raise InputError(f"{coords_path}: patch_size_level0 must be a positive number of pixels, got {step}")
    return bag.coords, dict(bag.attrs), step


def extract_features(
    slide_path: str | os.PathLike,
    coords_h5: str | os.PathLike,
    out_h5: str | os.PathLike,
    encoder: PatchEncoder,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "auto",
    amp: str = "auto",
    features_dtype: str = "float32",
    slide_mpp: float | None = None,
    progress: bool = False,
    opener: Callable[..., Any] | None = None,
    provenance: Any = None,
) -> ExtractResult:
    """Embed every patch of one slide and write ``out_h5`` (atomically).

    Args:
        slide_path: the slide file.
        coords_h5: its coordinates (ours, CLAM's ``patches/*.h5`` or TRIDENT's ``*_patches.h5``).
        out_h5: the feature file to write (``<slide_id>.h5``).
        encoder: from :func:`wsigraph.features.build_encoder`; moved to ``device`` here.
        num_workers: reader processes (0 reads in this process).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        amp: ``"auto"`` (encoder precision on GPU, fp32 on CPU), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        features_dtype: ``"float32"`` or ``"float16"`` on disk.
        slide_mpp: level-0 µm/px for slides without metadata (used only where the coords file has no mpp).
        opener: slide opener for the dataset (default ``wsigraph.slide.open_slide``).
        provenance: a :class:`~wsigraph.pipeline.provenance.Provenance` stored with the features (what a
            resumed cohort job compares); the coords file's own record is not copied.

    The file holds ``coords`` (N, 2) int64, ``features`` (N, D) and attributes: the coords file's own
    (``patch_size``, ``patch_level``, ``patch_size_level0``, ``mpp``, ``target_mpp`` ...) plus
    ``encoder``, ``encoder_dim``, ``encoder_input_size``, ``encoder_weights`` (file name),
    ``encoder_weights_sha256`` (none for random-init weights), ``encoder_mpp``
    (µm/px of the pixels the encoder saw) and ``wsigraph_version``.

    Raises:
        MissingFileError / InputError: naming the slide or coords file (unreadable slide or patch, coords
        outside the slide, missing mpp ...).
    """
    from wsigraph import __version__
    from wsigraph.data.features import write_features

    t0 = time.perf_counter()
    slide_path, coords_h5, out_h5 = Path(slide_path), Path(coords_h5), Path(out_h5)
    if features_dtype not in FEATURE_DTYPES:
        raise InputError(f"features_dtype must be one of {FEATURE_DTYPES}, got {features_dtype!r}")
    if not slide_path.exists():
        raise MissingFileError(f"{slide_path}: slide file does not exist")
    coords, attrs, step = _read_coords_file(coords_h5)
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev, encoder)
    opener = opener or _default_opener

    slide = opener(slide_path, slide_mpp)  # open once here: fail fast, check coords and mpp
    try:
        _check_coords_in_slide(coords, step, slide, coords_h5, slide_path)
        attrs = _feature_attrs(attrs, step, slide, coords_h5)
    finally:
        close = getattr(slide, "close", None)
        if close is not None:
            close()

    encoder = encoder.to(dev).eval()
    dataset = PatchDataset(slide_path, coords, step, encoder.read_size, transform=encoder.transform,
                           mpp=slide_mpp, opener=opener)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda")
    out_dtype = torch.float32 if features_dtype == "float32" else torch.float16
    from tqdm.auto import tqdm

    bar = tqdm(total=len(dataset), desc=slide_path.stem, unit="patch", leave=False, disable=not progress,
               dynamic_ncols=True, position=1)
    try:
        # reader workers keep the encoder's torch threads: reading costs ~3% of embedding here, and
        # halving the threads for them measured 63% of the encoder-alone rate on a quiet 2-core CPU (100%+
        # without; benchmarks/RESULTS.md)
        features = embed_batches(encoder, loader, len(dataset), dev, amp_dtype, out_dtype, progress=bar)
    except WsigraphError as e:
        raise _clean_worker_error(e) from None
    except RuntimeError as e:
        if "DataLoader worker" in str(e):
            raise InputError(f"{slide_path}: a patch-reading worker died ({e}); try --num-workers 0 to see "
                             "the error in this process") from e
        raise
    finally:
        bar.close()
        dataset.close()

    attrs.update({
        "encoder": encoder.name,
        "encoder_dim": int(encoder.dim),
        "encoder_input_size": int(encoder.input_size),
        "encoder_weights": encoder.weights_label,
        "encoder_weights_sha256": encoder.identity()["weights_sha256"],  # a name like model.bin says little
        "encoder_random_init_seed": encoder.random_init_seed,
        "encoder_mpp": float(attrs["mpp"]) * float(attrs["patch_size"]) / float(encoder.read_size),
        "slide_file": slide_path.name,
        "wsigraph_version": __version__,
    })
    if provenance is not None:
        attrs[PROVENANCE_ATTR] = provenance.to_json()
    write_features(out_h5, coords, features, attrs=attrs)
    seconds = time.perf_counter() - t0
    result = ExtractResult(slide_id=out_h5.stem, path=out_h5, n_patches=len(dataset), seconds=seconds)
    log.info("%s: %d patches in %.1f s (%.1f patches/s) -> %s", slide_path.name, result.n_patches, seconds,
             result.patches_per_s, out_h5)
    return result


def _default_opener(path: str | os.PathLike, mpp: float | None = None) -> Any:
    from wsigraph.features.dataset import open_slide_default

    return open_slide_default(path, mpp)


def _check_coords_in_slide(coords: np.ndarray, step: int, slide: Any, coords_h5: Path, slide_path: Path) -> None:
    """Every patch must overlap the slide; otherwise the coords belong to another slide."""
    dims = getattr(slide, "dimensions", None)
    if dims is None or coords.shape[0] == 0:
        return
    W, H = (int(v) for v in dims)
    outside = (coords[:, 0] >= W) | (coords[:, 1] >= H) | (coords[:, 0] + step <= 0) | (coords[:, 1] + step <= 0)
    if outside.any():
        k = int(np.argmax(outside))
        raise InputError(f"{coords_h5}: {int(outside.sum())} patch(es) lie outside {slide_path.name} ({W}x{H} px), "
                         f"first at row {k} (x, y) = {tuple(int(v) for v in coords[k])}; are these the coords "
                         "of another slide?")


def _feature_attrs(attrs: dict[str, Any], step: int, slide: Any, coords_h5: Path) -> dict[str, Any]:
    """The coords file's attributes, completed with what the feature layout requires."""
    out = {k: v for k, v in attrs.items()
           if v is not None and not k.startswith("encoder") and k != PROVENANCE_ATTR}
    out["patch_size_level0"] = int(step)
    out.setdefault("patch_size", int(step))
    out.setdefault("patch_level", 0)
    if "mpp" not in out:  # CLAM coords carry no resolution: derive it from the slide
        try:
            level0_mpp = float(slide.mpp)
        except WsigraphError as e:
            raise InputError(f"{coords_h5}: no 'mpp' attribute, and the slide's resolution is unknown ({e}); "
                             "pass the slide's µm/px (--mpp)") from e
        out["mpp"] = level0_mpp * step / float(out["patch_size"])
    return out
