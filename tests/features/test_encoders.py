"""Patch-encoder registry, presets, local weights loading and the encoder's input preparation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from wsigraph.errors import ConfigError, InputError, MissingFileError
from wsigraph.features import ENCODERS, build_encoder, get_spec
from wsigraph.features.encoders import PatchEncoder
from wsigraph.features.presets import hf_dinov2_to_timm
from wsigraph.features.weights import read_state_dict, strip_prefixes

PRESETS = sorted(ENCODERS)


# ---------------------------------------------------------------------------------------------- registry


def test_unknown_encoder_lists_registered_names():
    with pytest.raises(ConfigError) as e:
        build_encoder("resnet51", random_init=True)
    msg = str(e.value)
    assert "'resnet51'" in msg
    for name in ("resnet50_trunc", "uni", "virchow2", "timm:"):
        assert name in msg


def test_unknown_timm_model_is_named():
    with pytest.raises(ConfigError, match="timm model 'not_a_model_xyz'"):
        get_spec("timm:not_a_model_xyz")


def test_aliases_resolve_case_and_dash_insensitively():
    assert get_spec("UNI-v1").name == "uni"
    assert get_spec("gigapath").name == "prov_gigapath"
    assert get_spec("H-optimus-0").name == "h_optimus_0"
    assert get_spec("ResNet50").name == "resnet50_trunc"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_architecture_gives_declared_dim(name):
    """Build each preset on the meta device (no memory) and run a meta forward: the output width must be
    the spec's dim, and its normalisation/geometry fields must be well formed."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build()
        x = torch.empty(2, 3, spec.input_size, spec.input_size)
        out = spec.embed(model, x) if spec.embed is not None else model(x)
    assert tuple(out.shape) == (2, spec.dim)
    assert len(spec.mean) == 3 and len(spec.std) == 3 and all(s > 0 for s in spec.std)
    assert spec.read_size >= spec.input_size
    assert spec.precision in ("bf16", "fp16", "fp32")


def test_published_facts_of_presets():
    """The numbers the model cards publish (width, input, normalisation) are what the registry says."""
    assert get_spec("resnet50_trunc").dim == 1024
    assert get_spec("uni").dim == 1024 and get_spec("phikon_v2").dim == 1024
    assert get_spec("uni2_h").dim == 1536 and get_spec("h_optimus_0").dim == 1536
    assert get_spec("prov_gigapath").dim == 1536 and get_spec("prov_gigapath").read_size == 256
    assert get_spec("virchow2").dim == 2 * 1280
    assert get_spec("h_optimus_0").mean == (0.707223, 0.578729, 0.703617)
    assert get_spec("h_optimus_0").std == (0.211883, 0.230117, 0.177517)
    assert get_spec("uni").mean == (0.485, 0.456, 0.406)


# ---------------------------------------------------------------------------------------------- no weights


def test_no_weights_without_random_init_is_an_error():
    with pytest.raises(InputError) as e:
        build_encoder("uni")
    msg = str(e.value)
    assert "'uni'" in msg and "weights" in msg and "random_init" in msg and "never downloads" in msg


def test_weights_and_random_init_together_is_an_error(tmp_path):
    with pytest.raises(InputError, match="both weights"):
        build_encoder("resnet50_trunc", weights=tmp_path / "w.pth", random_init=True)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(MissingFileError, match="nowhere.pth"):
        build_encoder("resnet50_trunc", weights=missing)


def test_folder_without_weights_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MissingFileError, match="no weights file"):
        build_encoder("resnet50_trunc", weights=tmp_path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "obj": _Opaque()}, path)
    with pytest.raises(InputError) as e:
        read_state_dict(path)
    msg = str(e.value)
    assert "evil.pth" in msg and "_Opaque" in msg and "weights_only" in msg


class _Opaque:  # a class torch.load(weights_only=True) refuses to unpickle
    pass


# ---------------------------------------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def small_resnet():
    torch.manual_seed(0)
    return build_encoder("resnet50_trunc", random_init=True, input_size=32)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("layout", ["plain.pth", "wrapped_module.pt", "model.safetensors", "folder"])
def test_weights_round_trip_gives_identical_features(tmp_path, small_resnet, batch, layout):
    sd = {k: v.clone() for k, v in small_resnet.backbone.state_dict().items()}
    if layout == "plain.pth":
        path = tmp_path / layout
        torch.save(sd, path)
    elif layout == "wrapped_module.pt":  # Lightning/DataParallel style
        path = tmp_path / layout
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    elif layout == "model.safetensors":
        from safetensors.torch import save_file

        path = tmp_path / layout
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        (tmp_path / "ckpt").mkdir()
        torch.save(sd, tmp_path / "ckpt" / "pytorch_model.bin")
        path = tmp_path / "ckpt"
    enc = build_encoder("resnet50_trunc", weights=path, input_size=32)
    assert enc.weights is not None and enc.weights_label != "random-init"
    import hashlib  # what feature files record as encoder_weights_sha256: the file's own digest

    assert enc.identity()["weights_sha256"] == hashlib.sha256(enc.weights.read_bytes()).hexdigest()
    assert not any(p.is_meta for p in enc.parameters())
    with torch.inference_mode():
        assert torch.equal(small_resnet(batch), enc(batch))


def test_resnet50_trunc_loads_a_full_torchvision_checkpoint(tmp_path):
    """layer4/fc keys of a full ResNet-50 checkpoint are ignored on purpose; the rest loads strictly."""
    from torchvision.models import resnet50

    torch.manual_seed(2)
    full = resnet50(weights=None)
    path = tmp_path / "resnet50-full.pth"
    torch.save(full.state_dict(), path)
    enc = build_encoder("resnet50_trunc", weights=path, input_size=32)
    assert torch.equal(enc.backbone.layer3[0].conv1.weight.contiguous(), full.layer3[0].conv1.weight)
    assert torch.equal(enc.backbone.bn1.running_var, full.bn1.running_var)


