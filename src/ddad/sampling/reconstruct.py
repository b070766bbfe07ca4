"""The reconstruction loop: DDAD Algorithm 1, batched, per-sample start levels, seeded per image.

    x_T' = sqrt(ab_T') x + sqrt(1 - ab_T') eps                       (line 1)
    for t in plan: e = eps_theta(x_t, t); e^ = condition(e, x_t, y)  (lines 3-4)
                   x_{t_prev} = DDIM(x_t, e^)                        (lines 5-7)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..diffusion.schedule import NoiseSchedule, noised
from .ddim import ddim_step
from .guidance import ddad_condition
from .start import timestep_plan

__all__ = ["Reconstruction", "reconstruct", "image_seeds", "per_image_noise"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B,C,H,W), t (B,)) -> eps


@dataclass(frozen=True)
class Reconstruction:
    x0: torch.Tensor  # (B, C, H, W) in [-1, 1], the defect-free estimate
    start: torch.Tensor  # (B,) start levels used


def image_seeds(x: torch.Tensor, seed: int) -> list[int]:
    """One seed per image from (seed, the image's 8-bit content): the same image always gets the same noise,
    whatever batch it is in."""
    q = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [int.from_bytes(hashlib.sha256(str(seed).encode() + img.tobytes()).digest()[:8], "little") for img in q]


def per_image_noise(shape: tuple[int, ...], seeds: list[int], n: int, device, dtype) -> torch.Tensor:
    """(n, B, *shape) standard normal noise, drawn per image from its own generator."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        out.append(torch.randn((n, *shape), generator=g))
    return torch.stack(out, dim=1).to(device=device, dtype=dtype)


def reconstruct(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    n_steps: int,
    w: float,
    eta: float = 1.0,
    seed: int = 0,
    official_offbyone: bool = False,
    noise_free_start: bool = False,
    seeds: list[int] | None = None,
    clip: float | None = 1.0,
) -> Reconstruction:
    """Denoise x from its start level, conditioned on target y (DDAD: y = x). x, y: (B, C, H, W) in [-1, 1].

    start: (B,) noise levels T'. noise_free_start=True starts from sqrt(ab_T') x with no noise (D3AD's
    noiseless scaling, omega = 0). Randomness comes from per-image generators (image_seeds), so the result for
    an image does not depend on the batch it is in; `seeds` overrides them (latent diffusion seeds from the image,
    not from its latent). clip: the result is clamped to [-clip, clip] (images); None leaves it (latents, whose
    values are unit-variance, not bounded).
    """
    t_plan, t_prev_plan = timestep_plan(start.cpu(), n_steps, official_offbyone)
    noise = per_image_noise(tuple(x.shape[1:]), image_seeds(x, seed) if seeds is None else seeds, n_steps + 1, x.device, x.dtype)
    # 1. forward-noise the input to its start level
    ab_start = schedule.alpha_bar(start.cpu()).to(x.device)
    eps0 = torch.zeros_like(x) if noise_free_start else noise[0]
    x_t = noised(x, ab_start.view(-1, 1, 1, 1), eps0)
    # 2. conditioned DDIM denoising
    x0 = x
    for i in range(n_steps):
        t, t_prev = t_plan[i], t_prev_plan[i]
        ab_t = schedule.alpha_bar(t).to(x.device)
        ab_prev = schedule.alpha_bar(t_prev).to(x.device)
        eps = eps_model(x_t, t.to(x.device))
        eps_hat = ddad_condition(eps, x_t, y, ab_t, w)
        x_t, x0 = ddim_step(x_t, eps_hat, ab_t, ab_prev, eta, noise[i + 1])
    # the last step lands on t_prev = -1 (ab = 1), where x_t equals the x0 estimate
    return Reconstruction(x0=x_t if clip is None else x_t.clamp(-clip, clip), start=start)
