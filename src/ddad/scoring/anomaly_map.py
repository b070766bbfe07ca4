"""DDAD anomaly maps (Sec. 4.3): pixel L1 + feature (1 - cosine), v-balanced (Eq. 9), Gaussian-smoothed.

    D_p = mean_c |x0 - y|                                   (B, 1, H, W)
    D_f = sum_j upsample(1 - cos_c(pool3(phi_j(x0)), pool3(phi_j(y))))   (Eq. 8)
    D   = D_f + v * s * D_p,   s = max D_f / max D_p          (Eq. 9)

The official code takes both maxima over the whole test batch, so an image's score changed with the other
images in its batch. Here s is either calibrated once on held-out nominal images (stored with the model) or
taken per image; every other step is per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

__all__ = [
    "AnomalyMaps", "pixel_distance", "feature_distance", "combine", "smooth", "image_score", "anomaly_maps",
    "maps_from_distances",
]


@dataclass(frozen=True)
class AnomalyMaps:
    pixel: torch.Tensor  # (B, 1, H, W) D_p
    feature: torch.Tensor  # (B, 1, H, W) D_f
    combined: torch.Tensor  # (B, 1, H, W) smoothed D
    scores: torch.Tensor  # (B,) image scores


def pixel_distance(x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over channels; images in [0, 1]."""
    return (x0 - y).abs().mean(dim=1, keepdim=True)


def feature_distance(f_x0: dict[int, torch.Tensor], f_y: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Sum over layers of 1 - cosine similarity of 3x3-average-pooled features, bilinearly upsampled."""
    out = None
    for j in f_y:
        a = F.avg_pool2d(f_x0[j], 3, stride=1, padding=1, count_include_pad=False)
        b = F.avg_pool2d(f_y[j], 3, stride=1, padding=1, count_include_pad=False)
        d = 1 - F.cosine_similarity(a, b, dim=1).unsqueeze(1)
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        out = d if out is None else out + d
    assert out is not None, "feature_distance needs at least one layer"
    return out


def combine(d_p: torch.Tensor, d_f: torch.Tensor, v: float, scale: float | None) -> torch.Tensor:
    """Eq. 9. scale = max D_f / max D_p; None computes it per image (each image's own maxima)."""
    if scale is None:
        mf = d_f.amax(dim=(1, 2, 3), keepdim=True)
        mp = d_p.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        return d_f + v * (mf / mp) * d_p
    return d_f + v * scale * d_p


def smooth(d: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur per image, kernel 2*round(4 sigma)+1 (reflect padding at the borders)."""
    if sigma <= 0:
        return d
    k = 2 * int(4 * sigma + 0.5) + 1
    k = min(k, 2 * (min(d.shape[-2:]) - 1) - 1) | 1  # reflect padding needs kernel < 2 * size
    return gaussian_blur(d, [k, k], [sigma, sigma])


def image_score(d: torch.Tensor, mode: str = "max", topk: int = 64) -> torch.Tensor:
    """(B,) score from (B, 1, H, W) maps: max (paper) or mean of the top-k pixels."""
    flat = d.flatten(1)
    if mode == "max":
        return flat.amax(dim=1)
    if mode == "topk_mean":
        return flat.topk(min(topk, flat.shape[1]), dim=1).values.mean(dim=1)
    raise ValueError(f"unknown image_score {mode!r}; choose max or topk_mean")


def anomaly_maps(
    x0: torch.Tensor,
    y: torch.Tensor,
    f_x0: dict[int, torch.Tensor],
    f_y: dict[int, torch.Tensor],
    v: float,
    scale: float | None,
    sigma: float,
    score_mode: str = "max",
    topk: int = 64,
) -> AnomalyMaps:
    """All maps for reconstructions x0 and inputs y (B, 3, H, W) in [0, 1] and their features."""
    d_f = feature_distance(f_x0, f_y, tuple(y.shape[-2:]))
    return maps_from_distances(pixel_distance(x0, y), d_f, v, scale, sigma, score_mode, topk)


def maps_from_distances(
    d_p: torch.Tensor, d_f: torch.Tensor, v: float, scale: float | None, sigma: float, score_mode: str = "max",
    topk: int = 64,
) -> AnomalyMaps:
    """Combine (Eq. 9), smooth and score given D_p and D_f (B, 1, H, W)."""
    d = smooth(combine(d_p, d_f, v, scale), sigma)
    return AnomalyMaps(pixel=d_p, feature=d_f, combined=d, scores=image_score(d, score_mode, topk))
