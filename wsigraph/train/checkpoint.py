"""Model checkpoints: weights plus the plain metadata needed to rebuild the model, read with
``torch.load(weights_only=True)``.

A wsigraph checkpoint is a dict of tensors and plain Python values only (no pickled classes)::

    format: "wsigraph-checkpoint", format_version: 1, wsigraph_version: str
    model: {name, params (every constructor argument), in_dim, num_classes}
    classes: [str], ordinal: bool, graph: {GraphConfig fields}
    epoch: int | None, metrics: {validation metrics at selection}, extra: {...}
    state_dict: {parameter name: tensor}

Lightning's own training checkpoints (``last.ckpt``) carry the same metadata under ``"wsigraph"``, so
``evaluate``/``predict`` accept them too. Writes are atomic; :class:`SafeCheckpointIO` makes Lightning
save atomically and load with ``weights_only=True`` as well.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from wsigraph.errors import InputError, MissingFileError
from wsigraph.utils.atomic import atomic_path

FORMAT = "wsigraph-checkpoint"
FORMAT_VERSION = 1
LIGHTNING_KEY = "wsigraph"  # metadata key inside Lightning checkpoints
_LIGHTNING_PREFIX = "model."  # the LightningModule holds the MILModel as ``self.model``


@dataclass
class Checkpoint:
    """A loaded checkpoint: metadata and weights (CPU tensors)."""

    path: Path | None
    model_name: str
    model_params: dict[str, Any]
    in_dim: int
    num_classes: int
    classes: list[str]
    state_dict: dict[str, torch.Tensor]
    ordinal: bool = False
    graph: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    wsigraph_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the fitted task: ``{"name": "classification"}`` (checkpoints from before tasks), or survival /
    #: regression with their fitted state (time bins, target scale)
    task: dict[str, Any] = field(default_factory=lambda: {"name": "classification"})

    @property
    def task_name(self) -> str:
        return str(self.task.get("name", "classification"))

    def metadata(self) -> dict[str, Any]:
        """The plain metadata dict (everything but the weights)."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "wsigraph_version": self.wsigraph_version,
            "model": {"name": self.model_name, "params": dict(self.model_params), "in_dim": int(self.in_dim),
                      "num_classes": int(self.num_classes)},
            "classes": list(self.classes), "ordinal": bool(self.ordinal), "graph": dict(self.graph),
            "epoch": self.epoch, "metrics": dict(self.metrics), "extra": dict(self.extra), "task": dict(self.task),
        }

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Rebuild the model and load the weights (strict). InputError naming the file on a mismatch."""
        from wsigraph.nn import build_model, model_class

        where = self.path or "checkpoint"
        try:
            # arguments added to a model after checkpoints were written take the value that reproduces the
            # computation those checkpoints were trained with (not today's default)
            legacy = dict(getattr(model_class(self.model_name), "legacy_arguments", {}))
            model = build_model(self.model_name, self.in_dim, self.num_classes, **{**legacy, **self.model_params})
        except InputError as e:
            raise InputError(f"{where}: cannot rebuild model {self.model_name!r}: {e}") from e
        except TypeError as e:
            raise InputError(f"{where}: model {self.model_name!r} does not accept the saved parameters "
                             f"({e}); the checkpoint was written by another version of the model") from e
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise InputError(f"{where}: weights do not fit model {self.model_name!r} "
                             f"(in_dim={self.in_dim}, num_classes={self.num_classes}): "
                             f"{' '.join(s.strip() for s in first[:4])}") from e
        return model.to(device).eval()


def plain(value: Any) -> Any:
    """``value`` as plain Python data (dict/list/str/int/float/bool/None) for a weights_only checkpoint."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a weights_only checkpoint: {value!r}")


