"""Latent space for latent diffusion (D3AD; GLAD in latent mode): a diffusers AutoencoderKL.

Offline default: a small KL autoencoder, 2**(levels-1) times smaller than the image (4x with 3 levels, 4 latent
channels), trained on the nominal images. Or a pretrained diffusers AutoencoderKL folder on this machine (e.g. a
Stable Diffusion VAE), loaded from local files only. Latents are the posterior mean times `scale`, a factor
measured on the training latents (1 / their standard deviation) and stored with the model.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ..config import AutoencoderConfig
from ..data.sample import hw
from ..features.extractor import in_inference_slices

__all__ = ["build_autoencoder", "load_pretrained_autoencoder", "autoencoder_loss", "encode", "decode",
           "latent_scale", "downsampling", "fit_autoencoder", "build_latent_pair", "LatentSpace"]


def build_autoencoder(cfg: AutoencoderConfig, saved_config: dict | None = None) -> AutoencoderKL:
    """A fresh autoencoder from `cfg`; a pretrained one (cfg.path) loaded from disk; or, with `saved_config` (the
    architecture stored in a model directory), an empty one of that architecture for its saved weights."""
    if saved_config is not None:
        return AutoencoderKL.from_config(saved_config)
    if cfg.path:
        return load_pretrained_autoencoder(cfg.path)
    if len(cfg.channels) < 2:
        raise ValueError(f"autoencoder.channels needs at least 2 levels (2x down), got {cfg.channels}")
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=min(32, cfg.channels[0]), mid_block_add_attention=cfg.mid_attention,
    )


def load_pretrained_autoencoder(path: str | Path) -> AutoencoderKL:
    """A diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors), local files only."""
    p = Path(path).expanduser()
    expected = "a diffusers AutoencoderKL folder with config.json and diffusion_pytorch_model.safetensors"
    if not p.is_dir():
        raise FileNotFoundError(f"autoencoder.path {p} does not exist; expected {expected} (e.g. the vae/ "
                                "folder of a Stable Diffusion checkpoint). ddad never downloads weights; or set "
                                "the path to null to train an autoencoder on the nominal images")
    missing = [f for f in ("config.json", "diffusion_pytorch_model.safetensors") if not (p / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{p} lacks {', '.join(missing)}; expected {expected} (pickled .bin weights are "
                                "not loaded: convert them to safetensors)")
    return AutoencoderKL.from_pretrained(str(p), local_files_only=True, use_safetensors=True)


def build_latent_pair(cfg: AutoencoderConfig, preset: str, image_size: int | tuple[int, int], meta: dict | None = None):
    """(autoencoder, eps-UNet on its latents) for a latent method (D3AD; GLAD with space: latent); `meta` is a saved
    model's model.json, whose autoencoder_config rebuilds the saved architecture."""
    from .unet import PRESETS, build_unet

    vae = build_autoencoder(cfg, None if meta is None else meta.get("autoencoder_config"))
    f = downsampling(vae)
    h, w = hw(image_size)
    need = f * (2 ** (len(PRESETS[preset].channels) - 1) if preset in PRESETS else 1)
    if h % need or w % need:
        raise ValueError(f"image sides {w} x {h} (data.image_size x data.image_height) must be multiples of {need} "
                         f"for this latent model (the autoencoder downsamples {f}x, UNet preset {preset!r} "
                         f"{need // f}x more)")
    return vae, build_unet(preset, (h // f, w // f), vae.config.latent_channels)


def downsampling(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode(vae: AutoencoderKL, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled posterior mean (B, c, H/f, W/f) of images x (B, 3, H, W) in [-1, 1]."""
    return in_inference_slices(lambda c: vae.encode(c).latent_dist.mean, x) * scale


def decode(vae: AutoencoderKL, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] (clamped) from scaled latents."""
    return in_inference_slices(lambda c: vae.decode(c).sample, z / scale).clamp(-1, 1)


@torch.no_grad()
def latent_scale(latents: torch.Tensor) -> float:
    """1 / std of unscaled training latents: scaled latents have unit variance, as the DDPM schedule assumes
    (Rombach et al. 2022, Sec. 3.1 / Appendix G; SD's 0.18215 was measured the same way)."""
    return float(1.0 / latents.float().std().clamp_min(1e-8))


def autoencoder_loss(kl_weight: float):
    """L1 reconstruction of a posterior sample + kl_weight * KL(q(z|x) || N(0, I)) (sum over latent elements,
    mean over the batch), as the Stable Diffusion autoencoder without its perceptual and GAN terms (their
    weights cannot be downloaded here)."""

    def loss(vae: AutoencoderKL, x: torch.Tensor, g: torch.Generator, gd: torch.Generator,
             part: slice = slice(None)) -> torch.Tensor:
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        shape = (x.shape[0], vae.config.latent_channels, x.shape[2] // f, x.shape[3] // f)
        noise = torch.randn(shape, generator=gd, device=x.device)[part]  # drawn for the global batch
        x = x[part]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * noise
        rec = vae.decode(z).sample
        return F.l1_loss(rec.float(), x) + kl_weight * post.kl().mean()

    return loss


def fit_autoencoder(vae: AutoencoderKL, x: torch.Tensor, cfg: AutoencoderConfig, ckpt_dir: str | Path, resume: bool,
                    meta: dict, progress: bool, batch_size: int = 16):
    """The first stage of a latent method's training: train `vae` on images x (N, 3, H, W) in [-1, 1] (skipped for
    a pretrained one, cfg.path), then measure the latent scale. Returns (TrainResult or None, scale, unscaled
    latents (N, c, h, w) on the CPU). Resumable from ckpt_dir like every stage."""
    from .train import train_model

    result = None
    if not cfg.path:
        vae.requires_grad_(True)
        result, ema = train_model(vae, x, autoencoder_loss(cfg.kl_weight), cfg.train, ckpt_dir, resume,
                                  meta | {"stage": "autoencoder"}, progress, desc="autoencoder")
        if ema is not None:
            vae.load_state_dict(ema)
    vae.eval().requires_grad_(False)
    device = next(vae.parameters()).device
    with torch.inference_mode():
        raw = torch.cat([encode(vae, x[s : s + batch_size].to(device), 1.0) for s in range(0, x.shape[0], batch_size)]).cpu()
    return result, latent_scale(raw), raw


class LatentSpace:
    """A latent method's autoencoder and latent scale (D3AD; GLAD with space: latent): images in [-1, 1] <-> scaled
    latents, the first training stage, and what a saved model keeps of it (the scale in state.safetensors, the
    autoencoder's architecture and training in model.json)."""

    def __init__(self, vae: AutoencoderKL):
        self.vae = vae.eval().requires_grad_(False)
        self.scale = 1.0  # measured by fit() (LDM's 1 / std of the training latents)
        self.fit_result = None  # the autoencoder's TrainResult (None: pretrained, or loaded)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode(self.vae, x, self.scale)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self.vae, z, self.scale)

    def fit(self, x: torch.Tensor, cfg: AutoencoderConfig, ckpt_dir: str | Path, resume: bool, meta: dict,
            progress: bool, batch_size: int = 16) -> torch.Tensor:
        """Train the autoencoder on images x (fit_autoencoder), measure the scale; the scaled training latents
        (N, c, h, w) on the CPU."""
        self.fit_result, self.scale, raw = fit_autoencoder(self.vae, x, cfg, ckpt_dir, resume, meta, progress,
                                                           batch_size)
        return raw * self.scale

    def describe(self) -> dict:
        return {"autoencoder_config": dict(self.vae.config), "latent_scale": self.scale,
                "autoencoder_train_steps": self.fit_result.steps if self.fit_result else None}

    def state(self) -> dict[str, torch.Tensor]:
        return {"latent_scale": torch.tensor([self.scale], dtype=torch.float64)}

    def load_state(self, tensors: dict[str, torch.Tensor], method: str) -> None:
        from ..checkpoint import ModelFileError

        if "latent_scale" not in tensors:
            raise ModelFileError(f"a latent {method} model needs state.safetensors with latent_scale (saved with its "
                                 "autoencoder); re-train it with `ddad train`")
        self.scale = float(tensors["latent_scale"][0])
