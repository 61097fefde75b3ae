"""The task layer (wsigraph.tasks): survival bins and curves, the step loss over several slides, and that
each task's loss trains a model toward its target (a sign or alignment error would fail these)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from wsigraph.errors import InputError
from wsigraph.nn import build_model
from wsigraph.tasks import ClassificationTask, RegressionTask, SurvivalTask
from wsigraph.tasks.survival_metrics import c_index
from wsigraph.train.lightning_module import step_loss


def test_survival_bins_are_quantiles_of_the_training_event_times():
    task = SurvivalTask("nll", n_bins=4)
    targets = np.array([[1.0, 1], [2.0, 1], [3.0, 1], [4.0, 1], [5.0, 1], [100.0, 0], [np.nan, np.nan]])
    task.fit(targets)
    assert task.edges == pytest.approx([2.0, 3.0, 4.0])  # censored and missing times left out
    assert task.bins_of(torch.tensor([0.5, 2.0, 3.5, 99.0])).tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="no event"):
        SurvivalTask().fit(np.array([[1.0, 0], [2.0, 0]]))
    restored = SurvivalTask("nll", n_bins=4)
    restored.load_state(task.state())
    assert restored.edges == task.edges


def test_survival_rows_risk_and_step_curve():
    task = SurvivalTask("nll", n_bins=3)
    task.fit(np.array([[1.0, 1], [2.0, 1], [3.0, 1]]))
    low, high = task.eval_row(torch.tensor([[-3.0, -3.0, -3.0]])), task.eval_row(torch.tensor([[1.0, 1.0, 1.0]]))
    assert float(high[0]) > float(low[0])  # higher hazards: higher risk
    rows = torch.stack([low, high]).numpy()
    s = task.survival_at(rows, np.array([0.5, task.edges[0] + 1e-3, 10.0]), None)
    assert s[:, 0] == pytest.approx([1.0, 1.0]) and s[0, 1] == pytest.approx(rows[0, 1])  # bin k: S_{k-1}
    assert (s[0] > s[1]).all() or np.allclose(s[:, 0], 1.0)


def _bags(n=40, seed=0):
    """Slides of 12 patches whose feature 0 is the slide's burden b in [0, 1] (plus noise)."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0, 1, size=n)
    slides = []
    for v in b:
        x = rng.normal(0, 0.1, size=(12, 4)).astype(np.float32)
        x[:, 0] += v
        slides.append(Data(x=torch.from_numpy(x)))
    t_event = rng.exponential(1.0, size=n) / np.exp(3 * b)
    t_cens = rng.uniform(0, 2.0, size=n)
    return slides, b, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(float)


def _train(task, slides, targets, batch, steps=120, seed=0):
    torch.manual_seed(seed)
    model = build_model("mean", 4, task.out_dim, hidden=8, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(slides), size=batch, replace=False)
        step = []
        for i in idx:
            d = slides[i].clone()
            d.target = torch.as_tensor(targets[i], dtype=torch.float64).view(1, -1)
            step.append(d)
        loss, _ = step_loss(model, step, task)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return np.stack([task.eval_row(model(d).logits).numpy() for d in slides])


@pytest.mark.parametrize("loss, batch", [("nll", 1), ("cox", 8)])
def test_survival_losses_train_a_model_toward_the_hazard(loss, batch):
    slides, b, time, event = _bags()
    targets = np.stack([time, event], axis=1)
    task = SurvivalTask(loss, n_bins=4)
    task.fit(targets)
    rows = _train(task, slides, targets, batch)
    oracle = c_index(time, event, b)  # the true hazard's concordance (0.69: exponential times are noisy)
    assert c_index(time, event, rows[:, 0]) > oracle - 0.03 and c_index(time, event, -rows[:, 0]) < 1 - oracle + 0.03
    m = task.metrics(targets, rows, train=(targets, rows), n_bootstrap=50)
    assert m["c_index"] > 0.65 and 0 < m["ibs"] < 0.25 and m["mean_td_auc"] > 0.65


def test_regression_loss_trains_toward_the_target_on_its_scale():
    slides, b, _, _ = _bags()
    y = (100.0 + 50.0 * b).reshape(-1, 1)  # far from 0 and wide: the standardisation matters
    task = RegressionTask("huber")
    task.fit(y)
    rows = _train(task, slides, y, 4)
    m = task.metrics(y, rows)
    assert m["pearson"] > 0.9 and abs(float(np.mean(rows)) - 125.0) < 10.0


def test_step_loss_of_several_slides_is_the_mean_of_each_slide_s_loss():
    torch.manual_seed(0)
    slides = [Data(x=torch.randn(10 + i, 6), edge_index=torch.empty((2, 0), dtype=torch.long)) for i in range(3)]
    for i, d in enumerate(slides):
        d.target = torch.tensor([[float(i % 2)]], dtype=torch.float64)
        d.y = torch.tensor([i % 2])
    model = build_model("abmil", 6, 2).eval()
    task = ClassificationTask(["a", "b"])
    together, _ = step_loss(model, slides, task)
    alone = [model.training_loss(d, d.y)[0] for d in slides]
    assert float(together.detach()) == pytest.approx(float(torch.stack(alone).mean()), rel=1e-6)
    one, parts = step_loss(model, slides[:1], task)
    assert float(one) == pytest.approx(float(alone[0]), rel=1e-6) and set(parts) == {"ce"}


def test_srmil_terms_are_renamed_after_the_task_loss():
    torch.manual_seed(0)
    n = 30
    d = Data(x=torch.randn(n, 8), edge_index=torch.stack([torch.arange(n), torch.arange(n)]),
             pos=torch.stack([torch.arange(n) % 6, torch.arange(n) // 6], 1).float())
    d.target = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    task = SurvivalTask("nll", n_bins=3)
    task.fit(np.array([[1.0, 1], [2.0, 1], [3.0, 1]]))
    model = build_model("srmil", 8, task.out_dim, hidden=16, heads=2)
    loss, parts = step_loss(model, [d], task)
    assert set(parts) == {"nll_masked", "nll_full", "recon"} and torch.isfinite(loss)
