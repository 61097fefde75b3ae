"""Feature files, cohort manifests, splits, synthetic cohorts and imports."""
from wsigraph.data.features import (
    FeatureBag,
    infer_grid_step,
    is_complete_feature_file,
    list_feature_files,
    read_features,
    validate_bag,
    write_features,
)

__all__ = [
    "FeatureBag",
    "read_features",
    "write_features",
    "validate_bag",
    "infer_grid_step",
    "is_complete_feature_file",
    "list_feature_files",
]
