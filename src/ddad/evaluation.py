"""Evaluate a detector on a labelled dataset: all metrics, per-image records, speed and memory."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import AnomalyDataset, collate
from .metrics import MapAccumulator, Metrics

__all__ = ["ImageRecord", "EvalResult", "evaluate_detector", "peak_memory_mb"]


@dataclass(frozen=True)
class ImageRecord:
    path: str
    defect_type: str
    label: int
    score: float
    info: dict[str, float] = field(default_factory=dict)  # the method's per-image values (Prediction.info)


@dataclass(frozen=True)
class EvalResult:
    metrics: Metrics
    seconds_per_image: float
    peak_memory_mb: float
    records: tuple[ImageRecord, ...]
    maps: np.ndarray | None  # (N, H, W) float32 when kept
    masks: np.ndarray | None  # (N, H, W) bool when kept
    reconstructions: np.ndarray | None = None  # (N, H, W, 3) uint8 when kept
    inputs: np.ndarray | None = None  # (N, H, W, 3) uint8 when kept

    def summary(self) -> dict:
        return {**self.metrics.as_dict(), "seconds_per_image": self.seconds_per_image,
                "peak_memory_mb": self.peak_memory_mb}


def peak_memory_mb(device: torch.device) -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def evaluate_detector(detector, dataset: AnomalyDataset, progress: bool = False, keep_maps: bool = False) -> EvalResult:
    loader = DataLoader(dataset, batch_size=detector.cfg.sampling.batch_size, shuffle=False, collate_fn=collate)
    acc = MapAccumulator()
    records: list[ImageRecord] = []
    recon: list[np.ndarray] = []
    inputs: list[np.ndarray] = []
    seconds = 0.0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True):
        t0 = time.perf_counter()
        pred = detector.predict(batch.images)
        seconds += time.perf_counter() - t0
        scores = pred.scores.cpu().numpy()
        masks = None if batch.masks is None else batch.masks[:, 0].numpy()
        acc.add(scores, batch.labels.numpy(), pred.maps.cpu().numpy(), masks)
        if keep_maps:
            recon.append(_uint8(pred.reconstructions))
            inputs.append(_uint8(batch.images))
        info = [{k: float(v[i]) for k, v in pred.info.items()} for i in range(len(scores))]
        records += [ImageRecord(p, d, int(l), float(s), inf) for p, d, l, s, inf in
                    zip(batch.paths, batch.defect_types, batch.labels.tolist(), scores, info)]
    metrics = acc.compute()
    maps = np.concatenate(acc.maps) if keep_maps and acc.maps else None
    masks = np.concatenate(acc.masks) if keep_maps and acc.masks else None
    return EvalResult(metrics, seconds / max(len(dataset), 1), peak_memory_mb(detector.device), tuple(records),
                      maps, masks, np.concatenate(recon) if recon else None,
                      np.concatenate(inputs) if inputs else None)


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
