"""The DDPM noise schedule (computed once) and the forward process q(x_t | x_0).

Notation (DDAD paper, Sec. 3): beta_t linear in [beta_start, beta_end]; alpha_bar_t = prod_{s<=t} (1 - beta_s)
(the paper writes alpha_t for this product). Timesteps are 0-based indices 0..T-1 as in diffusers;
index -1 stands for the clean image (alpha_bar = 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NoiseSchedule", "noised", "resolution_matched_level"]


@dataclass(frozen=True)
class NoiseSchedule:
    alphas_cumprod: torch.Tensor  # (T,) float64, alpha_bar_t

    @classmethod
    def linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
        return cls(torch.from_numpy(np.cumprod(1.0 - betas)))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (any shape, -1 -> 1.0), float32 on t's device."""
        t = torch.as_tensor(t)
        if (t < -1).any() or (t >= self.num_train_timesteps).any():
            raise ValueError(f"timesteps must be in [-1, {self.num_train_timesteps - 1}], got {t.tolist()}")
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return padded.to(t.device)[t.long() + 1].float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t at timesteps t (B,) of x0, noise (B, C, H, W) (noised)."""
        return noised(x0, self.alpha_bar(t).to(x0.dtype).view(-1, 1, 1, 1), noise)


def noised(x0: torch.Tensor, ab: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps: the forward process in closed form (DDPM Eq. 4), ab = alpha_bar_t
    broadcastable to x0 (e.g. (B, 1, 1, 1) for a timestep per image)."""
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def resolution_matched_level(schedule: NoiseSchedule, level: int, from_size: int, to_size: int) -> int:
    """The timestep that, at `to_size` px, destroys as much image structure as `level` does at `from_size` px.

    Averaging an image down by a factor k averages its noise too, raising the signal-to-noise ratio of the
    structures that remain by k^2 (Hoogeboom et al. 2023, "simple diffusion", Sec. 3; Chen 2023, "On the importance
    of noise scheduling"). So a noise level chosen at 256 px (DDAD's T' = 250) is too strong at 128 px; the matched
    level has SNR(t) = SNR(level) * (from_size / to_size)^2, nearest on a log scale.
    """
    if from_size <= 0 or to_size <= 0:
        raise ValueError(f"image sizes must be positive, got {from_size} and {to_size}")
    ab = schedule.alphas_cumprod
    log_snr = torch.log(ab) - torch.log1p(-ab)
    target = log_snr[level] + 2 * np.log(from_size / to_size)
    return int(torch.argmin((log_snr - target).abs()))
