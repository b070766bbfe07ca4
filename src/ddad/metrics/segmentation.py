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

__all__ = ["pro_curve", "pro_auc", "region_weights"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def region_weights(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(region_w, negative, n_regions) for masks (N, H, W) bool.

    region_w: float64 per pixel, 1/|region| inside a region (0 elsewhere); negative: bool nominal pixels.
    """
    masks = np.asarray(masks).astype(bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    weights = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i, m in enumerate(masks):
        if not m.any():
            continue
        lab, n = ndimage.label(m, structure=EIGHT_CONNECTED)
        sizes = np.bincount(lab.ravel())
        w = np.where(lab > 0, 1.0 / np.maximum(sizes[lab], 1), 0.0)
        weights[i] = w
        n_regions += n
    return weights, ~masks, n_regions


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, pro, thresholds) at every distinct score, highest threshold first, starting at (0, 0).

    maps: (N, H, W) float anomaly maps; masks: (N, H, W) bool ground truth (same size).
    """
    maps = np.asarray(maps)
    if maps.shape != np.shape(masks):
        raise ValueError(f"maps {maps.shape} and masks {np.shape(masks)} differ; resize maps to the mask size")
    weights, negative, n_regions = region_weights(masks)
    n_neg = int(negative.sum())
    if n_regions == 0 or n_neg == 0:
        raise ValueError(f"PRO needs anomalous regions and nominal pixels (got {n_regions} regions, {n_neg} nominal px)")
    scores = maps.ravel()
    if not np.isfinite(scores).all():
        raise ValueError("anomaly maps contain NaN or inf")
    order = np.argsort(scores, kind="stable")[::-1]
    s = scores[order]
    fp_w = negative.ravel()[order].astype(np.float64) / n_neg
    ov_w = weights.ravel()[order] / n_regions
    del order
    distinct = np.flatnonzero(np.diff(s))
    ends = np.concatenate([distinct, [s.size - 1]])
    fpr = np.cumsum(fp_w)[ends]
    pro = np.cumsum(ov_w)[ends]
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro]), np.concatenate([[np.inf], s[ends]])


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of y(x) on [0, limit], x non-decreasing from 0; linear interpolation at the limit."""
    k = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:k], y[:k]
    if k < x.size and xs[-1] < limit:
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.trapezoid(ys, xs))


def pro_auc(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under PRO(FPR) for FPR in [0, fpr_limit], divided by fpr_limit (1.0 = perfect)."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro, _ = pro_curve(maps, masks)
    return _area_to(fpr, pro, fpr_limit) / fpr_limit
