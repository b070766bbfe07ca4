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

import math

import torch
import torch.nn.functional as F

__all__ = ["patch_nn_distance", "patch_nn_map", "topk_mean", "zero_padded_pool", "memory_bank", "memory_distance",
           "kcenter_greedy", "memory_coreset"]


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


def zero_padded_pool(f: torch.Tensor) -> torch.Tensor:
    """Locally aware patch features (PatchCore): the 3x3 mean of a feature map (B, C, h, w) with zero padding counted
    in, as PatchCore's AvgPool2d(3, 1, 1) and the official DDAD patchify. Border patches come out damped, so they are
    compared with the training images' border patches rather than with their interior; with the padding left out
    (count_include_pad=False) the grain stand-in's nominal-memory pixel AUROC is 62.1 against 74.5."""
    return F.avg_pool2d(f, 3, stride=1, padding=1)


def memory_bank(features: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Nominal patch memory: per layer, every position of the pooled feature maps (N, C, h, w) of the training
    images as the columns of a (C, N*h*w) matrix."""
    return {j: zero_padded_pool(f.float()).permute(1, 0, 2, 3).flatten(1).contiguous() for j, f in features.items()}


def kcenter_greedy(points: torch.Tensor, n: int, chunk: int = 65536) -> torch.Tensor:
    """Indices of n of the columns of points (C, N) chosen by k-center greedy (Sener & Savarese 2018; PatchCore's
    coreset): start at column 0, then repeatedly take the column farthest (Euclidean) from those taken, so that
    every column lies within the final covering radius of one taken. Deterministic; O(n * N * C)."""
    n_all = points.shape[1]
    if not 1 <= n <= n_all:
        raise ValueError(f"a coreset of {n} columns out of {n_all}: need 1 <= n <= {n_all}")
    pts = points.T.contiguous()  # (N, C) rows
    sq = pts.pow(2).sum(1)
    nearest = torch.full((n_all,), float("inf"))
    chosen = torch.empty(n, dtype=torch.long)
    i = 0
    for k in range(n):
        chosen[k] = i
        for s in range(0, n_all, chunk):  # |p - c|^2 for every point against the new centre, clamped at 0
            d2 = (sq[s : s + chunk] - 2 * pts[s : s + chunk] @ pts[i] + sq[i]).clamp_min_(0)
            torch.minimum(nearest[s : s + chunk], d2, out=nearest[s : s + chunk])
        i = int(nearest.argmax())
    return chosen


def memory_coreset(bank: dict[int, torch.Tensor], fraction: float) -> dict[int, torch.Tensor]:
    """The memory (layer -> (C, N)) reduced to ceil(fraction * N) columns per layer by kcenter_greedy (1 = as is)."""
    if fraction >= 1.0:
        return bank
    return {j: b[:, kcenter_greedy(b, max(1, math.ceil(fraction * b.shape[1])))].contiguous() for j, b in bank.items()}


def _nearest(q: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, chunk: int) -> torch.Tensor:
    """Index of the nearest (Euclidean) column of bank (C, N) for each row of q (M, C); bank_sq = |columns|^2."""
    best = torch.full((q.shape[0],), float("inf"), device=q.device)
    idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for s in range(0, bank.shape[1], chunk):
        # |q - c|^2 - |q|^2 = |c|^2 - 2 q.c in one fused product; |q|^2 is the same for every column
        d2, i = torch.addmm(bank_sq[:, s : s + chunk], q, bank[:, s : s + chunk], alpha=-2).min(dim=1)
        better = d2 < best
        best, idx = torch.where(better, d2, best), torch.where(better, i + s, idx)
    return idx


def memory_distance(features: dict[int, torch.Tensor], bank: dict[int, torch.Tensor], size: tuple[int, int],
                    chunk: int = 4096, block: int = 1024) -> torch.Tensor:
    """(B, 1, H, W) sum over layers of the Euclidean distance of each pooled input patch to its nearest patch in
    the nominal memory (memory_bank; PatchCore's patch score, layer by layer), bilinearly upsampled to `size`. Each
    image is compared with the memory alone: nothing depends on the rest of the batch. `block` patches are compared
    with `chunk` memory columns at a time (a 16 MB buffer: bounded memory, and faster than one large product).
    Euclidean, not cosine: a faint (low-contrast) defect changes the features' magnitude more than their direction."""
    out = None
    for j, f in features.items():
        p = zero_padded_pool(f.float())
        b, _, h, w = p.shape
        q = p.flatten(2).transpose(1, 2).reshape(b * h * w, -1)  # every patch of the batch: (B*hw, C)
        bj = bank[j].to(q.device, q.dtype)
        bn = bj.pow(2).sum(0, keepdim=True)
        idx = torch.cat([_nearest(q[a : a + block], bj, bn, chunk) for a in range(0, q.shape[0], block)])
        # the neighbour's distance recomputed directly (the expansion cancels badly for near-identical patches: a
        # training patch would score ~1e-2 instead of 0)
        d = (q - bj.T[idx]).norm(dim=1).view(b, 1, h, w)
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        out = d if out is None else out + d
    assert out is not None, "memory_distance needs at least one layer"
    return out
