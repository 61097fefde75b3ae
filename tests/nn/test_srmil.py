"""SRMIL and its building blocks (sparse structure, attention, encoders) on small generated graphs."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from wsigraph.errors import ConfigError, InputError
from wsigraph.nn import SRMIL, CSRGraph, GATLayer, GNNEncoder, build_model, csr_aggregate, sce_loss
from wsigraph.nn.functional import edge_softmax, mask_dropout
from wsigraph.nn.srmil import centered_per_slide

D = 16


def lattice_slide(n: int = 200, d: int = D, seed: int = 0, self_loops: bool = True) -> Data:
    """Row-major lattice of n patches, 24-neighbourhood (radius 2.84 steps), random features."""
    g = torch.Generator().manual_seed(seed)
    side = int(n ** 0.5) + 1
    pos = torch.stack([torch.arange(n) % side, torch.arange(n) // side], 1).float()
    ei = (torch.cdist(pos, pos) <= 2.84).nonzero().t()
    if not self_loops:
        ei = ei[:, ei[0] != ei[1]]
    return Data(x=torch.randn(n, d, generator=g), edge_index=ei, pos=pos, slide_id="lat")


def fixed_mask(model: SRMIL, n: int, seed: int = 3) -> torch.Tensor:
    mask = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(model.mask_rate * n)]
    model.sample_mask = lambda num_nodes, device: mask  # type: ignore[method-assign]
    return mask


def random_graph(n: int = 30, e: int = 100, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    return torch.cat([ei, ei.flip(0)], 1)


# ---------------------------------------------------------------------------------------- structure
def test_csr_graph_self_loops_dedup_and_order():
    n = 30
    ei = random_graph(n)
    ei = torch.cat([ei, ei[:, :10]], 1)  # duplicates
    before = ei.clone()
    g = CSRGraph.from_edge_index(ei, n)
    assert torch.equal(ei, before)
    loops = g.row == g.col
    assert int(loops.sum()) == n and torch.equal(torch.sort(g.row[loops]).values, torch.arange(n))
    keys = g.row * n + g.col
    assert bool((keys[1:] > keys[:-1]).all())  # sorted by (target, source), no duplicates
    expected = {(int(s), int(t)) for s, t in ei.t() if s != t} | {(i, i) for i in range(n)}
    assert {(int(s), int(t)) for s, t in g.edge_index.t()} == expected
    assert torch.equal(g.crow[1:] - g.crow[:-1], torch.bincount(g.row, minlength=n))
    # the transpose lists the same entries by (source, target)
    tk = g.col[g.t_perm] * n + g.row[g.t_perm]
    assert bool((tk[1:] > tk[:-1]).all()) and torch.equal(g.t_col, g.row[g.t_perm])
    # a graph already holding one loop per node keeps its edges
    assert CSRGraph.from_edge_index(g.edge_index, n).num_edges == g.num_edges
    # without self_loops the graph is used as given (deduplicated)
    assert not bool((CSRGraph.from_edge_index(ei[:, ei[0] != ei[1]], n, self_loops=False).row ==
                     CSRGraph.from_edge_index(ei[:, ei[0] != ei[1]], n, self_loops=False).col).any())


@pytest.mark.parametrize("bidirectional", [True, False])
def test_with_supernode_equals_generic_construction(bidirectional):
    n = 30
    g = CSRGraph.from_edge_index(random_graph(n), n)
    aug = g.with_supernode(bidirectional)
    extra = [torch.stack([torch.arange(n), torch.full((n,), n)])]
    if bidirectional:
        extra.append(torch.stack([torch.full((n,), n), torch.arange(n)]))
    ref = CSRGraph.from_edge_index(torch.cat([g.edge_index] + extra, 1), n + 1, self_loops=False)
    for field in ("crow", "row", "col", "t_crow", "t_perm", "t_col"):
        assert torch.equal(getattr(aug, field), getattr(ref, field)), field
    assert torch.equal(aug.col[-n:], torch.arange(n)) and bool((aug.row[-n:] == n).all())


def test_csr_aggregate_gradcheck_and_reference():
    n, h, c = 20, 3, 4
    g = CSRGraph.from_edge_index(random_graph(n, 60), n)
    x = torch.randn(n, h, c, dtype=torch.double, requires_grad=True)
    alpha = torch.rand(g.num_edges, h, dtype=torch.double, requires_grad=True)
    out = csr_aggregate(x, alpha, g)
    ref = torch.zeros(n, h, c, dtype=torch.double).index_add_(0, g.row, alpha[:, :, None] * x[g.col])
    assert torch.allclose(out, ref)
    assert torch.autograd.gradcheck(lambda a, b: csr_aggregate(a, b, g), (x, alpha))


def test_edge_softmax_matches_composed_ops_and_gradcheck():
    from torch_geometric.utils import softmax

    n, h = 20, 2
    g = CSRGraph.from_edge_index(random_graph(n, 60), n)
    a_src = torch.randn(n, h, dtype=torch.double, requires_grad=True)
    a_dst = torch.randn(n, h, dtype=torch.double, requires_grad=True)
    ours = edge_softmax(a_src, a_dst, g, 0.2)
    logits = torch.nn.functional.leaky_relu(a_src[g.col] + a_dst[g.row], 0.2)
    assert torch.allclose(ours, softmax(logits, g.row, num_nodes=n))
    sums = torch.zeros(n, h, dtype=torch.double).index_add_(0, g.row, ours)
    assert torch.allclose(sums, torch.ones_like(sums))
    assert torch.autograd.gradcheck(lambda s, d: edge_softmax(s, d, g, 0.2), (a_src, a_dst))


def test_mask_dropout_scales_and_masks_gradient():
    torch.manual_seed(0)
    x = torch.ones(2000, 8, requires_grad=True)
    y = mask_dropout(x, 0.25, training=True)
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.75) < 0.02
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert mask_dropout(x, 0.25, training=False) is x


def test_gat_layer_matches_pyg_gatconv():
    from torch_geometric.nn import GATConv

    torch.manual_seed(0)
    n = 25
    g = CSRGraph.from_edge_index(random_graph(n, 80), n)
    x = torch.randn(n, 12)
    for concat in (True, False):
        ours = GATLayer(12, 5, heads=3, concat=concat).eval()
        ref = GATConv(12, 5, heads=3, concat=concat, add_self_loops=False).eval()
        with torch.no_grad():
            ref.lin.weight.copy_(ours.lin.weight)
            ref.att_src.copy_(ours.att_src)
            ref.att_dst.copy_(ours.att_dst)
            ours.bias.normal_()
            ref.bias.copy_(ours.bias)
        out, att = ours(x, g, return_attention=True)
        ref_out, (ref_ei, ref_att) = ref(x, g.edge_index, return_attention_weights=True)
        assert torch.equal(ref_ei, g.edge_index)
        assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(att, ref_att, atol=1e-6)


def test_encoder_head_mean_and_widths():
    enc = GNNEncoder(D, 256, 256, num_layers=2, heads=4, out_heads=4)
    assert enc.embed_dim == 64
    h = torch.randn(5, 256)
    assert torch.allclose(enc.head_mean(h), h.view(5, 4, 64).mean(1))
    assert GNNEncoder(D, 256, 256, conv="gcn").embed_dim == 256


# ---------------------------------------------------------------------------------------- SRMIL
def test_srmil_defaults_follow_the_paper():
    m = SRMIL(1024, 2)
    assert isinstance(m.reformer, torch.nn.Linear) and m.reformer.weight.shape == (1024, 1024)
    assert m.reformer.bias is not None
    layers = m.encoder.layers
    assert len(layers) == 2 and all(l.conv_type == "gat" for l in layers)
    assert [(l.conv.heads, l.conv.out_dim) for l in layers] == [(4, 64), (4, 64)]
    assert all(isinstance(l.norm, torch.nn.LayerNorm) and isinstance(l.act, torch.nn.PReLU) for l in layers)
    assert m.variant == "reference" and m.recon_pass == "separate" and m.att_init == "xavier"
    assert layers[0].res is not None and layers[1].res is None  # only the 1024 -> 256 projection residual
    assert [l.feat_drop for l in layers] == [0.11, 0.11] and [l.conv.attn_drop for l in layers] == [0.15, 0.15]
    assert m.mask_rate == 0.7 and m.remask == "token" and m.alpha == 1.0
    assert m.enc2dec.weight.shape == (256, 256) and m.enc2dec.bias is None
    dec = m.decoder.layers
    assert len(dec) == 2 and (dec[0].conv.heads, dec[0].conv.out_dim) == (4, 64)
    assert (dec[1].conv.heads, dec[1].conv.out_dim) == (1, 1024) and dec[1].res is None
    assert isinstance(dec[1].norm, torch.nn.Identity) and isinstance(dec[1].act, torch.nn.Identity)
    cls = m.classifier
    assert [type(c) for c in cls] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
    assert cls[0].weight.shape == (128, 64) and cls[2].p == 0.059 and cls[3].weight.shape == (2, 128)
    assert m.use_supernode and m.w_gen == 1.8 and m.w_ce == 1.0
    assert m.enc_mask_token.shape == (1, 1024) and m.dec_mask_token.shape == (1, 256)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_srmil_shapes_and_finite_losses(num_classes):
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, num_classes)
    loss, logits, parts = m.training_loss(data, torch.tensor([num_classes - 1]))
    assert loss.dim() == 0 and torch.isfinite(loss) and logits.shape == (1, num_classes)
    assert not logits.requires_grad
    assert set(parts) == {"ce_masked", "ce_full", "recon"} and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    for name in ("enc_mask_token", "super_token", "dec_mask_token"):
        assert getattr(m, name).grad is not None and getattr(m, name).grad.abs().sum() > 0, name
    out = m.eval()(data)
    assert out.logits.shape == (1, num_classes) and out.patch_scores.shape == (200,)


def test_mask_rate_honoured():
    torch.manual_seed(0)
    data = lattice_slide(n=200)
    for rate, variant in ((0.7, "reference"), (0.25, "reference"), (0.7, "twopass")):
        m = SRMIL(D, 2, mask_rate=rate, variant=variant)
        idx = m.sample_mask(200, torch.device("cpu"))
        assert idx.numel() == int(rate * 200) and torch.unique(idx).numel() == idx.numel()
        seen = []
        m.encoder.layers[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
        m.training_loss(data, torch.tensor([0]))
        token = m.reformer(m.enc_mask_token).detach()
        masked_rows = [int((inp == token).all(1).sum()) for inp in seen]
        n = int(rate * 200)
        # reference: reconstruction pass and masked pass (one mask), then the complete pass; twopass: one
        # masked pass serves both
        assert masked_rows == ([n, n, 0] if variant == "reference" else [n, 0]), variant


def test_reconstruction_counts_masked_patches_only():
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, 2).eval()  # eval: no dropout, so passes are comparable
    mask = fixed_mask(m, 200)
    unmasked = torch.ones(200, dtype=torch.bool)
    unmasked[mask] = False
    noise = {"rows": None}

    def perturb(mod, args, out):
        if noise["rows"] is None:
            return out
        x_hat = out[0].clone()
        x_hat[noise["rows"]] += 5 * torch.randn_like(x_hat[noise["rows"]])
        return x_hat, out[1]

    m.decoder.register_forward_hook(perturb)
    base = m.training_loss(data, torch.tensor([1]))[2]["recon"]
    noise["rows"] = unmasked.nonzero().view(-1)
    assert m.training_loss(data, torch.tensor([1]))[2]["recon"] == pytest.approx(base, abs=1e-7)
    noise["rows"] = mask[:1]  # a masked row: the loss must move
    assert abs(m.training_loss(data, torch.tensor([1]))[2]["recon"] - base) > 1e-4


def test_reconstruction_targets_raw_features():
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, 2).eval()
    mask = fixed_mask(m, 200)
    captured = {}
    m.decoder.register_forward_hook(lambda mod, args, out: captured.update(x_hat=out[0].detach()))
    parts = m.training_loss(data, torch.tensor([1]))[2]
    x_hat, x = captured["x_hat"][mask], data.x[mask]
    expected = (1 - torch.nn.functional.cosine_similarity(x_hat, x, dim=1)).mean()
    assert parts["recon"] == pytest.approx(float(expected), rel=1e-5)


def test_centered_target_subtracts_the_slide_mean():
    torch.manual_seed(0)
    data = lattice_slide()
    data.x = data.x + 3.0 * torch.randn(1, D)  # an offset every patch of the slide shares (a stain, a scanner)
    m = SRMIL(D, 2, recon_target="centered").eval()
    mask = fixed_mask(m, 200)
    captured = {}
    m.decoder.register_forward_hook(lambda mod, args, out: captured.update(x_hat=out[0].detach()))
    parts = m.training_loss(data, torch.tensor([1]))[2]
    target = data.x - data.x.mean(0, keepdim=True)  # the mean over all patches, masked or not
    expected = (1 - torch.nn.functional.cosine_similarity(captured["x_hat"][mask], target[mask], dim=1)).mean()
    assert parts["recon"] == pytest.approx(float(expected), rel=1e-5)
    raw = (1 - torch.nn.functional.cosine_similarity(captured["x_hat"][mask], data.x[mask], dim=1)).mean()
    assert abs(float(raw) - float(expected)) > 1e-3  # the offset is not part of the target
    with pytest.raises(ConfigError, match="recon_target"):
        SRMIL(D, 2, recon_target="mean")


def test_centered_per_slide_removes_each_slides_own_offset():
    x = torch.randn(9, 4, dtype=torch.float64)
    index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    shifted = x + torch.randn(3, 4, dtype=torch.float64)[index]
    out = centered_per_slide(shifted, index, 3)
    torch.testing.assert_close(out, centered_per_slide(x, index, 3))
    for k in range(3):
        torch.testing.assert_close(out[index == k], centered_per_slide(shifted[index == k]))
        torch.testing.assert_close(out[index == k].mean(0), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("w_gen,w_ce", [(1.8, 1.0), (0.5, 1.5), (1.0, 0.0)])
def test_loss_weighting(w_gen, w_ce):
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, 2, w_gen=w_gen, w_ce=w_ce).eval()
    fixed_mask(m, 200)
    loss, logits, p = m.training_loss(data, torch.tensor([1]))
    expected = (2 - w_gen) * ((2 - w_ce) * p["ce_masked"] + w_ce * p["ce_full"]) + w_gen * p["recon"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the complete-graph CE is the CE of the inference logits
    full = torch.nn.functional.cross_entropy(m(data).logits, torch.tensor([1]))
    assert p["ce_full"] == pytest.approx(float(full), rel=1e-5)
    assert torch.allclose(logits, m(data).logits)
    assert p["ce_masked"] != pytest.approx(p["ce_full"], rel=1e-6)  # the masked pass really is masked


def test_w_gen_zero_removes_reconstruction():
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, 2, w_gen=0.0).eval()
    fixed_mask(m, 200)
    calls = []
    m.decoder.register_forward_hook(lambda *a: calls.append(1))
    loss, _, p = m.training_loss(data, torch.tensor([0]))
    assert calls == [] and p["recon"] == 0.0
    assert loss.item() == pytest.approx(2 * (p["ce_masked"] + p["ce_full"]), rel=1e-5)


def test_class_weight_changes_ce():
    torch.manual_seed(0)
    data = lattice_slide()
    m = SRMIL(D, 3).eval()
    fixed_mask(m, 200)
    p1 = m.training_loss(data, torch.tensor([2]))[2]
    p2 = m.training_loss(data, torch.tensor([2]), torch.tensor([1.0, 1.0, 3.0]))[2]
    # one slide per step: its CE times its class's weight (not PyTorch's weighted mean, where it cancels)
    assert p2["ce_full"] == pytest.approx(3 * p1["ce_full"], rel=1e-5) and p2["recon"] == pytest.approx(p1["recon"])


def test_supernode_attention_scores_sum_to_one():
    torch.manual_seed(0)
    data = lattice_slide()
    out = SRMIL(D, 2).eval()(data)
    assert out.patch_scores.shape == (200,) and bool((out.patch_scores >= 0).all())
    assert float(out.patch_scores.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("conv", ["gat", "gcn", "gin", "sage"])
def test_encoder_types_run(conv):
    torch.manual_seed(0)
    data = lattice_slide(n=60)
    m = SRMIL(D, 3, encoder=conv, decoder=conv, hidden=32)
    loss, _, parts = m.training_loss(data, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and parts["recon"] > 0
    assert m.reformer.weight.grad is not None
    out = m.eval()(data)
    assert out.logits.shape == (1, 3)
    assert (out.patch_scores is None) == (conv != "gat")


@pytest.mark.parametrize("readout", ["attention", "gated_attention", "mean", "max"])
def test_readouts_run(readout):
    torch.manual_seed(0)
    data = lattice_slide(n=60)
    m = SRMIL(D, 2, readout=readout, hidden=32)
    loss, _, _ = m.training_loss(data, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and not m.use_supernode
    out = m.eval()(data)
    if readout == "mean":
        assert out.patch_scores is None
    else:
        assert out.patch_scores.shape == (60,) and float(out.patch_scores.sum()) == pytest.approx(1.0, abs=1e-5)


def test_other_options_run():
    torch.manual_seed(0)
    data = lattice_slide(n=60)
    for kw in (dict(remask="zero"), dict(remask="none", reformer="identity"), dict(embed_heads="concat"),
               dict(supernode_bidirectional=False), dict(self_loops=False), dict(norm="batchnorm", activation="elu"),
               dict(num_layers=3, num_dec_layers=1, heads=2, dec_out_heads=2), dict(residual=False, alpha=2.0)):
        m = SRMIL(D, 2, hidden=32, **kw)
        loss, _, _ = m.training_loss(data, torch.tensor([0]))
        loss.backward()
        assert torch.isfinite(loss), kw
        out = m.eval()(data)
        assert out.patch_scores is None or float(out.patch_scores.sum()) == pytest.approx(1.0, abs=1e-5)


def test_determinism_and_eval_output():
    data = lattice_slide()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        m = SRMIL(D, 2)
        torch.manual_seed(1)
        loss, _, parts = m.training_loss(data, torch.tensor([1]))
        results.append((float(loss), parts))
    assert results[0] == results[1]
    m.eval()
    a, b = m(data), m(data)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.patch_scores, b.patch_scores)


def test_no_graph_copy_or_in_place_change():
    torch.manual_seed(0)
    data = lattice_slide(self_loops=False)  # the model adds loops: they must not land in data
    ei, x = data.edge_index, data.x
    ei_copy, x_copy, version = ei.clone(), x.clone(), ei._version
    keys = set(data.keys())
    m = SRMIL(D, 2)
    m.training_loss(data, torch.tensor([0]))[0].backward()
    m.eval()(data)
    assert data.edge_index is ei and data.x is x and ei._version == version
    assert torch.equal(ei, ei_copy) and torch.equal(x, x_copy) and set(data.keys()) == keys


def test_gradient_steps_reduce_loss():
    torch.manual_seed(0)
    data = lattice_slide(n=100)
    m = SRMIL(D, 2, hidden=32).eval()
    fixed_mask(m, 100)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss = m.training_loss(data, torch.tensor([1]))[0]
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert m.training_loss(data, torch.tensor([1]))[0].item() < first - 0.05


def test_float16_features_are_cast():
    data = lattice_slide(n=50)
    data.x = data.x.half()
    out = SRMIL(D, 2, hidden=32).eval()(data)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()


def test_sce_loss_rows():
    pred, target = torch.randn(6, 4), torch.randn(6, 4)
    rows = torch.tensor([1, 4])
    cos = torch.nn.functional.cosine_similarity(pred[rows], target[rows], dim=1)
    assert float(sce_loss(pred, target, 2.0, rows)) == pytest.approx(float(((1 - cos) ** 2).mean()), rel=1e-6)


def test_bad_inputs_name_the_slide():
    m = SRMIL(D, 2, hidden=32)
    data = lattice_slide(n=30)
    data.slide_id = "slide_007"
    bad = data.clone()
    bad.x = torch.randn(30, D + 1)
    with pytest.raises(InputError, match=r"slide_007.*in_dim=16"):
        m(bad)
    bad = data.clone()
    del bad.edge_index
    with pytest.raises(InputError, match=r"slide_007.*edge_index"):
        m(bad)
    bad = data.clone()
    bad.edge_index = torch.tensor([[0, 31], [1, 2]])
    with pytest.raises(InputError, match=r"slide_007.*outside \[0, 30\)"):
        m(bad)
    bad = data.clone()
    bad.x = torch.zeros(0, D)
    with pytest.raises(InputError, match=r"slide_007.*no patches"):
        m(bad)


def test_build_model_srmil_kwargs():
    m = build_model("srmil", D, 3, mask_rate=0.5, encoder="sage", readout="gated_attention", w_gen=1)
    assert m.mask_rate == 0.5 and m.encoder.conv_type == "sage" and m.w_gen == 1.0


def test_training_step_under_bf16_autocast():
    """bf16 mixed precision (the GPU default) must not reach the sparse kernels, which have no bf16 version."""
    torch.manual_seed(0)
    data = lattice_slide()
    model = build_model("srmil", D, 2, hidden=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits, parts = model.training_loss(data, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (1, 2)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
