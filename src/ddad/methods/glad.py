"""GLAD, global and local adaptive diffusion (papers/glad-global-local-adaptive-diffusion.md; SPEC section 3).

    training (ATP, Eq. 10):  x~ = synthetic defect pasted into a nominal x (half the samples),
                             x_t = sqrt(ab_t) x~ + sqrt(1 - ab_t) eps,   target = (x_t - sqrt(ab_t) x) / sqrt(1 - ab_t)
                             (ddad.sampling.eps_for_x0), so the model's x0-prediction is the NORMAL image
    inference:               ADS + SAFF from T' (ddad.sampling.adaptive.adaptive_reconstruct)
    map:                     sum over layers of patch nearest-neighbour distances input -> reconstruction
                             (ddad.scoring.patch_match), Gaussian smoothing; image score = mean of the top-k pixels

Deliberate differences from the paper and its official code (SPEC 3):
  - the model is trained from scratch, in pixel space by default (the paper fine-tunes a Stable Diffusion UNet, which
    cannot be downloaded here); glad.space = latent runs everything on the latents of an AutoencoderKL trained on the
    nominal images first (D3AD's) or loaded from a local folder;
  - tau, the ADS threshold, is measured on held-out nominal images (a quantile of their largest step score) instead
    of the paper's per-class values picked on test results;
  - the SAFF mask is 2 sigmoid(d / tau) - 1 instead of sigmoid(d), which is never below 0.5 (saff_mask says why);
  - the map is not min-max normalised over the test set: every image is scored on its own;
  - the ATP target's sign follows from the x0 identity (the official repository has flipped it).
The paper's redundancy delta (restart a little above the switch step) is 0 here.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import DDADConfig, to_dict
from ..data.anomalies import AnomalySpec, object_foreground, spec_from_config, synthesize_batch
from ..diffusion import build_unet
from ..diffusion.unet import load_pretrained_unet
from ..diffusion.autoencoder import LatentSpace, build_latent_pair
from ..diffusion.schedule import NoiseSchedule
from ..diffusion.train import LossFn, TrainResult, eps_loss, train_model
from ..sampling import AdaptiveReconstruction, FixedStart, adaptive_reconstruct, eps_for_x0, image_seeds, saff_mask
from ..scoring import patch_nn_distance, patch_nn_map, topk_mean
from .base import Calibration, Detector, Terms, _extractor, to_image, to_model

__all__ = ["GLAD", "atp_loss", "anomaly_spec"]

log = logging.getLogger(__name__)


def anomaly_spec(cfg: DDADConfig) -> AnomalySpec:
    """GLAD's training defects (glad.anomalies)."""
    return spec_from_config(cfg.glad.anomalies)