def test_wrong_shape_weights_name_file_key_and_both_shapes(tmp_path, small_resnet):
    sd = dict(small_resnet.backbone.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "bad-shapes.pth"
    torch.save(sd, path)
    with pytest.raises(InputError) as e:
        build_encoder("resnet50_trunc", weights=path, input_size=32)
    msg = str(e.value)
    assert str(path) in msg
    assert "conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in msg


def test_weights_of_another_architecture_are_refused(tmp_path, small_resnet):
    path = tmp_path / "resnet50.pth"
    torch.save(small_resnet.backbone.state_dict(), path)
    with pytest.raises(InputError) as e:
        build_encoder("timm:resnet10t", weights=path)
    msg = str(e.value)
    assert "resnet50.pth" in msg and "timm:resnet10t" in msg and "wrong shape" in msg


def test_missing_keys_are_listed(tmp_path, small_resnet):
    sd = dict(small_resnet.backbone.state_dict())
    del sd["layer2.0.bn1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match=r"missing from the file \(layer2.0.bn1.weight\)"):
        build_encoder("resnet50_trunc", weights=path, input_size=32)


def test_strip_prefixes_only_when_it_helps():
    target = {"a.w", "b.w"}
    sd = {"module.a.w": torch.zeros(1), "module.b.w": torch.zeros(1)}
    assert set(strip_prefixes(sd, target)) == target
    sd2 = {"model.w": torch.zeros(1)}  # 'model.' is part of a real key here, stripping would not help
    assert set(strip_prefixes(sd2, {"model.w"})) == {"model.w"}


# ---------------------------------------------------------------------------------------------- timm + conversion


def test_timm_encoder_random_init_embeds_pil_patches():
    enc = build_encoder("timm:test_vit", random_init=True)
    assert enc.name == "timm:test_vit" and enc.input_size == 160
    img = Image.fromarray(np.full((200, 180, 3), 120, dtype=np.uint8))
    x = enc.transform(img)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 160, 160)
    with torch.inference_mode():
        out = enc(torch.stack([x, x]))
    assert tuple(out.shape) == (2, enc.dim)


def test_hf_dinov2_checkpoint_converts_to_timm_names():
    """Write a timm ViT's weights in the Hugging Face Dinov2 layout (q/k/v split), convert back: identical."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2, init_values=1e-5)
    sd = vit.state_dict()
    hf = {"embeddings.cls_token": sd["cls_token"], "embeddings.position_embeddings": sd["pos_embed"],
          "embeddings.mask_token": torch.zeros(1, sd["cls_token"].shape[-1]),
          "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
          "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    for i in range(2):
        s, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{s}attn.qkv.{kind}"].chunk(3, dim=0)
            hf[f"{h}attention.attention.query.{kind}"] = q
            hf[f"{h}attention.attention.key.{kind}"] = k
            hf[f"{h}attention.attention.value.{kind}"] = v
            hf[f"{h}attention.output.dense.{kind}"] = sd[f"{s}attn.proj.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                hf[f"{h}{n}.{kind}"] = sd[f"{s}{n}.{kind}"]
        hf[f"{h}layer_scale1.lambda1"] = sd[f"{s}ls1.gamma"]
        hf[f"{h}layer_scale2.lambda1"] = sd[f"{s}ls2.gamma"]
    back = hf_dinov2_to_timm(hf)
    assert set(back) - {"embeddings.mask_token"} == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key


# ---------------------------------------------------------------------------------------------- preprocessing


def _tiny_encoder(spec_name: str) -> PatchEncoder:
    spec = dataclasses.replace(get_spec(spec_name), build=lambda: torch.nn.Flatten(), embed=None)
    return PatchEncoder(spec, spec.build())


def test_preprocess_scales_normalises_and_centre_crops():
    enc = _tiny_encoder("prov_gigapath")  # reads 256 px, crops the central 224
    assert enc.read_size == 256 and enc.input_size == 224
    x = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    x[:, :, 16:240, 16:240] = 255  # exactly the central 224 x 224 is white
    y = enc.preprocess(x)
    assert tuple(y.shape) == (1, 3, 224, 224)
    mean = torch.tensor(enc.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(enc.spec.std).view(1, 3, 1, 1)
    assert torch.allclose(y, ((torch.ones(1, 3, 224, 224) - mean) / std).expand_as(y), atol=1e-6)


def test_preprocess_uses_the_models_own_normalisation():
    enc = _tiny_encoder("h_optimus_0")
    x = torch.full((1, 3, 224, 224), 100, dtype=torch.uint8)
    y = enc.preprocess(x)
    expected = (100 / 255 - np.array(enc.spec.mean)) / np.array(enc.spec.std)
    assert np.allclose(y[0, :, 0, 0].numpy(), expected, atol=1e-6)


def test_preprocess_refuses_patches_smaller_than_the_input():
    enc = _tiny_encoder("uni")
    with pytest.raises(InputError, match="smaller than the input size 224"):
        enc.preprocess(torch.zeros(1, 3, 112, 112, dtype=torch.uint8))


def test_random_init_is_seeded_and_recorded():
    state = torch.random.get_rng_state()
    a = build_encoder("resnet50_trunc", random_init=True, seed=3, input_size=32)
    b = build_encoder("resnet50_trunc", random_init=True, seed=3, input_size=32)
    c = build_encoder("resnet50_trunc", random_init=True, seed=4, input_size=32)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    wa, wb, wc = (next(e.backbone.parameters()) for e in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.identity()["random_init_seed"] == 3
