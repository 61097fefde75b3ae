"""Model registry: names -> classes, and :func:`build_model` with argument checks."""
from __future__ import annotations

import inspect
from typing import Any

from wsigraph.errors import ConfigError
from wsigraph.nn.base import MILModel
from wsigraph.nn.models import ABMIL, CLAMSB, DSMIL, GraphABMIL, MaxPoolMIL, MeanPoolMIL, PatchGCN, TransMIL
from wsigraph.nn.srmil import SRMIL

MODELS: dict[str, type[MILModel]] = {
    "srmil": SRMIL,
    "mean": MeanPoolMIL,
    "max": MaxPoolMIL,
    "abmil": ABMIL,
    "clam_sb": CLAMSB,
    "transmil": TransMIL,
    "dsmil": DSMIL,
    "patch_gcn": PatchGCN,
    "graph_abmil": GraphABMIL,
}

_BUILD_ARGS = ("self", "in_dim", "num_classes")


def model_class(name: str) -> type[MILModel]:
    """The registered class ``name``; ConfigError listing the valid names otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_arguments(name: str) -> dict[str, Any]:
    """Constructor arguments of model ``name`` (besides ``in_dim``, ``num_classes``) and their defaults."""
    sig = inspect.signature(model_class(name).__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.name not in _BUILD_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def build_model(name: str, in_dim: int, num_classes: int, **kwargs: Any) -> MILModel:
    """Instantiate a registered model.

    Args:
        name: a key of :data:`MODELS`.
        in_dim: D, features per patch.
        num_classes: K >= 1 outputs per slide (classes; time bins; 1 for a risk or a value).
        **kwargs: constructor arguments (plain ints, floats, strs, bools).

    Raises:
        ConfigError: unknown name (lists the valid ones), unknown argument (lists the model's arguments),
            a value of the wrong type or out of range (names the argument).
    """
    cls = model_class(name)
    valid = model_arguments(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f"model {name!r} has no argument {', '.join(map(repr, unknown))}; valid arguments: "
                          f"{', '.join(valid)}")
    for key, value in kwargs.items():
        default = valid[key]
        if not _type_ok(default, value):
            raise ConfigError(f"model {name!r} argument {key!r} must be {type(default).__name__} like its "
                              f"default {default!r}, got {value!r}")
        if isinstance(default, float) and isinstance(value, int):
            kwargs[key] = float(value)
    return cls(in_dim, num_classes, **kwargs)


__all__ = ["MODELS", "build_model", "model_arguments", "model_class"]
