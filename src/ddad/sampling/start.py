"""Start-level policies: how much noise each image gets (T'), and the per-sample timestep plan.

A policy maps a batch to (B,) integer start levels. FixedStart is DDAD's T' (250) for every image; KNNBinStart is
D3AD's dynamic level, from how far an image's pooled features lie from the training images'. Both work per
image, so a level never depends on the rest of the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["StartPolicy", "FixedStart", "KNNBinStart", "knn_distances", "POLICIES", "timestep_plan"]


class StartPolicy(Protocol):
    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) int64 start levels T' for a batch: images (B, C, H, W) in [-1, 1] for FixedStart, pooled feature
        vectors (B, D) for KNNBinStart."""
        ...


@dataclass(frozen=True)
class FixedStart:
    level: int = 250

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.level, dtype=torch.int64, device=x.device)


def knn_distances(v: torch.Tensor, bank: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """(B,) mean L1 distance of each vector v (B, D) to its k nearest vectors in bank (N, D).

    exclude_self=True is for v = bank itself (leave-one-out): each row's own entry is never its neighbour (the
    official code let every training image be its own nearest neighbour at distance 0)."""
    d = torch.cdist(v.double(), bank.double(), p=1)
    if exclude_self:
        if v.shape != bank.shape:
            raise ValueError(f"exclude_self needs v to be the bank itself, got {tuple(v.shape)} vs {tuple(bank.shape)}")
        d.fill_diagonal_(float("inf"))
    available = bank.shape[0] - int(exclude_self)
    if available < 1:
        raise ValueError(f"the kNN bank needs at least {1 + int(exclude_self)} vectors, got {bank.shape[0]}")
    return d.topk(min(k, available), dim=1, largest=False).values.mean(dim=1).float()


@dataclass(frozen=True)
class KNNBinStart:
    """D3AD's dynamic start level (supplement 7.1; SPEC 2).

    bank: (N, D) pooled features of the training images. edges: (bins + 1,) edges of the histogram of the
    training images' own leave-one-out kNN distances. A new image's distance falls in bin b (1..bins; below the
    first edge -> 1, beyond the last -> bins); T' = round_to_multiple(clip(b, min_bin, bins) / bins * t_max).
    """

    bank: torch.Tensor
    edges: torch.Tensor
    t_max: int
    k: int = 20
    min_bin: int = 2
    round_to: int = 10

    @classmethod
    def fit(cls, bank: torch.Tensor, t_max: int, k: int = 20, bins: int = 10, min_bin: int = 2,
            round_to: int = 10) -> "KNNBinStart":
        if not 1 <= min_bin <= bins:
            raise ValueError(f"min_bin must be in [1, bins={bins}], got {min_bin}")
        d = knn_distances(bank, bank, k, exclude_self=True)
        edges = torch.linspace(float(d.min()), float(d.max()), bins + 1)
        return cls(bank.float(), edges, t_max, k, min_bin, round_to)

    @property
    def bins(self) -> int:
        return self.edges.numel() - 1

    def distances(self, v: torch.Tensor) -> torch.Tensor:
        return knn_distances(v, self.bank.to(v.device), self.k)

    def bin_of(self, distances: torch.Tensor) -> torch.Tensor:
        """(B,) 1-based histogram bin of each distance, clipped to [1, bins]."""
        inner = self.edges[1:-1].to(distances.device)
        return torch.bucketize(distances.contiguous(), inner, right=True) + 1

    def level_of_bin(self, b: torch.Tensor) -> torch.Tensor:
        """(B,) T' for 1-based bins b: monotone in b, within [min_bin / bins, 1] * t_max (rounding never leaves it)."""
        frac = b.clamp(self.min_bin, self.bins).double() / self.bins
        step = max(1, self.round_to)
        t = torch.round(frac * self.t_max / step) * step
        low = max(1, math.ceil(self.min_bin / self.bins * self.t_max))
        t = torch.where(b >= self.bins, float(self.t_max), t)  # the last bin is T'_max itself
        return t.clamp(low, self.t_max).long()

    def levels(self, v: torch.Tensor) -> torch.Tensor:
        """(B,) start levels for pooled feature vectors v (B, D)."""
        return self.level_of_bin(self.bin_of(self.distances(v)))


POLICIES: dict[str, type] = {"fixed": FixedStart, "knn_bins": KNNBinStart}


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
