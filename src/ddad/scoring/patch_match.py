"""Patch nearest-neighbour distances between an image and its reconstruction (GLAD Eq. 11-12, after AprilGAN).

    d_j(i) = min_k (1 - cos(p_j(i), r_j(k)))       every input patch i against ALL reconstruction patches k
    D      = sum_j up(d_j)                           over layers j, bilinearly upsampled to the image size

Matching against all positions (not only the same one) forgives a reconstruction that is shifted or redrawn but
still normal; only content with no normal counterpart anywhere in the reconstruction scores high. The reverse
direction (reconstruction patches against the input's) finds parts the input lacks. Each image is matched only
against its own reconstruction: nothing depends on the rest of the batch (the official code min-max normalised the
maps over the test set).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["patch_nn_distance", "patch_nn_map", "topk_mean"]


def patch_nn_distance(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w): for every position of p (B, C, h, w), 1 - the highest cosine similarity to any position of r
    (B, C, h', w') of the same image."""
    b, c, h, w = p.shape
    pn = F.normalize(p.flatten(2).float(), dim=1)  # (B, C, hw)
    rn = F.normalize(r.flatten(2).float(), dim=1)
    out = torch.stack([1 - (pn[i].T @ rn[i]).amax(dim=1) for i in range(b)])  # one image at a time: hw x h'w'
    return out.clamp_min(0).view(b, 1, h, w)


def patch_nn_map(f_input: dict[int, torch.Tensor], f_recon: dict[int, torch.Tensor], size: tuple[int, int],
                 reverse: bool = False) -> torch.Tensor:
    """(B, 1, H, W) sum over layers of the upsampled patch-NN distances (plus the reverse direction if asked)."""
    out = None
    for j in f_input:
        d = patch_nn_distance(f_input[j], f_recon[j])
        if reverse:
            d = d + patch_nn_distance(f_recon[j], f_input[j])
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        out = d if out is None else out + d
    assert out is not None, "patch_nn_map needs at least one layer"
    return out


def topk_mean(d: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) mean of the k largest values of each map (B, ...)."""
    flat = d.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)
