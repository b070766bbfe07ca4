"""The shared config sections (data, model, schedule, training, sampling, features, scoring, adaptation): every
method reads them. Every default says where it comes from."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "DataConfig", "ModelConfig", "ScheduleConfig", "TrainConfig", "SamplingConfig",
           "FeatureConfig", "ScoringConfig", "AdaptConfig"]


class ConfigError(ValueError):
    """A config file or override does not match the schema."""


@dataclass(frozen=True)
class DataConfig:
    layout: str = "mvtec"  # one of ddad.data.LAYOUTS
    root: str = ""  # dataset folder (category folder, or dataset root + category)
    category: str | None = None
    image_size: int = 64  # paper: 256; CPU presets train at 64-128. The width when image_height is set
    image_height: int | None = None  # non-square images: height in pixels, image_size the width (None = square)
    val_fraction: float = 0.1  # nominal training images held out (seeded) for score calibration
    seed: int = 0  # seeds the documented splits (validation, MTD, folder)
    workers: int | None = None  # DataLoader worker processes; None = 0 on a CPU (the cores run the model), 4 on a GPU

    def __post_init__(self) -> None:
        for key in ("image_size", "image_height"):
            v = getattr(self, key)
            if v is not None and v < 8:
                raise ConfigError(f"data.{key} must be >= 8 pixels, got {v}")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) every image is resized to."""
        return (self.image_height or self.image_size, self.image_size)

    @property
    def size_label(self) -> str:
        """'128px' for square images, '128x96px' (width x height) otherwise."""
        h, w = self.shape
        return f"{w}px" if h == w else f"{w}x{h}px"


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "cpu-64"  # ddad.diffusion.unet.PRESETS: ddad, ddad-s (paper), cpu-32/64/128 (CPU)


@dataclass(frozen=True)
class ScheduleConfig:
    num_train_timesteps: int = 1000  # DDAD paper, T = 1000
    beta_start: float = 1e-4  # linear betas as DDPM / DDAD
    beta_end: float = 0.02


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps (paper: 1000-3000 epochs at batch 32 on a GPU)
    batch_size: int = 32  # paper: 32
    lr: float = 3e-4  # paper: Adam 3e-4
    weight_decay: float = 0.05  # paper: 0.05 (Adam's L2 form, as the official code)
    optimizer: str = "adam"  # adam (paper) | adamw
    ema_decay: float = 0.0  # 0 disables the EMA of weights; e.g. 0.999 for long runs
    grad_clip: float = 1.0  # max grad norm (0 = off)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    mixed_precision: bool = True  # bf16 autocast where a CUDA GPU is present; ignored on CPU
    seed: int = 0


@dataclass(frozen=True)
class SamplingConfig:
    start_level: int = 250  # T' (paper: 250)
    steps: int = 10  # DDAD-n: denoising iterations from T'
    w: float = 3.0  # conditioning weight (paper Table 9/10 per category, 0..11; test-tuned there)
    eta: float = 1.0  # DDIM stochasticity (official code: 1)
    official_offbyone: bool = False  # True mimics the official code: noise to T', first UNet call at T'-T'/n
    batch_size: int = 16
    seed: int = 0  # per-image noise is seeded by (seed, image content): scores do not depend on batching


@dataclass(frozen=True)
class FeatureConfig:
    backbone: str = "efficientnet_lite0"  # offline default; wide_resnet50_2/101_2, resnet34/18 from a local file
    weights: str | None = None  # local weights file for torchvision backbones (never downloaded)
    layers: tuple[int, ...] = (2, 3)  # paper: j in {2, 3}
    # resize images (input and reconstruction alike) to this many px before the backbone; null = the model's size.
    # Lets a small, fast diffusion resolution keep the feature resolution the backbone was trained at.
    input_size: int | None = None


@dataclass(frozen=True)
class ScoringConfig:
    v: float = 1.0  # weight of the pixel distance (paper: 1 MVTec, 7 VisA)
    balance: str = "calibrated"  # calibrated: max D_f / max D_p measured once on held-out nominal images; per_image
    sigma: float = 4.0  # Gaussian smoothing of the map (paper: 4)
    image_score: str = "max"  # max (paper) | topk_mean
    topk: int = 64  # pixels averaged when image_score = topk_mean
    false_reject_rate: float = 0.01  # image threshold = this quantile of held-out nominal scores


@dataclass(frozen=True)
class AdaptConfig:
    epochs: int = 1  # domain-adaptation epochs (paper Table 9: 0-16 per category, test-tuned there)
    lr: float = 1e-4  # paper: AdamW 1e-4
    lambda_dl: float = 0.1  # distillation weight (paper: 0.1 MVTec, 0.01 VisA)
    w: float = 3.0  # conditioning weight when generating x0 from another image (paper: w_DA = 3)
    layers: tuple[int, ...] = (1, 2, 3)  # paper: J = {1, 2, 3}
    batch_size: int = 16
    bn_train: bool = False  # False keeps BatchNorm statistics frozen (official code silently updated them)
    seed: int = 0
