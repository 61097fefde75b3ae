"""wsigraph: whole-slide images to spatial graphs of patch embeddings, and graph MIL models on them.

The public API is importable from here; names load on first use (PEP 562), so ``import wsigraph`` and
``wsigraph --help`` stay fast and do not import torch_geometric, lightning or openslide until needed::

    import wsigraph as wg
    cohort = wg.make_synthetic_cohort("cohort/", n_slides=40, seed=0)
    edge_index = wg.spatial_graph(wg.read_features(cohort.feature_paths[0]).coords)
"""
from __future__ import annotations

import importlib
from typing import Any

from wsigraph.errors import ConfigError, InputError, MissingDependencyError, MissingFileError, WsigraphError

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "wsigraph.data.features": "FeatureBag read_features read_coords write_features",
    "wsigraph.data.manifest": "Cohort read_manifest",
    "wsigraph.data.splits": "Splits make_splits read_splits_csv",
    "wsigraph.data.synthetic": "SyntheticConfig make_synthetic_cohort",
    "wsigraph.pipeline.imports": "import_srmil",
    "wsigraph.data.annotations": "read_annotations patch_labels_from_polygons add_patch_labels",
    "wsigraph.graph": "spatial_graph GraphConfig GraphDataset",
    "wsigraph.nn": "build_model MODELS MILModel MILOutput SRMIL",
    "wsigraph.config": "load_config",
    "wsigraph.train.config": "ExperimentConfig load_experiment_config",
    "wsigraph.train.runner": "train_experiment",
    "wsigraph.train.inference": "evaluate",
    "wsigraph.pipeline.predict": "predict",
    "wsigraph.train.metrics": "classification_metrics bootstrap_ci",
    "wsigraph.train.checkpoint": "load_checkpoint",
    "wsigraph.train.localization": "localization_metrics aggregate_localization",
    "wsigraph.slide": "open_slide Slide segment_tissue TissueMask tile_slide write_coords find_slides",
    "wsigraph.features": "build_encoder PatchEncoder ENCODERS register_encoder extract_features",
    "wsigraph.pipeline.extract": "extract_cohort",
    "wsigraph.pipeline.preprocess": "preprocess_cohort",
    "wsigraph.data.scores": "load_scores write_scores",
    "wsigraph.viz": "render_heatmap write_geojson topk_gallery render_synthetic_slide",
    "wsigraph.bench": "BenchConfig load_bench_config run_benchmark",
    "wsigraph.demo": "run_demo DemoSettings",
}.items():
    for _name in _names.split():
        _LAZY[_name] = _module


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsigraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "WsigraphError", "InputError", "MissingFileError", "ConfigError",
           "MissingDependencyError", *_LAZY]
