"""What every method shares: calibration, batched per-image inference, domain adaptation, save/load (what they
produce: methods/outputs.py).

A method is a subclass of `Detector` registered in `ddad.methods.METHODS`. It owns its networks, its training
objective (`fit`), its reconstruction and its distance terms; everything else is here, so the pipeline, CLI,
service, report and benchmark never ask which method they hold.

    terms(y)           -> the reconstruction and the method's unsmoothed distance maps, per image
    fit_constants(maps) -> constants measured once on held-out nominal images (stored in calibration.json)
    combine(maps, c)   -> one map per image; smoothing, the image score and the thresholds are shared
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..allocator import keep_freed_memory
from ..checkpoint import ModelFileError, load_json, load_tensors, save_json, save_tensors
from ..config import DDADConfig, from_dict, migrate, save_config, to_dict
from ..diffusion import NoiseSchedule, count_parameters
from ..diffusion.train import TrainResult
from ..features.adapt import AdaptResult, adapt_extractor
from ..features.extractor import FeatureExtractor, build_extractor
from ..scoring import feature_distance, image_score, smooth
from .outputs import Calibration, Prediction, Terms, to_image, to_model

__all__ = ["Calibration", "Prediction", "Terms", "Detector", "to_model", "to_image"]

log = logging.getLogger(__name__)


def _extractor(cfg: DDADConfig) -> FeatureExtractor:
    f = cfg.features
    return build_extractor(f.backbone, f.weights, f.input_size)


class Detector:
    """Base of every method. `Detector.create(cfg)` builds the method `cfg.method` names; `Detector.load(dir)`
    the one a model directory records."""

    name: ClassVar[str] = ""  # the METHODS key
    summary: ClassVar[str] = ""  # one line for `ddad info`
    # keys of the method's own config section that only change inference (a trained model takes new values and is
    # re-calibrated, e.g. by `ddad benchmark --reuse`); the others fix the training
    inference_options: ClassVar[tuple[str, ...]] = ()
    # the inference options that only `combine` reads (the weights of the method's terms): `ddad select` scores
    # candidates differing only in these from one set of terms, as it does for the scoring section
    combine_options: ClassVar[tuple[str, ...]] = ()
    uses_sampling_steps: ClassVar[bool] = True  # False: sampling.steps plays no part (`ddad benchmark --steps` skips it)

    def __init__(self, cfg: DDADConfig, extractor: FeatureExtractor, calibration: Calibration | None = None):
        self.cfg = cfg
        self.extractor = extractor.eval()
        self.schedule = NoiseSchedule.linear(cfg.schedule.num_train_timesteps, cfg.schedule.beta_start,
                                             cfg.schedule.beta_end)
        self.calibration = calibration
        # the calibration images' terms from the last calibrate() in this process (not saved; `ddad select` recombines
        # them instead of computing them again)
        self.calibration_terms: dict[str, torch.Tensor] | None = None
        self.train_result: TrainResult | None = None
        self.adapt_result: AdaptResult | None = None
        self.adapted = False
        self.loaded_meta: dict = {}  # model.json of the directory this detector was loaded from
        self.runtime = {"backend": "torch", "precision": "fp32"}  # what runs the inference networks (ddad.runtime)

    # ---- what a method provides -------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: DDADConfig, meta: dict | None = None) -> "Detector":
        """A new, untrained detector on the CPU (weights seeded from cfg.train.seed). `meta` is a saved model's
        model.json, for architectures that are not fully described by the config (a pretrained autoencoder)."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        """Trained networks, saved as <name>.safetensors (the feature extractor is handled here)."""
        raise NotImplementedError

    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        """Train on nominal images (N, 3, H, W) in [0, 1]; resumable checkpoints under run_dir/checkpoints."""
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        """Defect-free reconstruction (B, 3, H, W) in [0, 1], conditioned on `target` (default: the image)."""
        raise NotImplementedError

    def terms(self, y: torch.Tensor) -> Terms:
        """Reconstruction and distance terms for images y (B, 3, H, W) in [0, 1], each image on its own."""
        raise NotImplementedError

    def fit_constants(self, maps: dict[str, torch.Tensor]) -> dict[str, float]:
        """Map constants from the terms of held-out nominal images."""
        raise NotImplementedError

    def combine(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None) -> torch.Tensor:
        """(B, 1, H, W) unsmoothed anomaly map from the terms; constants None = not calibrated yet."""
        raise NotImplementedError

    @classmethod
    def terms_signature(cls, cfg: DDADConfig) -> str:
        """What `terms` (and fit_references) of this method read from a config, as a string: `ddad select` computes
        the terms of the candidates sharing a signature once and scores each of them by recombining those terms
        (fit_constants, combine, smoothing, image score). Default: everything but the scoring section, which only
        the recombination reads, and the method's `combine_options`; a method whose terms read a scoring key adds
        it."""
        d = to_dict(cfg)
        d.pop("scoring")
        for key in cls.combine_options:
            d[cls.name].pop(key)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def terms_cover(cls, cfg: DDADConfig, other: DDADConfig) -> bool:
        """Whether the terms a detector for `cfg` computes include every term `other` needs, so that `ddad select`
        scores `other` from them (by recombination). Default: the same terms signature."""
        return cls.terms_signature(cfg) == cls.terms_signature(other)

    def fit_references(self, images: torch.Tensor) -> None:
        """Nominal references the map compares with that depend on the feature extractor or the settings (DDAD's
        nominal memory), from the training images (N, 3, H, W) in [0, 1] (a tensor or an ImageSet). Called at the end
        of adapt, and by the pipeline after fit and before re-calibrating a model whose settings changed. Default:
        none."""

    def state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors besides the networks (e.g. a kNN bank), saved in state.safetensors."""
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise ModelFileError(f"method {self.name!r} keeps no state, but state.safetensors holds {sorted(tensors)}")

    def describe(self) -> dict:
        """Extra JSON metadata for model.json (read back by build(meta=...))."""
        return {}

    # ---- shared -----------------------------------------------------------------------------------
    @staticmethod
    def create(cfg: DDADConfig, device: str | torch.device = "cpu") -> "Detector":
        """A new, untrained detector of method `cfg.method` on `device`."""
        from . import METHODS

        keep_freed_memory()  # activations re-used step after step instead of mapped anew (ddad.allocator)

        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left untouched
            torch.manual_seed(cfg.train.seed)
            det = METHODS[cfg.method].build(cfg)
        for name, net in det.networks().items():
            log.info("%s %s: %.2f M parameters", cfg.method, name, count_parameters(net) / 1e6)
        return det.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.extractor.parameters()).device

    def to(self, device: str | torch.device) -> "Detector":
        for net in self.networks().values():
            net.to(device)
        self.extractor.to(device)
        return self

    def reset_extractor(self) -> None:
        """A fresh feature extractor for the current `cfg.features` (ImageNet weights, not adapted), on this
        detector's device: after the backbone, layers or input size changed."""
        self.extractor = _extractor(self.cfg).to(self.device)
        self.adapted = False

    def adapt(self, images: torch.Tensor, progress: bool = False) -> AdaptResult:
        """Domain adaptation (DDAD Eq. 10) of the feature extractor on nominal images in [0, 1]."""
        c = self.cfg.adapt
        # adapt_extractor moves each batch to the extractor's device (this detector's): a tensor or an ImageSet
        self.extractor, self.adapt_result = adapt_extractor(self.extractor, self.adapt_pair, images, c, progress)
        self.adapted = True
        self.fit_references(images)  # the references were measured with the extractor before adaptation
        return self.adapt_result

    def adapt_pair(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The reconstruction domain adaptation compares with the nominal image y (Eq. 10): x denoised conditioned
        on y with the adaptation's weight w_DA. A method without conditioning overrides it."""
        return self.reconstruct(x, target=y, w=self.cfg.adapt.w).clone()  # a normal tensor, usable under autograd

    def feature_map(self, x0: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) sum over cfg.features.layers of 1 - cos of pooled features (DDAD Eq. 8)."""
        layers = self.cfg.features.layers
        with torch.inference_mode():
            return feature_distance(self.extractor(x0, layers), self.extractor(ref, layers), tuple(ref.shape[-2:]))

    def _batches(self, images: torch.Tensor):
        bs = self.cfg.sampling.batch_size
        for s in range(0, images.shape[0], bs):
            yield images[s : s + bs].to(self.device)

    def score_terms(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None):
        """(the anomaly maps (N, 1, H, W), the image scores (N,)) from the terms' maps: combined with the calibration
        constants (combine), smoothed, scored (scoring.image_score); what predict does after terms, and what
        ddad.selection recombines candidates with."""
        sc = self.cfg.scoring
        combined = smooth(self.combine(maps, constants), sc.sigma)
        return combined, image_score(combined, sc.image_score, sc.topk)

    def terms_maps(self, images: torch.Tensor, on_batch: Callable[[int], None] | None = None
                   ) -> dict[str, torch.Tensor]:
        """The terms' maps (name -> (N, 1, H, W), on this detector's device) of images, batch by batch; on_batch(n)
        is called after each batch of n images (a progress bar)."""
        parts = []
        for y in self._batches(images):
            parts.append(self.maps_of(y))
            if on_batch is not None:
                on_batch(y.shape[0])
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def maps_of(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms' maps of a batch, without what only a picture needs (a method whose reconstruction for display
        costs more than its maps computes the maps alone)."""
        return self.terms(y).maps

    def calibrate(self, images: torch.Tensor) -> Calibration:
        """Measure the map constants and thresholds on nominal images (N, 3, H, W) in [0, 1], none of them from
        the test set."""
        sc = self.cfg.scoring
        maps = self.calibration_terms = self.terms_maps(images)
        constants = self.fit_constants(maps)
        combined, scores_t = self.score_terms(maps, constants)
        scores = scores_t.cpu().numpy()
        threshold = float(np.quantile(scores, 1 - sc.false_reject_rate))
        # pixel threshold = image threshold (image score = max of the map): a PASS image has an empty defect mask,
        # a FAIL image's mask shows where the map exceeds the decision level.
        pixel_threshold = threshold if sc.image_score == "max" else float(np.quantile(combined.cpu().numpy(), 0.999))
        self.calibration = Calibration(constants, threshold, tuple(map(float, scores)), pixel_threshold)
        return self.calibration

    def predict(self, images: torch.Tensor) -> Prediction:
        """Scores and maps for images (B, 3, H, W) in [0, 1] (resized to the model's size beforehand)."""
        h, w = self.cfg.data.shape
        if tuple(images.shape[-2:]) != (h, w):
            raise ValueError(f"images must be {w}x{h} pixels (width x height, the model's size), got "
                             f"{images.shape[-1]}x{images.shape[-2]}; read them with ddad.data.read_image(path, "
                             f"cfg.data.shape)")
        constants = None if self.calibration is None else self.calibration.constants
        parts = []
        for y in self._batches(images):
            t = self.terms(y)
            combined, scores = self.score_terms(t.maps, constants)
            parts.append(Prediction(scores, combined[:, 0], t.x0, {k: v[:, 0] for k, v in t.maps.items()},
                                    {k: v.cpu() for k, v in t.info.items()}))
        return Prediction.cat(parts)

    def evaluate(self, dataset, progress: bool = False, save_dir: str | Path | None = None):
        """Metrics on a labelled dataset; with save_dir, the arrays a report needs (see
        ddad.evaluation.evaluate_detector)."""
        from ..evaluation import evaluate_detector

        return evaluate_detector(self, dataset, progress=progress, save_dir=save_dir)

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, d / "config.yaml")
        for name, net in self.networks().items():
            save_tensors(net.state_dict(), d / f"{name}.safetensors")
        save_json(self.model_meta(), d / "model.json")
        for flag, name, tensors in ((self.adapted, "extractor", lambda: self.extractor.state_dict()),
                                    (bool(self.state()), "state", self.state)):
            if flag:
                save_tensors(tensors(), d / f"{name}.safetensors")
            elif (d / f"{name}.safetensors").exists():
                (d / f"{name}.safetensors").unlink()
        if self.calibration is not None:
            save_json(self.calibration.to_json(), d / "calibration.json")
        return d

    def model_meta(self) -> dict:
        """model.json: the config, what the networks are, whether the extractor is adapted, the method's describe()."""
        nets = self.networks()
        meta = {"ddad_version": __version__, "method": self.name, "preset": self.cfg.model.preset,
                "image_size": self.cfg.data.image_size, "normalisation": "images in [0,1] -> model space [-1,1]",
                "schedule": to_dict(self.cfg.schedule), "networks": sorted(nets),
                "parameters": {k: count_parameters(v) for k, v in nets.items()}, "config": to_dict(self.cfg),
                "adapted": self.adapted, "train_steps": self.train_result.steps if self.train_result else None,
                **self.describe()}
        # facts of the training run that a loaded detector no longer holds (train_steps after `ddad adapt`) are kept
        return meta | {k: v for k, v in self.loaded_meta.items() if meta.get(k) is None and v is not None}

    @staticmethod
    def from_meta(meta: dict, state: dict[str, torch.Tensor], calibration: Calibration | None,
                  where: str = "model.json") -> "Detector":
        """The detector a model.json describes (`model_meta`), with its fitted state and calibration, on the CPU; its
        networks' weights (and the adapted extractor's, where meta says adapted) are the caller's to load."""
        cfg = from_dict(DDADConfig, migrate(meta["config"]), where=where)
        from . import METHODS

        det = METHODS[cfg.method].build(cfg, meta)
        det.loaded_meta = meta
        det.load_state(state)
        det.calibration = calibration
        return det

    @staticmethod
    def load(run_dir: str | Path, device: str = "cpu", backend: str = "torch", precision: str = "fp32") -> "Detector":
        """Load a model directory; its model.json says which method it is (models from before methods: DDAD).
        backend/precision: what runs the inference networks (ddad.runtime; onnxruntime and openvino run the
        model's `ddad export`)."""
        d = Path(run_dir)
        if not d.is_dir():
            raise ModelFileError(f"model directory {d} does not exist; train one with `ddad train`")
        keep_freed_memory()
        state = load_tensors(d / "state.safetensors") if (d / "state.safetensors").is_file() else {}
        calibration = (Calibration.from_json(load_json(d / "calibration.json"))
                       if (d / "calibration.json").is_file() else None)
        # on the CPU, moved to `device` at the end
        det = Detector.from_meta(load_json(d / "model.json"), state, calibration, where=str(d / "model.json"))
        meta, cfg = det.loaded_meta, det.cfg
        try:
            for name, net in det.networks().items():
                net.load_state_dict(load_tensors(d / f"{name}.safetensors"))
            if meta.get("adapted"):
                det.extractor.load_state_dict(load_tensors(d / "extractor.safetensors"))
                det.adapted = True
        except RuntimeError as e:
            raise ModelFileError(f"weights in {d} do not match its config (method {cfg.method}, preset "
                                 f"{cfg.model.preset}, backbone {cfg.features.backbone}): {str(e).splitlines()[0]}") from e
        from ..runtime import use_backend

        return use_backend(det.to(device), d, backend, precision)
