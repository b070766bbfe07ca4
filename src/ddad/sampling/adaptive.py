"""GLAD's reconstruction: adaptive denoising step (ADS) and spatial-adaptive feature fusion (SAFF), per image.

    x_T'       = sqrt(ab_T') x + sqrt(1 - ab_T') eps                      the input noised to T' (paper: 750)
    each step t of the DDIM plan, for an image that has not switched yet:
      x0_traj  = Eq. 2 of the trajectory x_t                              (tends to the normal image)
      x0_input = Eq. 2 of x_t^in = sqrt(ab_t) x + sqrt(1 - ab_t) eps      (the input noised with the SAME eps)
      score, d = compare(x0_traj, x0_input)       mean of the top-k patch distances, and the distance map
      switch at the first t with score > tau  (SAFF: m = mask(d))   or with t <= t_min  (m = 0: input-derived)
      x0_fused = m x0_traj + (1 - m) x0_input                          (Eq. 6)
      x_t      = sqrt(ab_t) x0_fused + sqrt(1 - ab_t) eps                 (Eq. 7: the same eps again)
    then DDIM to the clean image. Switched images cost one UNet call per step, the others two (one batch).

Every image decides on its own (its own noise from its own seed, its own switch step), so a result never depends on
the other images of a batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..diffusion.schedule import NoiseSchedule, noised
from .ddim import ddim_step, predict_x0
from .reconstruct import EpsModel, per_image_noise
from .start import timestep_plan

__all__ = ["AdaptiveReconstruction", "saff_mask", "saff_fuse", "switch_now", "first_switch", "adaptive_reconstruct"]

# compare(x0_traj, x0_input), both (B, C, H, W) in model space -> (score (B,), distance map (B, 1, H, W))
Compare = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class AdaptiveReconstruction:
    x0: torch.Tensor  # (B, C, H, W) the defect-free estimate, model space
    switch_t: torch.Tensor  # (B,) int64 timestep at which each image switched (-1: never, ADS off)
    by_tau: torch.Tensor  # (B,) bool: switched because its score exceeded tau (False: reached t_min / never)
    scores: torch.Tensor  # (B, n_steps) step scores, NaN after the switch (and with ADS off)
    t_plan: torch.Tensor  # (n_steps, B) the timesteps visited


def saff_mask(d: torch.Tensor, scale: float, floor: bool = False) -> torch.Tensor:
    """SAFF fusion weight m in [0, 1] from a distance map d >= 0 (1 = keep the trajectory, 0 = keep the input).

    The paper writes m = sigmoid(d). For a distance d >= 0 that is never below 0.5 (the official code), so even a
    perfectly matching region takes half of its content from the trajectory, which has drifted from the input: the
    detail SAFF is there to keep is half lost. Here m = 2 sigmoid(d / scale) - 1: the same sigmoid shape, 0 where
    the reconstruction matches the input, 0.46 at d = scale, 0.91 at 3 scale; `scale` is ADS's tau (the step-score
    level that marks an anomaly, measured on nominal images). floor=True gives the official sigmoid(d)."""
    if floor:
        return torch.sigmoid(d)
    return (2 * torch.sigmoid(d / max(scale, 1e-8)) - 1).clamp(0, 1)


def saff_fuse(x0_traj: torch.Tensor, x0_input: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Eq. 6: m x0_traj + (1 - m) x0_input (m broadcast over channels)."""
    return m * x0_traj + (1 - m) * x0_input


