"""2-process DDP on CPU (gloo): both ranks end with identical weights, each trains on its own half of the
slides, and validation metrics are computed over every validation slide (gathered across ranks).

The two ranks are launched the way torchrun / SLURM launch them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*
in the environment), each running ``train_experiment`` with ``train.devices=2``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from wsigraph.data.synthetic import make_synthetic_cohort

pytestmark = pytest.mark.ddp

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from lightning.pytorch.callbacks import Callback
    from wsigraph.train.config import load_experiment_config
    from wsigraph.train.runner import train_experiment

    cfg_path, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])

    class Probe(Callback):
        def __init__(self):
            self.val_counts, self.train_ids, self.val_metrics = [], [], []

        def on_train_epoch_start(self, trainer, pl_module):
            self.train_ids.append([])

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.train_ids[-1].append(batch.slide_id[0])

        def on_validation_end(self, trainer, pl_module):
            m = pl_module.last_val_metrics
            self.val_counts.append(int(m["n"]))
            self.val_metrics.append({k: v for k, v in m.items() if isinstance(v, float)})

        def on_train_end(self, trainer, pl_module):
            torch.save({k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()},
                       f"{out}/params_rank{rank}.pt")
            with open(f"{out}/probe_rank{rank}.json", "w") as f:
                json.dump({"world": trainer.world_size, "rank": trainer.global_rank, "val_counts": self.val_counts,
                           "train_ids": self.train_ids, "val_metrics": self.val_metrics}, f)

    res = train_experiment(load_experiment_config(cfg_path), callbacks=[Probe()])
    with open(f"{out}/result_rank{rank}.json", "w") as f:
        json.dump(res["folds"][0]["metrics"]["val"]["n"], f)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_two_ranks_agree_and_gather(tmp_path):
    import yaml

    cohort = tmp_path / "cohort"
    make_synthetic_cohort(cohort, n_slides=11, dim=8, grid=(8, 12), seed=3)
    df = pd.read_csv(cohort / "manifest.csv", dtype=str)
    df["case_id"] = df["slide_id"]
    # 6 train (an even share per rank), 3 val (odd: the distributed sampler pads one duplicate), 2 test;
    # rows sorted by label, so both classes are in every part
    pattern = ["train", "val", "train", "test", "train", "val", "train", "test", "train", "val", "train"]
    df["split"] = ""
    df.loc[df.sort_values(["label", "slide_id"]).index, "split"] = pattern
    df.to_csv(cohort / "manifest.csv", index=False)
    n_val = int((df["split"] == "val").sum())
    train_ids = sorted(df.loc[df["split"] == "train", "slide_id"])
    assert n_val % 2 == 1 and len(train_ids) % 2 == 0

    out = tmp_path / "out"
    out.mkdir()
    cfg = {"data": {"manifest": str(cohort / "manifest.csv"), "feature_dir": str(cohort / "features"),
                    "classes": ["normal", "tumor"], "split_mode": "manifest"},
           "model": {"name": "srmil", "hidden": 16, "heads": 2},
           "train": {"epochs": 2, "select_after": 0.0, "accelerator": "cpu", "devices": 2, "progress_bar": False,
                     "bootstrap": 50},
           "output_dir": str(out / "run")}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "worker.py").write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "exp.yaml"),
                                       str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} failed:\n{logs[rank][-3000:]}"

    probes = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in range(2)]
    assert [p["world"] for p in probes] == [2, 2] and [p["rank"] for p in probes] == [0, 1]
    # validation metrics over all validation slides, on both ranks, identical
    assert probes[0]["val_counts"] == probes[1]["val_counts"] == [n_val, n_val]
    assert probes[0]["val_metrics"] == probes[1]["val_metrics"]
    # each rank trains on its own half of the training slides, every epoch
    for epoch in range(2):
        a, b = probes[0]["train_ids"][epoch], probes[1]["train_ids"][epoch]
        assert len(a) == len(b) == len(train_ids) // 2
        assert not set(a) & set(b) and sorted(a + b) == train_ids
    # DDP keeps the replicas in sync
    p0 = torch.load(out / "params_rank0.pt", weights_only=True)
    p1 = torch.load(out / "params_rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    # rank 0 wrote the results, every rank got them back
    assert [json.loads((out / f"result_rank{r}.json").read_text()) for r in range(2)] == [n_val, n_val]
    pred = pd.read_csv(out / "run" / "fold_0" / "predictions_val.csv")
    assert len(pred) == n_val
    best = torch.load(out / "run" / "fold_0" / "best.ckpt", weights_only=True)
    assert best["metrics"]["n"] == n_val
