"""Denoising UNets as diffusers UNet2DModel presets.

`ddad` follows the DDAD paper / guided-diffusion at 256 px: base 64, multipliers (1,1,2,2,4,4), 2 res blocks,
attention at 32/16/8 px. `ddad-s` halves the width (the paper's compact model). The cpu-* presets are small
networks that train in minutes on two CPU cores at 32/64/128 px.
"""
from __future__ import annotations

from dataclasses import dataclass

from diffusers import UNet2DModel

from ..data.sample import hw

__all__ = ["UNetPreset", "PRESETS", "build_unet", "count_parameters"]


@dataclass(frozen=True)
class UNetPreset:
    image_size: int  # the resolution the attention placement is designed for
    channels: tuple[int, ...]
    attention: tuple[bool, ...]  # per resolution level
    layers_per_block: int
    attention_head_dim: int
    note: str
    in_channels: int = 3  # the input it is designed for: 3 for images, 4 for latents (what `ddad info` counts)


PRESETS: dict[str, UNetPreset] = {
    "ddad": UNetPreset(256, (64, 64, 128, 128, 256, 256), (False, False, False, True, True, True), 2, 64,
                       "DDAD paper (guided-diffusion UNet, attention at 32/16/8)"),
    "ddad-s": UNetPreset(256, (32, 32, 64, 64, 128, 128), (False, False, False, True, True, True), 2, 64,
                         "DDAD-S (compact: base 32)"),
    "cpu-128": UNetPreset(128, (16, 32, 64, 128, 128), (False, False, False, True, True), 1, 32,
                          "CPU preset for 128 px (attention at 16/8)"),
    "cpu-64": UNetPreset(64, (16, 32, 64, 128), (False, False, True, True), 1, 32,
                         "CPU preset for 64 px (attention at 16/8); ~0.45 s per batch-16 step on 2 cores"),
    "cpu-32": UNetPreset(32, (16, 32, 32), (False, False, True), 1, 16, "test-sized preset for 32 px"),
    "latent-32": UNetPreset(32, (64, 128, 128), (False, True, True), 2, 32,
                            "CPU preset for 32x32 latents (a 128-px image, 4x down; attention at 16/8)", 4),
    "latent-32s": UNetPreset(32, (32, 64, 128), (False, True, True), 2, 32,
                             "compact CPU preset for 32x32 latents: half latent-32's width, ~1/2 of its time "
                             "per call and per training step", 4),
}


def build_unet(preset: str, image_size: int | tuple[int, int], channels: int = 3,
               out_channels: int | None = None) -> UNet2DModel:
    """A fresh eps-prediction UNet for (channels, H, W) inputs (3 for images, the latent channels for latent
    diffusion); image_size is a square side or (height, width), each divisible by 2**(levels-1). out_channels
    defaults to `channels` (2 * channels for a learned variance, improved DDPM)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    factor = 2 ** (len(p.channels) - 1)
    h, w = hw(image_size)
    if h % factor or w % factor:
        raise ValueError(f"preset {preset!r} needs image sides divisible by {factor}, got "
                         f"{h if h == w else f'{h} x {w}'}; set data.image_size (and data.image_height) to multiples "
                         f"of {factor}")
    return UNet2DModel(
        sample_size=h if h == w else (h, w),
        in_channels=channels,
        out_channels=channels if out_channels is None else out_channels,
        layers_per_block=p.layers_per_block,
        block_out_channels=p.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in p.attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(p.attention)),
        attention_head_dim=p.attention_head_dim,
        norm_num_groups=min(32, p.channels[0]),
        dropout=0.0,
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
