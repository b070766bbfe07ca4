"""Exact, batch-independent anomaly-detection metrics (image/pixel AUROC, AP, F1-max, PRO)."""
from .classification import auroc, average_precision, curve_metrics, f1_max, roc_curve
from .evaluate import (
    MapAccumulator, Metrics, compute_metrics, format_table, image_ap, image_auroc, image_f1_max, pixel_ap,
    pixel_auroc, pixel_f1_max,
)
from .segmentation import pro_auc, pro_curve

__all__ = [
    "MapAccumulator", "Metrics", "auroc", "average_precision", "curve_metrics",
    "compute_metrics", "f1_max", "format_table", "pro_auc", "pro_curve", "roc_curve",
    "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
]
