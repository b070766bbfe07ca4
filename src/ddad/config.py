"""Frozen dataclass configs, loaded strictly from YAML, with `--set a.b=v` overrides.

Every default says where it comes from. Unknown keys are errors that name the closest valid keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DataConfig", "ModelConfig", "ScheduleConfig", "TrainConfig", "SamplingConfig", "FeatureConfig",
    "ScoringConfig", "AdaptConfig", "AutoencoderConfig", "D3ADConfig", "AnomalyConfig", "GLADConfig", "RANConfig", "DDADConfig", "ConfigError", "METHOD_SECTIONS",
    "load_config", "from_dict", "to_dict", "apply_overrides", "save_config",
]


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
    # DDAD: weight m of a nominal-memory term (not in the paper): D += m * s_m * D_m, D_m = each input patch's
    # Euclidean distance to its nearest patch of any training image (3x3 means, per layer and summed as D_f),
    # s_m = max D_f / max D_m on held-out nominal images. 0 = the paper's map. For stochastic textures, whose
    # reconstruction is a new texture sample rather than the input minus its defect (docs/methods.md, DDAD)
    memory: float = 0.0
    # fraction of the training patches the memory keeps, per layer (k-center greedy, PatchCore's coreset): 1 = every
    # patch (exact nearest neighbours); 0.1 searches a tenth of them (faster inference, each distance an upper bound)
    memory_coreset: float = 1.0
    # the feature layers D_m sums (null = features.layers, those of D_f). Finer layers see smaller defects: on the
    # grain stand-ins layers 1, 2, 3 (strides 4, 8, 16) found their hairlines and pits better than 2, 3
    memory_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.memory_coreset <= 1.0:
            raise ConfigError(f"scoring.memory_coreset must be in (0, 1] (the fraction of training patches kept; 1 = "
                              f"all), got {self.memory_coreset}")
        if self.memory_layers is not None and not self.memory_layers:
            raise ConfigError("scoring.memory_layers must name at least one feature layer (e.g. [1, 2, 3]), or be "
                              "null for features.layers; got []")


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


@dataclass(frozen=True)
class AutoencoderConfig:
    """D3AD's latent space: a diffusers AutoencoderKL, 2**(len(channels)-1) times smaller than the image."""

    path: str | None = None  # local diffusers AutoencoderKL folder (config.json + weights), e.g. a Stable Diffusion
    # VAE you have; null = train one on the nominal images (the first stage of `ddad train`). Never downloaded.
    channels: tuple[int, ...] = (16, 32, 64)  # 3 levels = 4x down (SPEC: 4x); 0.9 s per batch-16 step at 128 px on
    # 2 CPU cores (32 channels at full resolution: 4 s)
    layers_per_block: int = 1
    mid_attention: bool = False  # self-attention in the bottleneck (SD's VAE has it; 5x slower on a CPU)
    latent_channels: int = 4  # SPEC / Stable Diffusion: 4
    kl_weight: float = 1.0e-6  # Stable Diffusion's VAE: 1e-6 (a nearly deterministic latent)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=16, lr=1e-3, optimizer="adamw", weight_decay=0.0, ema_decay=0.0,
        checkpoint_every=250))  # 14-30 min at 128 px on 2 CPU cores (machines differ)


