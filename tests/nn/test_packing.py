"""Several slides per step packed as one block-diagonal graph (``packed_training_terms`` of SRMIL and
graph_abmil, issue 14):
with dropout off and the same masks, the packed step's loss, every loss part and every parameter gradient
equal the mean over the slides run one by one (float64, 1e-10 relative), for every readout, pass layout and
super-node direction. The packed super-node graph is checked against a dense construction."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from wsigraph.nn import SRMIL
from wsigraph.nn.sparse import CSRGraph
from wsigraph.tasks import ClassificationTask, RegressionTask
from wsigraph.train.lightning_module import pack_slides, step_loss

D = 32


def lattice_slide(n_side: int, keep: int, seed: int, label: int) -> Data:
    """``keep`` patches of an ``n_side`` x ``n_side`` lattice (the rest holes), the paper's radius."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n_side * n_side, generator=g)[:keep].sort().values
    pos = torch.stack([cells % n_side, cells // n_side], 1).double()
    ei = (torch.cdist(pos, pos) <= 2 * 1.42).nonzero().t().flip(0).contiguous()
    x = torch.randn(keep, D, generator=g, dtype=torch.float64)
    return Data(x=x, edge_index=ei, pos=pos, y=torch.tensor([label]), slide_id=f"s{seed}")


SLIDES = [lattice_slide(7, 30, 0, 1), lattice_slide(9, 47, 1, 0), lattice_slide(6, 21, 2, 1)]


def make_model(**kw) -> SRMIL:
    torch.manual_seed(0)
    m = SRMIL(D, 2, hidden=16, heads=2, feat_drop=0.0, attn_drop=0.0, cls_drop=0.0, **kw).double()
    with torch.no_grad():  # non-trivial norm / PReLU / bias values, so every parameter is exercised
        for name, p in m.named_parameters():
            if name.endswith(("norm.weight", "act.weight")):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(("norm.bias", "conv.bias", "reformer.bias")):
                p.copy_(0.05 * torch.randn_like(p))
    return m.train()


def step(model, task, packed: bool):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the masks: drawn per slide in slide order on both paths
    if packed:
        calls = []
        real = model.packed_training_terms
        model.packed_training_terms = lambda batch: calls.append(batch.num_graphs) or real(batch)
        try:
            loss, parts = step_loss(model, SLIDES, task)
        finally:
            del model.packed_training_terms
        assert calls == [len(SLIDES)]  # one pass over the packed slides
    else:
        support = type(model).supports_packing
        type(model).supports_packing = False  # the loop over slides
        try:
            loss, parts = step_loss(model, SLIDES, task)
        finally:
            type(model).supports_packing = support
    loss.backward()
    return loss.detach(), parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kw", [
    {"variant": "twopass"},                                      # two passes, super-node
    {},                                                          # three passes, the authors' (the default)
    {"variant": "reference", "readout": "gated_attention"},      # softmax within each slide
    {"readout": "mean", "w_ce": 2.0},                            # no masked-graph CE
    {"supernode_bidirectional": False, "w_gen": 0.0},            # super-node only listens; no reconstruction
    {"variant": "reference", "recon_target": "centered"},        # each slide's own mean removed from its target
], ids=["twopass", "reference", "gated", "mean-readout", "one-way-supernode", "centered-target"])
def test_packed_step_equals_the_slides_one_by_one(kw):
    model = make_model(**kw)
    assert model.supports_packing
    task = ClassificationTask(["a", "b"])
    loss_seq, parts_seq, grads_seq = step(model, task, packed=False)
    loss_pack, parts_pack, grads_pack = step(model, task, packed=True)
    torch.testing.assert_close(loss_pack, loss_seq, rtol=1e-10, atol=0)
    assert parts_pack.keys() == parts_seq.keys()
    for k in parts_seq:
        assert parts_pack[k] == pytest.approx(parts_seq[k], rel=1e-10, abs=1e-300), k
    assert grads_pack.keys() == grads_seq.keys() and len(grads_seq) >= 20
    for name, g in grads_seq.items():
        torch.testing.assert_close(grads_pack[name], g, rtol=1e-10, atol=1e-14, msg=name)


@pytest.mark.parametrize("name", ["graph_abmil", "abmil"])
def test_packed_baseline_step_equals_the_slides_one_by_one(name):
    from wsigraph.nn import GraphABMIL, build_model

    torch.manual_seed(0)
    kw = {"hidden": 16, "heads": 2, "norm": "layernorm"} if name == "graph_abmil" else {"embed_dim": 16}
    model = build_model(name, D, 2, dropout=0.0, **kw).double().train()
    assert model.supports_packing and not GraphABMIL(D, 2, norm="batchnorm").supports_packing
    task = ClassificationTask(["a", "b"])
    a, b = step(model, task, packed=False), step(model, task, packed=True)
    torch.testing.assert_close(b[0], a[0], rtol=1e-10, atol=0)
    assert len(a[2]) >= 5
    for key, g in a[2].items():
        torch.testing.assert_close(b[2][key], g, rtol=1e-10, atol=1e-14, msg=key)


def test_packed_regression_step_equals_the_slides_one_by_one():
    for d, t in zip(SLIDES, (0.5, -1.0, 2.0)):
        d.target = torch.tensor([t], dtype=torch.float64)
    try:
        model = SRMIL(D, 1, hidden=16, heads=2, feat_drop=0.0, attn_drop=0.0, cls_drop=0.0).double()
        task = RegressionTask()
        task.fit(torch.tensor([[0.5], [-1.0], [2.0]]).numpy())
        a, b = step(model, task, packed=False), step(model, task, packed=True)
        torch.testing.assert_close(b[0], a[0], rtol=1e-10, atol=0)
    finally:
        for d in SLIDES:
            del d.target


def test_batchnorm_mixes_slides_so_it_is_not_packed():
    assert not make_model(norm="batchnorm").supports_packing


@pytest.mark.parametrize("bidirectional", [True, False])
def test_packed_supernodes_join_each_slide_to_its_own(bidirectional):
    batch = pack_slides(SLIDES)
    n, b = batch.num_nodes, batch.num_graphs
    g = CSRGraph.from_edge_index(batch.edge_index, n).with_supernode(bidirectional, batch.ptr)
    dense = torch.zeros(n + b, n + b)
    dense[g.row, g.col] = 1
    want = torch.zeros(n + b, n + b)
    base = CSRGraph.from_edge_index(batch.edge_index, n)
    want[base.row, base.col] = 1
    for j in range(b):
        lo, hi = int(batch.ptr[j]), int(batch.ptr[j + 1])
        want[n + j, lo:hi] = 1          # patch -> its super-node
        if bidirectional:
            want[lo:hi, n + j] = 1      # super-node -> its patches
    assert torch.equal(dense, want)
    # CSR invariants: row pointer, the transposed order and its pointer
    assert torch.equal(g.crow, torch.cat([g.crow.new_zeros(1), torch.bincount(g.row, minlength=n + b).cumsum(0)]))
    assert torch.equal(g.t_crow, torch.cat([g.crow.new_zeros(1), torch.bincount(g.col, minlength=n + b).cumsum(0)]))
    assert bool((g.col[g.t_perm].diff() >= 0).all()) and torch.equal(g.t_col, g.row[g.t_perm])
    one = CSRGraph.from_edge_index(SLIDES[0].edge_index, SLIDES[0].num_nodes)
    a, c = one.with_supernode(bidirectional), one.with_supernode(bidirectional, torch.tensor([0, one.num_nodes]))
    assert all(torch.equal(getattr(a, k), getattr(c, k)) for k in ("crow", "row", "col", "t_crow", "t_perm"))
