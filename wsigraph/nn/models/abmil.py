"""ABMIL: attention-based deep MIL.

Ilse, Tomczak, Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018, arXiv 1802.04712.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms, check_range
from wsigraph.nn.readout import AttentionReadout, GatedAttentionReadout


class ABMIL(MILModel):
    """Attention MIL pooling on patch embeddings.

    ``h_i = ReLU(W x_i)`` (the paper's embedding of size M = 500), attention
    ``a_i = softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i)))`` (gated, L = 128; plain ``tanh`` attention with
    ``gated=False``), bag embedding ``z = sum_i a_i h_i``, logits ``Linear(M, C)(z)`` trained with
    cross-entropy (the paper's binary sigmoid head generalised to C classes). From the paper: M, L, the
    gated form. Not in the paper (a knob, default as commonly used on WSI features, e.g. CLAM): dropout
    0.25 on the embedding and inside the attention. ``patch_scores`` = the attention weights ``a``.

    Args:
        in_dim: D.
        num_classes: C.
        embed_dim: M.
        attn_dim: L.
        gated: gated attention (the paper's best) or plain tanh attention.
        dropout: dropout on the embedding and attention hidden layers.
    """

    def __init__(self, in_dim: int, num_classes: int, *, embed_dim: int = 500, attn_dim: int = 128,
                 gated: bool = True, dropout: float = 0.25):
        super().__init__(in_dim, num_classes)
        check_range("embed_dim", embed_dim, 1)
        check_range("attn_dim", attn_dim, 1)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        self.embed = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout))
        readout = GatedAttentionReadout if gated else AttentionReadout
        self.attention = readout(embed_dim, attn_dim, dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)

    supports_packing = True

    def forward(self, data: Any) -> MILOutput:
        z, a = self.attention(self.embed(self.features(data)))
        return MILOutput(self.classifier(z), a.detach())

    def packed_training_terms(self, batch: Any) -> TrainingTerms:
        """The bags of a PyG ``Batch`` in one pass (attention softmax within each bag): logits (B, C)."""
        x = self.features(batch, packed=True)
        b, index = batch.num_graphs, batch.batch.to(x.device)  # PyG's slide of each patch
        logits = self.classifier(self.attention.pool(self.embed(x), index, b))
        return TrainingTerms([("ce", logits, 1.0)], [], logits.detach())


__all__ = ["ABMIL"]