def switch_now(score: torch.Tensor, t: torch.Tensor, tau: float, t_min: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(switch, by_tau), both (B,) bool, for images not yet switched at timesteps t (B,): an image switches at the
    first step whose score exceeds tau, and at the latest at the first step at or below t_min."""
    by_tau = score > tau
    return by_tau | (t <= t_min), by_tau


def first_switch(scores: torch.Tensor, t_plan: torch.Tensor, tau: float, t_min: int) -> torch.Tensor:
    """(B,) index of the step at which each image switches, given its scores (B, n) at the plan's timesteps (n, B):
    the rule of `switch_now` applied along the plan (n = never)."""
    n = scores.shape[1]
    out = torch.full((scores.shape[0],), n, dtype=torch.int64)
    for i in range(n - 1, -1, -1):
        go, _ = switch_now(scores[:, i], t_plan[i], tau, t_min)
        out = torch.where(go, torch.full_like(out, i), out)
    return out


def adaptive_reconstruct(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    start: torch.Tensor,
    n_steps: int,
    compare: Compare,
    tau: float,
    t_min: int,
    mask: Callable[[torch.Tensor], torch.Tensor] | None,
    seeds: list[int],
    eta: float = 0.0,
    clip: float | None = 1.0,
) -> AdaptiveReconstruction:
    """GLAD's reconstruction of x (B, C, H, W) in model space from start levels (B,) in n_steps DDIM steps.

    tau = inf and t_min < 0 turn ADS off (plain DDIM from T', one UNet call per step). mask(d) -> m in [0, 1] is the
    SAFF weight; None fuses nothing (m = 0: the switch restarts from the input-derived x0, the paper without SAFF).
    seeds: one per image (ddad.sampling.image_seeds)."""
    b = x.shape[0]
    t_plan, t_prev_plan = timestep_plan(start.cpu(), n_steps)
    noise = per_image_noise(tuple(x.shape[1:]), seeds, n_steps + 1, x.device, x.dtype)
    eps0 = noise[0]
    ab = lambda t: schedule.alpha_bar(t).to(x.device).view(-1, 1, 1, 1).to(x.dtype)  # noqa: E731
    x_t = noised(x, ab(start.cpu()), eps0)
    switched = torch.zeros(b, dtype=torch.bool, device=x.device)
    by_tau = torch.zeros_like(switched)
    switch_t = torch.full((b,), -1, dtype=torch.int64)
    scores = torch.full((b, n_steps), float("nan"))
    ads_on = tau != float("inf") or t_min >= 0
    for i in range(n_steps):
        t, t_prev = t_plan[i], t_prev_plan[i]
        ab_t, ab_prev = ab(t), ab(t_prev)
        active = (~switched).nonzero().flatten() if ads_on else torch.zeros(0, dtype=torch.int64, device=x.device)
        if active.numel() == 0:
            eps = eps_model(x_t, t.to(x.device))
        else:
            # the trajectory (all images) and the input noised with the same eps (images still comparing): one call
            a = active.cpu()
            x_in = noised(x[active], ab_t[active], eps0[active])
            e = eps_model(torch.cat([x_t, x_in]), torch.cat([t, t[a]]).to(x.device))
            eps, eps_in = e[:b].clone(), e[b:]
            x0_traj = predict_x0(x_t[active], eps[active], ab_t[active].flatten())
            x0_in = predict_x0(x_in, eps_in, ab_t[active].flatten())
            if clip is not None:
                x0_traj, x0_in = x0_traj.clamp(-clip, clip), x0_in.clamp(-clip, clip)
            score, d = compare(x0_traj, x0_in)
            scores[a, i] = score.float().cpu()
            go, over = switch_now(score.cpu(), t[a], tau, t_min)
            if go.any():
                m = torch.zeros_like(d) if mask is None else mask(d) * over.to(d).view(-1, 1, 1, 1)
                fused = saff_fuse(x0_traj, x0_in, m.to(x.dtype))
                idx = active[go.to(x.device)]
                g = go.to(x.device)
                # Eq. 7: the fused clean image noised with the same eps; the DDIM step then uses eps itself
                x_t[idx] = noised(fused[g], ab_t[idx], eps0[idx])
                eps[idx] = eps0[idx]
                switched[idx] = True
                by_tau[idx] = over.to(x.device)[g]
                switch_t[idx.cpu()] = t[idx.cpu()]
        x_t, _ = ddim_step(x_t, eps, ab_t.flatten(), ab_prev.flatten(), eta, noise[i + 1])
    return AdaptiveReconstruction(x_t if clip is None else x_t.clamp(-clip, clip), switch_t, by_tau.cpu(), scores,
                                  t_plan)