def make_metadata(model_name: str, model_params: Mapping[str, Any], in_dim: int, num_classes: int,
                  classes: list[str], *, ordinal: bool = False, graph: Any = None, epoch: int | None = None,
                  metrics: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                  task: Mapping[str, Any] | None = None) -> dict:
    """The metadata dict of a checkpoint (plain values only); ``task``: ``{"name", **fitted state}``."""
    from wsigraph import __version__

    return plain({
        "format": FORMAT, "format_version": FORMAT_VERSION, "wsigraph_version": __version__,
        "model": {"name": model_name, "params": dict(model_params), "in_dim": int(in_dim),
                  "num_classes": int(num_classes)},
        "classes": list(classes), "ordinal": bool(ordinal), "graph": graph or {},
        "epoch": epoch, "metrics": dict(metrics or {}), "extra": dict(extra or {}),
        "task": dict(task or {"name": "classification"}),
    })


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any],
                    ) -> Path:
    """Write weights + metadata atomically (tensors copied to CPU). Returns the path."""
    obj = dict(plain({k: v for k, v in metadata.items() if k != "state_dict"}))
    obj["state_dict"] = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _read(path: Path) -> Any:
    if not path.exists():
        raise MissingFileError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise InputError(f"{path}: cannot be read as a checkpoint with torch.load(weights_only=True) ({e}); "
                         "wsigraph never unpickles arbitrary objects") from e


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None, expect_in_dim: int | None = None,
                    expect_num_classes: int | None = None, expect_classes: list[str] | None = None) -> Checkpoint:
    """Read a wsigraph checkpoint (or a Lightning ``last.ckpt`` written by wsigraph) and check it.

    Args:
        expect_*: what the caller will use it with; a difference raises an :class:`InputError` naming the
            checkpoint file and the mismatch (e.g. a 1024-d model asked to read 512-d features).
    """
    path = Path(path)
    obj = _read(path)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a wsigraph checkpoint (a {type(obj).__name__}, expected a dict)")
    if obj.get("format") == FORMAT:
        meta, state = obj, obj.get("state_dict")
    elif isinstance(obj.get(LIGHTNING_KEY), dict) and "state_dict" in obj:
        meta = obj[LIGHTNING_KEY]
        state = {k[len(_LIGHTNING_PREFIX):]: v for k, v in obj["state_dict"].items()
                 if k.startswith(_LIGHTNING_PREFIX)}
    else:
        keys = sorted(str(k) for k in obj)[:10]
        raise InputError(f"{path}: not a wsigraph checkpoint (no 'format': {FORMAT!r} and no {LIGHTNING_KEY!r} "
                         f"metadata; keys: {keys})")
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format version {meta.get('format_version')} is newer than this "
                         f"wsigraph reads ({FORMAT_VERSION}); upgrade wsigraph")
    if not isinstance(state, dict) or not state:
        raise InputError(f"{path}: checkpoint holds no weights")
    try:
        m = meta["model"]
        ckpt = Checkpoint(
            path=path, model_name=str(m["name"]), model_params=dict(m.get("params") or {}),
            in_dim=int(m["in_dim"]), num_classes=int(m["num_classes"]), classes=[str(c) for c in meta["classes"]],
            state_dict=state, ordinal=bool(meta.get("ordinal", False)), graph=dict(meta.get("graph") or {}),
            epoch=meta.get("epoch"), metrics=dict(meta.get("metrics") or {}),
            wsigraph_version=str(meta.get("wsigraph_version", "")), extra=dict(meta.get("extra") or {}),
            task=dict(meta.get("task") or {"name": "classification"}))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: checkpoint metadata incomplete or malformed ({type(e).__name__}: {e})") from e
    if ckpt.task_name == "classification" and len(ckpt.classes) != ckpt.num_classes:
        raise InputError(f"{path}: metadata lists {len(ckpt.classes)} classes but num_classes={ckpt.num_classes}")
    mismatches = []
    if expect_model is not None and expect_model != ckpt.model_name:
        mismatches.append(f"model is {ckpt.model_name!r}, expected {expect_model!r}")
    if expect_in_dim is not None and int(expect_in_dim) != ckpt.in_dim:
        mismatches.append(f"feature dimension (in_dim) is {ckpt.in_dim}, expected {expect_in_dim}")
    if expect_num_classes is not None and int(expect_num_classes) != ckpt.num_classes:
        mismatches.append(f"num_classes is {ckpt.num_classes}, expected {expect_num_classes}")
    if expect_classes is not None and [str(c) for c in expect_classes] != ckpt.classes:
        mismatches.append(f"classes are {ckpt.classes}, expected {list(expect_classes)}")
    if mismatches:
        raise InputError(f"{path}: checkpoint does not match: " + "; ".join(mismatches))
    return ckpt


# ----------------------------------------------------------------------------------------------------
# Lightning checkpoint I/O: atomic writes, weights_only reads
# ----------------------------------------------------------------------------------------------------


def _safe_checkpoint_io_cls() -> type:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoint I/O that writes atomically (temp file + rename) and always reads with
        ``torch.load(weights_only=True)``."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

        def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None
                            ) -> dict[str, Any]:
            path = Path(path)
            if not path.exists():
                raise MissingFileError(f"{path}: checkpoint file does not exist")
            try:
                return torch.load(path, map_location=map_location or "cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001
                raise InputError(f"{path}: cannot resume from this checkpoint with "
                                 f"torch.load(weights_only=True) ({e})") from e

    return SafeCheckpointIO


def SafeCheckpointIO() -> Any:  # noqa: N802 - factory so that importing this module does not import Lightning
    """A Lightning ``CheckpointIO`` plugin: atomic saves, ``weights_only=True`` loads."""
    return _safe_checkpoint_io_cls()()


__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "make_metadata", "SafeCheckpointIO", "plain"]
