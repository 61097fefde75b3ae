"""What made an output: the stage, its parameters and its inputs, recorded with the output.

A cohort job resumes a slide only when its output records the same :class:`Provenance` as the one the
rerun would write (:func:`provenance_differences`); otherwise the job refuses before any work and names
the parameters that differ (``--overwrite`` recomputes). The wsigraph version is recorded but not
compared: upgrading wsigraph does not invalidate finished outputs.

Inputs are identified by content, not by time stamps, so copying a cohort to another disk keeps its
outputs valid: slide files by :func:`quick_fingerprint` (size and a SHA-256 of the first and last MiB),
weights files by their full SHA-256 (:func:`file_sha256`, computed once per process and file), coords by
the digest of their values (:func:`array_digest`).

Where it is stored: HDF5 outputs (coords, features) carry it as the JSON string attribute
:data:`PROVENANCE_ATTR`; JSON outputs (tissue-mask records) under the key ``"provenance"``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from wsigraph.errors import InputError

PROVENANCE_ATTR = "wsigraph_provenance"
_MIB = 1 << 20
_sha_cache: dict[tuple[str, int, int], str] = {}


def quick_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size": bytes, "sha256_ends": hex}``: SHA-256 over the size, the first and the last MiB.

    Reads at most 2 MiB, so a gigapixel slide costs milliseconds; a change anywhere else in a file of the
    same size goes unnoticed (slide files are not edited in place).
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > 2 * _MIB:
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
        elif size > _MIB:
            h.update(f.read())
    return {"size": int(size), "sha256_ends": h.hexdigest()}


def file_sha256(path: str | os.PathLike) -> str:
    """Full SHA-256 of a file (hex); cached per process by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), int(st.st_size), int(st.st_mtime_ns))
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 * _MIB), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def array_digest(*arrays: Any) -> str:
    """SHA-256 (hex, first 32 characters) of the arrays' dtypes, shapes and bytes."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tuples -> lists, numpy scalars -> Python, Paths -> str, sorted dict keys."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@dataclass(frozen=True)
class Provenance:
    """The stage, parameters and inputs of one output.

    Attributes:
        stage: ``"segment"``, ``"tile"``, ``"extract"`` ...
        params: JSON-able parameters that change the output (e.g. ``{"patch_size": 224}``).
        inputs: role -> identity of each input file (e.g. ``{"slide": quick_fingerprint(path)}``).
        version: the wsigraph version that wrote it (not compared).
    """

    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            from wsigraph import __version__

            object.__setattr__(self, "version", __version__)
        object.__setattr__(self, "params", _jsonable(dict(self.params)))
        object.__setattr__(self, "inputs", _jsonable(dict(self.inputs)))

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "params": self.params, "inputs": self.inputs, "wsigraph": self.version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "provenance") -> "Provenance":
        if not isinstance(d, Mapping) or not isinstance(d.get("stage"), str):
            raise InputError(f"{where}: not a wsigraph provenance record")
        return cls(d["stage"], dict(d.get("params") or {}), dict(d.get("inputs") or {}), str(d.get("wsigraph", "?")))

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "provenance") -> "Provenance":
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: unreadable provenance record ({e})") from None
        return cls.from_dict(d, where)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in sorted(set(old) | set(new)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: (not recorded) -> {new[k]!r}")
            elif k not in new:
                out.append(f"{key}: {old[k]!r} -> (not set)")
            else:
                _diff(old[k], new[k], key, out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, f"{prefix}[{i}]", out)
    elif not _same(old, new):
        out.append(f"{prefix}: {old!r} -> {new!r}")


def provenance_differences(recorded: Provenance | None, expected: Provenance) -> list[str]:
    """What differs between an output's record and the one a rerun would write, as ``key: old -> new``
    lines (empty: the same). ``recorded`` None (an output without a record: made by another tool or an
    older wsigraph) is one difference."""
    if recorded is None:
        return ["no record of the parameters that made it (written by another tool or an older wsigraph)"]
    out: list[str] = []
    if recorded.stage != expected.stage:
        out.append(f"stage: {recorded.stage!r} -> {expected.stage!r}")
    _diff(recorded.params, expected.params, "", out)
    _diff(recorded.inputs, expected.inputs, "inputs", out)
    return out


# ------------------------------------------------------------------------------------------------ storage


def read_h5_provenance(path: str | os.PathLike) -> Provenance | None:
    """The record of an HDF5 output, or None when it has none (or cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(PROVENANCE_ATTR)
    except OSError:
        return None
    if raw is None:
        return None
    try:
        return Provenance.from_json(raw, f"{path}: attribute {PROVENANCE_ATTR}")
    except InputError:
        return None


def read_json_provenance(path: str | os.PathLike) -> Provenance | None:
    """The ``"provenance"`` entry of a JSON output, or None."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    rec = d.get("provenance") if isinstance(d, dict) else None
    if rec is None:
        return None
    try:
        return Provenance.from_dict(rec, f"{path}: provenance")
    except InputError:
        return None


__all__ = ["PROVENANCE_ATTR", "Provenance", "array_digest", "file_sha256", "provenance_differences",
           "quick_fingerprint", "read_h5_provenance", "read_json_provenance"]
