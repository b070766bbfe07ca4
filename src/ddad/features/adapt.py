"""DDAD domain adaptation of the feature extractor (Sec. 4.4, Eq. 10).

For nominal pairs (x, y) of different training images, x0 = reconstruct(x noised to T', conditioned on y with
w_DA). The extractor phi is fine-tuned so that phi(x0) ~ phi(y), while distillation terms keep it close to the
frozen pretrained copy phi_bar:

    L = sum_j (1 - cos(phi_j(x0), phi_j(y)))
        + lambda_DL * sum_j [(1 - cos(phi_j(y), phi_bar_j(y))) + (1 - cos(phi_j(x0), phi_bar_j(x0)))]

cos is taken over each image's flattened feature map of layer j (as the official code). BatchNorm layers stay
in eval mode (running statistics frozen) unless cfg.bn_train is set; the official code updated them silently.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import AdaptConfig
from .extractor import FeatureExtractor

__all__ = ["AdaptResult", "adapt_extractor", "da_loss"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptResult:
    epochs: int
    steps: int
    first_loss: float
    last_loss: float


def _cos_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()


def da_loss(phi, phi_bar, x0: torch.Tensor, y: torch.Tensor, layers: tuple[int, ...], lambda_dl: float) -> torch.Tensor:
    """Eq. 10 for images x0, y in [0, 1]."""
    fx, fy = phi(x0, layers), phi(y, layers)
    with torch.no_grad():
        bx, by = phi_bar(x0, layers), phi_bar(y, layers)
    sim = sum(_cos_dist(fx[j], fy[j]) for j in layers)
    dl = sum(_cos_dist(fy[j], by[j]) + _cos_dist(fx[j], bx[j]) for j in layers)
    return sim + lambda_dl * dl


def adapt_extractor(
    extractor: FeatureExtractor,
    reconstruct_pair: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    cfg: AdaptConfig,
    progress: bool = False,
) -> tuple[FeatureExtractor, AdaptResult]:
    """Return an adapted copy of `extractor` (the input is left untouched).

    reconstruct_pair(x, y) -> x0: both (B, 3, H, W) in [0, 1]; x is noised and denoised conditioned on y.
    images: nominal training images (N, 3, H, W) in [0, 1], N >= 2: a tensor or a ddad.data.ImageSet.
    """
    if images.shape[0] < 2:
        raise ValueError("domain adaptation needs at least 2 nominal images")
    phi_bar = extractor
    phi = copy.deepcopy(extractor).requires_grad_(True)
    phi.train(cfg.bn_train)  # eval mode freezes BatchNorm running statistics
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    n, steps, losses = images.shape[0], 0, []
    device = next(extractor.parameters()).device
    total = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    bar = tqdm(total=total, desc="adapt", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        partner = perm.roll(1)  # x_i != y_i: every target is paired with another image
        for s in range(0, n, cfg.batch_size):
            y, x = images[perm[s : s + cfg.batch_size]], images[partner[s : s + cfg.batch_size]]
            y, x = y.to(device), x.to(device)  # no-ops for a tensor already there; an ImageSet reads to the CPU
            with torch.no_grad():
                x0 = reconstruct_pair(x, y)
            loss = da_loss(phi, phi_bar, x0, y, cfg.layers, cfg.lambda_dl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update(1)
    bar.close()
    phi.eval().requires_grad_(False)
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    return phi, AdaptResult(cfg.epochs, steps, first, last)
