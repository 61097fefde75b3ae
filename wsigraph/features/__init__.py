"""Patch encoders (a registry of architectures with local-only weights) and batched feature extraction.

::

    from wsigraph.features import build_encoder, extract_features
    enc = build_encoder("uni", weights="~/models/uni/pytorch_model.bin", device="cuda")
    extract_features("slide.svs", "coords/slide.h5", "features_uni/slide.h5", enc, num_workers=8)

Registered encoders: ``resnet50_trunc`` (CLAM's 1024-d ResNet-50 features), ``uni``, ``uni2_h``,
``virchow2``, ``h_optimus_0``, ``h_optimus_1``, ``phikon_v2``, ``prov_gigapath``, and ``timm:<model_name>``.
"""
from wsigraph.features import presets as _presets  # noqa: F401  (fills the registry)
from wsigraph.features.dataset import PatchDataset, make_loader
from wsigraph.features.encoders import PatchEncoder, build_encoder
from wsigraph.features.extract import ExtractResult, embed_batches, extract_features
from wsigraph.features.registry import ENCODERS, EncoderSpec, encoder_names, get_spec, register_encoder
from wsigraph.features.weights import load_weights, read_state_dict

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "register_encoder",
    "get_spec",
    "encoder_names",
    "PatchEncoder",
    "build_encoder",
    "load_weights",
    "read_state_dict",
    "PatchDataset",
    "make_loader",
    "embed_batches",
    "ExtractResult",
    "extract_features",
]
