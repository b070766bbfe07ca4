"""Learned-variance diffusion maths (improved DDPM, Nichol & Dhariwal 2021), as pure functions: respacing, the
posterior q(x_{t-1} | x_t, x0), the learned variance, Gaussian KL and the discretised decoder likelihood.

Used by RAN (papers/removing-anomalies-as-noises-kl.md), whose pixel score is KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t))
at a few timesteps of a 250-step respacing of the 1000-step training process.

    posterior:  mean = c1 x0 + c2 x_t,  c1 = beta_t sqrt(ab_{t-1}) / (1 - ab_t),  c2 = (1 - ab_{t-1}) sqrt(a_t) / (1 - ab_t)
                var  = beta~_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)
    learned:    log var = f log beta_t + (1 - f) log beta~_t,  f = (v + 1) / 2,  v the model's extra output channels
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .schedule import NoiseSchedule

__all__ = ["Process", "respace", "posterior", "learned_logvar", "normal_kl", "discretized_gaussian_nll"]


@dataclass(frozen=True)
class Process:
    """A (possibly respaced) diffusion process: its steps k = 0..n-1 run on the training timesteps `timesteps[k]`."""

    timesteps: torch.Tensor  # (n,) int64 original timesteps (what the model is called with)
    alpha_bar: torch.Tensor  # (n,) float64
    betas: torch.Tensor  # (n,) float64, beta_k = 1 - ab_k / ab_{k-1}

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def posterior_log_variance(self) -> torch.Tensor:
        """log beta~, with step 0 (beta~ = 0) set to step 1's value, as improved DDPM clips it."""
        v = self.posterior_variance
        return torch.log(torch.cat([v[1:2], v[1:]]))


def respace(schedule: NoiseSchedule, n: int) -> Process:
    """n evenly spaced steps of the schedule (improved DDPM's space_timesteps(T, [n])): timesteps[k] =
    round(k (T - 1) / (n - 1)) for n > 1, e.g. T = 1000, n = 250 -> 0, 4, 8, ..., 20 (k = 5), 201 (k = 50), 401
    (k = 100), ..., 999; n = T gives the schedule itself."""
    big_t = schedule.num_train_timesteps
    if not 1 <= n <= big_t:
        raise ValueError(f"respacing needs 1 <= n <= {big_t}, got {n}")
    if n == big_t:
        ts = torch.arange(big_t)
    else:
        stride = (big_t - 1) / (n - 1) if n > 1 else 0.0
        ts = torch.tensor([round(k * stride) for k in range(n)], dtype=torch.int64)
    ab = schedule.alphas_cumprod[ts].double()
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return Process(ts, ab, 1 - ab / prev)


def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def posterior(p: Process, k: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log variance) of q(x_{k-1} | x_k, x0) at steps k (B,) of process p; log variance broadcast (B,1,1,1)."""
    k = k.cpu()
    ab, ab_prev, beta = p.alpha_bar[k], p.alpha_bar_prev[k], p.betas[k]
    c1 = beta * ab_prev.sqrt() / (1 - ab)
    c2 = (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)
    mean = _b(c1, x0) * x0 + _b(c2, x_t) * x_t
    return mean, _b(p.posterior_log_variance[k], x0)


def learned_logvar(p: Process, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The model's log variance at steps k (B,) from its variance channels v (B, C, H, W) (improved DDPM Eq. 15):
    between log beta~_k (v = -1) and log beta_k (v = +1)."""
    k = k.cpu()
    min_log = _b(p.posterior_log_variance[k], v)
    max_log = _b(torch.log(p.betas[k]), v)
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise -log p(x) in nats of 8-bit images x in [-1, 1] under a Gaussian discretised to 256 bins (the
    L_0 decoder term of DDPM / improved DDPM); log_scale = 0.5 log variance."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centred + 1 / 255))
    cdf_min = _approx_std_normal_cdf(inv_std * (centred - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    log_probs = torch.where(x < -0.999, log_cdf_plus,
                            torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))
    return -log_probs
