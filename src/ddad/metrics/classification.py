"""Exact threshold-sweep metrics for binary scores: AUROC, average precision, F1-max.

Each is validate -> sort once -> compute. Ties are grouped (one curve point per distinct score), so the
values equal scikit-learn's roc_auc_score / average_precision_score exactly. Works on images (one score
each) and on pixels (flattened maps, float32, tens of millions of entries).
"""
from __future__ import annotations

import numpy as np

from .sweep import CHUNK, sweep

__all__ = [
    "curve_metrics", "auroc", "average_precision", "f1_max", "roc_curve",
]


def _validate(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.shape} vs {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; check the anomaly maps")
    if labels.dtype != bool:
        uniq = np.unique(labels)
        if not np.isin(uniq, (0, 1)).all():
            raise ValueError(f"labels must be 0/1 or bool, got values {uniq[:10]}")
        labels = labels.astype(bool)
    return scores, labels


def _label_weights(labels: np.ndarray):
    def w(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = labels[idx]
        return y.astype(np.float64), (~y).astype(np.float64)

    return w


def _points(scores: np.ndarray, labels: np.ndarray, name: str, chunk: int):
    scores, labels = _validate(scores, labels)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{name} needs both positive and negative samples (got {n_pos} pos, {n_neg} neg)")
    return sweep(scores, _label_weights(labels), chunk), n_pos, n_neg


def curve_metrics(scores: np.ndarray, labels: np.ndarray, chunk: int = CHUNK) -> tuple[float, float, float]:
    """(AUROC, average precision, F1-max) from one sort and one streaming sweep.

    AUROC: trapezoid over distinct thresholds (ties count one half); AP = sum_n (R_n - R_{n-1}) P_n (step
    interpolation, as scikit-learn); F1 = 2 TP / (TP + FP + P).
    """
    points, n_pos, n_neg = _points(scores, labels, "ROC/PR metrics", chunk)
    area = ap = best = 0.0
    last_fp = last_tp = 0.0
    for fp, tp in points:
        x = np.concatenate([[last_fp], fp])
        y = np.concatenate([[last_tp], tp])
        area += float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))
        ap += float(np.sum(np.diff(y) * tp / np.maximum(tp + fp, 1)))
        best = max(best, float(np.max(2 * tp / (tp + fp + n_pos))))
        last_fp, last_tp = fp[-1], tp[-1]
    return area / (n_pos * n_neg), ap / n_pos, best


def auroc(scores: np.ndarray, labels: np.ndarray, chunk: int = CHUNK) -> float:
    """Area under the ROC curve."""
    return curve_metrics(scores, labels, chunk)[0]


def average_precision(scores: np.ndarray, labels: np.ndarray, chunk: int = CHUNK) -> float:
    """Average precision (scikit-learn's definition)."""
    return curve_metrics(scores, labels, chunk)[1]


def f1_max(scores: np.ndarray, labels: np.ndarray, chunk: int = CHUNK) -> float:
    """Best F1 over all thresholds."""
    return curve_metrics(scores, labels, chunk)[2]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, starting at (0, 0) (for plots)."""
    points, n_pos, n_neg = _points(scores, labels, "ROC", CHUNK)
    pts = list(points)
    return (np.concatenate([[0.0], *[p[0] for p in pts]]) / n_neg,
            np.concatenate([[0.0], *[p[1] for p in pts]]) / n_pos)
