"""One DDIM step as a pure function of per-sample alpha-bars (DDIM, Song et al. 2021, Eq. 12; DDAD Eq. 3/7).

Notation: x_t current sample, eps the (possibly conditioned) noise estimate e^, ab_t = alpha_bar_t,
ab_prev = alpha_bar_{t_prev}; sigma_t = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).
All alpha-bars are (B,) tensors so every sample may sit at its own timestep (D3AD, GLAD).
"""
from __future__ import annotations

import torch

__all__ = ["predict_x0", "eps_for_x0", "ddim_sigma", "ddim_step"]


def _b(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab_t: torch.Tensor) -> torch.Tensor:
    """f_theta(x_t) = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)   (Eq. 2)."""
    ab = _b(ab_t).to(x_t.dtype)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_for_x0(x_t: torch.Tensor, x0: torch.Tensor, ab_t: torch.Tensor) -> torch.Tensor:
    """The noise whose Eq. 2 prediction from x_t is exactly x0: eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t).

    Eq. 2 solved for eps: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)  <=>  sqrt(1 - ab) eps = x_t - sqrt(ab) x0.
    With x_t = sqrt(ab) x0 + sqrt(1 - ab) e it returns e (the usual DDPM target). GLAD's anomaly-oriented training
    uses it with x_t made from an image with a synthetic defect and x0 the NORMAL image, so the model learns to
    predict the defect-free image; the official code has had this sign flipped, which amplifies the anomaly.
    """
    ab = _b(ab_t).to(x_t.dtype)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def ddim_sigma(ab_t: torch.Tensor, ab_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """(B,) DDIM standard deviation; 0 when ab_prev == ab_t (no move) or ab_prev == 1 (clean target)."""
    ratio = (1 - ab_prev) / (1 - ab_t).clamp_min(1e-12)
    return eta * (ratio * (1 - ab_t / ab_prev)).clamp_min(0).sqrt()


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    ab_t: torch.Tensor,
    ab_prev: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_{t_prev} = sqrt(ab_prev) x0^ + sqrt(1 - ab_prev - sigma^2) eps + sigma z   (Eq. 7).

    Returns (x_prev, x0^). x_t, eps, noise: (B, C, H, W); ab_t, ab_prev: (B,). noise may be None when eta=0.
    """
    x0 = predict_x0(x_t, eps, ab_t)
    sigma = _b(ddim_sigma(ab_t, ab_prev, eta)).to(x_t.dtype)
    ab_p = _b(ab_prev).to(x_t.dtype)
    x_prev = ab_p.sqrt() * x0 + (1 - ab_p - sigma**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs a noise tensor")
        x_prev = x_prev + sigma * noise
    return x_prev, x0
