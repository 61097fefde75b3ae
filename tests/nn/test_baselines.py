"""Baseline MIL models, the registry and build_model errors, on small generated slides."""
from __future__ import annotations

import inspect
import itertools

import pytest
import torch
from torch_geometric.data import Data

from wsigraph.errors import ConfigError, InputError
from wsigraph.nn import MODELS, MILModel, MILOutput, NystromAttention, build_model, model_arguments
from wsigraph.nn.models import CLAMSB, DSMIL, GraphABMIL, TransMIL, iterative_pinv, smooth_top1_svm_loss
from wsigraph.train.config import default_config, load_experiment_config, validate_model_params

D = 16
N = 200


def lattice_slide(n: int = N, d: int = D, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    side = int(n ** 0.5) + 1
    pos = torch.stack([torch.arange(n) % side, torch.arange(n) // side], 1).float()
    ei = (torch.cdist(pos, pos) <= 2.84).nonzero().t()
    return Data(x=torch.randn(n, d, generator=g), edge_index=ei, pos=pos, slide_id="lat")


SMALL = {"srmil": dict(hidden=32)}  # keep the tests quick


def small(name: str, num_classes: int = 2) -> MILModel:
    return build_model(name, D, num_classes, **SMALL.get(name, {}))


def test_registry_names_and_plain_arguments():
    assert set(MODELS) == {"srmil", "mean", "max", "abmil", "clam_sb", "transmil", "dsmil", "patch_gcn",
                           "graph_abmil"}
    for name, cls in MODELS.items():
        assert issubclass(cls, MILModel)
        assert isinstance(cls.needs_graph, bool)
        args = model_arguments(name)
        assert args, name
        for key, default in args.items():  # config-friendly: every argument has a plain default
            assert isinstance(default, (bool, int, float, str)), (name, key, default)
        assert cls.__doc__ and cls.__module__  # docstring present
        module_doc = inspect.getmodule(cls).__doc__ or ""
        assert any(tag in module_doc for tag in ("arXiv", "Pattern Recognition")), name  # cites its paper
    assert MODELS["srmil"].needs_graph and MODELS["patch_gcn"].needs_graph and not MODELS["abmil"].needs_graph
    assert MODELS["graph_abmil"] is GraphABMIL and GraphABMIL.needs_graph


@pytest.mark.parametrize("name,num_classes", list(itertools.product(sorted(MODELS), [2, 3])))
def test_shapes_finite_losses_and_scores(name, num_classes):
    torch.manual_seed(0)
    data = lattice_slide()
    model = small(name, num_classes)
    loss, logits, parts = model.training_loss(data, torch.tensor([num_classes - 1]))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logits.shape == (1, num_classes) and not logits.requires_grad
    assert parts and all(isinstance(v, float) for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    out = model.eval()(data)
    assert isinstance(out, MILOutput) and out.logits.shape == (1, num_classes)
    assert out.patch_scores is not None and out.patch_scores.shape == (N,)
    assert torch.isfinite(out.patch_scores).all()


@pytest.mark.parametrize("name", ["abmil", "clam_sb", "dsmil", "patch_gcn", "graph_abmil"])
def test_attention_scores_are_a_distribution(name):
    torch.manual_seed(0)
    out = small(name).eval()(lattice_slide())
    assert bool((out.patch_scores >= 0).all()) and float(out.patch_scores.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    data = lattice_slide(n=80)
    model = small(name).eval()  # eval: deterministic (no dropout); losses still differentiable
    if name == "srmil":
        mask = torch.arange(0, 80, 2)
        model.sample_mask = lambda n, device: mask  # type: ignore[method-assign]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = torch.tensor([1])
    first = model.training_loss(data, y)[0].item()
    for _ in range(10):
        opt.zero_grad()
        model.training_loss(data, y)[0].backward()
        opt.step()
    assert model.training_loss(data, y)[0].item() < first - 1e-3


def test_mean_and_max_pooling_of_instance_logits():
    torch.manual_seed(0)
    data = lattice_slide()
    for name, pool in (("mean", lambda s: s.mean(0, keepdim=True)), ("max", lambda s: s.max(0, keepdim=True).values)):
        model = small(name).eval()
        inst = model.instance(data.x)
        out = model(data)
        assert torch.allclose(out.logits, pool(inst), atol=1e-6)
        # two classes: positive-minus-negative logit, independent of the prediction
        assert torch.allclose(out.patch_scores, inst[:, 1] - inst[:, 0], atol=1e-6)
    three = small("mean", num_classes=3).eval()
    inst = three.instance(data.x)
    out = three(data)
    assert torch.allclose(out.patch_scores, inst[:, int(out.logits.argmax())], atol=1e-6)


def test_dsmil_binary_scores_follow_the_positive_class():
    torch.manual_seed(0)
    data = lattice_slide()
    model = small("dsmil").eval()
    _, bag, u = model.streams(data.x)
    assert torch.allclose(model(data).patch_scores, u[:, 1], atol=1e-6)


def test_smooth_top1_svm_matches_its_formula():
    torch.manual_seed(0)
    s, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    expected = []
    for i in range(5):
        terms = torch.stack([(float(j != y[i]) + s[i, j]) for j in range(3)])
        expected.append(torch.logsumexp(terms, 0) - s[i, y[i]])
    assert float(smooth_top1_svm_loss(s, y)) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-6)
    # tau -> 0 approaches the hinge max_j(alpha [j != y] + s_j) - s_y
    hinge = torch.stack([torch.max(torch.stack([float(j != y[i]) + s[i, j] for j in range(3)])) - s[i, y[i]]
                         for i in range(5)]).mean()
    assert float(smooth_top1_svm_loss(s, y, tau=1e-3)) == pytest.approx(float(hinge), abs=1e-2)


def test_clam_instance_loss_uses_top_and_bottom_attention():
    torch.manual_seed(0)
    model = CLAMSB(D, 3, k_sample=4)
    h = torch.randn(20, 512)
    a = torch.softmax(torch.randn(20), 0)
    seen = []
    for clf in model.instance_classifiers:
        clf.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    model.instance_loss(a, h, label=1)
    top, bottom = torch.topk(a, 4).indices, torch.topk(-a, 4).indices
    assert len(seen) == 1 and torch.equal(seen[0], h[torch.cat([top, bottom])])
    seen.clear()
    model.subtyping = True
    model.instance_loss(a, h, label=1)
    assert len(seen) == 3 and all(torch.equal(s, h[top]) for s in (seen[0], seen[2]))
    # tiny bags use N // 2 patches per side
    seen.clear()
    model.subtyping = False
    model.instance_loss(a[:5], h[:5], label=0)
    assert seen[0].shape[0] == 4


def test_clam_and_dsmil_loss_weighting():
    torch.manual_seed(0)
    data = lattice_slide()
    clam = CLAMSB(D, 2, bag_weight=0.6).eval()
    loss, _, p = clam.training_loss(data, torch.tensor([1]))
    assert loss.item() == pytest.approx(0.6 * p["ce"] + 0.4 * p["instance"], rel=1e-5)
    dsmil = DSMIL(D, 3).eval()
    loss, logits, p = dsmil.training_loss(data, torch.tensor([2]))
    assert loss.item() == pytest.approx(0.5 * p["ce_max"] + 0.5 * p["ce_bag"], rel=1e-5)
    top, bag, u = dsmil.streams(data.x)
    assert torch.allclose(logits, bag) and torch.allclose(top, dsmil.instance(data.x).max(0, keepdim=True).values)
    assert torch.allclose(u.sum(0), torch.ones(3))
    # each class's critical instance attends most to itself (the query of the critical instance)
    critical = dsmil.instance(data.x).argmax(0)
    q = dsmil.q(data.x)
    assert torch.equal(u.argmax(0), (q @ q[critical].t()).argmax(0))


def test_iterative_pinv_close_to_exact():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 8, 8) + 4 * torch.eye(8), dim=-1).double()  # well conditioned
    assert torch.allclose(iterative_pinv(a, 12), torch.linalg.pinv(a), atol=1e-6)


def test_nystrom_equals_exact_attention_when_landmarks_summarise_tokens():
    """With tokens in identical consecutive pairs and m = n / 2 landmarks, each landmark is one distinct
    token and the Nystrom factorisation is exact."""
    torch.manual_seed(0)
    m = 16
    approx = NystromAttention(dim=32, heads=2, dim_head=16, num_landmarks=m, pinv_iterations=20, dropout=0.0).eval()
    exact = NystromAttention(dim=32, heads=2, dim_head=16, num_landmarks=4 * m, dropout=0.0).eval()
    with torch.no_grad():
        w = approx.to_qkv.weight.view(3, 32, 32)
        w[1] = w[0]  # keys = queries: the landmark kernel is well conditioned
    exact.load_state_dict(approx.state_dict())
    tokens = (torch.randn(m, 32) * 3).repeat_interleave(2, dim=0)  # (2m, 32)
    with torch.no_grad():
        out_a, first_a = approx(tokens, return_first_attention=True)
        out_e, first_e = exact(tokens, return_first_attention=True)
    assert torch.allclose(out_a, out_e, atol=1e-3) and torch.allclose(first_a, first_e, atol=1e-4)


def test_transmil_large_bag_uses_landmarks_and_folds_padding():
    torch.manual_seed(0)
    model = TransMIL(D, 2, dim=32, heads=4, num_landmarks=8).eval()
    n = 50  # padded to 64 tokens + class token > 8 landmarks
    out = model(Data(x=torch.randn(n, D)))
    assert out.patch_scores.shape == (n,) and torch.isfinite(out.patch_scores).all()
    loss, _, _ = model.train().training_loss(Data(x=torch.randn(n, D)), torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss)


def test_patch_gcn_needs_edges():
    data = lattice_slide(n=20)
    del data.edge_index
    with pytest.raises(InputError, match=r"slide 'lat'.*edge_index"):
        small("patch_gcn")(data)


def test_graph_abmil_defaults_and_shapes():
    m = GraphABMIL(D, 3)
    assert m.embed[0].out_features == 128 and m.embed[2].p == 0.1
    assert len(m.encoder.layers) == 2 and m.encoder.conv_type == "gat"
    for layer in m.encoder.layers:
        assert (layer.conv.heads, layer.conv.out_dim) == (4, 32) and layer.res is None
        assert isinstance(layer.act, torch.nn.ELU) and isinstance(layer.norm, torch.nn.Identity)
    assert m.attention.w.in_features == 128 and hasattr(m.attention, "u")  # gated, attn_hidden 128
    assert (m.classifier.in_features, m.classifier.out_features) == (128, 3)
    torch.manual_seed(0)
    for n in (N, 1):  # one patch: its own self loop is its whole neighbourhood
        data = lattice_slide(n=n)
        out = m.eval()(data)
        assert out.logits.shape == (1, 3) and torch.isfinite(out.logits).all()
        assert out.patch_scores.shape == (n,) and not out.patch_scores.requires_grad
        assert bool((out.patch_scores >= 0).all()) and float(out.patch_scores.sum()) == pytest.approx(1.0, abs=1e-5)
    _, a = m.attention(m.encoder(m.embed(data.x), m.graph(data, data.num_nodes))[0])
    assert torch.allclose(out.patch_scores, a)


@pytest.mark.parametrize("kwargs", [{}, dict(conv="gcn", norm="layernorm", residual=True),
                                    dict(conv="gin", norm="batchnorm", num_layers=3),
                                    dict(conv="sage", activation="prelu", residual=True, feat_drop=0.2),
                                    dict(heads=2, attn_drop=0.3, self_loops=False)])
def test_graph_abmil_gradients_reach_every_parameter(kwargs):
    torch.manual_seed(0)
    model = build_model("graph_abmil", D, 2, hidden=32, attn_hidden=16, **kwargs).train()
    loss, logits, parts = model.training_loss(lattice_slide(), torch.tensor([1]), torch.tensor([0.3, 0.7]))
    assert torch.isfinite(loss) and logits.shape == (1, 2) and set(parts) == {"ce"}
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_graph_abmil_uses_the_graph_and_is_permutation_equivariant():
    torch.manual_seed(0)
    data = lattice_slide()
    model = GraphABMIL(D, 3).eval().requires_grad_(False)
    out = model(data)
    # same features, other edges (the 4-neighbourhood instead of the 24-neighbourhood): other logits and scores
    near = (torch.cdist(data.pos, data.pos) <= 1.0).nonzero().t()
    other = model(Data(x=data.x, edge_index=near, pos=data.pos))
    assert float((other.logits - out.logits).abs().max()) > 1e-3
    assert float((other.patch_scores - out.patch_scores).abs().max()) > 1e-5
    # relabel the nodes and shuffle the edge list: same logits, scores permuted
    perm = torch.randperm(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    ei = inv[data.edge_index][:, torch.randperm(data.edge_index.size(1))]
    permuted = model(Data(x=data.x[perm], edge_index=ei, pos=data.pos[perm]))
    assert torch.allclose(permuted.logits, out.logits, atol=1e-5)
    assert torch.allclose(permuted.patch_scores, out.patch_scores[perm], atol=1e-7)
    # self_loops: the graph's own loops are not duplicated, so dropping them changes nothing
    no_loops = data.edge_index[:, data.edge_index[0] != data.edge_index[1]]
    assert torch.allclose(model(Data(x=data.x, edge_index=no_loops)).logits, out.logits, atol=1e-6)
    # the graph is not modified or copied into data
    ei, version = no_loops.clone(), no_loops._version
    model(Data(x=data.x, edge_index=no_loops))
    assert torch.equal(no_loops, ei) and no_loops._version == version


def test_graph_abmil_needs_edges_and_bf16_autocast():
    data = lattice_slide(n=30)
    del data.edge_index
    with pytest.raises(InputError, match=r"slide 'lat'.*GraphABMIL.*edge_index"):
        small("graph_abmil")(data)
    torch.manual_seed(0)
    model = small("graph_abmil")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits, _ = model.training_loss(lattice_slide(), torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (1, 2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_graph_abmil_argument_errors(tmp_path):
    m = build_model("graph_abmil", D, 2, hidden=64, heads=8, conv="SAGE", dropout=0)
    assert m.encoder.conv_type == "sage" and m.embed[2].p == 0.0
    with pytest.raises(ConfigError, match=r"'graph_abmil' has no argument 'hiden'.*valid arguments:.*hidden"):
        build_model("graph_abmil", D, 2, hiden=64)
    with pytest.raises(ConfigError, match=r"'heads': hidden=100 does not split over 3 heads"):
        build_model("graph_abmil", D, 2, hidden=100, heads=3)
    build_model("graph_abmil", D, 2, hidden=100, heads=3, conv="gcn")  # heads only matter for GAT
    with pytest.raises(ConfigError, match=r"'conv': 'gatv2' is not one of gat, gcn, gin, sage"):
        build_model("graph_abmil", D, 2, conv="gatv2")
    with pytest.raises(ConfigError, match=r"'norm': 'group' is not one of"):
        build_model("graph_abmil", D, 2, norm="group")
    with pytest.raises(ConfigError, match=r"'activation': 'swish' is not one of"):
        build_model("graph_abmil", D, 2, activation="swish")
    with pytest.raises(ConfigError, match=r"'dropout': 1.0 is outside \[0.0, 1.0\)"):
        build_model("graph_abmil", D, 2, dropout=1.0)
    with pytest.raises(ConfigError, match=r"'num_layers': 0 is outside"):
        build_model("graph_abmil", D, 2, num_layers=0)
    with pytest.raises(ConfigError, match=r"'residual' must be bool"):
        build_model("graph_abmil", D, 2, residual=1)
    # experiment config validation
    assert validate_model_params("graph_abmil", {"hidden": 64, "dropout": 0}) == {"hidden": 64, "dropout": 0.0}
    with pytest.raises(ConfigError, match=r"unknown parameter 'model.super_node' for model 'graph_abmil'.*hidden"):
        validate_model_params("graph_abmil", {"super_node": True})
    raw = {"data": {"manifest": "m.csv"}, "model": {"name": "graph_abmil", "heads": 2}}
    cfg = load_experiment_config(raw, ["model.num_layers=3"])
    assert cfg.model.name == "graph_abmil" and cfg.model.params == {"heads": 2, "num_layers": 3}
    with pytest.raises(ConfigError, match=r"model.mask_rate.*graph_abmil"):
        load_experiment_config(raw, ["model.mask_rate=0.5"])
    params = default_config("graph_abmil").model.params  # what init-config writes and a checkpoint rebuilds
    assert params == model_arguments("graph_abmil") and params["conv"] == "gat" and params["self_loops"] is True
    assert isinstance(build_model("graph_abmil", D, 2, **params), GraphABMIL)


def test_feature_width_mismatch_names_slide():
    data = lattice_slide(n=20, d=D + 2)
    data.slide_id = "case_12"
    with pytest.raises(InputError, match=r"case_12.*\(N, 16\)"):
        small("abmil")(data)


def test_build_model_errors():
    with pytest.raises(ConfigError, match=r"unknown model 'gcnmil'.*valid models: abmil, clam_sb"):
        build_model("gcnmil", D, 2)
    with pytest.raises(ConfigError, match=r"'srmil' has no argument 'maskrate'.*valid arguments:.*mask_rate"):
        build_model("srmil", D, 2, maskrate=0.5)
    with pytest.raises(ConfigError, match=r"'hidden' must be int.*'64'"):
        build_model("mean", D, 2, hidden="64")
    with pytest.raises(ConfigError, match=r"'mask_rate': 1.5 is outside \[0.0, 1.0\)"):
        build_model("srmil", D, 2, mask_rate=1.5)
    with pytest.raises(ConfigError, match=r"'encoder': 'gatv3' is not one of gat, gcn, gin, sage"):
        build_model("srmil", D, 2, encoder="gatv3")
    with pytest.raises(ConfigError, match=r"'num_classes'.*>= 1"):
        build_model("abmil", D, 0)
    assert build_model("abmil", D, 1)(Data(x=torch.randn(5, D))).logits.shape == (1, 1)  # a risk or a value
    with pytest.raises(ConfigError, match=r"'inst_loss': 'hinge' is not one of svm, ce"):
        build_model("clam_sb", D, 2, inst_loss="hinge")
