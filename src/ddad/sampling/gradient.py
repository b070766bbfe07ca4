"""Gradient denoising (RAN, papers/removing-anomalies-as-noises-kl.md, Algorithm 1): descend an energy (the PaDiM
Mahalanobis distance of the image's features) and let the diffusion model remove what the gradient steps add.

    x <- sqrt(1 - s^2) x - s g / std(g)          g = d energy / d x   (Eq. 13 with w = sqrt(1 - s^2))
    every N_d steps: x <- denoise(x)             (the model's clean estimate at the noise level N_d steps add)

With w = sqrt(1 - s^2) and a unit-variance step, each iteration is a forward-diffusion step of variance s^2, so
after N_d iterations x looks like a diffusion sample with alpha_bar = (1 - s^2)^N_d: `matching_timestep` finds that
level. Each image is updated by its own gradient only (the energy is a per-image sum).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..diffusion.schedule import NoiseSchedule

__all__ = ["gradient_denoise", "matching_timestep"]


def matching_timestep(schedule: NoiseSchedule, lr: float, every: int) -> int:
    """The training timestep whose alpha_bar is closest to (1 - lr^2)^every."""
    target = (1 - lr**2) ** every
    return int((schedule.alphas_cumprod - target).abs().argmin())


def gradient_denoise(
    x: torch.Tensor,
    energy: Callable[[torch.Tensor], torch.Tensor],
    denoise: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    lr: float,
    every: int,
) -> torch.Tensor:
    """x (B, C, H, W) in model space; energy(x) -> (B,) differentiable; denoise(x) -> x. Returns the result after
    `steps` iterations (denoised last if steps is a multiple of `every`)."""
    if not 0 < lr < 1:
        raise ValueError(f"the gradient step size must be in (0, 1), got {lr}")
    omega = (1 - lr**2) ** 0.5
    x = x.detach().clone()
    for i in range(1, steps + 1):
        with torch.enable_grad():
            xi = x.requires_grad_(True)
            (g,) = torch.autograd.grad(energy(xi).sum(), xi)
        g = g / g.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = omega * x.detach() - lr * g
        if i % every == 0:
            with torch.no_grad():
                x = denoise(x)
    return x.detach()
