"""Registered patch encoders: CLAM's truncated ResNet-50 and pathology foundation models.

Architectures, input sizes and normalisations are those published by each model's authors (model cards
and reference code). Weights are never downloaded: pass the file (or folder) you downloaded yourself, e.g.
``--weights ~/models/uni/pytorch_model.bin``. Licences are as stated on the model cards; most are
non-commercial and gated, so check them before use.
"""
from __future__ import annotations

import torch
from torch import nn

from wsigraph.features.registry import EncoderSpec, StateDict, register_encoder

H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)


# ----------------------------------------------------------------------------------------------------
# ResNet-50 truncated after layer3 (CLAM's resnet50_trunc)
# ----------------------------------------------------------------------------------------------------


class ResNet50Trunc(nn.Module):
    """torchvision ResNet-50 up to ``layer3``, then global average pooling: (B, 3, H, W) -> (B, 1024).

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer3``), which timm's
    ``resnet50`` shares, so both checkpoint layouts load; their ``layer4.*``/``fc.*`` keys are ignored.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        full = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


register_encoder(EncoderSpec(
    name="resnet50_trunc", build=ResNet50Trunc, dim=1024, input_size=224, interpolation="bilinear", channels_last=True,
    ignore_keys=("layer4.", "fc."), aliases=("resnet50", "clam_resnet50"),
    description="ResNet-50 (ImageNet) truncated after layer3 + average pooling: CLAM's features, used by the "
                "SRMIL paper",
    license="BSD-3-Clause (torchvision ImageNet weights)",
    reference="Lu et al. 2021 (CLAM); torchvision resnet50 IMAGENET1K_V1 = timm resnet50.tv_in1k",
    weights_hint="torchvision resnet50-0676ba61.pth or timm resnet50.tv_in1k (pytorch_model.bin / model.safetensors)",
))


# ----------------------------------------------------------------------------------------------------
# ViT foundation models (timm architectures)
# ----------------------------------------------------------------------------------------------------


def _timm(arch: str, **kwargs):
    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)

    return build


def _swiglu_kwargs() -> dict:
    import timm.layers

    return dict(mlp_layer=timm.layers.SwiGLUPacked, act_layer=nn.SiLU)


def _timm_swiglu(arch: str, **kwargs):
    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=0, **_swiglu_kwargs(), **kwargs)

    return build


def cls_and_mean_patch_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Virchow's embedding: class token concatenated with the mean of the patch tokens (registers skipped)."""
    tokens = model.forward_features(x)  # (B, prefix + P, C)
    cls = tokens[:, 0]
    patches = tokens[:, model.num_prefix_tokens:]
    return torch.cat([cls, patches.mean(dim=1)], dim=-1)


register_encoder(EncoderSpec(
    name="uni", build=_timm("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
                            dynamic_img_size=True),
    dim=1024, input_size=224, aliases=("uni_v1", "uni1"),
    description="UNI: ViT-L/16 (DINOv2 pretraining), class token",
    license="CC-BY-NC-ND-4.0 (gated; non-commercial)", reference="Chen et al. 2024, huggingface.co/MahmoodLab/UNI",
    weights_hint="pytorch_model.bin from MahmoodLab/UNI",
))

register_encoder(EncoderSpec(
    name="uni2_h",
    build=_timm_swiglu("vit_giant_patch14_224", img_size=224, patch_size=14, depth=24, num_heads=24,
                       init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2, no_embed_class=True,
                       reg_tokens=8, dynamic_img_size=True),
    dim=1536, input_size=224, aliases=("uni2", "uni_v2", "uni2h"),
    description="UNI2-h: ViT-H/14-style (1536 wide, 24 blocks, SwiGLU, 8 registers), class token",
    license="CC-BY-NC-ND-4.0 (gated; non-commercial)", reference="huggingface.co/MahmoodLab/UNI2-h",
    weights_hint="pytorch_model.bin from MahmoodLab/UNI2-h",
))

register_encoder(EncoderSpec(
    name="virchow2",
    build=_timm_swiglu("vit_huge_patch14_224", img_size=224, init_values=1e-5, reg_tokens=4, mlp_ratio=5.3375,
                       global_pool="", dynamic_img_size=True),
    dim=2560, input_size=224, embed=cls_and_mean_patch_tokens, aliases=("virchow_v2",),
    description="Virchow2: ViT-H/14 with 4 registers and SwiGLU; class token + mean patch token (2 x 1280)",
    license="CC-BY-NC-ND-4.0 (gated; non-commercial)",
    reference="Zimmermann et al. 2024, huggingface.co/paige-ai/Virchow2",
    weights_hint="pytorch_model.bin (or model.safetensors) from paige-ai/Virchow2",
))