def atp_loss(schedule: NoiseSchedule, spec: AnomalySpec,
             to_latent: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LossFn:
    """GLAD Eq. 10: ||eps_theta(x_t, t) - (x_t - sqrt(ab_t) x) / sqrt(1 - ab_t)||^2 with x_t made from the image
    with a synthetic defect and x the normal image. For a sample without a defect the target is eps itself (DDPM's
    L_simple). The defects are drawn from a seed taken from the step's generator: an exact resume repeats them.
    Batches are images in model space; `to_latent` (latent GLAD) encodes the normal and the defective image, and
    the same identity holds between their latents."""

    def loss(model: torch.nn.Module, x0: torch.Tensor, g: torch.Generator, gd: torch.Generator,
             part: slice = slice(None)) -> torch.Tensor:
        seed = int(torch.randint(2**62, (1,), generator=g))
        n = x0.shape[0]
        idx = torch.arange(n)[part]  # the defects of this part of the global batch (sample i from (seed, i))
        anomalous = torch.stack([synthesize_batch(to_image(x0[i : i + 1]).float().cpu(), seed, spec,
                                                  offset=int(i))[0][0] for i in idx])
        x0 = x0[part]
        x_syn = to_model(anomalous.to(device=x0.device, dtype=x0.dtype))
        if to_latent is not None:
            with torch.no_grad():
                x0, x_syn = to_latent(torch.cat([x0, x_syn])).chunk(2)
        t = torch.randint(schedule.num_train_timesteps, (n,), generator=g).to(x0.device)[part]
        noise = torch.randn((n, *x0.shape[1:]), generator=gd, device=x0.device)[part]
        x_t = schedule.q_sample(x_syn, t, noise)
        target = eps_for_x0(x_t, x0, schedule.alpha_bar(t))
        return F.mse_loss(model(x_t, t).sample.float(), target.float())

    return loss


class GLAD(Detector):
    name = "glad"
    summary = ("GLAD: anomaly-oriented training on synthetic defects, per-image adaptive denoising step, "
               "spatial-adaptive fusion, patch nearest-neighbour feature map")
    inference_options = ("ads", "tau", "tau_quantile", "t_min", "ads_layer", "ads_topk", "saff", "saff_floor",
                         "reverse", "foreground")

    def __init__(self, cfg: DDADConfig, unet: nn.Module, extractor, calibration: Calibration | None = None,
                 vae: nn.Module | None = None):
        super().__init__(cfg, extractor, calibration)
        self.unet = unet.eval()
        self.space = None if vae is None else LatentSpace(vae)  # glad.space: latent only
        self.init_info: dict | None = None  # the pretrained UNet fit() started from (glad.init)
        self._tau: float | None = None  # measured by calibrate() (else read from the calibration)

    @classmethod
    def build(cls, cfg: DDADConfig, meta: dict | None = None) -> "GLAD":
        g = cfg.glad
        if cfg.sampling.official_offbyone:
            raise ValueError("sampling.official_offbyone mimics the official DDAD code; GLAD does not use it")
        if g.foreground not in ("none", "object"):
            raise ValueError(f"glad.foreground must be none or object, got {g.foreground!r}")
        from ..features.extractor import BACKBONES

        n = len(BACKBONES[cfg.features.backbone].channels) if cfg.features.backbone in BACKBONES else 3
        if not 1 <= g.ads_layer <= n:
            raise ValueError(f"glad.ads_layer must be a layer of {cfg.features.backbone} (1..{n}), got {g.ads_layer}")
        if not 0 < g.tau_quantile <= 1:
            raise ValueError(f"glad.tau_quantile must be in (0, 1], got {g.tau_quantile}")
        if g.atp:
            anomaly_spec(cfg)  # validates the anomaly options now, not at the first training step
        if g.init and g.space != "pixel":
            raise ValueError("glad.init (a pretrained UNet to fine-tune) works in pixel space: a latent UNet is "
                             "pretrained for one autoencoder's latents. Set glad.space: pixel or glad.init: null")
        if g.space == "pixel":
            return cls(cfg, build_unet(cfg.model.preset, cfg.data.shape), _extractor(cfg))
        if g.space != "latent":
            raise ValueError(f"glad.space must be pixel or latent, got {g.space!r}")
        vae, unet = build_latent_pair(g.autoencoder, cfg.model.preset, cfg.data.shape, meta)
        return cls(cfg, unet, _extractor(cfg), vae=vae)

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet} | ({} if self.space is None else {"autoencoder": self.space.vae})

    def describe(self) -> dict:
        init = {} if self.init_info is None else {"unet_init": self.init_info}
        return init | ({} if self.space is None else self.space.describe())

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.space is None else self.space.state()

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.space is None:
            return super().load_state(tensors)
        self.space.load_state(tensors, "GLAD")

    # ---- the diffusion space: images in [-1, 1], or their scaled latents ---------------------------------------
    def _to_space(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.space is None else self.space.encode(x)

    def _to_images(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from the diffusion space."""
        return to_image(z if self.space is None else self.space.decode(z))

    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        meta = {"method": self.name, "config": to_dict(self.cfg), "schedule": to_dict(self.cfg.schedule),
                "normalisation": "images in [0,1] -> model space [-1,1]"}
        g, ckpts, x = self.cfg.glad, Path(run_dir) / "checkpoints", to_model(images)
        if self.space is not None:  # latent space: the autoencoder first (a resumable stage of its own)
            latents = self.space.fit(x, g.autoencoder, ckpts / "autoencoder", resume, meta, progress,
                                     self.cfg.sampling.batch_size)
            log.info("latents %s, scale %.4f", tuple(latents.shape[1:]), self.space.scale)
            ckpts = ckpts / "unet"
        if g.init:  # the paper fine-tunes a pretrained UNet; a resumed run's checkpoint then replaces these weights
            self.init_info = load_pretrained_unet(self.unet, g.init, to_dict(self.cfg.schedule))
            log.info("fine-tuning the pretrained UNet %s", g.init)
        if g.atp:  # batches of images; the latent objective encodes each normal/defective pair
            to_latent = None if self.space is None else self.space.encode
            data, objective = x, atp_loss(self.schedule, anomaly_spec(self.cfg), to_latent)
        else:
            data, objective = (x if self.space is None else latents), eps_loss(self.schedule)
        result, ema = train_model(self.unet, data, objective, self.cfg.train, ckpts, resume, meta, progress,
                                  desc="train" if self.space is None else "unet")
        if ema is not None:
            self.unet.load_state_dict(ema)
        self.unet.eval()
        self.train_result = result
        return result

    # ---- ADS threshold ----------------------------------------------------------------------------
    @property
    def tau(self) -> float:
        """The ADS threshold: glad.tau if set, else measured on nominal images by calibrate(); inf with ADS off."""
        g = self.cfg.glad
        if not g.ads:
            return math.inf
        if g.tau is not None:
            return g.tau
        if self._tau is not None:
            return self._tau
        if self.calibration is not None and "tau" in self.calibration.constants:
            return self.calibration.constants["tau"]
        raise RuntimeError("GLAD's ADS threshold tau is measured on nominal images: det.calibrate(nominal images) "
                           "first (ddad train does it), or set glad.tau")

    def calibrate(self, images: torch.Tensor) -> Calibration:
        """tau first (from these nominal images' step scores, ADS switching only at t_min), then the shared
        calibration with that tau."""
        g = self.cfg.glad
        self._tau = None
        if g.ads and g.tau is None:
            steps = torch.cat([self._reconstruct(y, tau=math.inf).scores for y in self._batches(images)])
            largest = torch.nan_to_num(steps, nan=-math.inf).amax(dim=1).numpy()
            self._tau = float(np.quantile(largest[np.isfinite(largest)], g.tau_quantile))
            log.info("GLAD tau = %.4f (quantile %.2f of %d nominal images' largest step score)", self._tau,
                     g.tau_quantile, len(largest))
        return super().calibrate(images)

    # ---- inference --------------------------------------------------------------------------------
    def _compare(self, x0_traj: torch.Tensor, x0_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ADS step score (mean of the top-k patch distances, input-derived patches against the trajectory's) and
        the distance map at image size, for SAFF."""
        g, j = self.cfg.glad, self.cfg.glad.ads_layer
        f_in = self.extractor(self._to_images(x0_input), (j,))[j]
        f_tr = self.extractor(self._to_images(x0_traj), (j,))[j]
        d = patch_nn_distance(f_in, f_tr)
        # the map at the diffusion tensor's size (image or latent grid): SAFF fuses there
        up = F.interpolate(d, size=tuple(x0_input.shape[-2:]), mode="bilinear", align_corners=False)
        return topk_mean(d, g.ads_topk), up

    @torch.inference_mode()
    def _reconstruct(self, images: torch.Tensor, tau: float | None = None) -> AdaptiveReconstruction:
        s, g = self.cfg.sampling, self.cfg.glad
        x = to_model(images.to(self.device))
        z = self._to_space(x)
        tau = self.tau if tau is None else tau
        start = FixedStart(s.start_level).levels(x)

        def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x_t, t).sample

        mask = (lambda d: saff_mask(d, tau, g.saff_floor)) if g.saff else None
        # noise seeded by the image (not its latent), clamped to [-1, 1] in pixel space only
        return adaptive_reconstruct(eps, self.schedule, z, start, s.steps, self._compare, tau,
                                    g.t_min if g.ads else -1, mask, image_seeds(x, s.seed), s.eta,
                                    clip=1.0 if self.space is None else None)

    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        """GLAD has no conditioning: `target` and `w` are not used (see adapt_pair)."""
        rec = self._reconstruct(images)
        with torch.inference_mode():
            return self._to_images(rec.x0)

    def adapt_pair(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """GLAD's feature fine-tuning (supplement S1) compares a nominal image with its own reconstruction."""
        return self.reconstruct(y).clone()

    def terms(self, y: torch.Tensor) -> Terms:
        g = self.cfg.glad
        rec = self._reconstruct(y)
        with torch.inference_mode():
            x0 = self._to_images(rec.x0)
            # latent space: the reference is the autoencoder's own copy of the input, so its blur cancels (as D3AD)
            ref = y if self.space is None else self._to_images(self._to_space(to_model(y.to(self.device))))
            layers = self.cfg.features.layers
            d = patch_nn_map(self.extractor(ref, layers), self.extractor(x0, layers), tuple(y.shape[-2:]), g.reverse)
            if g.foreground == "object":
                fg = [object_foreground(img.permute(1, 2, 0).cpu().numpy().astype(np.float64)) for img in y]
                d = d * torch.from_numpy(np.stack(fg)).to(d)[:, None]
        return Terms(x0, {"patch": d}, {"adaptive_step": rec.switch_t.float(), "switched_by_tau": rec.by_tau.float()})

    def fit_constants(self, maps: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"tau": self.tau} if self.cfg.glad.ads else {}

    def combine(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None) -> torch.Tensor:
        return maps["patch"]
