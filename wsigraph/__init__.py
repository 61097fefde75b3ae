"""wsigraph: whole-slide images to spatial graphs of patch embeddings, and graph MIL models on them.

Public API (see README.md)::

    from wsigraph import read_features, write_features, spatial_graph, ...
"""
from wsigraph.errors import ConfigError, InputError, MissingDependencyError, MissingFileError, WsigraphError
from wsigraph.data.features import FeatureBag, read_features, write_features

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "WsigraphError",
    "InputError",
    "MissingFileError",
    "ConfigError",
    "MissingDependencyError",
    "FeatureBag",
    "read_features",
    "write_features",
]
