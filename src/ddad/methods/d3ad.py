"""D3AD, dynamic noise in latent space (papers/dynamic-noise-latent-diffusion-supplement.md; SPEC section 2).

    z   = E(x) * s                                   latent of the input (s measured on the training latents)
    T'  = clip(bin(kNN distance of pooled features), 2, 10) / 10 * T'_max      per image (KNNBinStart)
    z_T' = sqrt(ab_T') z                             noiseless scaling (omega = 0); the noised start is an option
    z0  = conditioned DDIM from T' in n steps (DDAD's conditioning, target z, weight w)
    map = lambda * c_l * up(mean_c |z0 - z|) + (1 - lambda) * c_f * D_f(D(z0), reference),  Gaussian, max

Deliberate differences from the official code (SPEC): every training image's kNN distance leaves the image itself
out (the official code counted each as its own nearest neighbour); the two map terms are scaled by constants
c_l, c_f measured once on held-out nominal images (the official code min-max normalised over the whole test set,
so a score depended on the other test images). Offline, the autoencoder is trained on the nominal images instead
of the paper's pretrained Stable Diffusion VAE (a local diffusers VAE folder can be given).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DDADConfig, to_dict
from ..diffusion.autoencoder import LatentSpace, build_latent_pair
from ..diffusion.train import TrainResult, eps_loss, train_model
from ..features.extractor import build_extractor
from ..sampling import FixedStart, KNNBinStart, image_seeds, reconstruct
from .base import Detector, Terms, _extractor, to_image, to_model

__all__ = ["D3AD"]

log = logging.getLogger(__name__)


class D3AD(Detector):
    name = "d3ad"
    summary = ("D3AD: latent diffusion, per-image start level from kNN-distance bins, noiseless scaling, "
               "0.85 latent L1 + 0.15 feature cosine map")
    inference_options = ("latent_weight",)
    combine_options = ("latent_weight",)  # lambda weighs the two terms in `combine` alone

    def __init__(self, cfg: DDADConfig, vae: nn.Module, unet: nn.Module, extractor, calibration=None,
                 start_input_size: int | None = None):
        super().__init__(cfg, extractor, calibration)
        self.space = LatentSpace(vae)
        self.unet = unet.eval()
        self.policy: KNNBinStart | None = None  # fitted in fit()
        c = cfg.d3ad
        # the kNN bank's extractor keeps the input size it was fitted at, even if features.input_size changes later
        self.start_extractor = build_extractor(c.start_backbone, c.start_weights, start_input_size)

    @classmethod
    def build(cls, cfg: DDADConfig, meta: dict | None = None) -> "D3AD":
        c = cfg.d3ad
        if cfg.sampling.official_offbyone:
            raise ValueError("sampling.official_offbyone mimics the official DDAD code; D3AD does not use it")
        if c.feature_reference not in ("decoded", "input"):
            raise ValueError(f"d3ad.feature_reference must be decoded or input, got {c.feature_reference!r}")
        vae, unet = build_latent_pair(c.autoencoder, cfg.model.preset, cfg.data.shape, meta)
        # a saved model's kNN bank keeps the input size it was fitted at, whatever the config says now
        start_size = (meta or {}).get("start_input_size", c.start_input_size)
        return cls(cfg, vae, unet, _extractor(cfg), start_input_size=start_size)

    def networks(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.space.vae, "unet": self.unet}

    def to(self, device):
        super().to(device)
        self.start_extractor.to(device)
        return self

    def describe(self) -> dict:
        return self.space.describe() | {"start_input_size": self.start_extractor.input_size}

    def state(self) -> dict[str, torch.Tensor]:
        out = self.space.state()
        if self.policy is not None:
            out |= {"knn_bank": self.policy.bank, "knn_edges": self.policy.edges}
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.space.load_state(tensors, "D3AD")
        if "knn_bank" in tensors:
            self.policy = self._policy(tensors["knn_bank"], tensors["knn_edges"])

    def _policy(self, bank: torch.Tensor, edges: torch.Tensor | None = None) -> KNNBinStart:
        c = self.cfg.d3ad
        if edges is None:
            return KNNBinStart.fit(bank, self.cfg.sampling.start_level, c.k, c.bins, c.min_bin, c.round_to)
        return KNNBinStart(bank, edges, self.cfg.sampling.start_level, c.k, c.min_bin, c.round_to)

    # ---- training: autoencoder, latent scale, latent UNet, kNN bank -------------------------------
    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        c, ckpts = self.cfg.d3ad, Path(run_dir) / "checkpoints"
        meta = {"method": self.name, "config": to_dict(self.cfg)}
        x = to_model(images)
        # 1. autoencoder (skipped for a pretrained one); 2. latents and their scale
        latents = self.space.fit(x, c.autoencoder, ckpts / "autoencoder", resume, meta, progress,
                                 self.cfg.sampling.batch_size)
        log.info("latents %s, scale %.4f", tuple(latents.shape[1:]), self.space.scale)
        # 3. eps-UNet on the scaled latents (same trainer, checkpoints, resume, EMA)
        result, ema = train_model(self.unet, latents, eps_loss(self.schedule), self.cfg.train,
                                  ckpts / "unet", resume, meta | {"stage": "unet"}, progress, desc="unet")
        if ema is not None:
            self.unet.load_state_dict(ema)
        self.unet.eval()
        # 4. kNN bank of the training images for the dynamic start level
        self.policy = self._policy(torch.cat([self.start_vectors(b) for b in self._batches(images)]).cpu())
        self.train_result = result
        return result

    # ---- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def start_vectors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) features of block `start_layer`, average-pooled to start_pool x start_pool, flattened."""
        c = self.cfg.d3ad
        f = self.start_extractor(images.to(self.device), (c.start_layer,))[c.start_layer]
        return F.adaptive_avg_pool2d(f, c.start_pool).flatten(1)

    def levels(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) start level T' per image in [0, 1] (the fixed T'_max when d3ad.dynamic is off)."""
        if not self.cfg.d3ad.dynamic:
            return FixedStart(self.cfg.sampling.start_level).levels(images)
        if self.policy is None:
            raise RuntimeError("the D3AD start policy is fitted in fit(); train the model first")
        # T'_max is the config's now (an inference setting), not the one the bins were fitted with
        policy = replace(self.policy, t_max=self.cfg.sampling.start_level)
        return policy.levels(self.start_vectors(images)).to(images.device)

    @torch.inference_mode()
    def _latents(self, images: torch.Tensor, target: torch.Tensor | None, w: float | None):
        """(z, z0, start): the input's latent, its reconstruction and the per-image start levels."""
        s = self.cfg.sampling
        x = to_model(images.to(self.device))
        z = self.space.encode(x)
        zy = z if target is None else self.space.encode(to_model(target.to(self.device)))
        start = self.levels(images.to(self.device))

        def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(z_t, t).sample

        out = reconstruct(eps, self.schedule, z, zy, start, s.steps, s.w if w is None else w, s.eta, s.seed,
                          noise_free_start=self.cfg.d3ad.noiseless, seeds=image_seeds(x, s.seed), clip=None)
        return z, out.x0, start

    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        z, z0, _ = self._latents(images, target, w)
        with torch.inference_mode():
            return to_image(self.space.decode(z0))

    def terms(self, y: torch.Tensor) -> Terms:
        z, z0, _ = self._latents(y, None, None)
        with torch.inference_mode():
            x0 = to_image(self.space.decode(z0))
            ref = to_image(self.space.decode(z)) if self.cfg.d3ad.feature_reference == "decoded" else y
            d_l = F.interpolate((z0 - z).abs().mean(dim=1, keepdim=True), size=tuple(y.shape[-2:]),
                                mode="bilinear", align_corners=False)
            return Terms(x0, {"latent": d_l, "feature": self.feature_map(x0, ref)})

    def fit_constants(self, maps: dict[str, torch.Tensor]) -> dict[str, float]:
        """c = 1 / max over the nominal images, per term (the official code: min-max over the test set)."""
        return {k: float(1.0 / maps[k].max().clamp_min(1e-8)) for k in ("latent", "feature")}

    def combine(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None) -> torch.Tensor:
        if constants is None:
            raise RuntimeError("D3AD scales its two map terms by constants from nominal images: "
                               "det.calibrate(nominal images) first (ddad train does it)")
        lam = self.cfg.d3ad.latent_weight
        return lam * constants["latent"] * maps["latent"] + (1 - lam) * constants["feature"] * maps["feature"]
