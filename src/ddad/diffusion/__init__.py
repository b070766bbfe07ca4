"""Noise schedule, UNet presets and diffusion training."""
from .schedule import NoiseSchedule
from .unet import PRESETS, build_unet, count_parameters

__all__ = ["NoiseSchedule", "PRESETS", "build_unet", "count_parameters"]
