"""Denoising UNets as diffusers UNet2DModel presets.

`ddad` follows the DDAD paper / guided-diffusion at 256 px: base 64, multipliers (1,1,2,2,4,4), 2 res blocks,
attention at 32/16/8 px. `ddad-s` halves the width (the paper's compact model). The cpu-* presets are small
networks that train in minutes on two CPU cores at 32/64/128 px.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import UNet2DModel

from ..checkpoint import ModelFileError, load_json, load_tensors
from ..data.sample import hw

__all__ = ["UNetPreset", "PRESETS", "build_unet", "count_parameters", "load_pretrained_unet"]


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


def load_pretrained_unet(unet: UNet2DModel, path: str | Path, schedule: dict | None = None) -> dict:
    """Load pretrained weights into `unet` (the architecture the config builds) from a local `path`: a ddad model
    directory (model.json + unet.safetensors, e.g. made by `ddad train`) or a diffusers UNet2DModel folder
    (config.json + diffusion_pytorch_model.safetensors). Nothing is downloaded or unpickled. `schedule` (the noise
    schedule as a dict) must equal a ddad model's: an eps-model is only pretrained for the schedule it learned.
    Returns what was loaded, for model.json."""
    p = Path(path).expanduser()
    info: dict = {"path": str(p)}
    if (p / "model.json").is_file():
        meta = load_json(p / "model.json")
        weights = p / "unet.safetensors"
        saved = meta.get("config", {})
        info |= {"method": saved.get("method", "ddad"), "preset": saved.get("model", {}).get("preset"),
                 "train_steps": saved.get("train", {}).get("steps")}
        theirs = meta.get("schedule", saved.get("schedule"))
        if schedule is not None and theirs is not None and theirs != schedule:
            raise ValueError(f"the pretrained UNet in {p} learned the noise schedule {theirs}, this config has "
                             f"{schedule}; set schedule to the same values or train the UNet again")
    elif (p / "config.json").is_file():
        weights = p / "diffusion_pytorch_model.safetensors"
    else:
        raise FileNotFoundError(f"no pretrained UNet at {p}: expected a ddad model directory (model.json + "
                                "unet.safetensors, made by `ddad train`) or a diffusers UNet2DModel folder "
                                "(config.json + diffusion_pytorch_model.safetensors). ddad never downloads weights; "
                                "train one first or set the path to null to train from scratch")
    if not weights.is_file():
        raise ModelFileError(f"{p} lacks {weights.name} (pickled .bin weights are not loaded: convert them to "
                             "safetensors)")
    try:
        unet.load_state_dict(load_tensors(weights))
    except RuntimeError as e:
        raise ValueError(f"the pretrained UNet in {p} is not the architecture this config builds (model.preset, "
                         f"image size, channels): {str(e).splitlines()[0]}. Pretrain with the same model.preset and "
                         "data.image_size") from e
    return info
