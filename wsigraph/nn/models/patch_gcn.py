"""Patch-GCN: context-aware graph convolutions over the patch graph, attention pooling.

Chen, Lu, Lipkova, Chen, Williamson, Mahmood, "Whole Slide Images are 2D Point Clouds: Context-Aware
Survival Prediction using Patch-based Graph Convolutional Networks", MICCAI 2021, arXiv 2107.13048.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wsigraph.nn.base import MILModel, MILOutput, check_choice, check_range
from wsigraph.nn.readout import GatedAttentionReadout


class PatchGCN(MILModel):
    """Patch-GCN with a classification head.

    ``Linear(D, 128) -> ReLU -> Dropout``; a GENConv (DeeperGCN: softmax aggregation with a learnable
    temperature, 2-layer MLP, LayerNorm), then ``num_layers - 1`` PyG ``DeepGCNLayer`` blocks of the same
    conv with LayerNorm, ReLU and dropout 0.1; the input and every layer's output are concatenated
    (``128 * (num_layers + 1)`` channels, 512 by default), then ``phi = Linear -> ReLU -> Dropout``, gated
    attention pooling (hidden = width), ``rho = Linear -> ReLU -> Dropout`` and ``Linear(width, C)``.

    From the paper and its released code: widths, GENConv settings, the dense concatenation, gated
    attention, 3 graph layers after the input layer ("4 layers" counting it), residual ``res`` blocks
    (``block="res+"`` is the pre-activation variant of DeeperGCN). Changed: the survival head
    (discrete-time hazards) is a C-class softmax head trained with cross-entropy. The graph is used as
    given (wsigraph's paper-mode graph includes self loops). ``patch_scores`` = attention weights.
    GENConv materialises one message per edge, so memory grows with E * 128 per layer;
    ``ckpt_grad`` recomputes the residual blocks' convolutions in the backward pass (the released code
    checkpoints them too).

    Args:
        in_dim: D.
        num_classes: C.
        hidden: graph layer width.
        num_layers: graph layers (>= 1).
        block: ``res`` | ``res+`` | ``plain`` (PyG DeepGCNLayer).
        dropout: dropout of the input, phi, attention and rho layers.
        gcn_dropout: dropout inside the DeepGCN blocks.
        ckpt_grad: gradient checkpointing of the DeepGCN blocks.
    """

    needs_graph = True

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 128, num_layers: int = 3, block: str = "res",
                 dropout: float = 0.25, gcn_dropout: float = 0.1, ckpt_grad: bool = False):
        super().__init__(in_dim, num_classes)
        from torch_geometric.nn import DeepGCNLayer, GENConv

        check_range("hidden", hidden, 1)
        check_range("num_layers", num_layers, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        check_range("gcn_dropout", gcn_dropout, 0.0, 1.0, high_open=True)
        block = check_choice("block", block, ("res", "res+", "plain"))
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            conv = GENConv(hidden, hidden, aggr="softmax", t=1.0, learn_t=True, num_layers=2, norm="layer")
            self.layers.append(DeepGCNLayer(conv, nn.LayerNorm(hidden), nn.ReLU(), block=block,
                                            dropout=gcn_dropout, ckpt_grad=bool(ckpt_grad) and i > 0))
        width = hidden * (num_layers + 1)
        self.phi = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttentionReadout(width, width, dropout)
        self.rho = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, data: Any) -> MILOutput:
        x = self.fc(self.features(data))
        edge_index = self.edge_index(data, x.size(0))
        outs = [x]
        h = self.layers[0].conv(x, edge_index)
        outs.append(h)
        for layer in self.layers[1:]:
            h = layer(h, edge_index)
            outs.append(h)
        z, a = self.attention(self.phi(torch.cat(outs, dim=1)))
        return MILOutput(self.classifier(self.rho(z)), a.detach())


__all__ = ["PatchGCN"]