@dataclass(frozen=True)
class D3ADConfig:
    """Dynamic noise (D3AD, papers/dynamic-noise-latent-diffusion-supplement.md). T'_max is sampling.start_level."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dynamic: bool = True  # per-image T' from kNN-distance bins; False = every image starts at sampling.start_level
    k: int = 20  # nearest training vectors (paper: 20)
    bins: int = 10  # histogram bins of the training images' own kNN distances (paper: 10)
    min_bin: int = 2  # T' = clip(bin, min_bin, bins) / bins * T'_max (paper: 2)
    round_to: int = 10  # T' rounded to a multiple of this (paper: "rounded to 10s", so 10 DDIM steps stay integer)
    start_backbone: str = "efficientnet_lite0"  # frozen ImageNet extractor for the kNN (paper: ResNet34)
    start_weights: str | None = None  # local weights file for a torchvision start backbone
    start_layer: int = 2  # paper: block 2
    start_pool: int = 16  # features average-pooled to start_pool x start_pool, flattened (paper: 16)
    start_input_size: int | None = None  # px the kNN extractor sees; null = the model's image size (block 2 of a
    # 128-px image is already 16x16, the paper's pooled size; the paper feeds 256-px images to ResNet34)
    noiseless: bool = True  # omega = 0: x_T' = sqrt(ab_T') z (paper's noiseless scaling); False adds the noise
    latent_weight: float = 0.85  # paper lambda: map = 0.85 latent L1 + 0.15 feature cosine
    feature_reference: str = "decoded"  # the feature term compares decode(z0) with: decoded = decode(z) (the
    # autoencoder's own copy of the input, so its reconstruction error cancels) | input (the image itself)


@dataclass(frozen=True)
class AnomalyConfig:
    """Synthetic anomalies for training (GLAD's ATP) and proxy validation: ddad.data.anomalies.AnomalySpec."""

    probability: float = 0.5  # fraction of training samples with an anomaly (GLAD: half)
    beta_max: float = 0.8  # blend beta ~ U(0, beta_max) (DRAEM / GLAD: 0.8)
    threshold: float = 0.5  # Perlin noise above this is the defect (DRAEM: 0.5)
    min_scale: int = 0  # Perlin lattice 2**k cells per side, k in [min_scale, max_scale) (DRAEM: 0..6 at 256 px)
    max_scale: int = 6
    foreground: str = "none"  # none | object (defects only where the image is unlike its border)
    source: str = "grid"  # grid (the image's own shuffled cells) | patch (the image displaced, colour-jittered) |
    # texture (generated) | a local texture folder
    grid: int = 8  # cells per side for source = grid
    shape: str = "perlin"  # perlin (DRAEM, GLAD) | cutpaste (CutPaste's rectangles and scars)


@dataclass(frozen=True)
class GLADConfig:
    """GLAD (papers/glad-global-local-adaptive-diffusion.md; SPEC 3). T' is sampling.start_level (paper: 750)."""

    atp: bool = True  # anomaly-oriented training (Eq. 10): synthetic defects, the target is the NORMAL image's eps
    anomalies: AnomalyConfig = field(default_factory=AnomalyConfig)
    space: str = "pixel"  # pixel (CPU default) | latent: diffusion on the latents of `autoencoder` (the paper: Stable
    # Diffusion's latent space), trained first on the nominal images or loaded from autoencoder.path
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    init: str | None = None  # a pretrained UNet that ATP fine-tunes (the paper fine-tunes a pretrained Stable
    # Diffusion UNet): a ddad model directory trained on the nominal images (its unet.safetensors, e.g. `ddad train`
    # with DDAD's config) or a diffusers UNet2DModel folder, local files only; null = train from scratch
    # ---- inference (changeable on a trained model: `ddad benchmark --reuse` re-calibrates) ----
    ads: bool = True  # adaptive denoising step; False = plain DDIM from T' for every image (the ablation's fixed T')
    tau: float | None = None  # ADS threshold on the step score; null = calibrated on held-out nominal images (the
    # tau_quantile of their largest step score); the paper's per-class 0.1-0.5 were picked on test results
    tau_quantile: float = 0.9
    t_min: int = 350  # below this step an image that never exceeded tau switches to the input-derived x0 (paper: 350)
    ads_layer: int = 3  # extractor layer compared at each step (paper: DINO block 12, the deepest; Lite0: layer 3)
    ads_topk: int = 10  # step score = mean of the top-k patch distances (paper: 10)
    saff: bool = True  # spatial-adaptive feature fusion at the switch; False = the input-derived x0 everywhere
    saff_floor: bool = False  # True = the official mask sigmoid(d) >= 0.5 (see ddad.sampling.adaptive.saff_mask)
    reverse: bool = False  # also match reconstruction patches against the input's (missing parts), summed
    foreground: str = "none"  # none | object: zero the map where the image is like its border (background)


@dataclass(frozen=True)
class RANConfig:
    """RAN, removing anomalies as noises (papers/removing-anomalies-as-noises-kl.md; SPEC 4)."""

    vlb_weight: float = 0.001  # lambda of the hybrid loss L_simple + lambda L_vlb (improved DDPM: 0.001)
    feature_weight: float = 1.0  # weight of the feature-reconstruction head's MSE in training
    feature_grid: int = 32  # the head regresses the backbone's layers 1-3, resized to this grid (paper: 64 at 256 px)
    head_channels: int = 64  # hidden width of the feature head (conv 3x3 -> GroupNorm -> SiLU -> conv 1x1)
    rotation: float = 5.0  # random rotation +-degrees in training (paper: 5; the official code's never took effect)
    # ---- inference (changeable on a trained model) ----
    respacing: int = 250  # score timesteps are steps of this respacing of the training process (paper: 250)
    timesteps: tuple[int, ...] = (5, 50, 100)  # respaced steps (paper); of 1000 training steps: 20, 201, 401
    alpha: float = 0.5  # A = alpha KL + (1 - alpha) feature (paper: 0.5 for all categories)
    gradient_denoising: bool = True  # the reconstruction shown is the paper's Algorithm 1 (else the one-step x0)
    gd_steps: int = 50  # gradient iterations
    gd_lr: float = 0.02  # s (paper: 0.02); the weight decay is sqrt(1 - s^2)
    gd_denoise_every: int = 5  # N_d (paper: 5)
    gd_score_weight: float = 0.0  # weight of |gradient-denoised - input| (feature cosine) in the map; 0 = display only
    padim_channels: int = 64  # random channel subset of the PaDiM Gaussian (PaDiM: 100 of 448 for ResNet18)


# Method name -> the config section holding its own options (None: only shared sections). The classes live in
# ddad.methods.METHODS; a test keeps the two tables in step.
METHOD_SECTIONS: dict[str, str | None] = {"ddad": None, "d3ad": "d3ad", "glad": "glad", "ran": "ran"}


@dataclass(frozen=True)
class DDADConfig:
    method: str = "ddad"  # one of METHOD_SECTIONS (ddad info lists them)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    d3ad: D3ADConfig = field(default_factory=D3ADConfig)
    glad: GLADConfig = field(default_factory=GLADConfig)
    ran: RANConfig = field(default_factory=RANConfig)

    def __post_init__(self) -> None:
        if self.method not in METHOD_SECTIONS:
            raise ConfigError(f"method: unknown method {self.method!r}; {_suggest(self.method, list(METHOD_SECTIONS))}"
                              f"choose one of {', '.join(METHOD_SECTIONS)}")
        for owner, section in METHOD_SECTIONS.items():
            if section is None or owner == self.method:
                continue
            mine, default = getattr(self, section), type(getattr(self, section))()
            if mine != default:
                changed = [k for k in to_dict(default) if to_dict(mine)[k] != to_dict(default)[k]]
                raise ConfigError(f"{section}.{changed[0]} is an option of method {owner!r}, but method is "
                                  f"{self.method!r}; set method: {owner} (or --method {owner}), or remove the "
                                  f"{section} section")


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}? " if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(v, inner, where) for v in value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict | None, where: str = "config") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError with suggestions."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; {_suggest(key, names)}valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)

    def lists(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: lists(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    return lists(out)


def _override(data: dict, item: str) -> None:
    """Set one `a.b=value` (value parsed as YAML) in the nested dict `data`, naming what is valid on a typo."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. sampling.w=4)")
    path, raw = item.split("=", 1)
    node = data
    parts = path.strip().split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], dict):
            valid = [k for k, v in node.items() if isinstance(v, dict)]
            raise ConfigError(f"override {item!r}: unknown section {part!r}; {_suggest(part, valid)}valid: {valid}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; {_suggest(parts[-1], list(node))}"
                          f"valid keys: {', '.join(node)}")
    node[parts[-1]] = yaml.safe_load(raw)


def _merge(base: dict, update: dict, where: str) -> dict:
    """`update` laid over `base` (nested); unknown keys are left for from_dict to report."""
    if not isinstance(update, dict):
        raise ConfigError(f"{where}: expected a mapping, got {update!r}")
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(base[k], v, f"{where}.{k}") if isinstance(base.get(k), dict) and isinstance(v, dict) else v
    return out


def apply_overrides(cfg: DDADConfig, overrides: list[str] | tuple[str, ...]) -> DDADConfig:
    """Apply `a.b=value` strings (value parsed as YAML) and re-validate strictly."""
    data = to_dict(cfg)
    for item in overrides:
        _override(data, item)
    return from_dict(DDADConfig, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DDADConfig:
    """Defaults <- YAML file (strict) <- overrides, validated once at the end (so `--set method=d3ad` may
    select the method whose section the file sets)."""
    data = to_dict(DDADConfig())
    where = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; see configs/ for examples")
        where = p.name
        data = _merge(data, yaml.safe_load(p.read_text()) or {}, where)
    for item in overrides:
        _override(data, item)
    return from_dict(DDADConfig, data, where)


def save_config(cfg: DDADConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
