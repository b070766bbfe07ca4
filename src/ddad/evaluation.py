"""Evaluate a detector on a labelled dataset: all metrics, per-image records, speed and memory."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import AnomalyDataset, loader
from .metrics import MapAccumulator, Metrics

__all__ = ["ImageRecord", "EvalResult", "NpyWriter", "evaluate_detector", "peak_memory_mb"]


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
    saved: tuple[str, ...] = ()  # the array files written to save_dir (maps.npy, masks.npy, inputs.npy, ...)

    def summary(self) -> dict:
        return {**self.metrics.as_dict(), "seconds_per_image": self.seconds_per_image,
                "peak_memory_mb": self.peak_memory_mb}


class NpyWriter:
    """An .npy file of a known length written batch by batch with plain writes (no memory map, so nothing of it
    stays resident in this process): open at the first batch, whose shape gives the per-item shape."""

    def __init__(self, path: Path, length: int, dtype) -> None:
        self.path, self.length, self.dtype = path, length, np.dtype(dtype)
        self.f = None
        self.written = 0

    def add(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if self.f is None:
            self.f = open(self.path, "wb")
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.length, *batch.shape[1:])}
            np.lib.format.write_array_header_2_0(self.f, header)
            self.item_shape = batch.shape[1:]
        if batch.shape[1:] != self.item_shape or self.written + len(batch) > self.length:
            raise ValueError(f"{self.path.name}: batch {batch.shape} does not fit ({self.length}, *{self.item_shape}) "
                             f"after {self.written} items")
        self.f.write(batch.tobytes())
        self.written += len(batch)

    def close(self) -> bool:
        """True where the file is complete; an incomplete file is removed (a report would misread it)."""
        if self.f is None:
            return False
        self.f.close()
        if self.written != self.length:
            self.path.unlink()
            return False
        return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def evaluate_detector(detector, dataset: AnomalyDataset, progress: bool = False,
                      save_dir: str | Path | None = None) -> EvalResult:
    """Score every image of `dataset` in batches streamed from disk; metrics accumulate in fixed memory
    (MapAccumulator), so memory does not grow with the number of images. With save_dir, the maps (float16), masks
    (bool), inputs and reconstructions (uint8) a report needs are appended to .npy files there as they come."""
    cfg = detector.cfg
    batches = loader(dataset, cfg.sampling.batch_size, cfg.data.workers, detector.device)
    acc = MapAccumulator()
    records: list[ImageRecord] = []
    writers: dict[str, NpyWriter] = {}
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        n = len(dataset)
        writers = {"maps": NpyWriter(save_dir / "maps.npy", n, np.float16),
                   "masks": NpyWriter(save_dir / "masks.npy", n, bool),
                   "inputs": NpyWriter(save_dir / "inputs.npy", n, np.uint8),
                   "reconstructions": NpyWriter(save_dir / "reconstructions.npy", n, np.uint8)}
        for w in writers.values():  # a previous evaluation's file must not outlive this one (masks: none this time)
            w.path.unlink(missing_ok=True)
    seconds = 0.0
    try:
        for batch in tqdm(batches, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True):
            t0 = time.perf_counter()
            pred = detector.predict(batch.images)
            seconds += time.perf_counter() - t0
            scores = pred.scores.cpu().numpy()
            maps = pred.maps.float().cpu().numpy()
            masks = None if batch.masks is None else batch.masks[:, 0].numpy().astype(bool)
            acc.add(scores, batch.labels.numpy(), maps, masks)
            if writers:
                writers["maps"].add(maps)
                if masks is not None:
                    writers["masks"].add(masks)
                writers["inputs"].add(_uint8(batch.images))
                if pred.reconstructions is not None:  # a baseline that reconstructs nothing writes none
                    writers["reconstructions"].add(_uint8(pred.reconstructions))
            info = [{k: float(v[i]) for k, v in pred.info.items()} for i in range(len(scores))]
            records += [ImageRecord(p, d, int(l), float(s), inf) for p, d, l, s, inf in
                        zip(batch.paths, batch.defect_types, batch.labels.tolist(), scores, info)]
    finally:
        saved = tuple(w.path.name for w in writers.values() if w.close())
    return EvalResult(acc.compute(), seconds / max(len(dataset), 1), peak_memory_mb(detector.device),
                      tuple(records), saved)


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
