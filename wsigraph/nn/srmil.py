"""SRMIL: graph MIL with masked-feature reconstruction and a super-node readout.

Wu et al., WACV 2026 (arXiv 2602.19487); defaults follow the paper's reference code (wwyi1828/SRMIL,
``config.py``), see :class:`SRMIL`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from wsigraph.errors import ConfigError
from wsigraph.nn.base import MILModel, MILOutput, TrainingTerms, check_choice, check_range
from wsigraph.nn.encoder import CONVS, GNNEncoder
from wsigraph.nn.gat import ATT_INITS
from wsigraph.nn.readout import READOUTS, build_readout
from wsigraph.nn.sparse import CSRGraph

REMASKS = ("token", "zero", "none")
RECON_PASSES = ("separate", "shared")
RESIDUAL_MODES = ("projection", "all")
#: what each variant sets the deviation switches to when they are ``"auto"`` (see :class:`SRMIL`)
VARIANTS: dict[str, dict[str, str]] = {
    "reference": {"recon_pass": "separate", "residual_mode": "projection", "att_init": "xavier"},
    "twopass": {"recon_pass": "shared", "residual_mode": "all", "att_init": "heads"},
}
REFORMERS = ("linear", "identity")
RECON_TARGETS = ("raw", "centered")
EMBED_HEADS = ("mean", "concat")


def sce_loss(pred: Tensor, target: Tensor, alpha: float = 1.0, rows: Tensor | None = None,
             groups: Tensor | None = None, num_groups: int = 1) -> Tensor:
    """Scaled cosine error ``mean_i (1 - cos(pred_i, target_i)) ** alpha``.

    Args:
        pred, target: (N, D).
        alpha: exponent (> 0).
        rows: (M,) int64 rows to average over (all rows if None); the others get no gradient.
        groups: (M,) int64 slide of each row of ``rows`` (packed slides): the mean is taken per slide, then
            over the ``num_groups`` slides, as if each slide's loss were computed on its own.

    Cosines are computed row-wise on the full tensors (no (M, D) copies of the selected rows).
    """
    dot = (pred * target).sum(-1)
    cos = dot / (pred.norm(dim=-1) * target.norm(dim=-1)).clamp_min(1e-8)
    if rows is not None:
        cos = cos.index_select(0, rows)
    err = (1.0 - cos).clamp_min(0.0).pow(alpha)
    if groups is None:
        return err.mean()
    from torch_geometric.utils import scatter

    return scatter(err, groups, dim=0, dim_size=num_groups, reduce="mean").mean()


def centered_per_slide(x: Tensor, index: Tensor | None = None, num_slides: int = 1) -> Tensor:
    """Features (N, D) minus their slide's mean feature; ``index`` (N,) is each row's slide for packed
    slides (one slide if None)."""
    if index is None:
        return x - x.mean(dim=0, keepdim=True)
    from torch_geometric.utils import scatter

    return x - scatter(x, index, dim=0, dim_size=num_slides, reduce="mean").index_select(0, index)


class SRMIL(MILModel):
    """Self-supervised reconstruction MIL on the spatial patch graph.

    Per training step (:meth:`training_loss`), with ``variant="reference"`` (the authors' computation,
    wwyi1828/SRMIL at 7bb63e8, ``trainer.py`` with its default ``add_node_first=False``):

    1. **Reconstruction pass.** A random ``int(mask_rate * N)`` patches (``torch.randperm`` on the model's
       device) get their input replaced by a learnable mask token; the features go through the reformer
       (``Linear(D, D)``) and the GAT encoder on the patch graph (no super-node); the patch embeddings go
       through ``Linear(hidden, hidden)`` (encoder-to-decoder), masked rows are re-masked with a learnable
       decoder token, and the GAT decoder maps them back to ``D``; the scaled cosine error
       ``(1 - cos(x, x_hat)) ** alpha`` is averaged over the masked patches only.
    2. **Masked pass**: the same masked input, on the patch graph plus the super-node: the super-node
       embedding gives the corrupted-graph logits.
    3. **Complete pass** on the unmasked graph with the super-node: complete-graph logits.
    4. ``loss = (2 - w_gen) * [(2 - w_ce) * CE(masked) + w_ce * CE(complete)] + w_gen * recon``.

    ``variant="twopass"`` (wsigraph's original computation) merges passes 1 and 2: the reconstruction is
    decoded from the patch rows of the masked pass *with* the super-node, so the reconstruction loss also
    trains the super token and the super-node's edges; it adds identity residuals where widths match
    (encoder layer 2, decoder layer 1) and draws the attention vectors with a larger std. The variant only
    sets the defaults of three switches, each of which can be set on its own:

    ================= ========================== ==========================================
    switch            ``reference``              ``twopass``
    ================= ========================== ==========================================
    ``recon_pass``    ``separate`` (3 passes)    ``shared`` (2 passes)
    ``residual_mode`` ``projection``             ``all`` (identity residuals too)
    ``att_init``      ``xavier``                 ``heads`` (2.2x the std at 4 x 64)
    ================= ========================== ==========================================

    The default is ``reference``, the paper's computation. ``twopass`` was wsigraph's default until
    2026-12-07 and stays for what it is measured to do (``benchmarks/RESULTS.md``, 1024-d cohorts, 5 seeds,
    10 epochs): a step costs 0.54-0.74x the reference's (two encoder passes instead of three); it scores
    higher on the CAMELYON-like cohort (test AUC 0.677 against 0.587) and lower where only the lesions'
    contiguity separates the classes (0.917 against 0.986). Neither computation, nor any other measured,
    beats ``graph_abmil`` (0.798) or ABMIL (0.771) on the CAMELYON-like cohort, so no deviation from the
    paper is the default. Old checkpoints without a ``variant`` argument were trained with ``twopass`` and
    are rebuilt with it.

    The reference's own training recipe (fp32, one fixed data order, its selection rule) is the trainer's
    business: ``wsigraph init-config --recipe paper``.

    Inference (:meth:`forward`) is the complete pass; ``patch_scores`` is the super-node's attention over
    the patches in the last encoder layer, averaged over heads (sums to 1; None for non-GAT encoders), or
    the readout's per-patch weights for the other readouts.

    Other defaults = the reference's final configuration: GAT encoder of 2 layers, 4 heads of 64 channels
    concatenated to ``hidden = 256`` in every layer, the ``Linear(D, 256)`` residual of layer 1, LayerNorm,
    PReLU, feature dropout 0.11, attention dropout 0.15; mask rate 0.7; bias-free ``Linear(256, 256)``
    encoder-to-decoder; token re-masking; GAT decoder of 2 layers (4 heads, then 1 head of ``D`` channels,
    plain output layer); ``alpha = 1``; one super-node joined both ways to every patch (no self loop of its
    own); the patch embedding read out is the last layer's heads *averaged* (``hidden / heads = 64``
    channels, as the reference's ``ins_embed.view(-1, heads, 64).mean(1)``), so the classifier is
    ``Linear(64, 128) -> ReLU -> Dropout(0.059) -> Linear(128, C)`` (``embed_heads="concat"`` feeds the
    256 concatenated channels instead); tokens initialised N(0, 0.01); ``w_gen = 1.8``, ``w_ce = 1.0``.

    Graph handling: each call sorts ``data.edge_index`` once into a :class:`CSRGraph` (one self loop per
    patch, duplicates dropped) and derives the super-node graph from it by O(E) index arithmetic
    (:meth:`CSRGraph.with_supernode`): no ``Data`` is cloned (the reference copies its DGL graph to add
    the super-node), ``data.edge_index`` is neither modified nor rebuilt in Python, and nothing is cached
    on the module (so no stale graph can be reused when the allocator recycles a tensor's memory for the
    next slide). All passes of a step share the structure, and the reformer output is computed once and
    shared too. The GAT layers aggregate with sparse matrix products (:mod:`wsigraph.nn.sparse`): a
    100k-patch step with D = 1024 stays under 8 GiB on CPU.

    Other differences from the reference code: the ``attention`` / ``gated_attention`` readouts are Ilse
    et al.'s pooling on patch embeddings; the reference's alternative scores nodes with a 2-layer GAT.

    Args:
        in_dim: D, features per patch.
        num_classes: C.
        hidden: encoder width (concatenated heads).
        heads: GAT heads of encoder and hidden decoder layers.
        num_layers: encoder layers.
        num_dec_layers: decoder layers.
        dec_out_heads: GAT heads of the decoder's output layer (``D`` must divide by it).
        encoder: ``gat`` | ``gcn`` | ``gin`` | ``sage``.
        decoder: ``gat`` | ``gcn`` | ``gin`` | ``sage``.
        variant: ``reference`` (the default, the paper's computation) | ``twopass``: what the three
            switches below mean when ``auto`` (table above).
        recon_pass: ``separate`` (its own masked pass on the patch graph) | ``shared`` (decoded from the
            masked pass with the super-node) | ``auto``.
        residual_mode: with ``residual``: ``projection`` (only where widths differ, the reference's GAT) |
            ``all`` (identity residuals where widths match, too) | ``auto``.
        att_init: GAT attention-vector init, ``xavier`` | ``heads`` (:class:`~wsigraph.nn.gat.GATLayer`) |
            ``auto``.
        residual: residual connections (the ``Linear(D, hidden)`` projection of encoder layer 1, plus the
            identity ones if ``residual_mode="all"``); never in the decoder's output layer.
        norm: ``layernorm`` | ``batchnorm`` | ``none``.
        activation: ``prelu`` | ``relu`` | ``elu`` | ``gelu`` | ``leaky_relu`` | ``tanh`` | ``none``.
        feat_drop: dropout on every graph layer's input.
        attn_drop: dropout on GAT attention weights.
        negative_slope: GAT LeakyReLU slope.
        reformer: ``linear`` (``Linear(D, D)``) | ``identity``.
        reformer_bias: bias of the linear reformer.
        mask_rate: fraction of patches masked per step, in [0, 1).
        remask: decoder input of masked patches: ``token`` (learnable) | ``zero`` | ``none`` (kept).
        enc2dec_bias: bias of the encoder-to-decoder Linear.
        alpha: exponent of the scaled cosine error (> 0).
        recon_target: what the decoder reconstructs: ``raw`` (the input features, the paper's) |
            ``centered`` (each patch's features minus its slide's mean feature, so that what every patch of a
            slide shares, a stain or scanner offset, is not a reconstruction target; measured not to help
            on the CAMELYON-like benchmark, whose slides carry such an offset: ``benchmarks/RESULTS.md``).
        readout: ``supernode`` | ``attention`` | ``gated_attention`` | ``mean`` | ``max``.
        supernode_bidirectional: super-node edges both ways (False: patches -> super-node only).
        embed_heads: patch embedding from the last encoder layer: ``mean`` of heads | ``concat``.
        attn_hidden: hidden width of the attention readouts.
        cls_hidden: classifier hidden width.
        cls_drop: classifier dropout.
        w_gen: reconstruction weight in [0, 2] (0 removes the reconstruction and the decoder pass).
        w_ce: complete-graph CE weight in [0, 2] (2 removes the masked-graph CE).
        token_init_std: std of the normal init of mask, decoder and super-node tokens.
        self_loops: give every patch exactly one self loop (the graph's own loops are not duplicated);
            False uses ``edge_index`` as given.
    """

    needs_graph = True
    #: a checkpoint written before ``variant`` existed was trained with the two-pass computation
    legacy_arguments = {"variant": "twopass"}

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 256, heads: int = 4, num_layers: int = 2,
                 num_dec_layers: int = 2, dec_out_heads: int = 1, encoder: str = "gat", decoder: str = "gat",
                 residual: bool = True, norm: str = "layernorm", activation: str = "prelu",
                 feat_drop: float = 0.11, attn_drop: float = 0.15, negative_slope: float = 0.2,
                 reformer: str = "linear", reformer_bias: bool = True, mask_rate: float = 0.7,
                 remask: str = "token", enc2dec_bias: bool = False, alpha: float = 1.0,
                 readout: str = "supernode", supernode_bidirectional: bool = True, embed_heads: str = "mean",
                 attn_hidden: int = 128, cls_hidden: int = 128, cls_drop: float = 0.059, w_gen: float = 1.8,
                 w_ce: float = 1.0, token_init_std: float = 0.01, self_loops: bool = True, recon_target: str = "raw",
                 variant: str = "reference", recon_pass: str = "auto", residual_mode: str = "auto",
                 att_init: str = "auto"):
        super().__init__(in_dim, num_classes)
        self.variant = check_choice("variant", variant, tuple(VARIANTS))
        preset = VARIANTS[self.variant]
        switches = {"recon_pass": (recon_pass, RECON_PASSES), "residual_mode": (residual_mode, RESIDUAL_MODES),
                    "att_init": (att_init, ATT_INITS)}
        for key, (value, choices) in switches.items():
            value = check_choice(key, value, choices + ("auto",))
            setattr(self, key, preset[key] if value == "auto" else value)
        self.identity_residual = self.residual_mode == "all"
        check_range("hidden", hidden, 1)
        check_range("mask_rate", mask_rate, 0.0, 1.0, high_open=True)
        check_range("alpha", alpha, 0.0, low_open=True)
        check_range("w_gen", w_gen, 0.0, 2.0)
        check_range("w_ce", w_ce, 0.0, 2.0)
        check_range("cls_drop", cls_drop, 0.0, 1.0, high_open=True)
        check_range("token_init_std", token_init_std, 0.0)
        self.readout_name = check_choice("readout", readout, ("supernode",) + READOUTS)
        self.remask = check_choice("remask", remask, REMASKS)
        self.recon_target = check_choice("recon_target", recon_target, RECON_TARGETS)
        self.embed_heads = check_choice("embed_heads", embed_heads, EMBED_HEADS)
        reformer = check_choice("reformer", reformer, REFORMERS)
        encoder, decoder = check_choice("encoder", encoder, CONVS), check_choice("decoder", decoder, CONVS)
        check_range("heads", heads, 1)
        check_range("dec_out_heads", dec_out_heads, 1)
        if encoder == "gat" and hidden % heads:
            raise ConfigError(f"model argument 'heads': hidden={hidden} does not split over {heads} heads")
        if decoder == "gat" and in_dim % dec_out_heads:
            raise ConfigError(f"model argument 'dec_out_heads': in_dim={in_dim} does not split over "
                              f"{dec_out_heads} heads")
        self.mask_rate, self.alpha, self.w_gen, self.w_ce = float(mask_rate), float(alpha), float(w_gen), float(w_ce)
        self.self_loops, self.supernode_bidirectional = bool(self_loops), bool(supernode_bidirectional)
        self.norm_name = str(norm).lower()
        self.use_supernode = self.readout_name == "supernode"

        if reformer == "linear":
            self.reformer: nn.Module = nn.Linear(in_dim, in_dim, bias=reformer_bias)
            nn.init.xavier_uniform_(self.reformer.weight, gain=1.414)
            if reformer_bias:
                nn.init.zeros_(self.reformer.bias)
        else:
            self.reformer = nn.Identity()
        layer_args = dict(residual=residual, norm=norm, activation=activation, feat_drop=feat_drop,
                          attn_drop=attn_drop, negative_slope=negative_slope,
                          identity_residual=self.identity_residual, att_init=self.att_init)
        self.encoder = GNNEncoder(in_dim, hidden, hidden, num_layers, conv=encoder, heads=heads, out_heads=heads,
                                  **layer_args)
        self.decoder = GNNEncoder(hidden, hidden, in_dim, num_dec_layers, conv=decoder, heads=heads,
                                  out_heads=dec_out_heads, plain_last=True, **layer_args)
        self.enc2dec = nn.Linear(hidden, hidden, bias=enc2dec_bias)
        nn.init.xavier_normal_(self.enc2dec.weight, gain=1.414)
        self.enc_mask_token = nn.Parameter(torch.zeros(1, in_dim))
        self.dec_mask_token = nn.Parameter(torch.zeros(1, hidden))
        self.super_token = nn.Parameter(torch.zeros(1, in_dim))
        for token in (self.enc_mask_token, self.dec_mask_token, self.super_token):
            nn.init.normal_(token, 0.0, token_init_std)

        embed_dim = self.encoder.embed_dim if self.embed_heads == "mean" else hidden
        self.readout = None if self.use_supernode else build_readout(self.readout_name, embed_dim, attn_hidden)
        self.classifier = nn.Sequential(nn.Linear(embed_dim, cls_hidden), nn.ReLU(), nn.Dropout(cls_drop),
                                        nn.Linear(cls_hidden, num_classes))

    # ------------------------------------------------------------------ pieces
    @property
    def supports_packing(self) -> bool:  # type: ignore[override]
        """Several slides run as one block-diagonal graph (not with batchnorm, which mixes the slides)."""
        return self.norm_name != "batchnorm"

    def graphs(self, data: Any, num_nodes: int, ptr: Tensor | None = None) -> tuple[CSRGraph, CSRGraph]:
        """(patch graph, encoder graph): the encoder graph adds the super-node when that readout is used
        (one per slide of a packed batch, ``ptr`` (B + 1,))."""
        g = CSRGraph.from_edge_index(self.edge_index(data, num_nodes), num_nodes, self_loops=self.self_loops)
        return g, (g.with_supernode(self.supernode_bidirectional, ptr) if self.use_supernode else g)

    def sample_mask(self, num_nodes: int, device: torch.device) -> Tensor:
        """Indices of the ``int(mask_rate * N)`` patches masked this step: (M,) int64."""
        return torch.randperm(num_nodes, device=device)[: int(self.mask_rate * num_nodes)]

    def sample_packed_mask(self, ptr: Tensor) -> Tensor:
        """:meth:`sample_mask` of each packed slide (``ptr`` (B + 1,)), drawn in slide order, as node
        indices of the batch: (M,) int64."""
        bounds = ptr.tolist()
        return torch.cat([self.sample_mask(hi - lo, ptr.device) + lo for lo, hi in zip(bounds[:-1], bounds[1:])])

    def encoder_input(self, rx: Tensor, mask: Tensor | None = None, supernode: bool | None = None,
                      num_super: int = 1) -> Tensor:
        """Encoder input from the reformed features ``rx = reformer(x)`` (N, D): rows ``mask`` replaced by
        ``reformer(mask token)``, plus ``num_super`` rows ``reformer(super token)`` (one per packed slide)
        when ``supernode`` (default: when the super-node readout is used).

        The reformer is row-wise, so this equals reforming the masked input; ``rx`` is computed once per
        step and shared by all passes.
        """
        n = rx.size(0)
        supernode = self.use_supernode if supernode is None else supernode
        if not supernode and mask is None:
            return rx
        inp = rx.new_empty(n + (num_super if supernode else 0), rx.size(1))
        inp[:n] = rx
        if mask is not None and mask.numel():
            inp[mask] = self.reformer(self.enc_mask_token.to(rx.dtype))
        if supernode:
            inp[n:] = self.reformer(self.super_token.to(rx.dtype))
        return inp

    def encode(self, rx: Tensor, graph: CSRGraph, mask: Tensor | None = None, return_attention: bool = False,
               num_super: int = 1) -> tuple[Tensor, Tensor | None]:
        """Encoder output (N [+ super-nodes], hidden) and, if asked, the last layer's attention (E, heads)."""
        return self.encoder(self.encoder_input(rx, mask, num_super=num_super), graph,
                            return_attention=return_attention)

    def embed(self, h: Tensor) -> Tensor:
        """Encoder output rows -> embeddings read out (head mean or concatenation)."""
        return self.encoder.head_mean(h) if self.embed_heads == "mean" else h

    def classify(self, h: Tensor, num_nodes: int, attention: Tensor | None = None
                 ) -> tuple[Tensor, Tensor | None]:
        """(logits (1, C), patch scores (N,) | None) from an encoder output."""
        n = num_nodes
        if self.use_supernode:
            scores = None if attention is None else attention[-n:].mean(1)
            return self.classifier(self.embed(h[n:n + 1])), scores
        assert self.readout is not None
        emb, scores = self.readout(self.embed(h[:n]))
        return self.classifier(emb), scores

    def classify_packed(self, h: Tensor, num_nodes: int, index: Tensor, num_slides: int) -> Tensor:
        """Logits (B, C) of packed slides from an encoder output; ``index`` (N,) is each patch's slide."""
        n = num_nodes
        if self.use_supernode:
            return self.classifier(self.embed(h[n:n + num_slides]))
        assert self.readout is not None
        return self.classifier(self.readout.pool(self.embed(h[:n]), index, num_slides))

    def reconstruct(self, h: Tensor, graph: CSRGraph, mask: Tensor) -> Tensor:
        """Decoder output (N, D) from the masked pass's encoder output (patch rows), masked rows re-masked."""
        rep = self.enc2dec(h[: graph.num_nodes])
        if self.remask == "token":
            rep = rep.index_put((mask,), self.dec_mask_token.expand(mask.numel(), -1).to(rep.dtype))
        elif self.remask == "zero":
            rep = rep.index_fill(0, mask, 0.0)
        return self.decoder(rep, graph)[0]

    # ------------------------------------------------------------------ API
    def forward(self, data: Any) -> MILOutput:
        x = self.features(data)
        n = x.size(0)
        _, graph = self.graphs(data, n)
        want = self.use_supernode and self.encoder.conv_type == "gat"
        h, attention = self.encode(self.reformer(x), graph, return_attention=want)
        logits, scores = self.classify(h, n, attention)
        return MILOutput(logits, None if scores is None else scores.detach())

    def training_terms(self, data: Any, label: int | None = None) -> TrainingTerms:
        """Reconstruction and the masked-graph outputs from the masked input (one shared pass or two, as
        ``recon_pass`` says), the complete-graph outputs from the complete pass.

        Terms: ``ce_masked`` (weight ``(2 - w_gen) (2 - w_ce)``), ``ce_full`` (``(2 - w_gen) w_ce``),
        ``recon`` (``w_gen``): with cross-entropy, the loss is ``(2 - w_gen) ((2 - w_ce) ce_masked + w_ce
        ce_full) + w_gen recon``. A term whose weight is zero (``w_gen = 0``, or ``w_ce = 2`` for the masked
        CE) is not computed (reported as 0).
        """
        return self._terms(data, packed=False)

    def packed_training_terms(self, batch: Any) -> TrainingTerms:
        """:meth:`training_terms` of the slides of a PyG ``Batch`` as one block-diagonal graph: one
        super-node per slide (or the readout's softmax within each slide), each slide's own mask of
        ``int(mask_rate * N_i)`` patches (drawn in slide order), the reconstruction averaged per slide, then
        over the slides. Outputs (B, K)."""
        return self._terms(batch, packed=True)

    def _terms(self, data: Any, packed: bool) -> TrainingTerms:
        x = self.features(data, packed=packed)
        n = x.size(0)
        ptr: Tensor | None = data.ptr.to(x.device) if packed else None
        b = 1 if ptr is None else int(data.num_graphs)
        index = None if ptr is None else data.batch.to(x.device)  # PyG's slide of each patch
        patch_graph, graph = self.graphs(data, n, ptr)
        rx = self.reformer(x)
        supervised: list[tuple[str, Tensor, float]] = []
        skipped: list[str] = []
        recon: Tensor | None = None

        def logits_of(h: Tensor) -> Tensor:
            return self.classify(h, n)[0] if index is None else self.classify_packed(h, n, index, b)

        def recon_of(h: Tensor, mask: Tensor) -> Tensor:
            pred = self.reconstruct(h, patch_graph, mask)
            target = x if self.recon_target == "raw" else centered_per_slide(x, index, b)
            if index is None:
                return sce_loss(pred, target, self.alpha, rows=mask)
            return sce_loss(pred, target, self.alpha, rows=mask, groups=index[mask], num_groups=b)

        want_recon, want_masked_ce = self.w_gen > 0, self.w_ce < 2
        if want_recon or want_masked_ce:
            mask = self.sample_mask(n, x.device) if ptr is None else self.sample_packed_mask(ptr)
            want_recon = want_recon and mask.numel() > 0
            if self.recon_pass == "separate" and want_recon:
                h, _ = self.encoder(self.encoder_input(rx, mask, supernode=False), patch_graph)
                recon = recon_of(h, mask)
                del h
            if want_masked_ce or (want_recon and self.recon_pass == "shared"):
                h, _ = self.encode(rx, graph, mask, num_super=b)
                if want_masked_ce:
                    supervised.append(("ce_masked", logits_of(h), (2 - self.w_gen) * (2 - self.w_ce)))
                if want_recon and self.recon_pass == "shared":
                    recon = recon_of(h, mask)
                del h
        if not want_masked_ce:
            skipped.append("ce_masked")
        inp = self.encoder_input(rx, num_super=b)
        del rx
        h, _ = self.encoder(inp, graph)
        del inp
        logits = logits_of(h)
        supervised.append(("ce_full", logits, (2 - self.w_gen) * self.w_ce))
        unsupervised = [] if recon is None else [("recon", recon, float(self.w_gen))]
        if recon is None:
            skipped.append("recon")
        return TrainingTerms(supervised, unsupervised, logits.detach(), tuple(skipped))


__all__ = ["SRMIL", "centered_per_slide", "sce_loss"]
