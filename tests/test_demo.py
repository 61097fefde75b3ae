"""``wsigraph demo`` end to end on a tiny cohort (the full-size demo is what README's first command runs)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from wsigraph.cli import main
from wsigraph.demo import DemoSettings, run_demo

TINY = DemoSettings(n_slides=12, grid=(12, 16), epochs=2, hidden=16, n_folds=3, seed=1)


def test_demo_runs_the_whole_chain(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", TINY, progress=False, echo=lines.append)
    assert [line[:5] for line in lines if line.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert {"auc", "accuracy", "balanced_accuracy"} <= set(result["metrics"])
    png = Image.open(result["heatmap"])
    assert png.size[0] > 200 and np.asarray(png.convert("L")).std() > 5  # a real picture, not a blank
    fold = json.loads((tmp_path / "demo" / "run" / "fold_0" / "results.json").read_text())
    assert fold["n_slides"]["test"] >= 1 and (tmp_path / "demo" / "predictions" / "predictions.csv").exists()
    assert 0.0 <= result["localization"]["lesion_hit@10"] <= 1.0 or np.isnan(result["localization"]["lesion_hit@10"])
    # the printed view command names folders the viewer can list: every test slide, with its prediction
    assert lines[-1].endswith(result["view_command"]) and result["view_command"].startswith("wsigraph view ")
    from wsigraph.cli import build_parser
    from wsigraph.viewer.catalog import build_catalog

    args = build_parser().parse_args(result["view_command"].split()[1:])
    catalog = build_catalog(scores=args.scores, features=args.features, predictions=args.predictions,
                            manifest=args.manifest)
    assert all(e.label in ("normal", "tumor") for e in catalog.values())  # true labels from the manifest
    tested = json.loads((tmp_path / "demo" / "run" / "fold_0" / "results.json").read_text())["n_slides"]["test"]
    assert sum(e.scores is not None for e in catalog.values()) == tested
    assert all(e.pred is not None for e in catalog.values() if e.scores is not None)
    import pandas as pd

    fold_dir = tmp_path / "demo" / "run" / "fold_0"
    both = pd.read_csv(fold_dir / "predictions_test.csv")["label"].nunique() == 2
    assert (fold_dir / "plots" / "roc_pr_test.png").exists() == both


def test_demo_cli_rerun_reuses_finished_work(tmp_path, monkeypatch):
    import wsigraph.demo

    # the CLI starts from DemoSettings(); shrink it so this test checks the plumbing in a few seconds
    monkeypatch.setattr(wsigraph.demo, "DemoSettings", lambda: TINY)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n-slides", "12", "--epochs", "2", "--seed", "1", "--no-progress"]
    assert main(args) == 0
    ckpt = out / "run" / "fold_0" / "best.ckpt"
    graphs = sorted((out / "graphs").iterdir())
    kept = [ckpt, *graphs, *sorted((out / "cohort" / "features").iterdir())]
    before = [p.stat().st_mtime_ns for p in kept]
    assert (out / "heatmap.png").exists()
    assert main(args) == 0  # the cohort, the cached graphs and the finished fold are reused, not rebuilt
    assert [p.stat().st_mtime_ns for p in kept] == before
    assert sorted((out / "graphs").iterdir()) == graphs  # no new cache entries either
