"""Load encoder weights from a local file or folder: safe formats only, strict, with errors that say what differs.

Accepted: ``.safetensors``; ``.pt``/``.pth``/``.bin``/``.ckpt`` read with ``torch.load(weights_only=True)``;
a folder holding one of them (``model.safetensors`` and ``pytorch_model.bin`` are preferred, as in
Hugging Face downloads). Checkpoints wrapped in ``{"state_dict": ...}``/``{"model": ...}``/... are
unwrapped, and prefixes such as ``module.`` (DataParallel), ``model.``, ``backbone.`` or ``_orig_mod.``
(torch.compile) are stripped when that makes the keys match the architecture.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from wsigraph.errors import InputError, MissingFileError

StateDict = dict[str, torch.Tensor]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
PREFERRED_FILES = ("model.safetensors", "pytorch_model.bin")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "student", "module", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "trunk.", "teacher.")
_SHOW = 5


def find_weights_file(path: str | os.PathLike) -> Path:
    """The weights file ``path`` names, or the one file of weights inside the folder ``path``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"{path}: weights file or folder does not exist (weights are never downloaded; "
                               "give the local path of the file you downloaded)")
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise InputError(f"{path}: unsupported weights file type {path.suffix!r} "
                             f"(expected one of {WEIGHT_SUFFIXES})")
        return path
    for name in PREFERRED_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        present = sorted(p.name for p in path.iterdir())[:20]
        raise MissingFileError(f"{path}: no weights file in this folder (looked for {WEIGHT_SUFFIXES}; "
                               f"found {present})")
    raise InputError(f"{path}: several weights files in this folder ({[p.name for p in found]}); "
                     "pass the file itself")


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, Path]:
    """Read the tensors of a weights file (or folder, see :func:`find_weights_file`) on the CPU."""
    file = find_weights_file(path)
    try:
        if file.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(file), device="cpu")
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file, or pickled objects that weights_only refuses
        raise InputError(f"{file}: cannot be read as a weights file ({_short_reason(e)}). wsigraph loads only "
                         "tensors (torch.load with weights_only=True, or safetensors); re-save the state dict "
                         "alone (torch.save(model.state_dict(), path)) from a trusted copy") from e
    return _unwrap(obj, file), file


def _short_reason(e: Exception) -> str:
    """One line: the object weights_only refused, or the first line of the error."""
    import re

    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if m:
        return f"it holds a pickled Python object ({m.group(1)}) that weights_only loading refuses"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:300]


def _unwrap(obj, file: Path) -> StateDict:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise InputError(f"{file}: expected a state dict (a mapping of parameter names to tensors), "
                         f"got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{file}: no tensors found (top-level keys: {sorted(map(str, obj))[:_SHOW]})")
    return tensors


def strip_prefixes(sd: StateDict, target_keys: Iterable[str], prefixes: Iterable[str] = STRIP_PREFIXES) -> StateDict:
    """Strip wrapper prefixes from keys while that makes more of them match ``target_keys``."""
    target = set(target_keys)
    prefixes = tuple(prefixes)

    def hits(d: StateDict) -> int:
        return sum(k in target for k in d)

    best, best_hits = sd, hits(sd)
    improved = True
    while improved:
        improved = False
        for p in prefixes:
            if not any(k.startswith(p) for k in best):
                continue
            cand = {(k[len(p):] if k.startswith(p) else k): v for k, v in best.items()}
            h = hits(cand)
            if h > best_hits:
                best, best_hits, improved = cand, h, True
    return best


def _best_layout(sd: StateDict, expected, convert: Callable[[StateDict], StateDict] | None) -> StateDict:
    """Apply ``convert`` (which may only recognise a layout once a wrapper prefix is gone) and strip prefixes."""
    variants = [sd]
    for p in STRIP_PREFIXES:
        if any(k.startswith(p) for k in sd):
            variants.append({(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()})
    best, best_hits = sd, -1
    for v in variants:
        cand = strip_prefixes(convert(v) if convert is not None else v, expected)
        h = sum(k in expected for k in cand)
        if h > best_hits:
            best, best_hits = cand, h
    return best


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    ignore_keys: Iterable[str] = (),
    convert: Callable[[StateDict], StateDict] | None = None,
    assign: bool = False,
    what: str = "encoder",
    hint: str = "",
) -> Path:
    """Load a local checkpoint into ``model`` strictly; returns the file read.

    Every parameter and buffer of ``model`` must be in the file with the same shape. Checkpoint keys
    starting with one of ``ignore_keys`` (layers the architecture drops) are skipped; any other extra key
    is an error too, since it means the file belongs to another architecture.

    Args:
        convert: maps the checkpoint's names onto the model's (another layout of the same network).
        assign: let the checkpoint's tensors replace the model's (loading into a model built on the
            ``meta`` device without allocating it twice).
        what, hint: name of the encoder and a note on the expected file, for error messages.

    Raises:
        InputError: naming the file and the first missing, unexpected or wrongly shaped keys (with both shapes).
    """
    sd, file = read_state_dict(path)
    expected = model.state_dict(keep_vars=True)
    sd = _best_layout(sd, expected, convert)
    ignore = tuple(ignore_keys)
    ignored = [k for k in sd if k not in expected and ignore and k.startswith(ignore)]
    for k in ignored:
        del sd[k]
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [(k, tuple(sd[k].shape), tuple(expected[k].shape)) for k in expected
             if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            shown = "; ".join(f"{k}: file {a} vs model {b}" for k, a, b in wrong[:_SHOW])
            parts.append(f"{len(wrong)} tensor(s) of the wrong shape ({shown}{' ...' if len(wrong) > _SHOW else ''})")
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the file ({', '.join(missing[:_SHOW])}"
                         f"{' ...' if len(missing) > _SHOW else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) in the file ({', '.join(unexpected[:_SHOW])}"
                         f"{' ...' if len(unexpected) > _SHOW else ''})")
        note = f" Expected: {hint}." if hint else ""
        raise InputError(f"{file}: weights do not fit encoder {what!r}: {'; '.join(parts)}.{note}")
    for k, t in expected.items():
        if sd[k].dtype != t.dtype and t.is_floating_point():
            sd[k] = sd[k].to(t.dtype)
    model.load_state_dict(sd, strict=True, assign=assign)
    return file
