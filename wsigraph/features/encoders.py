"""Patch encoders: a registered architecture + local weights, wrapped with its own input preparation.

The preparation is split in two so that the cheap part runs in data-loader workers and the arithmetic
runs on the device:

* ``encoder.transform(img)``: PIL RGB patch -> ``(3, S, S)`` uint8 tensor at ``encoder.read_size``
  (resized only if the reader did not already deliver that size). 4x smaller to move than float32.
* ``encoder(x)``: for a uint8 batch ``(B, 3, S, S)`` it centre-crops to ``input_size`` (when the spec
  reads larger), scales to [0, 1] and normalises with the spec's mean/std, then embeds -> ``(B, dim)``.
  A float batch is taken as already normalised.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from wsigraph.errors import InputError
from wsigraph.features.registry import EncoderSpec, encoder_names, get_spec
from wsigraph.features.weights import load_weights

log = logging.getLogger("wsigraph")


class PilToUint8:
    """PIL RGB image -> ``(3, size, size)`` uint8 tensor, resizing only when the image has another size.

    A small class rather than a closure so that it pickles into spawned data-loader workers.
    """

    def __init__(self, size: int, interpolation: str = "bicubic") -> None:
        self.size = int(size)
        self.interpolation = interpolation

    def __call__(self, img) -> torch.Tensor:
        from PIL import Image

        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (self.size, self.size):
            resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
            img = img.resize((self.size, self.size), resample=resample)
        arr = np.asarray(img, dtype=np.uint8)  # (S, S, 3)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"PilToUint8(size={self.size}, interpolation={self.interpolation!r})"


class PatchEncoder(nn.Module):
    """A patch encoder ready for inference: ``forward((B, 3, S, S) uint8) -> (B, dim) float``.

    Attributes:
        name: registry name (``"resnet50_trunc"``, ``"uni"``, ``"timm:resnet18"`` ...).
        dim: embedding width D.
        input_size: side the network sees; ``read_size``: side patches are read at (>= input_size).
        transform: PIL -> uint8 tensor at ``read_size`` (see the module docstring).
        precision: preferred autocast dtype on GPU (``"bf16"``, ``"fp16"``, ``"fp32"``).
        weights: the weights file loaded, or None when randomly initialised (tests only).
        spec: the :class:`EncoderSpec` it was built from.
    """

    def __init__(self, spec: EncoderSpec, backbone: nn.Module, weights: Path | None = None,
                 random_init_seed: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.name = spec.name
        self.dim = spec.dim
        self.input_size = spec.input_size
        self.read_size = spec.read_size
        self.precision = spec.precision
        self.weights = weights
        self.random_init_seed = None if weights is not None else random_init_seed
        self.transform = PilToUint8(self.read_size, spec.interpolation)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def random_init(self) -> bool:
        return self.weights is None

    @property
    def weights_label(self) -> str:
        """What the feature files record as ``encoder_weights``: the file name, or ``"random-init"``."""
        return "random-init" if self.weights is None else self.weights.name

    def identity(self) -> dict[str, Any]:
        """What makes this encoder's features what they are, for provenance records: name, width, input
        and read sizes, and the SHA-256 of the weights file (``"random-init"`` and the seed without one)."""
        from wsigraph.pipeline.provenance import file_sha256

        return {"name": self.name, "dim": int(self.dim), "input_size": int(self.input_size),
                "read_size": int(self.read_size),
                "weights_sha256": None if self.weights is None else file_sha256(self.weights),
                "random_init_seed": self.random_init_seed}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` -> normalised float ``(B, 3, input_size, input_size)``; floats pass through."""
        if x.dtype != torch.uint8:
            return x
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"encoder {self.name!r}: expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.input_size
        if (h, w) != (s, s):
            if h < s or w < s:
                raise InputError(f"encoder {self.name!r}: patches of {h}x{w} px are smaller than the input "
                                 f"size {s}; read them at {self.read_size} px (encoder.transform does)")
            top, left = (h - s) // 2, (w - s) // 2
            x = x[:, :, top:top + s, left:left + s]
        x = x.to(self.mean.dtype).div_(255.0)
        x = (x - self.mean) / self.std
        if self.spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        if self.spec.embed is not None:
            out = self.spec.embed(self.backbone, x)
        else:
            out = self.backbone(x)
        return out.reshape(out.shape[0], -1)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, dim={self.dim}, input_size={self.input_size}, read_size={self.read_size}, "
                f"weights={self.weights_label!r}")


def build_encoder(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    input_size: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> PatchEncoder:
    """Build a registered encoder with weights from a local file or folder, in eval mode, on ``device``.

    Args:
        name: a registry name (see :func:`wsigraph.features.encoder_names`) or ``"timm:<model_name>"``.
        weights: local ``.safetensors``/``.pth``/``.bin``/``.pt`` file, or a folder holding one. Nothing is
            ever downloaded.
        random_init: build without weights, randomly initialised. For tests and benchmarks only: the
            features mean nothing. Without ``weights`` this must be set explicitly.
        seed: the random initialisation's seed (so two runs, or a resumed run, draw the same encoder; the
            global RNG state is left as it was).
        input_size: override the input side (CNNs; ViTs built with ``dynamic_img_size``).
        model_kwargs: extra ``timm.create_model`` arguments for ``timm:`` encoders.

    Raises:
        ConfigError: unknown encoder name (the message lists the registered names).
        InputError: no weights and no ``random_init``; weights and ``random_init`` both given; weights that
            do not fit (the message names the file and the first mismatching keys with both shapes).
        MissingFileError: the weights path does not exist.
    """
    spec = get_spec(name, input_size=input_size, model_kwargs=model_kwargs)
    if weights is not None and random_init:
        raise InputError(f"encoder {spec.name!r}: both weights ({weights}) and random_init were given; choose one")
    if weights is None and not random_init:
        raise InputError(
            f"encoder {spec.name!r} needs weights: give the local path of its checkpoint file or folder "
            f"(weights=PATH, CLI --weights PATH; expected: "
            f"{spec.weights_hint or 'a state dict of this architecture'}). "
            "wsigraph never downloads weights. random_init=True (CLI --random-init) builds it randomly "
            "initialised, for tests only")
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            backbone = spec.build()
        file = None
        log.warning("encoder %s is randomly initialised (random_init): its features are meaningless outside tests",
                    spec.name)
    else:
        backbone, file = _build_with_weights(spec, weights)
    if spec.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    enc = PatchEncoder(spec, backbone, weights=file, random_init_seed=int(seed) if random_init else None)
    enc.eval().requires_grad_(False)
    return enc.to(device)


def _build_with_weights(spec: EncoderSpec, weights: str | os.PathLike) -> tuple[nn.Module, Path]:
    """Build on the meta device and assign the checkpoint's tensors (no random init, one copy in memory).

    Falls back to a normal build when the architecture keeps state that is not in the checkpoint
    (non-persistent buffers), which the meta build cannot materialise.
    """
    with torch.device("meta"):
        model = spec.build()
    file = load_weights(model, weights, ignore_keys=spec.ignore_keys, convert=spec.convert_state_dict,
                        assign=True, what=spec.name, hint=spec.weights_hint)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = spec.build()
        load_weights(model, weights, ignore_keys=spec.ignore_keys, convert=spec.convert_state_dict,
                     what=spec.name, hint=spec.weights_hint)
    return model, file


__all__ = ["PatchEncoder", "PilToUint8", "build_encoder", "encoder_names"]
