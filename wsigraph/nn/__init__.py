"""Models: SRMIL, baseline MIL models, graph encoders and readouts.

Every model is a :class:`MILModel`: ``forward(data) -> MILOutput(logits (1, K), patch_scores (N,) | None)``,
``training_terms(data, label) -> TrainingTerms`` (supervised outputs with weights, label-free losses; the
task's loss supervises them, :mod:`wsigraph.tasks`) and the classification shortcut
``training_loss(data, y, class_weight) -> (loss, logits, parts)``. Build one by name::

    from wsigraph.nn import build_model
    model = build_model("srmil", in_dim=1024, num_classes=2, mask_rate=0.5)
"""
from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms
from wsigraph.nn.encoder import GNNEncoder, GNNLayer
from wsigraph.nn.gat import GATLayer
from wsigraph.nn.models import (
    ABMIL,
    CLAMSB,
    DSMIL,
    GraphABMIL,
    MaxPoolMIL,
    MeanPoolMIL,
    NystromAttention,
    PatchGCN,
    TransMIL,
)
from wsigraph.nn.readout import (
    AttentionReadout,
    GatedAttentionReadout,
    MaxReadout,
    MeanReadout,
    build_readout,
)
from wsigraph.nn.registry import MODELS, build_model, model_arguments, model_class
from wsigraph.nn.sparse import CSRGraph, csr_aggregate
from wsigraph.nn.srmil import SRMIL, sce_loss

__all__ = [
    "MILModel", "MILOutput", "TrainingTerms", "MODELS", "build_model", "model_arguments", "model_class",
    "SRMIL", "sce_loss", "MeanPoolMIL", "MaxPoolMIL", "ABMIL", "CLAMSB", "TransMIL", "DSMIL", "PatchGCN",
    "GraphABMIL", "GNNEncoder", "GNNLayer", "GATLayer", "CSRGraph", "csr_aggregate", "NystromAttention",
    "AttentionReadout", "GatedAttentionReadout", "MeanReadout", "MaxReadout", "build_readout",
]
