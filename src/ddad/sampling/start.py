"""Start-level policies: how much noise each image gets (T'), and the per-sample timestep plan.

A policy maps a batch to (B,) integer start levels. FixedStart is DDAD's T' (250). The dynamic-noise
(D3AD, kNN bins) and GLAD-adaptive policies implement the same interface; register them in POLICIES.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["StartPolicy", "FixedStart", "POLICIES", "timestep_plan"]


class StartPolicy(Protocol):
    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) int64 start levels T' for images x (B, C, H, W) in [-1, 1]."""
        ...


@dataclass(frozen=True)
class FixedStart:
    level: int = 250

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.level, dtype=torch.int64, device=x.device)


POLICIES: dict[str, type] = {"fixed": FixedStart}


def timestep_plan(start: torch.Tensor, n_steps: int, official_offbyone: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, t_prev), each (n_steps, B) int64: the DDIM sub-sequence from each sample's start level.

    Default: t_i = start - i * start / n (rounded), so the first UNet call is at the noise level itself, and
    the last step goes to t_prev = -1 (the clean image). E.g. start 250, n 10: 250, 225, ..., 25 -> clean.
    official_offbyone=True reproduces the official DDAD code: the same noise level, but the UNet is first
    called at start - start/n (225, 200, ..., 0 -> clean), one stride below the noise actually present.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if (start < 1).any():
        raise ValueError(f"start levels must be >= 1, got {start.tolist()}")
    i = torch.arange(n_steps + 1, dtype=torch.float64).view(-1, 1)
    grid = torch.round(start.double().view(1, -1) * (1 - i / n_steps)).long()  # (n+1, B): start ... 0
    if official_offbyone:
        grid = grid - torch.round(start.double() / n_steps).long().view(1, -1)  # start - stride, ..., 0, -stride
    t = grid[:-1]
    t_prev = torch.cat([grid[1:-1], torch.full_like(grid[:1], -1)])
    return t, t_prev
