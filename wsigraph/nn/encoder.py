"""Stacks of graph layers (GAT / GCN / GIN / SAGE) used as SRMIL's encoder and decoder.

Each layer is ``dropout(x) -> conv -> (+ residual) -> norm -> activation``, the layout of the SRMIL
reference's GAT (GraphMAE lineage). GAT is :class:`~wsigraph.nn.gat.GATLayer`; GCN, GIN and SAGE are
PyG's ``GCNConv`` / ``GINConv`` / ``SAGEConv`` fed the sparse ``adj_t`` of the graph, so PyG aggregates
with a sparse matrix product instead of materialising one message per edge.
"""
from __future__ import annotations

import warnings

from torch import Tensor, nn

from wsigraph.errors import ConfigError
from wsigraph.nn.base import check_choice, check_range
from wsigraph.nn.functional import mask_dropout
from wsigraph.nn.gat import GATLayer
from wsigraph.nn.sparse import CSRGraph

CONVS = ("gat", "gcn", "gin", "sage")
NORMS = ("layernorm", "batchnorm", "none")
ACTIVATIONS = ("prelu", "relu", "elu", "gelu", "leaky_relu", "tanh", "none")


def make_activation(name: str) -> nn.Module:
    """Module for an activation name in :data:`ACTIVATIONS` (``none`` = identity)."""
    name = check_choice("activation", name, ACTIVATIONS)
    return {"prelu": nn.PReLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU,
            "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "none": nn.Identity}[name]()


def make_norm(name: str, dim: int) -> nn.Module:
    """Module for a normalisation name in :data:`NORMS` (over the channels of each node)."""
    name = check_choice("norm", name, NORMS)
    if name == "layernorm":
        return nn.LayerNorm(dim)
    if name == "batchnorm":
        return nn.BatchNorm1d(dim)
    return nn.Identity()


class GNNLayer(nn.Module):
    """One graph layer: ``h = feat_drop(x)``, ``out = act(norm(conv(h) + res(h)))``.

    Args:
        in_dim: input channels.
        out_dim: output channels (for GAT: ``heads * per-head`` channels, concatenated).
        conv: ``gat`` | ``gcn`` | ``gin`` | ``sage``.
        heads: GAT heads (``out_dim`` must divide by it); ignored by the other convs.
        residual: add the input: a bias-free Linear when the widths differ, the identity when they match
            and ``identity_residual`` (else none).
        identity_residual: with ``residual``, add the identity where widths match. False = the SRMIL
            reference's GAT, which keeps a residual only where a projection is needed.
        norm: ``layernorm`` | ``batchnorm`` | ``none``.
        activation: see :data:`ACTIVATIONS`.
        feat_drop: dropout on the layer's input.
        attn_drop: dropout on GAT attention weights.
        negative_slope: GAT LeakyReLU slope.
        att_init: GAT attention-vector init (:class:`~wsigraph.nn.gat.GATLayer`).
    """

    def __init__(self, in_dim: int, out_dim: int, conv: str = "gat", heads: int = 1, residual: bool = True,
                 norm: str = "layernorm", activation: str = "prelu", feat_drop: float = 0.0,
                 attn_drop: float = 0.0, negative_slope: float = 0.2, identity_residual: bool = True,
                 att_init: str = "heads"):
        super().__init__()
        self.conv_type = check_choice("conv", conv, CONVS)
        self.feat_drop = float(feat_drop)
        if self.conv_type == "gat":
            if out_dim % heads:
                raise ConfigError(f"model argument 'heads': {out_dim} channels do not split over {heads} heads")
            self.conv: nn.Module = GATLayer(in_dim, out_dim // heads, heads, concat=True,
                                            negative_slope=negative_slope, attn_drop=attn_drop, att_init=att_init)
        elif self.conv_type == "gcn":
            from torch_geometric.nn import GCNConv

            self.conv = GCNConv(in_dim, out_dim, add_self_loops=False, normalize=True)
        elif self.conv_type == "gin":
            from torch_geometric.nn import GINConv

            self.conv = GINConv(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)))
        else:
            from torch_geometric.nn import SAGEConv

            self.conv = SAGEConv(in_dim, out_dim, aggr="mean")
        self.res: nn.Module | None = None
        if residual and in_dim != out_dim:
            self.res = nn.Linear(in_dim, out_dim, bias=False)
            nn.init.xavier_normal_(self.res.weight, gain=nn.init.calculate_gain("relu"))
        elif residual and identity_residual:
            self.res = nn.Identity()
        self.norm = make_norm(norm, out_dim)
        self.act = make_activation(activation)

    def forward(self, x: Tensor, graph: CSRGraph, adj_t: Tensor | None = None,
                return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """``x`` (N, in_dim) -> ``(out (N, out_dim), attention (E, heads) | None)``. ``adj_t`` is the sparse
        matrix of ``graph`` for the PyG convs (built once per stack)."""
        h = mask_dropout(x, self.feat_drop, self.training)
        attention = None
        if self.conv_type == "gat":
            out, attention = self.conv(h, graph, return_attention=return_attention)
        else:
            with warnings.catch_warnings():  # PyG builds CSR tensors: "sparse invariant checks disabled"
                warnings.simplefilter("ignore", UserWarning)
                out = self.conv(h, adj_t if adj_t is not None else graph.adj_t(dtype=h.dtype))
        if self.res is not None:
            out = out + self.res(h)
        return self.act(self.norm(out)), attention


class GNNEncoder(nn.Module):
    """A stack of :class:`GNNLayer` from ``in_dim`` to ``out_dim``.

    Hidden layers have ``hidden`` channels (GAT: ``heads`` heads of ``hidden // heads`` channels,
    concatenated); the last layer has ``out_dim`` channels (GAT: ``out_heads`` heads of
    ``out_dim // out_heads``, concatenated). :meth:`head_mean` averages the last layer's heads, the patch
    embedding of SRMIL (``(N, out_dim // out_heads)``).

    Args:
        in_dim, hidden, out_dim: widths.
        num_layers: layers (>= 1).
        conv: ``gat`` | ``gcn`` | ``gin`` | ``sage``.
        heads: GAT heads of the hidden layers.
        out_heads: GAT heads of the last layer.
        residual, identity_residual, norm, activation, feat_drop, attn_drop, negative_slope, att_init: per
            layer, see :class:`GNNLayer`.
        plain_last: the last layer has no residual, norm or activation (a decoder's output layer).

    Shapes:
        x (N, in_dim) -> (N, out_dim); attention of the last layer (E, out_heads) if asked (GAT only).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, conv: str = "gat",
                 heads: int = 4, out_heads: int = 4, residual: bool = True, norm: str = "layernorm",
                 activation: str = "prelu", feat_drop: float = 0.0, attn_drop: float = 0.0,
                 negative_slope: float = 0.2, plain_last: bool = False, identity_residual: bool = True,
                 att_init: str = "heads"):
        super().__init__()
        check_range("num_layers", num_layers, 1)
        check_range("heads", heads, 1)
        check_range("out_heads", out_heads, 1)
        check_range("feat_drop", feat_drop, 0.0, 1.0, high_open=True)
        check_range("attn_drop", attn_drop, 0.0, 1.0, high_open=True)
        self.conv_type = check_choice("conv", conv, CONVS)
        self.out_dim = out_dim
        self.out_heads = out_heads if self.conv_type == "gat" else 1
        if out_dim % self.out_heads:
            raise ConfigError(f"model argument 'out_heads': {out_dim} channels do not split over "
                              f"{out_heads} heads")
        layers = []
        for i in range(num_layers):
            last = i == num_layers - 1
            plain = last and plain_last
            layers.append(GNNLayer(
                in_dim if i == 0 else hidden, out_dim if last else hidden, conv=self.conv_type,
                heads=self.out_heads if last else heads, residual=residual and not plain,
                norm="none" if plain else norm, activation="none" if plain else activation,
                feat_drop=feat_drop, attn_drop=attn_drop, negative_slope=negative_slope,
                identity_residual=identity_residual, att_init=att_init))
        self.layers = nn.ModuleList(layers)

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`head_mean`'s output."""
        return self.out_dim // self.out_heads

    def head_mean(self, h: Tensor) -> Tensor:
        """(M, out_dim) -> (M, out_dim // out_heads): the last layer's heads averaged."""
        if self.out_heads == 1:
            return h
        return h.view(h.size(0), self.out_heads, -1).mean(1)

    def forward(self, x: Tensor, graph: CSRGraph, return_attention: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        adj_t = None if self.conv_type == "gat" else graph.adj_t(dtype=x.dtype)
        attention = None
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, attention = layer(x, graph, adj_t, return_attention=return_attention and last)
        return x, attention


__all__ = ["GNNEncoder", "GNNLayer", "CONVS", "NORMS", "ACTIVATIONS", "make_activation", "make_norm"]
