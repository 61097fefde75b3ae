"""Patch-encoder registry: names -> :class:`EncoderSpec` (architecture, input geometry, normalisation).

A spec says how to build an encoder's architecture *without weights* (never downloading anything) and how
its published checkpoint expects patches to be prepared. Presets live in :mod:`wsigraph.features.presets`;
any timm model is available as ``"timm:<model_name>"`` (see :func:`get_spec`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch
from torch import nn

from wsigraph.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISIONS = ("fp32", "bf16", "fp16")
TIMM_PREFIX = "timm:"

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one patch encoder and feed it.

    Attributes:
        name: registry name (written to the feature files' ``encoder`` attribute).
        build: returns the architecture, randomly initialised, with no download. Its ``state_dict`` keys
            are those of the published checkpoint (after ``convert_state_dict``).
        dim: output dimension D of one patch embedding.
        input_size: side in pixels of the square image the network sees.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        resize_size: when set, patches are read at this side and centre-cropped to ``input_size``
            (e.g. Prov-GigaPath: 256 -> 224); default: read directly at ``input_size``.
        interpolation: ``"bicubic"`` or ``"bilinear"``, used when a patch must be resized in the transform.
        embed: ``embed(model, x) -> (B, D)`` on normalised input; default ``model(x)``.
        precision: preferred autocast dtype on GPU (``"bf16"``, ``"fp16"`` or ``"fp32"``).
        channels_last: run in NHWC memory layout (faster convolutions for CNNs on CPU and GPU).
        ignore_keys: prefixes of checkpoint keys deliberately dropped by the architecture (a truncated
            network's removed layers, a classifier head).
        convert_state_dict: maps a checkpoint from another layout onto ``build()``'s keys.
        license, reference, weights_hint: shown by ``wsigraph extract --list-encoders`` and in errors.
    """

    name: str
    build: Callable[[], nn.Module]
    dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int | None = None
    interpolation: str = "bicubic"
    embed: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    precision: str = "bf16"
    channels_last: bool = False
    ignore_keys: tuple[str, ...] = ()
    convert_state_dict: Callable[[StateDict], StateDict] | None = None
    description: str = ""
    license: str = ""
    reference: str = ""
    weights_hint: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def read_size(self) -> int:
        """Side in pixels at which patches are read from the slide (before any centre crop)."""
        return self.resize_size or self.input_size


ENCODERS: dict[str, EncoderSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add ``spec`` to :data:`ENCODERS` (under its name and aliases); returns it."""
    if spec.precision not in PRECISIONS:
        raise ConfigError(f"encoder {spec.name!r}: precision must be one of {PRECISIONS}, got {spec.precision!r}")
    ENCODERS[spec.name] = spec
    for alias in (spec.name, *spec.aliases):
        _ALIASES[_key(alias)] = spec.name
    return spec


def encoder_names() -> list[str]:
    """Registered names (without aliases), plus the ``timm:<model_name>`` form."""
    _ensure_presets()
    return sorted(ENCODERS) + [f"{TIMM_PREFIX}<model_name>"]


def get_spec(name: str, *, input_size: int | None = None,
             model_kwargs: Mapping[str, Any] | None = None) -> EncoderSpec:
    """The spec registered as ``name`` (case-insensitive, ``-``/``_`` alike), or one for ``timm:<model>``.

    Args:
        input_size: override the input side (CNNs, or ViTs built with ``dynamic_img_size``); the features
            then differ from the published setup.
        model_kwargs: extra keyword arguments for ``timm.create_model`` (``timm:`` encoders only).

    Raises:
        ConfigError: unknown name (the message lists the registered ones), or an unknown timm model.
    """
    _ensure_presets()
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"encoder name must be a non-empty string, got {name!r}")
    if name.strip().lower().startswith(TIMM_PREFIX):
        spec = timm_spec(name.strip()[len(TIMM_PREFIX):], model_kwargs=model_kwargs)
    else:
        canonical = _ALIASES.get(_key(name))
        if canonical is None:
            raise ConfigError(
                f"unknown encoder {name!r}; registered encoders: {', '.join(sorted(ENCODERS))}, "
                f"or '{TIMM_PREFIX}<model_name>' for any timm model")
        if model_kwargs:
            raise ConfigError(f"encoder {canonical!r}: model_kwargs are only accepted for '{TIMM_PREFIX}' encoders")
        spec = ENCODERS[canonical]
    if input_size is not None:
        if int(input_size) < 16:
            raise ConfigError(f"encoder {spec.name!r}: input_size must be at least 16 px, got {input_size}")
        spec = replace(spec, input_size=int(input_size), resize_size=None)
    return spec


def timm_spec(model_name: str, *, model_kwargs: Mapping[str, Any] | None = None) -> EncoderSpec:
    """Spec for any timm architecture, built with ``pretrained=False, num_classes=0`` (pooled features).

    Input size, mean and std come from the model's pretrained config; patches are resized to the input
    size (no centre crop, as CLAM and TRIDENT do for patch encoders).
    """
    import timm

    if not model_name or not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name}*")[:10] if model_name else []
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown timm model {model_name!r} in encoder '{TIMM_PREFIX}{model_name}'{hint}")
    kwargs = dict(model_kwargs or {})
    for banned in ("pretrained", "pretrained_cfg_overlay", "checkpoint_path"):
        if banned in kwargs:
            raise ConfigError(f"encoder '{TIMM_PREFIX}{model_name}': model_kwargs may not set {banned!r}; "
                              "give weights as a local file with --weights")
    kwargs.setdefault("num_classes", 0)

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False, **kwargs)

    try:
        with torch.device("meta"):
            probe = build()
    except Exception as e:  # noqa: BLE001 - bad kwargs for this architecture
        raise ConfigError(f"encoder '{TIMM_PREFIX}{model_name}': cannot build with model_kwargs {kwargs}: {e}") from e
    cfg = dict(getattr(probe, "pretrained_cfg", None) or {})
    size = int(kwargs.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1])
    dim = _probe_dim(probe, size)
    classifier = cfg.get("classifier")
    ignore = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else (classifier or ())))
    return EncoderSpec(
        name=f"{TIMM_PREFIX}{model_name}", build=build, dim=dim, input_size=size,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        interpolation=cfg["interpolation"] if cfg.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
        precision="bf16", channels_last=not hasattr(probe, "patch_embed"), ignore_keys=ignore,
        description=f"timm architecture {model_name}",
        license=str(cfg.get("license", "")), weights_hint="a timm/torchvision state dict of this architecture",
    )


def _probe_dim(model: nn.Module, size: int) -> int:
    """Output width of ``model`` on a (1, 3, size, size) input, computed on the meta device."""
    try:
        with torch.no_grad():
            out = model(torch.empty(1, 3, size, size, device="meta"))
        return int(out.shape[-1])
    except Exception:  # noqa: BLE001 - some ops have no meta kernel; fall back to the declared width
        return int(getattr(model, "num_features"))


_PRESETS_LOADED = False


def _ensure_presets() -> None:
    global _PRESETS_LOADED
    if not _PRESETS_LOADED:
        _PRESETS_LOADED = True
        from wsigraph.features import presets  # noqa: F401  (registers on import)
