"""The contract every wsigraph MIL model follows, and the input checks they share.

A model takes one slide as a PyG ``Data`` (``x (N, D)``, ``edge_index (2, E)`` for graph models,
``pos (N, 2)`` lattice units) and returns :class:`MILOutput`. ``training_terms`` runs everything a
training step needs (several passes for SRMIL, an auxiliary loss for CLAM-SB / DSMIL) and returns the
supervised outputs with their weights and the label-free losses; the task (:mod:`wsigraph.tasks`) turns the
supervised outputs into losses (cross-entropy, survival likelihood, regression error), so every model
serves every task and the trainer stays model-agnostic. ``training_loss`` is the classification shortcut.
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


class TrainingTerms(NamedTuple):
    """What one training pass over a slide produces, before the task's loss.

    Attributes:
        supervised: ``(part name, outputs (1, K), weight)`` per output head that the task's loss supervises
            (SRMIL: the masked and the complete graph); names start with ``ce`` (renamed after the task's loss
            in the logs: ``nll_full`` for survival, ...).
        unsupervised: ``(part name, loss 0-d, weight)`` of label-free (or label-specific auxiliary) terms,
            e.g. SRMIL's reconstruction.
        outputs: (1, K) detached outputs of the complete slide.
        skipped: names of terms whose weight is zero (reported as 0, not computed).

    The step's loss is ``sum_s w_s * task_loss(outputs_s) + sum_u w_u * loss_u``.
    """

    supervised: list[tuple[str, Tensor, float]]
    unsupervised: list[tuple[str, Tensor, float]]
    outputs: Tensor
    skipped: tuple[str, ...] = ()


def combine_terms(terms: TrainingTerms, supervised_loss: Any) -> tuple[Tensor, dict[str, float]]:
    """``(loss 0-d, parts {name: float})`` of one slide's terms, with ``supervised_loss(outputs (1, K))``."""
    total: Tensor | None = None
    parts: dict[str, float] = {name: 0.0 for name in terms.skipped}
    for name, out, w in terms.supervised:
        value = supervised_loss(out)
        parts[name] = float(value.detach())
        total = w * value if total is None else total + w * value
    for name, value, w in terms.unsupervised:
        parts[name] = float(value.detach())
        total = w * value if total is None else total + w * value
    assert total is not None, "a model's training_terms returned no term"
    return total, parts


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
        num_classes: K >= 1 outputs per slide: the C classes of a classification, the time bins of a
            discrete-time survival model, 1 for a Cox risk or a regression value.
    """

    needs_graph: ClassVar[bool] = False
    #: :meth:`packed_training_terms` runs several slides as one block-diagonal graph (else a step of several
    #: slides runs them one by one)
    supports_packing: ClassVar[bool] = False

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ConfigError(f"model argument 'in_dim': expected a positive int, got {in_dim!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"model argument 'num_classes': expected an int >= 1 (outputs per slide), "
                              f"got {num_classes!r}")
        self.in_dim = in_dim
        self.num_classes = num_classes

    # ------------------------------------------------------------------ inputs
    def _param(self) -> Tensor:
        return next(self.parameters())

    def features(self, data: Any, packed: bool = False) -> Tensor:
        """``data.x`` checked and cast to the model's device and dtype: (N, D) (``packed``: the slides of a
        PyG ``Batch``, stacked)."""
        x = getattr(data, "x", None)
        if not isinstance(x, Tensor):
            raise InputError(f"{slide_name(data)}: Data has no tensor 'x' of patch features")
        if x.dim() != 2 or x.size(1) != self.in_dim:
            raise InputError(f"{slide_name(data)}: 'x' has shape {tuple(x.shape)}, expected (N, {self.in_dim}) "
                             f"(the model was built with in_dim={self.in_dim})")
        if x.size(0) == 0:
            raise InputError(f"{slide_name(data)}: the bag has no patches (x is empty)")
        num_graphs = getattr(data, "num_graphs", 1)
        if isinstance(num_graphs, int) and num_graphs > 1 and not packed:
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
        """Cross-entropy of (B, C) logits against labels ``y`` (B,), each slide's term times its class's
        weight when ``class_weight`` (C,) is given: ``mean_i w[y_i] * CE_i``. (PyTorch's weighted mean,
        ``sum w l / sum w``, would cancel the weights when a step holds one slide.)"""
        y = y.view(-1).to(device=logits.device, dtype=torch.long)
        ce = F.cross_entropy(logits, y, reduction="none")
        if class_weight is not None:
            ce = ce * class_weight.to(device=logits.device, dtype=ce.dtype)[y]
        return ce.mean()

    def training_terms(self, data: Any, label: int | None = None) -> TrainingTerms:
        """The supervised outputs and label-free losses of one training pass (default: the forward logits,
        weight 1). ``label``: the class index, for models with label-specific auxiliary terms (CLAM's
        instance clustering); None for tasks without classes (those terms are left out)."""
        out = self(data)
        return TrainingTerms([("ce", out.logits, 1.0)], [], out.logits.detach())

    def packed_training_terms(self, batch: Any) -> TrainingTerms:
        """:meth:`training_terms` of the B slides of a PyG ``Batch`` in one pass: supervised outputs (B, K),
        label-free losses averaged over the slides, equal (up to rounding) to the slides run one by one in
        order without dropout. Only where :attr:`supports_packing`."""
        raise NotImplementedError(f"{type(self).__name__} does not pack slides")

    def training_loss(self, data: Any, y: Tensor, class_weight: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One classification training step's loss: :meth:`training_terms` with cross-entropy.

        Args:
            data: one slide.
            y: (1,) int64 label.
            class_weight: (C,) cross-entropy weights or None.

        Returns:
            ``(loss 0-d, logits (1, C) detached, parts {name: float})``.
        """
        terms = self.training_terms(data, int(y.view(-1)[0]))
        loss, parts = combine_terms(terms, lambda out: self.cross_entropy(out, y, class_weight))
        return loss, terms.outputs, parts

    def forward(self, data: Any) -> MILOutput:  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = ["MILModel", "MILOutput", "TrainingTerms", "combine_terms", "check_choice", "check_range", "slide_name"]