register_encoder(EncoderSpec(
    name="h_optimus_0",
    build=_timm("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5, dynamic_img_size=False),
    dim=1536, input_size=224, mean=H_OPTIMUS_MEAN, std=H_OPTIMUS_STD, aliases=("hoptimus0", "h_optimus0"),
    description="H-optimus-0: ViT-g/14 with 4 registers (DINOv2 layout), class token, its own mean/std",
    license="Apache-2.0 (per the model card)", reference="huggingface.co/bioptimus/H-optimus-0",
    weights_hint="pytorch_model.bin (or model.safetensors) from bioptimus/H-optimus-0",
))

register_encoder(EncoderSpec(
    name="h_optimus_1",
    build=_timm("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5, dynamic_img_size=False),
    dim=1536, input_size=224, mean=H_OPTIMUS_MEAN, std=H_OPTIMUS_STD, aliases=("hoptimus1", "h_optimus1"),
    description="H-optimus-1: same architecture and normalisation as H-optimus-0, more training data",
    license="see the model card (gated)", reference="huggingface.co/bioptimus/H-optimus-1",
    weights_hint="pytorch_model.bin (or model.safetensors) from bioptimus/H-optimus-1",
))

register_encoder(EncoderSpec(
    name="prov_gigapath",
    build=_timm_swiglu("vit_giant_patch14_dinov2", img_size=224, patch_size=16, init_values=1e-5,
                       mlp_ratio=5.33334),
    dim=1536, input_size=224, resize_size=256, aliases=("gigapath", "prov_gigapath_tile"),
    description="Prov-GigaPath tile encoder: ViT-g/16 (DINOv2 layout, SwiGLU), class token; resize 256 + "
                "centre crop 224",
    license="Apache-2.0 (per the model card; gated)",
    reference="Xu et al. 2024, huggingface.co/prov-gigapath/prov-gigapath",
    weights_hint="pytorch_model.bin from prov-gigapath/prov-gigapath",
))


# Phikon-v2 is published as a Hugging Face ``Dinov2Model`` (ViT-L/16). We run it as the equivalent timm ViT
# (no dependency on transformers) and translate the checkpoint's parameter names.


def hf_dinov2_to_timm(sd: StateDict) -> StateDict:
    """Rename a Hugging Face ``Dinov2Model`` state dict to timm ``VisionTransformer`` names.

    q/k/v projections are concatenated into timm's fused ``qkv``; ``embeddings.mask_token`` (used only in
    pretraining) is passed through and ignored by the spec. A state dict already in timm layout is
    returned unchanged; keys this function does not know are passed through, so that strict loading
    reports them.
    """
    if not any(k.startswith("embeddings.") for k in sd):
        return sd
    out: StateDict = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        if src in sd:
            out[dst] = sd[src]
            used.add(src)

    take("embeddings.cls_token", "cls_token")
    take("embeddings.position_embeddings", "pos_embed")
    take("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight")
    take("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias")
    take("layernorm.weight", "norm.weight")
    take("layernorm.bias", "norm.bias")
    blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    for i in blocks:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for a, b in (("norm1", "norm1"), ("norm2", "norm2"), ("attention.output.dense", "attn.proj"),
                     ("attention.o_proj", "attn.proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            take(f"{src}{a}.weight", f"{dst}{b}.weight")
            take(f"{src}{a}.bias", f"{dst}{b}.bias")
        take(f"{src}layer_scale1.lambda1", f"{dst}ls1.gamma")
        take(f"{src}layer_scale2.lambda1", f"{dst}ls2.gamma")
        for kind in ("weight", "bias"):
            # files on the hub: attention.attention.{query,key,value}; transformers>=5: attention.{q,k,v}_proj
            for names in (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                          ("attention.q_proj", "attention.k_proj", "attention.v_proj")):
                parts = [f"{src}{n}.{kind}" for n in names]
                if all(p in sd for p in parts):
                    out[f"{dst}attn.qkv.{kind}"] = torch.cat([sd[p] for p in parts], dim=0)
                    used.update(parts)
    for k, v in sd.items():
        if k not in used:
            out[k] = v
    return out


register_encoder(EncoderSpec(
    name="phikon_v2", build=_timm("vit_large_patch16_224", img_size=224, init_values=1e-5),
    dim=1024, input_size=224, convert_state_dict=hf_dinov2_to_timm, ignore_keys=("embeddings.mask_token",),
    aliases=("phikonv2", "phikon2"),
    description="Phikon-v2: ViT-L/16 (DINOv2 pretraining), class token; HF Dinov2Model checkpoint converted to timm",
    license="Owkin non-commercial licence (see the model card)",
    reference="Filiot et al. 2024, huggingface.co/owkin/phikon-v2",
    weights_hint="model.safetensors from owkin/phikon-v2 (Hugging Face Dinov2Model layout)",
))
