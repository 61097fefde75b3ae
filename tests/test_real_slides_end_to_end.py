"""The whole chain on the real slide files: preprocess -> graphs -> train -> predict -> heatmap on the slide.

Uses every brightfield/fluorescence slide in ``shared/data/slides`` (the TCGA file has no mpp and gets
``--default-mpp``), a tiny randomly initialised encoder (the chain is checked, not the features) and a
small SRMIL; the labels are made up.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image

from wsigraph.cli import main
from wsigraph.data.features import read_features
from wsigraph.graph import GraphConfig, GraphDataset

REAL = ["CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs", "hamamatsu-test3-DAPI-2-387.ndpi",
        "hamamatsu-test3-TRITC-2-560.ndpi"]


def test_preprocess_real_slides_feeds_graphs_training_and_heatmaps(tmp_path, shared_data):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in REAL:
        os.symlink(shared_data / "slides" / name, slides / name)
    work = tmp_path / "work"
    assert main(["preprocess", str(slides), "--out", str(work), "--encoder", "resnet50_trunc", "--random-init",
                 "--input-size", "32", "--num-workers", "0", "--device", "cpu", "--default-mpp", "0.25",
                 "--no-progress"]) == 0
    feats = work / "features_resnet50_trunc"
    ids = sorted(p.stem for p in feats.glob("*.h5"))
    assert ids == sorted(n.rsplit(".", 1)[0] for n in REAL)

    # the feature files are valid graph inputs: lattice graphs on the global grid
    graphs = GraphDataset([feats / f"{i}.h5" for i in ids], slide_ids=ids, graph=GraphConfig())
    for i, g in enumerate(graphs):
        bag = read_features(feats / f"{ids[i]}.h5")
        assert g.x.shape == (bag.num_patches, 1024) and g.edge_index.shape[1] > bag.num_patches
        assert np.allclose(g.pos.numpy() * bag.patch_size_level0, bag.coords)

    # made-up labels; train on two slides, validate on one, test on one
    manifest = tmp_path / "cohort.csv"
    pd.DataFrame({"slide_id": ids, "label": ["a", "b", "a", "b"], "split": ["train", "train", "val", "test"]}
                 ).to_csv(manifest, index=False)
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    assert main(["init-config", "--manifest", str(manifest), "--features", str(feats), "--out", str(config)]) == 0
    assert main(["train", "--config", str(config), f"output_dir={run}", "train.epochs=1", "train.bootstrap=0",
                 "data.allow_random_features=true",
                 "train.progress_bar=false", "model.hidden=16", "data.classes=[a,b]"]) == 0
    assert (run / "fold_0" / "results.json").exists()

    preds = tmp_path / "preds"
    assert main(["predict", "--checkpoint", str(run / "fold_0" / "best.ckpt"), "--features", str(feats),
                 "--out", str(preds), "--no-progress"]) == 0
    table = pd.read_csv(preds / "predictions.csv")
    assert sorted(table["slide_id"]) == ids and np.allclose(table[["prob_a", "prob_b"]].sum(axis=1), 1.0)

    cmu = "CMU-1-Small-Region"
    out = tmp_path / "heatmaps"
    assert main(["heatmap", "--scores", str(preds / "scores" / f"{cmu}.h5"), "--slide",
                 str(slides / f"{cmu}.svs"), "--out", str(out), "--top-k", "4"]) == 0
    png = Image.open(out / f"{cmu}.heatmap.png")
    assert png.size[0] > 100 and np.asarray(png.convert("L")).std() > 5
    assert (out / f"{cmu}.geojson").exists() and (out / f"{cmu}.topk.png").exists()
