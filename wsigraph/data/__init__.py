"""wsigraph's file formats (feature and coords files, score files, manifests, splits, label tables,
annotations, the SRMIL paper's pickles) and the synthetic cohorts.

The feature-file functions are imported eagerly; the rest load on first use (PEP 562), so that
``import wsigraph`` does not pay for pandas, scipy and scikit-learn.
"""
from __future__ import annotations

import importlib
from typing import Any

from wsigraph.data.features import (
    FeatureBag,
    infer_grid_step,
    is_complete_feature_file,
    list_feature_files,
    read_coords,
    read_features,
    validate_bag,
    write_features,
)

_LAZY = {
    "Cohort": "wsigraph.data.manifest",
    "read_manifest": "wsigraph.data.manifest",
    "cohort_from_records": "wsigraph.data.manifest",
    "write_manifest": "wsigraph.data.manifest",
    "Splits": "wsigraph.data.splits",
    "make_splits": "wsigraph.data.splits",
    "read_splits_csv": "wsigraph.data.splits",
    "SyntheticConfig": "wsigraph.data.synthetic",
    "SyntheticSlide": "wsigraph.data.synthetic",
    "generate_slide": "wsigraph.data.synthetic",
    "make_synthetic_cohort": "wsigraph.data.synthetic",
    "PatchScores": "wsigraph.data.scores",
    "load_scores": "wsigraph.data.scores",
    "write_scores": "wsigraph.data.scores",
    **{name: "wsigraph.data.annotations" for name in (
        "AnnotationPolygon", "read_asap_xml", "read_geojson_annotations", "read_annotations",
        "patch_labels_from_polygons", "lesion_fraction", "lesion_components", "add_patch_labels",
        "find_annotation", "collect_annotations")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsigraph.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "FeatureBag",
    "read_features",
    "read_coords",
    "write_features",
    "validate_bag",
    "infer_grid_step",
    "is_complete_feature_file",
    "list_feature_files",
    *_LAZY,
]
