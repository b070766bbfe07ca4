"""PRO: normalised area under the per-region-overlap curve, FPR in [0, limit] (MVTec AD; Bergmann et al.).

For a threshold h: FPR(h) = share of all nominal pixels (every image) with score >= h; PRO(h) = mean over
all connected ground-truth regions (8-connectivity, per image) of the share of the region's pixels with
score >= h. Both are sums of per-pixel weights over the pixels above h (1/N_neg for a nominal pixel,
1/(R * |region|) for a region pixel), so one sort and two cumulative sums give the curve at every distinct
score: an exact sweep, no fixed threshold grid. The area up to `limit` uses the trapezoid rule with linear
interpolation at the limit, and is divided by `limit`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .sweep import CHUNK, sweep

__all__ = ["pro_curve", "pro_auc", "region_ids"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def region_ids(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, sizes): int32 per pixel, 0 for nominal pixels and 1..R for the R regions of all images;
    sizes[r] = pixels of region r (sizes[0] = nominal pixels). 4 bytes per pixel."""
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    ids = np.zeros(masks.shape, dtype=np.int32)
    offset = 0
    for i, m in enumerate(masks):
        if m.any():
            lab, n = ndimage.label(m, structure=EIGHT_CONNECTED)
            ids[i] = np.where(lab > 0, lab + offset, 0)
            offset += n
    return ids, np.bincount(ids.ravel(), minlength=offset + 1)


def _pro_weights(maps: np.ndarray, masks: np.ndarray):
    maps = np.asarray(maps)
    if maps.shape != np.shape(masks):
        raise ValueError(f"maps {maps.shape} and masks {np.shape(masks)} differ; resize maps to the mask size")
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or inf")
    ids, sizes = region_ids(masks)
    n_regions, n_neg = sizes.size - 1, int(sizes[0])
    if n_regions == 0 or n_neg == 0:
        raise ValueError(f"PRO needs anomalous regions and nominal pixels (got {n_regions} regions, {n_neg} nominal px)")
    per_region = np.concatenate([[0.0], 1.0 / (n_regions * sizes[1:].astype(np.float64))])
    flat_ids = ids.ravel()

    def weights(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = flat_ids[idx]
        return per_region[r], (r == 0) / n_neg

    return maps, weights


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score, highest threshold first, starting at (0, 0) (for plots).

    maps: (N, H, W) float anomaly maps; masks: (N, H, W) bool ground truth (same size).
    """
    maps, weights = _pro_weights(maps, masks)
    pts = list(sweep(maps, weights))
    return (np.concatenate([[0.0], *[p[0] for p in pts]]), np.concatenate([[0.0], *[p[1] for p in pts]]))


def pro_auc(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, chunk: int = CHUNK) -> float:
    """Area under PRO(FPR) for FPR in [0, fpr_limit], divided by fpr_limit (1.0 = perfect). Streams over the
    sorted pixels (see sweep.py): exact, and memory-light for a whole category."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    maps, weights = _pro_weights(maps, masks)
    area, last_x, last_y = 0.0, 0.0, 0.0
    for fpr, pro in sweep(maps, weights, chunk):
        x = np.concatenate([[last_x], fpr])
        y = np.concatenate([[last_y], pro])
        inside = x <= fpr_limit
        k = int(inside.sum())  # x is non-decreasing, so the first k points lie inside
        area += float(np.trapezoid(y[:k], x[:k]))
        if k < x.size:  # crossing the limit inside this chunk: interpolate and stop
            x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
            y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_lim) / 2
            return area / fpr_limit
        last_x, last_y = fpr[-1], pro[-1]
    return area / fpr_limit
