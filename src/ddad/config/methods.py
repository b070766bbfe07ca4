"""Each method's own config section, named after the method (`ddad:`, `d3ad:`, `glad:`, `ran:`). Every default says
where it comes from."""
from __future__ import annotations

from dataclasses import dataclass, field

from .sections import ConfigError, TrainConfig

__all__ = ["DDADMethodConfig", "AutoencoderConfig", "D3ADConfig", "AnomalyConfig", "GLADConfig", "RANConfig"]


@dataclass(frozen=True)
class DDADMethodConfig:
    """DDAD's own options (section `ddad`): a nominal-memory term, not in the paper."""
    # weight m: D += m * s_m * D_m, D_m = each input patch's Euclidean distance to its nearest patch of any training
    # image (3x3 means, per layer and summed as D_f), s_m = max D_f / max D_m on held-out nominal images. 0 = the
    # paper's map. For stochastic textures, whose reconstruction is a new texture sample rather than the input minus
    # its defect (docs/methods.md, DDAD)
    memory: float = 0.0
    # fraction of the training patches the memory keeps, per layer (k-center greedy, PatchCore's coreset): 1 = every
    # patch (exact nearest neighbours); 0.1 searches a tenth of them (faster inference, each distance an upper bound)
    memory_coreset: float = 1.0
    # the feature layers D_m sums (null = features.layers, those of D_f); finer layers see smaller defects
    memory_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.memory_coreset <= 1.0:
            raise ConfigError(f"ddad.memory_coreset must be in (0, 1] (the fraction of training patches kept; 1 = "
                              f"all), got {self.memory_coreset}")
        if self.memory_layers is not None and not self.memory_layers:
            raise ConfigError("ddad.memory_layers must name at least one feature layer (e.g. [1, 2, 3]), or be "
                              "null for features.layers; got []")


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
