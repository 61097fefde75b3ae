"""Shards (wsigraph.pipeline.shards and the runner's ``shard``): every cohort stage splits the sorted slide
list the same way, and the shards' reports and tables never overwrite each other."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from wsigraph.cli import main
from wsigraph.errors import InputError
from wsigraph.pipeline.runner import StaleOutputError, run_per_slide
from wsigraph.pipeline.shards import parse_shard, resolve_shard, select_shard, shard_from_env


def test_shards_partition_the_sorted_slide_list():
    ids = [f"s{i:02d}" for i in range(11)][::-1]
    parts = [select_shard(ids, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert all(not set(a) & set(b) for a in parts for b in parts if a is not b)
    assert parts[0] == sorted(ids)[0::3]
    assert parse_shard("2/4") == (2, 4)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert shard_from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "5"}) == (3, 5)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
    with pytest.raises(InputError, match="RANK"):
        shard_from_env({"RANK": "a", "WORLD_SIZE": "2"})


def test_resolve_shard_reads_the_environment_only_when_not_given(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_shard(None) == (1, 3)
    assert resolve_shard("0/2") == (0, 2)
    assert resolve_shard(False) is None  # a job that must see every slide (e.g. inside a training process)


def test_runner_runs_only_its_shard_and_names_its_report(tmp_path):
    items = [(f"slide_{i}", i) for i in (4, 0, 3, 1, 2)]
    ran: list[str] = []
    report = run_per_slide(items, lambda sid, i: ran.append(sid), shard="1/2", report_path=tmp_path / "r.csv",
                           progress=False)
    assert ran == ["slide_1", "slide_3"] and report.shard == (1, 2)
    assert report.report_path == tmp_path / "r.shard-1-of-2.csv" and not (tmp_path / "r.csv").exists()
    assert list(pd.read_csv(report.report_path)["slide_id"]) == ["slide_1", "slide_3"]
    # without a shard (False) every slide runs in the given order and the report keeps its name
    ran.clear()
    run_per_slide(items, lambda sid, i: ran.append(sid), shard=False, report_path=tmp_path / "r.csv", progress=False)
    assert ran == [sid for sid, _ in items] and (tmp_path / "r.csv").exists()


def test_runner_checks_only_its_own_slides_for_stale_outputs():
    def status(sid: str, item: int):
        return ["encoder: a -> b"] if sid == "slide_0" else "missing"

    items = [(f"slide_{i}", i) for i in range(4)]
    with pytest.raises(StaleOutputError, match="slide_0"):
        run_per_slide(items, lambda sid, i: i, status=status, shard="0/2", progress=False)
    report = run_per_slide(items, lambda sid, i: i, status=status, shard="1/2", progress=False)
    assert report.done == ["slide_1", "slide_3"]  # the other shard's stale file is not this shard's business


# ------------------------------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from wsigraph.data.synthetic import make_synthetic_cohort

    root = tmp_path_factory.mktemp("shards") / "cohort"
    make_synthetic_cohort(root, n_slides=12, dim=8, grid=(8, 10), seed=5)
    return root


def _union_of_shards(reports: list[Path]) -> list[str]:
    ids = [sid for r in reports for sid in pd.read_csv(r)["slide_id"]]
    assert len(ids) == len(set(ids)), "a slide ran in two shards"
    return sorted(ids)


def test_build_graphs_shards_cover_the_cohort_once(tmp_path, cohort):
    cache = tmp_path / "cache"
    for i in range(2):
        assert main(["build-graphs", "--features", str(cohort / "features"), "--cache", str(cache),
                     "--shard", f"{i}/2", "--no-progress"]) == 0
    reports = [cache / f"build_graphs_report.shard-{i}-of-2.csv" for i in range(2)]
    every = sorted(p.stem for p in (cohort / "features").glob("*.h5"))
    assert _union_of_shards(reports) == every
    assert len(list(cache.rglob("*.pt"))) == len(every)


def test_predict_shards_write_their_own_tables(tmp_path, cohort):
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{manifest: {cohort / 'manifest.csv'}, feature_dir: {cohort / 'features'}, n_folds: 2}}\n"
                   "model: {name: abmil, params: {embed_dim: 8, attn_dim: 4}}\n"
                   f"train: {{epochs: 1, bootstrap: 0, progress_bar: false}}\noutput_dir: {run}\n")
    assert main(["train", "--config", str(cfg), "--fold", "0"]) == 0
    out = tmp_path / "pred"
    for i in range(2):
        assert main(["predict", "--checkpoint", str(run / "fold_0" / "best.ckpt"), "--features",
                     str(cohort / "features"), "--out", str(out), "--shard", f"{i}/2", "--no-progress"]) == 0
    tables = [pd.read_csv(out / f"predictions.shard-{i}-of-2.csv") for i in range(2)]
    ids = sorted(list(tables[0]["slide_id"]) + list(tables[1]["slide_id"]))
    assert ids == sorted(p.stem for p in (cohort / "features").glob("*.h5")) and len(set(ids)) == len(ids)
    assert _union_of_shards([out / f"predict_report.shard-{i}-of-2.csv" for i in range(2)]) == ids
    assert not (out / "predictions.csv").exists()


def test_label_patches_shards(tmp_path, cohort):
    ann = tmp_path / "annotations"
    ann.mkdir()
    out = tmp_path / "labelled"
    for i in range(3):
        assert main(["label-patches", str(cohort / "features"), str(ann), "--out", str(out), "--shard", f"{i}/3",
                     "--no-progress"]) == 0
    every = sorted(p.stem for p in (cohort / "features").glob("*.h5"))
    assert _union_of_shards([out / f"label_patches_report.shard-{i}-of-3.csv" for i in range(3)]) == every
    assert sorted(p.stem for p in out.glob("*.h5")) == every


def test_segment_and_tile_shards(tmp_path, shared_data):
    slides = tmp_path / "slides"
    slides.mkdir()
    for prefix in ("a_", "b_"):  # one real slide under two ids
        os.symlink(shared_data / "slides" / "CMU-1-Small-Region.svs", slides / f"{prefix}CMU-1-Small-Region.svs")
    for cmd in ("segment", "tile"):
        out = tmp_path / cmd
        for i in range(2):
            assert main([cmd, str(slides), "--out", str(out), "--shard", f"{i}/2", "--no-progress"]) == 0
            rows = pd.read_csv(out / f"{cmd}_report.shard-{i}-of-2.csv")
            assert list(rows["slide_id"]) == [("a_", "b_")[i] + "CMU-1-Small-Region"]
        assert not (out / f"{cmd}_report.csv").exists()
    assert (tmp_path / "tile" / "tiling_summary.shard-1-of-2.csv").exists()
