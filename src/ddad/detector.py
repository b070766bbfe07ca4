"""The public object: fit / adapt / calibrate / predict / evaluate / save / load.

    det = Detector.create(cfg)
    det.fit(train_images, run_dir)          # UNet on nominal images, [0, 1] tensors (N, 3, H, W)
    det.adapt(train_images)                 # domain adaptation of the feature extractor (Eq. 10)
    det.calibrate(val_images)               # v-balance scale and decision threshold from nominal images
    pred = det.predict(images)              # scores, maps, reconstructions; per image, batch-independent
    det.save(run_dir); Detector.load(run_dir)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import ModelFileError, load_json, load_tensors, save_json, save_tensors
from .config import DDADConfig, from_dict, save_config, to_dict
from .diffusion import NoiseSchedule, build_unet, count_parameters
from .diffusion.train import TrainResult, train_diffusion
from .features.adapt import AdaptResult, adapt_extractor
from .features.extractor import FeatureExtractor, build_extractor
from .sampling import FixedStart, reconstruct
from .scoring import feature_distance, maps_from_distances, pixel_distance

__all__ = ["Calibration", "Prediction", "Detector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """Constants measured once on held-out nominal images and stored with the model."""

    scale: float  # max D_f / max D_p over the nominal images (Eq. 9 without batch dependence)
    threshold: float  # image-score threshold at the configured false-reject rate
    nominal_scores: tuple[float, ...]
    pixel_threshold: float  # map value above which a pixel is marked defective (= threshold: PASS -> empty mask)


@dataclass(frozen=True)
class Prediction:
    scores: torch.Tensor  # (B,)
    maps: torch.Tensor  # (B, H, W) smoothed anomaly maps
    reconstructions: torch.Tensor  # (B, 3, H, W) in [0, 1]
    pixel_maps: torch.Tensor  # (B, H, W) D_p
    feature_maps: torch.Tensor  # (B, H, W) D_f


def _to_model(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2 - 1


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def _extractor(cfg: DDADConfig) -> FeatureExtractor:
    f = cfg.features
    return build_extractor(f.backbone, f.weights, f.input_size)


class Detector:
    def __init__(self, cfg: DDADConfig, unet, extractor: FeatureExtractor, calibration: Calibration | None = None):
        self.cfg = cfg
        self.unet = unet.eval()
        self.extractor = extractor.eval()
        self.schedule = NoiseSchedule.linear(cfg.schedule.num_train_timesteps, cfg.schedule.beta_start,
                                             cfg.schedule.beta_end)
        self.calibration = calibration
        self.train_result: TrainResult | None = None
        self.adapt_result: AdaptResult | None = None
        self.adapted = False

    @classmethod
    def create(cls, cfg: DDADConfig, device: str | torch.device = "cpu") -> "Detector":
        """A new, untrained detector on `device` (weights are initialised on the CPU from the config's seed, so
        the starting point is the same wherever it trains)."""
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left untouched
            torch.manual_seed(cfg.train.seed)
            unet = build_unet(cfg.model.preset, cfg.data.image_size)
        log.info("UNet preset %s: %.2f M parameters", cfg.model.preset, count_parameters(unet) / 1e6)
        return cls(cfg, unet, _extractor(cfg)).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> "Detector":
        self.unet.to(device)
        self.extractor.to(device)
        return self

    # ---- training ---------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        """Train the UNet on nominal images (N, 3, H, W) in [0, 1]; checkpoints go to run_dir/checkpoints."""
        meta = {"preset": self.cfg.model.preset, "image_size": self.cfg.data.image_size, "config": to_dict(self.cfg),
                "schedule": to_dict(self.cfg.schedule), "normalisation": "images in [0,1] -> model space [-1,1]"}
        result, ema = train_diffusion(self.unet, self.schedule, _to_model(images), self.cfg.train,
                                      Path(run_dir) / "checkpoints", resume, meta, progress)
        if ema is not None:
            self.unet.load_state_dict(ema)
        self.unet.eval()
        self.train_result = result
        return result

    def reset_extractor(self) -> None:
        """A fresh feature extractor for the current `cfg.features` (ImageNet weights, not adapted), on this
        detector's device: after the backbone, layers or input size changed."""
        self.extractor = _extractor(self.cfg).to(self.device)
        self.adapted = False

    def adapt(self, images: torch.Tensor, progress: bool = False) -> AdaptResult:
        """Domain adaptation (Eq. 10) of the feature extractor on nominal images in [0, 1]."""
        c = self.cfg.adapt

        def pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.reconstruct(x, target=y, w=c.w).clone()  # a normal tensor, usable under autograd

        self.extractor, self.adapt_result = adapt_extractor(self.extractor, pair, images.to(self.device), c, progress)
        self.adapted = True
        return self.adapt_result

    def calibrate(self, images: torch.Tensor) -> Calibration:
        """Measure the v-balance scale and thresholds on nominal images (N, 3, H, W) in [0, 1], none of them
        from the test set."""
        sc = self.cfg.scoring
        d_p, d_f = [], []
        for s in range(0, images.shape[0], self.cfg.sampling.batch_size):
            y = images[s : s + self.cfg.sampling.batch_size].to(self.device)
            p, f = self._distances(self.reconstruct(y), y)
            d_p.append(p), d_f.append(f)
        d_p, d_f = torch.cat(d_p), torch.cat(d_f)
        scale = float(d_f.max() / d_p.max().clamp_min(1e-8))
        m = maps_from_distances(d_p, d_f, sc.v, self._scale(scale), sc.sigma, sc.image_score, sc.topk)
        scores = m.scores.cpu().numpy()
        threshold = float(np.quantile(scores, 1 - sc.false_reject_rate))
        # pixel threshold = image threshold (image score = max of the map): a PASS image has an empty defect mask,
        # a FAIL image's mask shows where the map exceeds the decision level.
        pixel_threshold = threshold if sc.image_score == "max" else float(np.quantile(m.combined.cpu().numpy(), 0.999))
        self.calibration = Calibration(scale, threshold, tuple(map(float, scores)), pixel_threshold)
        return self.calibration

    # ---- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        """Defect-free reconstruction (B, 3, H, W) in [0, 1] of images in [0, 1] (Algorithm 1, y = x by default)."""
        s = self.cfg.sampling
        x = _to_model(images.to(self.device))
        y = x if target is None else _to_model(target.to(self.device))
        start = FixedStart(s.start_level).levels(x)

        def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x_t, t).sample

        out = reconstruct(eps, self.schedule, x, y, start, s.steps, s.w if w is None else w, s.eta, s.seed,
                          s.official_offbyone)
        return _to_image(out.x0)

    def _distances(self, x0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.cfg.features.layers
        with torch.inference_mode():
            return pixel_distance(x0, y), feature_distance(self.extractor(x0, layers), self.extractor(y, layers),
                                                           tuple(y.shape[-2:]))

    def _scale(self, calibrated: float | None) -> float | None:
        balance = self.cfg.scoring.balance
        if balance == "per_image":
            return None
        if balance != "calibrated":
            raise ValueError(f"unknown scoring.balance {balance!r}; choose calibrated or per_image")
        if calibrated is None:
            raise RuntimeError("scoring.balance=calibrated needs det.calibrate(nominal images) first "
                               "(or set scoring.balance=per_image)")
        return calibrated

    def _maps(self, x0: torch.Tensor, y: torch.Tensor) -> Prediction:
        sc = self.cfg.scoring
        d_p, d_f = self._distances(x0, y)
        m = maps_from_distances(d_p, d_f, sc.v, self._scale(None if self.calibration is None else self.calibration.scale),
                                sc.sigma, sc.image_score, sc.topk)
        return Prediction(m.scores, m.combined[:, 0], x0, m.pixel[:, 0], m.feature[:, 0])

    def predict(self, images: torch.Tensor) -> Prediction:
        """Scores and maps for images (B, 3, H, W) in [0, 1] (resized to the model's size beforehand)."""
        size = self.cfg.data.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"images must be {size}x{size} (the model's size), got {tuple(images.shape[-2:])}")
        parts = []
        for s in range(0, images.shape[0], self.cfg.sampling.batch_size):
            y = images[s : s + self.cfg.sampling.batch_size].to(self.device)
            parts.append(self._maps(self.reconstruct(y), y))
        return Prediction(*(torch.cat([getattr(p, f) for p in parts]) for f in Prediction.__dataclass_fields__))

    def evaluate(self, dataset, progress: bool = False, keep_maps: bool = False):
        """Metrics on a labelled dataset (see ddad.evaluation.evaluate_detector)."""
        from .evaluation import evaluate_detector

        return evaluate_detector(self, dataset, progress=progress, keep_maps=keep_maps)

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, d / "config.yaml")
        save_tensors(self.unet.state_dict(), d / "unet.safetensors")
        meta = {"ddad_version": __version__, "preset": self.cfg.model.preset, "image_size": self.cfg.data.image_size,
                "normalisation": "images in [0,1] -> model space [-1,1]", "schedule": to_dict(self.cfg.schedule),
                "parameters": count_parameters(self.unet), "config": to_dict(self.cfg), "adapted": self.adapted,
                "train_steps": self.train_result.steps if self.train_result else None}
        save_json(meta, d / "model.json")
        if self.adapted:
            save_tensors(self.extractor.state_dict(), d / "extractor.safetensors")
        elif (d / "extractor.safetensors").exists():
            (d / "extractor.safetensors").unlink()
        if self.calibration is not None:
            save_json(self.calibration.__dict__ | {"nominal_scores": list(self.calibration.nominal_scores)},
                      d / "calibration.json")
        return d

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> "Detector":
        d = Path(run_dir)
        if not d.is_dir():
            raise ModelFileError(f"model directory {d} does not exist; train one with `ddad train`")
        meta = load_json(d / "model.json")
        cfg = from_dict(DDADConfig, meta["config"], where=str(d / "model.json"))
        det = cls.create(cfg)  # loaded on the CPU, moved to `device` at the end
        try:
            det.unet.load_state_dict(load_tensors(d / "unet.safetensors"))
            if meta.get("adapted"):
                det.extractor.load_state_dict(load_tensors(d / "extractor.safetensors"))
                det.adapted = True
        except RuntimeError as e:
            raise ModelFileError(f"weights in {d} do not match its config (preset {cfg.model.preset}, backbone "
                                 f"{cfg.features.backbone}): {str(e).splitlines()[0]}") from e
        if (d / "calibration.json").is_file():
            c = load_json(d / "calibration.json")
            det.calibration = Calibration(c["scale"], c["threshold"], tuple(c["nominal_scores"]), c["pixel_threshold"])
        return det.to(device)
