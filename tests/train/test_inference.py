"""``wsigraph.train.inference``: the slide loaders (one slide per step, or steps of several with a short
last step merged) and the predictions tables."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from wsigraph.train.inference import StepBatchSampler, make_loader, with_case_ids


@pytest.mark.parametrize("n, batch, min_batch, sizes", [
    (13, 4, 1, [4, 4, 4, 1]),   # classification / nll: the short last step stays
    (13, 4, 2, [4, 4, 5]),      # Cox: a one-slide step has nothing to compare, so it joins the one before
    (14, 4, 2, [4, 4, 4, 2]),
    (1, 4, 2, [1]),             # nothing to merge into
    (8, 4, 2, [4, 4]),
])
def test_steps_merge_a_last_step_shorter_than_min_batch(n, batch, min_batch, sizes):
    steps = StepBatchSampler(range(n), batch, min_batch)
    got = list(steps)
    assert [len(s) for s in got] == sizes and len(steps) == len(sizes)
    assert sorted(i for s in got for i in s) == list(range(n))  # every slide once


def test_loader_of_several_slides_keeps_the_epoch_shuffle_and_merges_the_tail():
    from wsigraph.train.lightning_module import EpochShuffleSampler

    data = list(range(13))
    loader = make_loader(data, shuffle=True, seed=5, batch_size=4, min_batch=2)
    assert [len(b) for b in loader] == [4, 4, 5]
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, EpochShuffleSampler)  # Lightning finds it here and calls set_epoch
    first = [i for b in loader for i in b]
    sampler.set_epoch(1)
    second = [i for b in loader for i in b]
    assert sorted(first) == sorted(second) == data and first != second
    plain = make_loader(data, batch_size=4)
    assert [b for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12]]
    assert torch.is_tensor(next(iter(make_loader([torch.zeros(2)]))))  # one slide per step: PyG's loader


def test_predictions_carry_each_slides_patient():
    df = pd.DataFrame({"slide_id": ["b", "a"], "risk": [0.2, 0.1]})
    out = with_case_ids(df, ["a", "b", "c"], ["p1", "p2", "p2"])
    assert list(out.columns) == ["slide_id", "case_id", "risk"] and list(out["case_id"]) == ["p2", "p1"]
    assert "case_id" not in df  # the input frame is left as it was
