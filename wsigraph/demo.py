"""``wsigraph demo``: the whole chain on a generated cohort, in about a minute on 2 CPU cores.

generate a synthetic cohort -> build its spatial graphs -> train SRMIL on one split -> evaluate on the
held-out test slides (slide metrics, and patch-level localisation against the synthetic ground truth) ->
heatmap PNG of the per-patch scores of a test slide. Every output lands in ``out_dir``; a rerun reuses what
is already there (cohort, graphs, the finished fold).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("wsigraph")


@dataclass
class DemoSettings:
    """Sizes of the demo. The defaults finish in about a minute on 2 CPU cores."""

    n_slides: int = 60
    dim: int = 32
    mode: str = "lesion"
    grid: tuple[int, int] = (24, 40)
    lesion_strength: float = 4.0
    lesion_fraction: tuple[float, float] = (0.08, 0.2)
    epochs: int = 40
    hidden: int = 64
    n_folds: int = 5
    seed: int = 0


def run_demo(out_dir: str | os.PathLike = "wsigraph-demo", settings: DemoSettings | None = None,
             progress: bool = True, echo: Any = print) -> dict:
    """Run the demo; returns ``{"metrics": test metrics, "localization": ..., "heatmap": path, ...}``.

    ``echo`` receives one line per stage (``print`` by default; pass ``log.info`` or a no-op to silence).
    """
    from wsigraph.data.features import read_features
    from wsigraph.data.synthetic import SyntheticConfig
    from wsigraph.graph import GraphConfig, GraphDataset
    from wsigraph.train.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
    from wsigraph.pipeline.predict import predict
    from wsigraph.train.localization import localization_metrics
    from wsigraph.train.runner import train_experiment
    from wsigraph.data.scores import load_scores
    from wsigraph.viz import render_heatmap, render_synthetic_slide
    from wsigraph.viz.lattice import default_level0_size

    s = settings or DemoSettings()
    out = Path(out_dir)
    t0 = time.perf_counter()

    echo(f"[1/5] generating a synthetic cohort of {s.n_slides} slides ({s.mode} mode) in {out / 'cohort'}")
    cohort = _synthetic_cohort(out / "cohort", SyntheticConfig(
        n_slides=s.n_slides, dim=s.dim, mode=s.mode, grid=s.grid, lesion_strength=s.lesion_strength,
        lesion_fraction=s.lesion_fraction, seed=s.seed))
    n_patches = [read_features(p, validate=False).num_patches for p in cohort.feature_paths]
    echo(f"      {len(cohort)} slides, {min(n_patches)}-{max(n_patches)} patches per slide, "
         f"classes {cohort.classes}")

    echo("[2/5] building spatial graphs (24-neighbourhood + self loops, the paper's default)")
    graph = GraphConfig()
    graphs = GraphDataset.from_cohort(cohort, graph, cache_dir=out / "graphs")
    edges = sum(int(graphs[i].edge_index.shape[1]) for i in range(len(graphs)))
    echo(f"      {edges:,} directed edges over {sum(n_patches):,} patches, cached in {out / 'graphs'}")

    echo(f"[3/5] training SRMIL for {s.epochs} epochs on fold 0 of {s.n_folds} (train/val/test by case)")
    cfg = ExperimentConfig(
        data=DataConfig(manifest=str(out / "cohort" / "manifest.csv"), feature_dir=str(out / "cohort" / "features"),
                        classes=list(cohort.classes), split_mode="kfold", n_folds=s.n_folds,
                        cache_dir=str(out / "graphs"), split_seed=s.seed),
        graph=graph,
        model=ModelConfig(name="srmil", params={"hidden": s.hidden}),
        train=TrainConfig(epochs=s.epochs, seed=s.seed, bootstrap=200, progress_bar=progress),
        output_dir=str(out / "run"),
    )
    result = train_experiment(cfg, folds=[0])
    fold = result["folds"][0]
    test = fold["metrics"]["test"]
    echo(f"      test: AUC {_fmt(test.get('auc'))}, accuracy {_fmt(test.get('accuracy'))}, "
         f"balanced accuracy {_fmt(test.get('balanced_accuracy'))} "
         f"({fold.get('n_slides', {}).get('test', '?')} slides)")

    echo("[4/5] per-patch scores of the test slides, against the synthetic lesion ground truth")
    checkpoint = Path(fold["checkpoint"])
    import pandas as pd

    test_ids = pd.read_csv(checkpoint.parent / "predictions_test.csv", dtype={"slide_id": str})["slide_id"].tolist()
    paths = dict(zip(cohort.slide_ids, cohort.feature_paths))
    predict(checkpoint, [paths[sid] for sid in test_ids], out / "predictions", progress=False)
    loc_rows, best = [], None
    for sid in test_ids:
        bag = read_features(paths[sid], validate=False)
        scores = load_scores(out / "predictions" / "scores" / f"{sid}.h5").scores
        if bag.patch_labels is None or not bag.patch_labels.any():
            continue
        row = localization_metrics(scores, bag.patch_labels, bag.coords, bag.patch_size_level0, k=(10,))
        loc_rows.append(row)
        if best is None or row["n_positive"] > best[1]:
            best = (sid, row["n_positive"])
    patch_auc = float(np.nanmean([r["auc"] for r in loc_rows])) if loc_rows else float("nan")
    hit = float(np.nanmean([r["lesion_hit@10"] for r in loc_rows])) if loc_rows else float("nan")
    echo(f"      lesion patches vs SRMIL super-node attention: patch AUC {_fmt(patch_auc)}, "
         f"lesions hit in the top-10 patches {_fmt(hit)} ({len(loc_rows)} positive test slides)")

    echo("[5/5] heatmap")
    sid = best[0] if best else test_ids[0]
    bag = read_features(paths[sid], validate=False)
    step = bag.patch_size_level0
    coords = bag.coords - bag.coords.min(axis=0)  # crop the view to the tissue (a whole number of steps)
    size = default_level0_size(coords, step)
    truth = render_synthetic_slide(coords, bag.patch_labels, step, level0_size=size, max_size=600)
    scores = load_scores(out / "predictions" / "scores" / f"{sid}.h5").scores
    heat = render_heatmap(coords, scores, step, level0_size=size, normalize="percentile", cmap="inferno",
                          alpha=1.0, max_size=600)
    heatmap = _side_by_side(truth, heat, out / "heatmap.png",
                            left=f"{sid}: lesion patches (ground truth, purple)", right="SRMIL per-patch attention",
                            cmap="inferno", label="attention (percentile within the slide)")
    echo(f"      {heatmap}")
    seconds = time.perf_counter() - t0
    echo(f"done in {seconds:.0f} s; results in {out / 'run'} (plots in {checkpoint.parent / 'plots'})")
    view = (f"wsigraph view --scores {out / 'predictions' / 'scores'} --features {out / 'cohort' / 'features'} "
            f"--predictions {out / 'predictions' / 'predictions.csv'} --manifest {out / 'cohort' / 'manifest.csv'}")
    echo(f"look at every test slide's scores in a browser: {view}")
    return {"metrics": test, "localization": {"patch_auc": patch_auc, "lesion_hit@10": hit},
            "heatmap": str(heatmap), "checkpoint": str(checkpoint), "seconds": seconds, "view_command": view}


def _synthetic_cohort(folder: Path, cfg: Any) -> Any:
    """The cohort in ``folder`` if it was generated with ``cfg`` (its ``synthetic.json``), else a new one."""
    import json

    from wsigraph.data.manifest import read_manifest
    from wsigraph.data.synthetic import make_synthetic_cohort

    meta, manifest = folder / "synthetic.json", folder / "manifest.csv"
    if meta.exists() and manifest.exists():
        if json.loads(meta.read_text()) == json.loads(json.dumps(cfg.to_dict())):
            return read_manifest(manifest, classes=list(cfg.classes), feature_dir=folder / "features")
    return make_synthetic_cohort(folder, cfg)


def _side_by_side(left_img: Any, right_img: Any, path: Path, *, left: str, right: str, cmap: str,
                  label: str) -> Path:
    """Two images side by side with titles and a colour bar for the right one, written atomically."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from wsigraph.utils.atomic import atomic_path

    w, h = left_img.size
    fig = Figure(figsize=(2 * w / 100 + 1.6, h / 100 + 0.6), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, img, title in zip(axes, (left_img, right_img), (left, right)):
        ax.imshow(np.asarray(img), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=axes[1], fraction=0.046, pad=0.02, label=label)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "n/a"
