"""The DDPM noise schedule (computed once) and the forward process q(x_t | x_0).

Notation (DDAD paper, Sec. 3): beta_t linear in [beta_start, beta_end]; alpha_bar_t = prod_{s<=t} (1 - beta_s)
(the paper writes alpha_t for this product). Timesteps are 0-based indices 0..T-1 as in diffusers;
index -1 stands for the clean image (alpha_bar = 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NoiseSchedule"]


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
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps  (Eq. 1 closed form). x0, noise (B, C, H, W); t (B,)."""
        ab = self.alpha_bar(t).to(x0.dtype).view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
