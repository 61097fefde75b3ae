"""The contract every wsigraph MIL model follows, and the input checks they share.

A model takes one slide as a PyG ``Data`` (``x (N, D)``, ``edge_index (2, E)`` for graph models,
``pos (N, 2)`` lattice units) and returns :class:`MILOutput`. ``training_loss`` does everything a
training step needs (several passes for SRMIL, an auxiliary loss for CLAM-SB / DSMIL), so the trainer
stays model-agnostic.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsigraph.errors import ConfigError, InputError


class MILOutput(NamedTuple):
    """What a model returns for one slide.

    Attributes:
        logits: (1, C) float, unnormalised class scores.
        patch_scores: (N,) float, one score per patch for heatmaps (attention weights, instance logits,
            ...), or None where the model has no per-patch score.
    """

    logits: Tensor
    patch_scores: Tensor | None


def slide_name(data: Any) -> str:
    """A name for error messages: ``slide 'id'`` when the Data carries ``slide_id``, else ``the slide``."""
    sid = getattr(data, "slide_id", None)
    if isinstance(sid, (list, tuple)) and len(sid) == 1:
        sid = sid[0]
    return f"slide {sid!r}" if sid is not None else "the slide"


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``choices``, else ConfigError naming the argument."""
    v = str(value).lower()
    if v not in choices:
        raise ConfigError(f"model argument {key!r}: {value!r} is not one of {', '.join(choices)}")
    return v


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """ConfigError naming ``key`` unless ``low <= value <= high`` (bounds open where asked)."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ConfigError(f"model argument {key!r}: {value!r} is outside {interval}")


class MILModel(nn.Module):
    """Base class of wsigraph's MIL models (one slide per call).

    Subclasses implement :meth:`forward`; :meth:`training_loss` defaults to (class-weighted) cross-entropy
    on the forward logits. ``needs_graph`` says whether ``data.edge_index`` is used.

    Args:
        in_dim: D, features per patch.
        num_classes: C >= 2.
    """

    needs_graph: ClassVar[bool] = False

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ConfigError(f"model argument 'in_dim': expected a positive int, got {in_dim!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"model argument 'num_classes': expected an int >= 2, got {num_classes!r}")
        self.in_dim = in_dim
        self.num_classes = num_classes

    # ------------------------------------------------------------------ inputs
    def _param(self) -> Tensor:
        return next(self.parameters())

    def features(self, data: Any) -> Tensor:
        """``data.x`` checked and cast to the model's device and dtype: (N, D)."""
        x = getattr(data, "x", None)
        if not isinstance(x, Tensor):
            raise InputError(f"{slide_name(data)}: Data has no tensor 'x' of patch features")
        if x.dim() != 2 or x.size(1) != self.in_dim:
            raise InputError(f"{slide_name(data)}: 'x' has shape {tuple(x.shape)}, expected (N, {self.in_dim}) "
                             f"(the model was built with in_dim={self.in_dim})")
        if x.size(0) == 0:
            raise InputError(f"{slide_name(data)}: the bag has no patches (x is empty)")
        num_graphs = getattr(data, "num_graphs", 1)
        if isinstance(num_graphs, int) and num_graphs > 1:
            raise InputError(f"{slide_name(data)}: got a batch of {num_graphs} graphs; models take one slide "
                             "per call (use batch_size=1)")
        p = self._param()
        return x.to(device=p.device, dtype=p.dtype)

    def edge_index(self, data: Any, num_nodes: int) -> Tensor:
        """``data.edge_index`` checked (2, E) int64 on the model's device, indices in ``[0, N)``."""
        ei = getattr(data, "edge_index", None)
        if not isinstance(ei, Tensor):
            raise InputError(f"{slide_name(data)}: {type(self).__name__} is a graph model and needs "
                             "'edge_index' (build the graph with wsigraph.graph)")
        if ei.dim() != 2 or ei.size(0) != 2:
            raise InputError(f"{slide_name(data)}: 'edge_index' has shape {tuple(ei.shape)}, expected (2, E)")
        if ei.dtype.is_floating_point or ei.dtype == torch.bool:
            raise InputError(f"{slide_name(data)}: 'edge_index' has dtype {ei.dtype}, expected int64")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= num_nodes):
            raise InputError(f"{slide_name(data)}: 'edge_index' refers to node {int(ei.max())} or "
                             f"{int(ei.min())} outside [0, {num_nodes}) patches")
        return ei.to(device=self._param().device, dtype=torch.long)

    # ------------------------------------------------------------------ training
    def cross_entropy(self, logits: Tensor, y: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Cross-entropy of (1, C) logits against the label ``y`` (1,), class-weighted if given."""
        y = y.view(-1).to(device=logits.device, dtype=torch.long)
        if class_weight is not None:
            class_weight = class_weight.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, y, weight=class_weight)

    def training_loss(self, data: Any, y: Tensor, class_weight: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One training step's loss.

        Args:
            data: one slide.
            y: (1,) int64 label.
            class_weight: (C,) cross-entropy weights or None.

        Returns:
            ``(loss 0-d, logits (1, C) detached, parts {name: float})``.
        """
        out = self(data)
        loss = self.cross_entropy(out.logits, y, class_weight)
        return loss, out.logits.detach(), {"ce": float(loss.detach())}

    def forward(self, data: Any) -> MILOutput:  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = ["MILModel", "MILOutput", "check_choice", "check_range", "slide_name"]
