"""Checks of a cohort's feature files before any work, and where the features came from.

:func:`validate_feature_files` reads every feature file a job will use, before the first epoch (train,
bench) or the first slide (evaluate, predict): shapes, feature rows against coordinate rows, NaN/inf,
duplicate coordinates, one feature width, and one source: features of two encoders (or two weights files)
in one cohort are refused, and features of a randomly initialised encoder are refused unless the caller
allows them (they carry no information; they exist for tests and benchmarks).

:class:`FeatureSource` is what a checkpoint records about its training features, so that ``predict`` and
``evaluate`` can refuse features from another encoder, weights or resolution.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from wsigraph.errors import InputError

log = logging.getLogger("wsigraph")

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class FeatureSource:
    """Where one slide's features came from (None where the file does not say, e.g. a ``.pt`` bag).

    Attributes:
        encoder: encoder name (``resnet50_trunc``, ``uni``, ``synthetic`` ...).
        weights: the weights file's name, or ``"random-init"``.
        weights_sha256: SHA-256 of the weights file (files written before it was recorded: None).
        input_size: pixels the encoder saw per patch side.
        encoder_mpp: µm per pixel of what the encoder saw.
        dim: feature width D.
    """

    encoder: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    input_size: int | None = None
    encoder_mpp: float | None = None
    dim: int | None = None

    @property
    def random_init(self) -> bool:
        return self.weights == RANDOM_INIT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "FeatureSource":
        d = dict(d or {})
        return cls(**{k: d.get(k) for k in _FIELDS})

    def differences(self, other: "FeatureSource") -> list[str]:
        """Fields known on both sides that differ (``encoder_mpp`` within 2%), as ``name: self -> other``."""
        out = []
        for k in _FIELDS:
            a, b = getattr(self, k), getattr(other, k)
            if a is None or b is None:
                continue
            same = math.isclose(float(a), float(b), rel_tol=0.02) if k == "encoder_mpp" else a == b
            if not same:
                out.append(f"{k}: {a!r} -> {b!r}")
        return out


_FIELDS = ("encoder", "weights", "weights_sha256", "input_size", "encoder_mpp", "dim")


def _attr(attrs: Mapping[str, Any], key: str) -> Any:
    v = attrs.get(key)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    return v


def source_of(bag: Any) -> FeatureSource:
    """:class:`FeatureSource` of a :class:`~wsigraph.data.features.FeatureBag`."""
    return _source(bag.attrs, bag.dim)


def _source(a: Mapping[str, Any], dim: int | None) -> FeatureSource:
    mpp = _attr(a, "encoder_mpp")
    size = _attr(a, "encoder_input_size")
    return FeatureSource(encoder=_attr(a, "encoder"), weights=_attr(a, "encoder_weights"),
                         weights_sha256=_attr(a, "encoder_weights_sha256"),
                         input_size=None if size is None else int(size),
                         encoder_mpp=None if mpp is None else float(mpp),
                         dim=dim)


def source_of_file(path: str | os.PathLike) -> FeatureSource:
    """:class:`FeatureSource` of a feature file, reading only its attributes and shapes (``.pt``: loaded)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        from wsigraph.data.features import FEATURE_KEYS

        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f.attrs)
                if "coords" in f:
                    attrs = {**dict(f["coords"].attrs), **attrs}
                key = next((k for k in FEATURE_KEYS if k in f), None)
                dim = int(f[key].shape[-1]) if key is not None and len(f[key].shape) >= 2 else None
        except OSError as e:
            raise InputError(f"{path}: cannot be read as HDF5 ({e})") from e
        return _source(attrs, dim)
    from wsigraph.data.features import read_features

    return source_of(read_features(path, validate=False, require_coords=False))


def validate_feature_files(paths: Mapping[str, str | os.PathLike], *, where: str = "cohort",
                           allow_random_features: bool = False, progress: bool = False,
                           require_coords: bool = True) -> FeatureSource:
    """Read and check every slide's feature file; return the cohort's common :class:`FeatureSource`.

    Args:
        paths: slide id -> feature file.
        where: names the cohort in messages (e.g. the manifest).
        allow_random_features: accept features of a randomly initialised encoder (a warning instead).
        require_coords: False accepts files without coordinates (``graph.mode: none``, set-based models).

    Raises:
        InputError: naming the slide and file: an unreadable or inconsistent file, a second feature width,
            a second encoder, weights file (name or SHA-256) or encoder µm/px (beyond 2%), or random-init
            features not allowed.
    """
    from tqdm.auto import tqdm

    from wsigraph.data.features import read_features

    if not paths:
        raise InputError(f"{where}: no slides")
    first: tuple[str, Path, FeatureSource] | None = None
    n_random = 0
    for sid, path in tqdm(paths.items(), desc="checking features", unit="slide", disable=not progress,
                          dynamic_ncols=True, leave=False):
        path = Path(path)
        try:
            bag = read_features(path, require_coords=require_coords)  # shapes, NaN/inf, duplicate coordinates
        except InputError as e:
            raise InputError(f"{where}: slide {sid!r}: {e}") from None
        src = source_of(bag)
        n_random += src.random_init
        if first is None:
            first = (sid, path, src)
            continue
        sid0, path0, src0 = first
        if src.dim != src0.dim:
            raise InputError(f"{where}: slide {sid!r} ({path}) has feature dimension {src.dim}, but slide {sid0!r} "
                             f"({path0}) has {src0.dim}; all slides must come from the same encoder")
        diffs = [d for d in src0.differences(src) if not d.startswith("dim")]
        if diffs:
            raise InputError(f"{where}: slides {sid0!r} ({path0}) and {sid!r} ({path}) have features of different "
                             f"encoders or resolutions ({'; '.join(diffs)}); a cohort must be embedded by one "
                             "encoder, with the same weights, at one µm/px")
    assert first is not None
    if n_random:
        msg = (f"{where}: the features of {n_random} of {len(paths)} slide(s) come from a randomly initialised "
               f"encoder (encoder_weights 'random-init', e.g. {first[1]}): they carry no information about the "
               "tissue")
        if not allow_random_features:
            raise InputError(msg + "; extract them with real weights, or, for tests and benchmarks, pass "
                                   "--allow-random-features (train, bench) or set data.allow_random_features: "
                                   "true (bench: a cohort's allow_random_features)")
        log.warning("%s (allowed by allow_random_features)", msg)
    return first[2]


def check_against_checkpoint(src: FeatureSource, trained: FeatureSource, *, where: str, checkpoint: str,
                             force: bool = False) -> None:
    """Refuse features whose source differs from the checkpoint's training features (unless ``force``)."""
    diffs = trained.differences(src)
    if not diffs:
        return
    msg = (f"{where}: the features differ from those {checkpoint} was trained on ({'; '.join(diffs)}, "
           "checkpoint -> these features)")
    if not force:
        raise InputError(msg + "; extract them with the same encoder, weights and resolution, or pass "
                               "--allow-feature-mismatch (allow_feature_mismatch=True) to go on anyway")
    log.warning("%s (allowed)", msg)


__all__ = ["FeatureSource", "RANDOM_INIT", "check_against_checkpoint", "source_of", "source_of_file",
           "validate_feature_files"]
