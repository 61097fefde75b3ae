"""The one rule that turns a device name into a ``torch.device`` (extraction, training, inference)."""
from __future__ import annotations

import os

import torch

from wsigraph.errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / None: CUDA when available (GPU ``LOCAL_RANK`` under torchrun), else CPU; otherwise the
    named device, checked: an unknown name or a CUDA device on a machine without CUDA is an
    :class:`~wsigraph.errors.InputError` naming it."""
    if isinstance(device, torch.device):
        return device
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0") or 0)
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


__all__ = ["resolve_device"]
