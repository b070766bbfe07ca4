"""All benchmark metrics in one call, from per-image scores and (optionally) per-pixel maps.

Every metric is a function of the scores of each image alone: nothing is normalised across the batch or
the test set, so results do not depend on batch size or order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .classification import auroc, average_precision, curve_metrics, f1_max
from .segmentation import pro_auc
from .streaming import PixelHistogram

__all__ = [
    "Metrics", "compute_metrics", "MapAccumulator", "format_table",
    "image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
]


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level AUROC: scores (N,), labels (N,) 0/1."""
    return auroc(scores, labels)


def image_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    return average_precision(scores, labels)


def image_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    return f1_max(scores, labels)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel-level AUROC over every pixel of every image: maps (N, H, W), masks (N, H, W) bool."""
    return auroc(np.asarray(maps).ravel(), np.asarray(masks).ravel())


def pixel_ap(maps: np.ndarray, masks: np.ndarray) -> float:
    return average_precision(np.asarray(maps).ravel(), np.asarray(masks).ravel())


def pixel_f1_max(maps: np.ndarray, masks: np.ndarray) -> float:
    return f1_max(np.asarray(maps).ravel(), np.asarray(masks).ravel())


@dataclass(frozen=True)
class Metrics:
    """Benchmark figures in [0, 1] (None where undefined: no masks, or only one class present)."""

    image_auroc: float | None
    image_ap: float | None
    image_f1_max: float | None
    pixel_auroc: float | None = None
    pixel_ap: float | None = None
    pixel_f1_max: float | None = None
    pro: float | None = None
    n_images: int = 0
    n_anomalous: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_extra(self, **columns: float) -> "Metrics":
        """A copy with more table columns (s/img, train s, ...) in `extra`; this object is left unchanged."""
        return replace(self, extra={**self.extra, **columns})


def compute_metrics(
    image_scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    pro_fpr_limit: float = 0.3,
) -> Metrics:
    """image_scores (N,), labels (N,) 0/1; maps (N, H, W) float and masks (N, H, W) bool, or None."""
    scores = np.asarray(image_scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    both = 0 < y.sum() < y.size
    image = curve_metrics(scores, y) if both else (None,) * 3
    pixel: tuple = (None,) * 4
    if maps is not None and masks is not None:
        m = np.asarray(masks).astype(bool)
        if m.any() and not m.all():
            pixel = (*curve_metrics(np.asarray(maps).ravel(), m.ravel()), pro_auc(maps, m, pro_fpr_limit))
    return Metrics(*image, *pixel, n_images=int(y.size), n_anomalous=int(y.sum()))


class MapAccumulator:
    """Collects per-image scores and labels, and the pixel metrics' histograms (streaming.PixelHistogram), batch by
    batch: memory does not grow with the number of images. Image metrics are exact; pixel metrics equal the exact
    ones of the maps quantised to float16 precision (streaming.quantise)."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.pixels = PixelHistogram()
        self.has_masks = True

    def add(self, scores, labels, maps=None, masks=None) -> None:
        self.scores.append(np.asarray(scores, dtype=np.float64).ravel())
        self.labels.append(np.asarray(labels).astype(bool).ravel())
        if maps is None or masks is None:
            self.has_masks = False
            return
        maps = np.asarray(maps, dtype=np.float32).reshape(len(self.scores[-1]), *np.shape(maps)[-2:])
        self.pixels.add(maps, np.asarray(masks).astype(bool).reshape(maps.shape))

    def compute(self, pro_fpr_limit: float = 0.3) -> Metrics:
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
        m = compute_metrics(scores, labels)
        if not self.has_masks:
            return m
        pixel = self.pixels.compute(pro_fpr_limit)
        return m if pixel is None else replace(m, pixel_auroc=pixel[0], pixel_ap=pixel[1], pixel_f1_max=pixel[2],
                                               pro=pixel[3])


def format_table(rows: dict[str, Metrics], extra_cols: tuple[str, ...] = ()) -> str:
    """Markdown table, one row per named result, values in percent."""
    cols = ["image_auroc", "pixel_auroc", "pro", "image_ap", "pixel_ap", "image_f1_max", "pixel_f1_max"]
    head = ["", "I-AUROC", "P-AUROC", "PRO", "I-AP", "P-AP", "I-F1max", "P-F1max", *extra_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        vals = [getattr(m, c) for c in cols]
        cells = ["-" if v is None else f"{100 * v:.1f}" for v in vals]
        cells += [f"{m.extra[c]:.3g}" if c in m.extra else "-" for c in extra_cols]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
