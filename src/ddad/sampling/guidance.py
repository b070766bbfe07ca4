"""DDAD conditioning (Algorithm 1, lines 3-4; Eq. 6): steer the noise estimate toward the target y.

    y_t = sqrt(ab_t) y + sqrt(1 - ab_t) eps_theta(x_t)      y noised with the model's own prediction
    e^  = eps_theta(x_t) - w sqrt(1 - ab_t) (y_t - x_t)
w = 0 gives plain DDIM.
"""
from __future__ import annotations

import torch

from ..diffusion.schedule import noised

__all__ = ["ddad_condition"]


def ddad_condition(eps: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, ab_t: torch.Tensor, w: float) -> torch.Tensor:
    """Conditioned noise estimate e^ (B, C, H, W). ab_t: (B,)."""
    if w == 0:
        return eps
    ab = ab_t.view(-1, 1, 1, 1).to(x_t.dtype)
    y_t = noised(y, ab, eps)  # y noised with the model's own prediction
    return eps - w * (1 - ab).sqrt() * (y_t - x_t)
