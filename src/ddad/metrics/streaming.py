"""Pixel metrics in constant memory: per-batch histograms over order-preserving float32 keys.

Storing every anomaly map of a test set to sort them at the end (sweep.py) costs 4 bytes per pixel: 1.3 GB for
5,000 images at 256 px, growing with the data. Here every pixel goes, as it arrives, into one of 2^20 bins whose
key keeps the float32's sign, its 8 exponent bits and the top 11 of its 23 mantissa bits (float16's precision,
the precision maps.npy stores, but float32's range). Three histograms, fixed at 24 MB whatever the data size:

    pos[k]    ground-truth defect pixels with key k         (ROC/PR positives)
    neg[k]    nominal pixels with key k                     (ROC/PR negatives; PRO's false positives)
    region[k] sum over defect pixels with key k of 1 / |their connected region|  (PRO's per-region overlap)

One sweep over the occupied bins from the highest key down gives the ROC, PR and PRO curves at every distinct
quantised score. The results therefore EQUAL the exact metrics (classification.curve_metrics, segmentation.pro_auc,
scikit-learn) of `quantise(maps)`, the maps with the low 12 mantissa bits dropped (a relative change below 2^-11);
tests/unit/test_metrics.py checks both statements. Regions are per image (8-connectivity), as in pro_auc, so
nothing needs another image: a batch can be added and forgotten.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .segmentation import EIGHT_CONNECTED  # the same regions as pro_auc

__all__ = ["KEY_BITS", "score_keys", "quantise", "PixelHistogram"]

KEY_BITS = 20
_DROP = 32 - KEY_BITS


def _monotone(x: np.ndarray) -> np.ndarray:
    """uint32 keys ordered as the float32 values (negative floats: all bits flipped; others: sign bit set)."""
    u = (np.asarray(x, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    return np.where(u >> 31 == 1, ~u, u | np.uint32(1 << 31))


def score_keys(x: np.ndarray) -> np.ndarray:
    """Bin index (int64 in [0, 2^KEY_BITS)) of every value: non-decreasing in the value."""
    return (_monotone(np.ascontiguousarray(x, dtype=np.float32)) >> _DROP).astype(np.int64)


def quantise(x: np.ndarray) -> np.ndarray:
    """The float32 value every element's bin stands for (for tests and curves): the same order and ties as the
    histogram sees."""
    m = (_monotone(np.ascontiguousarray(x, dtype=np.float32)) >> _DROP) << _DROP
    u = np.where(m >> 31 == 1, m & np.uint32(0x7FFFFFFF), ~m)
    return u.astype(np.uint32).view(np.float32)


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) from (0, 0) for x in [0, limit], interpolating at the limit, divided by limit."""
    x = np.concatenate([[0.0], x])
    y = np.concatenate([[0.0], y])
    k = int((x <= limit).sum())
    area = float(np.trapezoid(y[:k], x[:k]))
    if k < x.size:
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        area += (limit - x0) * (y0 + y0 + (y1 - y0) * (limit - x0) / (x1 - x0)) / 2
    return area / limit


class PixelHistogram:
    """Pixel AUROC / AP / F1-max and PRO, accumulated batch by batch in fixed memory (see the module doc)."""

    def __init__(self) -> None:
        n = 1 << KEY_BITS
        self.pos = np.zeros(n, dtype=np.int64)
        self.neg = np.zeros(n, dtype=np.int64)
        self.region = np.zeros(n, dtype=np.float64)
        self.n_regions = 0

    def add(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """maps (B, H, W) float, masks (B, H, W) bool (the same size)."""
        maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
        if maps.shape != masks.shape:
            raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ; resize maps to the mask size")
        if not np.isfinite(maps).all():
            raise ValueError("anomaly maps contain NaN or inf; check the detector's output")
        n = self.pos.size
        for m, y in zip(maps, masks):  # one image at a time: its regions are its own
            k = score_keys(m)
            self.neg += np.bincount(k[~y], minlength=n)
            if y.any():
                self.pos += np.bincount(k[y], minlength=n)
                lab, r = ndimage.label(y, structure=EIGHT_CONNECTED)
                size = np.bincount(lab.ravel())
                self.region += np.bincount(k[y], weights=1.0 / size[lab[y]], minlength=n)
                self.n_regions += r

    def compute(self, pro_fpr_limit: float = 0.3) -> tuple[float, float, float, float] | None:
        """(AUROC, AP, F1-max, PRO) or None where positives or negatives are missing."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        occupied = np.flatnonzero(self.pos + self.neg)[::-1]  # highest score first
        tp = np.cumsum(self.pos[occupied]).astype(np.float64)
        fp = np.cumsum(self.neg[occupied]).astype(np.float64)
        x, y = np.concatenate([[0.0], fp]), np.concatenate([[0.0], tp])
        roc = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)) / (n_pos * n_neg)
        ap = float(np.sum(np.diff(y) * tp / np.maximum(tp + fp, 1))) / n_pos
        f1 = float(np.max(2 * tp / (tp + fp + n_pos)))
        pro = _area_to(fp / n_neg, np.cumsum(self.region[occupied]) / self.n_regions, pro_fpr_limit)
        return roc, ap, f1, pro
