"""SRMIL ``variant="reference"`` against an independent dense float64 implementation of the authors' step.

The dense implementation below is written from the reference code's equations (wwyi1828/SRMIL at 7bb63e8:
``models/gat.py`` GATConv, ``trainer.py`` with ``add_node_first=False``, ``modeling.py``
``compute_masked_logits`` / ``compute_graph_logits``): a dense (N, N) adjacency, a masked softmax per
target row, no wsigraph kernel or module is called. It reads the model's weights by position only, so the
comparison checks the sparse kernels, the residual placement, the three encoder passes and the loss
weighting together. Dropout is off (its random draws cannot match across implementations).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from wsigraph.nn import SRMIL
from wsigraph.nn.gat import GATLayer

D, N_SIDE, N_NODES = 1024, 9, 50
RTOL = 1e-10


def holey_lattice(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """50 patches of a 9 x 9 lattice (31 random holes): (pos (50, 2), dense adjacency (50, 50) float64
    with A[i, j] = 1 for the edge j -> i, paper radius 2 * 1.42 steps plus self loops, edge_index)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(N_SIDE * N_SIDE, generator=g)[:N_NODES].sort().values
    pos = torch.stack([cells % N_SIDE, cells // N_SIDE], 1).double()
    adj = (torch.cdist(pos, pos) <= 2 * 1.42).double()
    return pos, adj, adj.nonzero().t().flip(0).contiguous()  # rows [source, target]


# ------------------------------------------------------------------------------- dense reference
def dense_gat(x, adj, p, heads, out, *, residual, norm, act):
    """One reference GATConv: ``rst = sum_j softmax_j(leaky(a_l.Wx_j + a_r.Wx_i)) Wx_j + b (+ res_fc(x))``
    then flatten, LayerNorm, PReLU. ``p``: dict of float64 tensors (W, a_l, a_r, b, res, ln_w, ln_b, prelu)."""
    n = x.size(0)
    z = (x @ p["W"].t()).view(n, heads, out)
    el = (z * p["a_l"]).sum(-1)                    # (N, H) source term
    er = (z * p["a_r"]).sum(-1)                    # (N, H) target term
    e = F.leaky_relu(el.unsqueeze(0) + er.unsqueeze(1), 0.2)  # (N_target, N_source, H)
    e = e.masked_fill(adj.unsqueeze(-1) == 0, -math.inf)
    a = torch.softmax(e, dim=1)
    rst = torch.einsum("ijh,jhc->ihc", a, z) + p["b"].view(1, heads, out)
    if residual:
        rst = rst + (x @ p["res"].t()).view(n, heads, out) if "res" in p else rst + x.view(n, heads, out)
    rst = rst.flatten(1)
    if norm:
        rst = F.layer_norm(rst, (rst.size(1),), p["ln_w"], p["ln_b"], eps=1e-5)
    if act:
        rst = F.prelu(rst, p["prelu"])
    return rst


def dense_encoder(x, adj, enc, identity_residual):
    """Reference encoder: layer 1 projects 1024 -> 4 x 64 with the res_fc residual; layer 2 keeps
    residual=True but its res_fc is None (widths match), so no residual unless ``identity_residual``."""
    h = dense_gat(x, adj, enc[0], 4, 64, residual=True, norm=True, act=True)
    return dense_gat(h, adj, enc[1], 4, 64, residual=identity_residual, norm=True, act=True)


def dense_decoder(x, adj, dec, identity_residual):
    """Reference decoder: layer 1 (4 x 64, res_fc None), layer 2 to D with one head, no residual, norm or
    activation."""
    h = dense_gat(x, adj, dec[0], 4, 64, residual=identity_residual, norm=True, act=True)
    return dense_gat(h, adj, dec[1], 1, D, residual=False, norm=False, act=False)


def reference_step(P, x, adj, mask, y, *, w_gen=1.8, w_ce=1.0, separate=True, identity_residual=False):
    """The authors' training step (3 encoder passes when ``separate``) and the eval logits.

    Returns {"loss", "ce_masked", "ce_full", "recon", "logits_eval"}."""
    n = x.size(0)
    reform = lambda v: v @ P["reformer_W"].t() + P["reformer_b"]  # noqa: E731
    classify = lambda h: (F.relu(h.view(-1, 4, 64).mean(1)[-1:] @ P["cls1_W"].t() + P["cls1_b"])  # noqa: E731
                          @ P["cls2_W"].t() + P["cls2_b"])
    # super-node graph: node n receives from every patch and sends to every patch, no self loop
    adj_s = torch.zeros(n + 1, n + 1, dtype=adj.dtype)
    adj_s[:n, :n] = adj
    adj_s[n, :n] = 1.0
    adj_s[:n, n] = 1.0
    x_s = torch.cat([x, P["super_token"]])

    # reconstruction pass (patch graph, no super-node) -- or the masked super-node pass when shared
    out_x = (x if separate else x_s).clone()
    out_x[mask] = P["enc_mask_token"]
    h_rec = dense_encoder(reform(out_x), adj if separate else adj_s, P["enc"], identity_residual)
    rep = h_rec[:n] @ P["enc2dec_W"].t()
    rep = rep.clone()
    rep[mask] = P["dec_mask_token"]
    rec = dense_decoder(rep, adj, P["dec"], identity_residual)
    cos = F.cosine_similarity(rec[mask], x[mask], dim=-1, eps=0.0)
    recon = (1.0 - cos).mean()

    out_xs = x_s.clone()
    out_xs[mask] = P["enc_mask_token"]
    ce_masked = F.cross_entropy(classify(dense_encoder(reform(out_xs), adj_s, P["enc"], identity_residual)), y)
    logits_full = classify(dense_encoder(reform(x_s), adj_s, P["enc"], identity_residual))
    ce_full = F.cross_entropy(logits_full, y)
    loss = (2 - w_gen) * ((2 - w_ce) * ce_masked + w_ce * ce_full) + w_gen * recon
    return {"loss": loss, "ce_masked": ce_masked, "ce_full": ce_full, "recon": recon, "logits_eval": logits_full}


def dense_params(model: SRMIL) -> tuple[dict, dict[str, torch.Tensor]]:
    """Float64 leaf copies of the model's weights in the reference's layout, and {model name: leaf}."""
    named = {}

    def leaf(name: str, view=None):
        t = dict(model.named_parameters())[name].detach().clone().double().requires_grad_(True)
        named[name] = t
        return t

    def layer(prefix: str, projection: bool, norm: bool = True):
        p = {"W": leaf(f"{prefix}.conv.lin.weight"), "a_l": leaf(f"{prefix}.conv.att_src"),
             "a_r": leaf(f"{prefix}.conv.att_dst"), "b": leaf(f"{prefix}.conv.bias")}
        if projection:
            p["res"] = leaf(f"{prefix}.res.weight")
        if norm:
            p.update(ln_w=leaf(f"{prefix}.norm.weight"), ln_b=leaf(f"{prefix}.norm.bias"),
                     prelu=leaf(f"{prefix}.act.weight"))
        return p

    P = {"reformer_W": leaf("reformer.weight"), "reformer_b": leaf("reformer.bias"),
         "enc": [layer("encoder.layers.0", True), layer("encoder.layers.1", False)],
         "dec": [layer("decoder.layers.0", False), layer("decoder.layers.1", False, norm=False)],
         "enc2dec_W": leaf("enc2dec.weight"), "enc_mask_token": leaf("enc_mask_token"),
         "dec_mask_token": leaf("dec_mask_token"), "super_token": leaf("super_token"),
         "cls1_W": leaf("classifier.0.weight"), "cls1_b": leaf("classifier.0.bias"),
         "cls2_W": leaf("classifier.3.weight"), "cls2_b": leaf("classifier.3.bias")}
    return P, named


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL, floor: float = 1e-300) -> bool:
    """max |a - b| <= rtol * max(max |b|, floor): relative to the tensor's scale, or to ``floor`` for a
    tensor that is zero up to rounding."""
    scale = float(b.abs().max())
    return float((a - b).abs().max()) <= rtol * max(scale, floor)


def close_grads(grads: dict[str, torch.Tensor | None], named: dict[str, torch.Tensor]) -> None:
    """Every gradient equal to the reference's to RTOL relative. A gradient that is zero up to rounding
    (below 1e-6 of the largest one: the decoder's 1-head output layer has attention logits of one sign per
    target row at init, so its target term cancels in the softmax) is compared on that floor."""
    floor = 1e-6 * max(float(t.grad.abs().max()) for t in named.values())
    for name, leaf in named.items():
        got = grads[name] if grads[name] is not None else torch.zeros_like(leaf)  # skipped term: no grad
        assert close(got, leaf.grad, floor=floor), name


def make_model(**kw) -> SRMIL:
    torch.manual_seed(0)
    m = SRMIL(D, 2, feat_drop=0.0, attn_drop=0.0, cls_drop=0.0, **kw).double()
    with torch.no_grad():  # non-trivial LayerNorm / PReLU / bias values, so every parameter is tested
        for name, p in m.named_parameters():
            if name.endswith(("norm.weight", "act.weight")):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(("norm.bias", "conv.bias", "reformer.bias")):
                p.copy_(0.05 * torch.randn_like(p))
    return m.train()


def slide(seed: int = 0) -> tuple[Data, torch.Tensor, torch.Tensor]:
    pos, adj, ei = holey_lattice(seed)
    x = torch.randn(N_NODES, D, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return Data(x=x, pos=pos, edge_index=ei, slide_id="parity"), adj, x


def run_model(model: SRMIL, data: Data, mask: torch.Tensor, y: torch.Tensor):
    model.sample_mask = lambda num_nodes, device: mask  # type: ignore[method-assign]
    model.zero_grad(set_to_none=True)
    loss, _, parts = model.training_loss(data, y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    with torch.no_grad():
        logits = model.eval()(data).logits
    model.train()
    return loss.detach(), parts, grads, logits


@pytest.mark.parametrize("label,kw", [(0, {"variant": "reference"}), (1, {"variant": "reference"}), (1, {})],
                         ids=["reference-0", "reference-1", "default-1"])
def test_reference_variant_equals_dense_reference(label, kw):
    """``variant: reference``, and the default SRMIL (which is it), against the dense reference step."""
    data, adj, x = slide(0)
    model = make_model(**kw)
    assert model.variant == "reference"
    assert model.recon_pass == "separate" and not model.identity_residual and model.att_init == "xavier"
    mask = torch.randperm(N_NODES, generator=torch.Generator().manual_seed(7))[: int(0.7 * N_NODES)]
    y = torch.tensor([label])
    loss, parts, grads, logits = run_model(model, data, mask, y)

    P, named = dense_params(model)
    assert set(named) == {n for n, _ in model.named_parameters()}  # every parameter is in the reference
    ref = reference_step(P, x, adj, mask, y)
    ref["loss"].backward()
    assert close(loss, ref["loss"].detach())
    for part in ("ce_masked", "ce_full", "recon"):
        assert parts[part] == pytest.approx(float(ref[part].detach()), rel=RTOL, abs=0), part
    assert close(logits, ref["logits_eval"].detach())
    close_grads(grads, named)
    assert all(grads[n] is not None for n in named)
    big = [n for n, t in named.items() if float(t.grad.abs().max()) > 1e-6]
    assert len(big) >= len(named) - 1  # all but the cancelling term of the decoder's output layer matter


@pytest.mark.parametrize("recon_pass,residual_mode", [("shared", "all"), ("shared", "projection"),
                                                      ("separate", "all")])
def test_each_switch_computes_what_it_names(recon_pass, residual_mode):
    """The switches one by one: the dense step with the same change agrees, the reference's does not."""
    data, adj, x = slide(1)
    identity_residual = residual_mode == "all"
    model = make_model(variant="reference", recon_pass=recon_pass, residual_mode=residual_mode)
    mask = torch.randperm(N_NODES, generator=torch.Generator().manual_seed(3))[: int(0.7 * N_NODES)]
    y = torch.tensor([1])
    loss, parts, grads, _ = run_model(model, data, mask, y)
    P, named = dense_params(model)
    ref = reference_step(P, x, adj, mask, y, separate=recon_pass == "separate",
                         identity_residual=identity_residual)
    ref["loss"].backward()
    assert close(loss, ref["loss"].detach())
    close_grads(grads, named)
    authors = reference_step(dense_params(model)[0], x, adj, mask, y)
    assert abs(float(loss) - float(authors["loss"])) > 1e-6  # the switch changes the computation


def test_twopass_variant_is_the_shared_pass_with_identity_residuals():
    data, adj, x = slide(2)
    model = make_model(variant="twopass")
    assert model.recon_pass == "shared" and model.identity_residual
    mask = torch.randperm(N_NODES, generator=torch.Generator().manual_seed(5))[: int(0.7 * N_NODES)]
    y = torch.tensor([0])
    loss, parts, _, _ = run_model(model, data, mask, y)
    P, _ = dense_params(model)
    ref = reference_step(P, x, adj, mask, y, separate=False, identity_residual=True)
    assert close(loss, ref["loss"].detach())
    assert parts["recon"] == pytest.approx(float(ref["recon"].detach()), rel=RTOL, abs=0)


@pytest.mark.parametrize("w_gen,w_ce", [(0.0, 1.0), (1.8, 2.0), (0.5, 0.3)])
def test_reference_loss_weights(w_gen, w_ce):
    """Terms with zero weight are skipped by wsigraph; the loss still equals the reference's weighting."""
    data, adj, x = slide(3)
    model = make_model(variant="reference", w_gen=w_gen, w_ce=w_ce)
    mask = torch.randperm(N_NODES, generator=torch.Generator().manual_seed(11))[: int(0.7 * N_NODES)]
    y = torch.tensor([1])
    loss, _, grads, _ = run_model(model, data, mask, y)
    P, named = dense_params(model)
    ref = reference_step(P, x, adj, mask, y, w_gen=w_gen, w_ce=w_ce)
    ref["loss"].backward()
    assert close(loss, ref["loss"].detach())
    close_grads(grads, named)


def test_attention_init_switch():
    """``xavier`` = ``nn.init.xavier_normal_`` on the (1, heads, C) tensor (the reference); ``heads`` uses
    the fan of a (heads, C) matrix."""
    torch.manual_seed(0)
    gain = torch.nn.init.calculate_gain("relu")
    heads, c = 8, 512
    ref = GATLayer(8, c, heads, att_init="xavier")
    ours = GATLayer(8, c, heads, att_init="heads")
    for layer, std in ((ref, gain * math.sqrt(2.0 / ((heads + 1) * c))), (ours, gain * math.sqrt(2.0 / (heads + c)))):
        for att in (layer.att_src, layer.att_dst):
            assert att.shape == (1, heads, c)
            assert float(att.std()) == pytest.approx(std, rel=0.05)
    assert SRMIL(D, 2).encoder.layers[0].conv.att_init == "xavier"  # the default is the reference
    assert SRMIL(D, 2, variant="twopass").encoder.layers[0].conv.att_init == "heads"


def test_switch_errors_name_the_argument():
    from wsigraph.errors import ConfigError
    from wsigraph.nn import build_model

    for key, bad in (("variant", "paper"), ("recon_pass", "three"), ("residual_mode", "none"), ("att_init", "x")):
        with pytest.raises(ConfigError, match=key):
            build_model("srmil", 16, 2, **{key: bad})
    m = build_model("srmil", 16, 2, variant="reference", att_init="heads")
    assert (m.recon_pass, m.residual_mode, m.att_init) == ("separate", "projection", "heads")
    assert all(l.res is None for l in m.encoder.layers[1:]) and m.encoder.layers[0].res is not None
    assert all(l.res is not None for l in build_model("srmil", 16, 2, variant="twopass").encoder.layers)
    assert build_model("srmil", 16, 2).encoder.layers[1].res is None  # the default: the reference's residuals
