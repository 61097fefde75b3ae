"""Graph-ABMIL: a plain spatial-graph baseline, a GNN encoder over the patch graph then gated attention MIL.

The graph layers are graph attention (Velickovic, Cucurull, Casanova, Romero, Lio, Bengio, "Graph
Attention Networks", ICLR 2018, arXiv 1710.10903) by default; the pooling is gated attention (Ilse,
Tomczak, Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018, arXiv 1802.04712). The
graph layers are SRMIL's (:class:`~wsigraph.nn.encoder.GNNEncoder`) but there is no reconstruction and no
super-node, so a benchmark row with it shows what the spatial graph alone gives.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from wsigraph.errors import ConfigError
from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms, check_choice, check_range
from wsigraph.nn.encoder import ACTIVATIONS, CONVS, NORMS, GNNEncoder
from wsigraph.nn.readout import GatedAttentionReadout
from wsigraph.nn.sparse import CSRGraph


class GraphABMIL(MILModel):
    """GNN encoder on the patch graph, gated attention pooling, linear classifier.

    ``h = Dropout(ReLU(Linear(D, hidden)(x)))``; ``num_layers`` graph layers of ``hidden`` channels (each
    :class:`~wsigraph.nn.encoder.GNNLayer`: feature dropout, conv, optional residual, norm, activation; GAT
    layers have ``heads`` heads of ``hidden / heads`` channels, concatenated); attention
    ``a_i = softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i)))`` with ``attn_hidden`` channels, bag embedding
    ``z = sum_i a_i h_i`` (1, hidden) and logits ``Linear(hidden, C)(z)`` trained with cross-entropy.
    Defaults: hidden 128, 2 GAT layers of 4 x 32 channels, ELU, no norm, no residual, dropout 0.1 on the
    input embedding only (none inside the graph layers or the attention), attention hidden 128.

    Graph handling as SRMIL: each call sorts ``data.edge_index`` into a
    :class:`~wsigraph.nn.sparse.CSRGraph` (one self loop per patch with ``self_loops``, duplicate edges
    dropped; ``data`` is not modified), and the GAT layers aggregate with sparse products, so memory is
    ``O(E * heads + N * hidden)`` with no per-edge message tensor and no dense ``N x N`` matrix.
    ``patch_scores`` = the attention weights ``a`` (N,), summing to 1.

    Args:
        in_dim: D.
        num_classes: C.
        hidden: width of the input embedding and of every graph layer (GAT: heads concatenated).
        heads: GAT heads (``hidden`` must divide by them); ignored by the other convs.
        num_layers: graph layers (>= 1).
        conv: ``gat`` | ``gcn`` | ``gin`` | ``sage``.
        activation: ``elu`` | ``prelu`` | ``relu`` | ``gelu`` | ``leaky_relu`` | ``tanh`` | ``none``, after
            every graph layer.
        norm: ``none`` | ``layernorm`` | ``batchnorm``, in every graph layer.
        residual: add each graph layer's input to its output.
        dropout: dropout after the input embedding.
        feat_drop: dropout on every graph layer's input.
        attn_drop: dropout on GAT attention weights.
        negative_slope: GAT LeakyReLU slope.
        attn_hidden: hidden width of the gated attention (the paper's L).
        self_loops: give every patch exactly one self loop (the graph's own loops are not duplicated);
            False uses ``edge_index`` as given.

    Shapes:
        ``data.x`` (N, D), ``data.edge_index`` (2, E) -> logits (1, C), patch_scores (N,).
    """

    needs_graph = True

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 128, heads: int = 4, num_layers: int = 2,
                 conv: str = "gat", activation: str = "elu", norm: str = "none", residual: bool = False,
                 dropout: float = 0.1, feat_drop: float = 0.0, attn_drop: float = 0.0, negative_slope: float = 0.2,
                 attn_hidden: int = 128, self_loops: bool = True):
        super().__init__(in_dim, num_classes)
        check_range("hidden", hidden, 1)
        check_range("heads", heads, 1)
        check_range("num_layers", num_layers, 1)
        check_range("attn_hidden", attn_hidden, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        check_range("negative_slope", negative_slope, 0.0)
        conv = check_choice("conv", conv, CONVS)
        activation = check_choice("activation", activation, ACTIVATIONS)
        norm = check_choice("norm", norm, NORMS)
        if conv == "gat" and hidden % heads:
            raise ConfigError(f"model argument 'heads': hidden={hidden} does not split over {heads} heads")
        self.self_loops, self.norm_name = bool(self_loops), norm
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.encoder = GNNEncoder(hidden, hidden, hidden, num_layers, conv=conv, heads=heads, out_heads=heads,
                                  residual=bool(residual), norm=norm, activation=activation, feat_drop=feat_drop,
                                  attn_drop=attn_drop, negative_slope=negative_slope)
        self.attention = GatedAttentionReadout(hidden, attn_hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def graph(self, data: Any, num_nodes: int) -> CSRGraph:
        """The slide's patch graph in CSR order (self loops as ``self_loops`` says)."""
        return CSRGraph.from_edge_index(self.edge_index(data, num_nodes), num_nodes, self_loops=self.self_loops)

    def forward(self, data: Any) -> MILOutput:
        x = self.features(data)
        h, _ = self.encoder(self.embed(x), self.graph(data, x.size(0)))
        z, a = self.attention(h)
        return MILOutput(self.classifier(z), a.detach())

    @property
    def supports_packing(self) -> bool:  # type: ignore[override]
        """Several slides as one block-diagonal graph (not with batchnorm, which mixes the slides)."""
        return self.norm_name != "batchnorm"

    def packed_training_terms(self, batch: Any) -> TrainingTerms:
        """The slides of a PyG ``Batch`` in one pass: the attention softmax within each slide; logits (B, C)."""
        x = self.features(batch, packed=True)
        b, index = batch.num_graphs, batch.batch.to(x.device)  # PyG's slide of each patch
        h, _ = self.encoder(self.embed(x), self.graph(batch, x.size(0)))
        logits = self.classifier(self.attention.pool(h, index, b))
        return TrainingTerms([("ce", logits, 1.0)], [], logits.detach())


__all__ = ["GraphABMIL"]
