"""RAN, removing anomalies as noises (papers/removing-anomalies-as-noises-kl.md; SPEC section 4).

    model:    a UNet with learned variance (improved DDPM: 2C outputs, eps and v) and a feature head on its last
              decoder features that regresses the frozen backbone's layers 1-3 of the CLEAN image from x_t
    training: L_simple + 0.001 L_vlb (stop-gradient on the mean for L_vlb) + MSE of the head; rotation +-5 degrees
    score:    at respaced steps k in {5, 50, 100} of 250 (training timesteps 20, 201, 401), per image:
                s_k = mean_c KL(q(x_{k-1} | x_k, x0) || p_theta(x_{k-1} | x_k)), z-scored over the image
                f_k = mean_c (head(x_k) - phi(x0))^2, upsampled
              A = alpha c_kl mean_k s_k + (1 - alpha) c_f mean_k f_k, Gaussian smoothing, mean of the top-k pixels
    picture:  gradient denoising (Algorithm 1) on a PaDiM Gaussian fitted on the nominal images

Deliberate differences from the official code (SPEC 4): the rotation augmentation takes effect (it never did
there); gradient denoising is implemented and used for the reconstruction (the official evaluation never calls it);
the two map terms are scaled by constants c measured once on held-out nominal images, so an image's score never
depends on other images; every image's noise comes from its own seed.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import ModelFileError
from ..config import DDADConfig, RANConfig, to_dict
from ..diffusion import build_unet
from ..diffusion.schedule import NoiseSchedule, noised
from ..diffusion.train import LossFn, TrainResult, train_model
from ..diffusion.variance import Process, discretized_gaussian_nll, learned_logvar, normal_kl, posterior, respace
from ..features.extractor import FeatureExtractor
from ..sampling import gradient_denoise, image_seeds, matching_timestep, per_image_noise, predict_x0
from .base import Calibration, Detector, Terms, _extractor, to_image, to_model

__all__ = ["RAN", "RANNet", "rotate", "ran_loss", "PaDiM"]

log = logging.getLogger(__name__)
FEATURE_LAYERS = (1, 2, 3)  # the backbone's multi-stage features the head regresses (paper: EfficientNet stages)


class RANNet(nn.Module):
    """UNet (eps and variance channels) + a feature head on the output of its last up block."""

    def __init__(self, unet: nn.Module, feature_channels: int, grid: int | tuple[int, int], hidden: int):
        super().__init__()
        self.unet = unet
        self.grid = grid
        c0 = unet.config.block_out_channels[0]
        self.head = nn.Sequential(nn.Conv2d(c0, hidden, 3, padding=1), nn.GroupNorm(min(8, hidden), hidden),
                                  nn.SiLU(), nn.Conv2d(hidden, feature_channels, 1))
        # per-channel statistics of the target features on the training images (the head regresses standardised
        # features, so no backbone stage dominates the MSE); set in fit(), saved with the weights
        self.register_buffer("feature_mean", torch.zeros(feature_channels))
        self.register_buffer("feature_std", torch.ones(feature_channels))
        self._decoder: torch.Tensor | None = None
        unet.up_blocks[-1].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._decoder = output

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(UNet output (B, 2C, H, W): eps then v, head output (B, F, *grid))."""
        out = self.unet(x_t, t).sample
        dec, self._decoder = self._decoder, None
        return out, self.head(F.adaptive_avg_pool2d(dec, self.grid))


def feature_grid(cfg: DDADConfig) -> tuple[int, int]:
    """The head's (rows, columns): ran.feature_grid columns, rows in the images' aspect (square images: G x G)."""
    h, w = cfg.data.shape
    g = cfg.ran.feature_grid
    return max(1, round(g * h / w)), g


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of x (B, C, H, W) by its own angle (B,) in degrees about the centre; reflected borders."""
    a = degrees.to(x) * math.pi / 180
    cos, sin = a.cos(), a.sin()
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                         torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def ran_loss(schedule: NoiseSchedule, target: callable, cfg: RANConfig) -> LossFn:
    """Hybrid loss (improved DDPM): ||eps - eps_theta||^2 + lambda L_vlb, the mean frozen in L_vlb (so L_vlb trains
    only the variance), + the head's MSE to the standardised features of the clean (rotated) image."""
    process = respace(schedule, schedule.num_train_timesteps)

    def loss(net: nn.Module, x0: torch.Tensor, g: torch.Generator, gd: torch.Generator,
             part: slice = slice(None)) -> torch.Tensor:
        b, c = x0.shape[:2]
        angles = (torch.rand(b, generator=g) * 2 - 1) * cfg.rotation  # all draws for the global batch, then cut
        t = torch.randint(schedule.num_train_timesteps, (b,), generator=g).to(x0.device)[part]
        noise = torch.randn(x0.shape, generator=gd, device=x0.device)[part]
        x0 = x0[part]
        if cfg.rotation > 0:
            x0 = rotate(x0, angles[part])
        x_t = schedule.q_sample(x0, t, noise)
        out, feats = net(x_t, t)
        eps, v = out[:, :c].float(), out[:, c:].float()
        l_simple = F.mse_loss(eps, noise)
        x0_hat = predict_x0(x_t, eps.detach(), schedule.alpha_bar(t))
        mean_q, logvar_q = posterior(process, t, x0, x_t)
        mean_p, _ = posterior(process, t, x0_hat, x_t)
        logvar_p = learned_logvar(process, t, v)
        kl = normal_kl(mean_q, logvar_q, mean_p, logvar_p).mean(dim=(1, 2, 3)) / math.log(2)
        nll = discretized_gaussian_nll(x0, mean_p, 0.5 * logvar_p).mean(dim=(1, 2, 3)) / math.log(2)
        l_vlb = torch.where(t == 0, nll, kl).mean()
        with torch.no_grad():
            want = target(to_image(x0))
        return l_simple + cfg.vlb_weight * l_vlb + cfg.feature_weight * F.mse_loss(feats.float(), want)

    return loss


class PaDiM:
    """Per-position Gaussian of backbone features (Defard et al. 2021) on a grid: mean and precision matrix of a
    seeded random channel subset, regularised by 0.01 I as PaDiM."""

    def __init__(self, channels: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor):
        self.channels, self.mean, self.precision = channels, mean, precision  # (d,), (P, d), (P, d, d)

    @classmethod
    def fit(cls, feats: torch.Tensor, d: int, seed: int = 0) -> "PaDiM":
        """feats (N, F, G, G) of nominal images."""
        n, f = feats.shape[:2]
        idx = torch.randperm(f, generator=torch.Generator().manual_seed(seed))[: min(d, f)].sort().values
        x = feats[:, idx].flatten(2).permute(2, 0, 1).double()  # (P, N, d)
        mean = x.mean(dim=1)
        centred = x - mean[:, None]
        cov = centred.transpose(1, 2) @ centred / max(n - 1, 1) + 0.01 * torch.eye(len(idx), dtype=torch.float64)
        return cls(idx, mean.float(), torch.linalg.inv(cov).float())

    def distance(self, feats: torch.Tensor) -> torch.Tensor:
        """(B,) sum over positions of the squared Mahalanobis distance of feats (B, F, G, G)."""
        x = feats[:, self.channels.to(feats.device)].flatten(2).transpose(1, 2) - self.mean.to(feats)  # (B, P, d)
        return torch.einsum("bpi,pij,bpj->b", x, self.precision.to(feats), x)


class RAN(Detector):
    name = "ran"
    summary = ("RAN: learned-variance UNet + feature head, per-pixel KL scores at three noise scales, "
               "feature-reconstruction map, gradient-denoising reconstruction")
    uses_sampling_steps = False  # scores at fixed respaced timesteps; no denoising loop
    inference_options = ("respacing", "timesteps", "alpha", "gradient_denoising", "gd_steps", "gd_lr",
                         "gd_denoise_every", "gd_score_weight")
    combine_options = ("alpha",)  # alpha weighs the two terms in `combine` alone

    def __init__(self, cfg: DDADConfig, net: RANNet, extractor: FeatureExtractor, calibration: Calibration | None = None):
        super().__init__(cfg, extractor, calibration)
        self.net = net.eval()
        self.padim: PaDiM | None = None

    @classmethod
    def build(cls, cfg: DDADConfig, meta: dict | None = None) -> "RAN":
        c = cfg.ran
        if cfg.sampling.official_offbyone:
            raise ValueError("sampling.official_offbyone mimics the official DDAD code; RAN does not use it")
        if not 0 <= c.alpha <= 1:
            raise ValueError(f"ran.alpha must be in [0, 1], got {c.alpha}")
        if not all(1 <= k < c.respacing for k in c.timesteps):
            raise ValueError(f"ran.timesteps must be steps 1..{c.respacing - 1} of the respacing, got {c.timesteps}")
        ext = _extractor(cfg)
        unet = build_unet(cfg.model.preset, cfg.data.shape, 3, out_channels=6)
        return cls(cfg, RANNet(unet, sum(ext.channels[j - 1] for j in FEATURE_LAYERS), feature_grid(cfg),
                               c.head_channels), ext)

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.net}

    def state(self) -> dict[str, torch.Tensor]:
        if self.padim is None:
            return {}
        return {"padim_channels": self.padim.channels, "padim_mean": self.padim.mean,
                "padim_precision": self.padim.precision}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "padim_mean" in tensors:
            self.padim = PaDiM(tensors["padim_channels"], tensors["padim_mean"], tensors["padim_precision"])
        elif self.cfg.ran.gradient_denoising:
            raise ModelFileError("this RAN model has no PaDiM Gaussian (state.safetensors) for gradient denoising; "
                                 "re-train it or set ran.gradient_denoising=false")

    def adapt(self, images: torch.Tensor, progress: bool = False):
        if self.cfg.adapt.epochs > 0:
            raise ValueError("RAN's feature head regresses the backbone features it was trained on; adapting the "
                             "backbone would change them. Keep adapt.epochs: 0 for RAN.")
        return super().adapt(images, progress)

    # ---- features --------------------------------------------------------------------------------
    def grid_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, F, *grid) backbone layers 1-3 of images in [0, 1], each resized to the head's grid, concatenated."""
        g = feature_grid(self.cfg)
        f = self.extractor(images, FEATURE_LAYERS)
        return torch.cat([F.interpolate(f[j], size=g, mode="bilinear", align_corners=False, antialias=True)
                          for j in FEATURE_LAYERS], dim=1)

    def _target(self, images: torch.Tensor) -> torch.Tensor:
        n = self.net
        return (self.grid_features(images) - n.feature_mean.view(1, -1, 1, 1)) / n.feature_std.view(1, -1, 1, 1)

    # ---- training --------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        c = self.cfg.ran
        with torch.inference_mode():
            feats = torch.cat([self.grid_features(b) for b in self._batches(images)]).cpu()
        self.net.feature_mean.copy_(feats.mean(dim=(0, 2, 3)))
        self.net.feature_std.copy_(feats.std(dim=(0, 2, 3)).clamp_min(1e-6))
        meta = {"method": self.name, "config": to_dict(self.cfg), "schedule": to_dict(self.cfg.schedule)}
        result, ema = train_model(self.net, to_model(images), ran_loss(self.schedule, self._target, c),
                                  self.cfg.train, Path(run_dir) / "checkpoints", resume, meta, progress)
        if ema is not None:
            self.net.load_state_dict(ema)
        self.net.eval()
        self.padim = PaDiM.fit(feats, c.padim_channels, self.cfg.train.seed)
        self.train_result = result
        return result

    # ---- inference -------------------------------------------------------------------------------
    def _process(self) -> Process:
        return respace(self.schedule, self.cfg.ran.respacing)

    @torch.inference_mode()
    def score_maps(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(KL map, feature map, one-step x0 from the largest timestep), maps (B, 1, H, W), for images y in [0, 1]."""
        c, p = self.cfg.ran, self._process()
        y = y.to(self.device)
        x = to_model(y)
        noise = per_image_noise(tuple(x.shape[1:]), image_seeds(x, self.cfg.sampling.seed), len(c.timesteps),
                                x.device, x.dtype)
        target = self._target(y)
        kl_maps, feature_maps, x0_hat = [], [], x
        for i, k in enumerate(sorted(c.timesteps)):
            kk = torch.full((x.shape[0],), k, dtype=torch.int64)
            ab = p.alpha_bar[kk].to(x)
            x_t = noised(x, ab.view(-1, 1, 1, 1), noise[i])
            out, feats = self.net(x_t, p.timesteps[kk].to(x.device))
            eps, v = out[:, :3], out[:, 3:]
            x0_hat = predict_x0(x_t, eps, ab).clamp(-1, 1)
            mean_q, logvar_q = posterior(p, kk, x, x_t)
            mean_p, _ = posterior(p, kk, x0_hat, x_t)
            kl = normal_kl(mean_q, logvar_q, mean_p, learned_logvar(p, kk, v)).mean(dim=1, keepdim=True)
            mu, sd = kl.mean(dim=(1, 2, 3), keepdim=True), kl.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            kl_maps.append((kl - mu) / sd)  # z-scored over the image (the KL's scale changes a lot with t)
            fe = (feats - target).pow(2).mean(dim=1, keepdim=True)
            feature_maps.append(F.interpolate(fe, size=tuple(y.shape[-2:]), mode="bilinear", align_corners=False))
        return torch.stack(kl_maps).mean(0), torch.stack(feature_maps).mean(0), to_image(x0_hat)

    def gradient_reconstruction(self, y: torch.Tensor) -> torch.Tensor:
        """Algorithm 1 from the image itself: the defect-free picture, images in [0, 1]."""
        c = self.cfg.ran
        if self.padim is None:
            raise RuntimeError("gradient denoising needs the PaDiM Gaussian fitted in fit(); train the model first")
        t_star = matching_timestep(self.schedule, c.gd_lr, c.gd_denoise_every)
        ab = self.schedule.alpha_bar(torch.tensor([t_star]))

        def energy(x: torch.Tensor) -> torch.Tensor:
            return self.padim.distance(self.grid_features(to_image(x)))

        def denoise(x: torch.Tensor) -> torch.Tensor:
            t = torch.full((x.shape[0],), t_star, device=x.device)
            eps = self.net(x, t)[0][:, :3]
            return predict_x0(x, eps, ab.expand(x.shape[0]).to(x.device)).clamp(-1, 1)

        with torch.inference_mode(False):  # callers may run under inference_mode; the gradient needs autograd
            x = to_model(y.to(self.device)).clone()
            out = gradient_denoise(x, energy, denoise, c.gd_steps, c.gd_lr, c.gd_denoise_every)
        return to_image(out)

    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        if self.cfg.ran.gradient_denoising:
            return self.gradient_reconstruction(images)
        return self.score_maps(images)[2]

    def terms(self, y: torch.Tensor) -> Terms:
        kl, feat, x0 = self.score_maps(y)
        if self.cfg.ran.gradient_denoising:
            x0 = self.gradient_reconstruction(y)
        return Terms(x0, self._maps(kl, feat, x0, y))

    def maps_of(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # the gradient-denoised picture (gd_steps backbone passes with gradients) only where the map reads it
        kl, feat, x0 = self.score_maps(y)
        if self.cfg.ran.gd_score_weight > 0 and self.cfg.ran.gradient_denoising:
            x0 = self.gradient_reconstruction(y)
        return self._maps(kl, feat, x0, y)

    def _maps(self, kl: torch.Tensor, feat: torch.Tensor, x0: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = {"kl": kl, "feature": feat}
        if self.cfg.ran.gd_score_weight > 0:
            if not self.cfg.ran.gradient_denoising:
                raise ValueError("ran.gd_score_weight > 0 needs ran.gradient_denoising: true")
            maps["gradient"] = self.feature_map(x0, y.to(self.device))
        return maps

    def fit_constants(self, maps: dict[str, torch.Tensor]) -> dict[str, float]:
        """c = 1 / max over the nominal images, per term (scores never depend on other test images)."""
        return {k: float(1.0 / v.max().clamp_min(1e-8)) for k, v in maps.items()}

    def combine(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None) -> torch.Tensor:
        if constants is None:
            raise RuntimeError("RAN scales its map terms by constants from nominal images: det.calibrate(nominal "
                               "images) first (ddad train does it)")
        c = self.cfg.ran
        missing = [k for k in maps if k not in constants]
        if missing:
            raise RuntimeError(f"no calibration constant for the map term(s) {missing}: re-calibrate (ddad adapt, or "
                               "ddad benchmark --reuse after changing ran options)")
        out = c.alpha * constants["kl"] * maps["kl"] + (1 - c.alpha) * constants["feature"] * maps["feature"]
        if "gradient" in maps:
            out = out + c.gd_score_weight * constants["gradient"] * maps["gradient"]
        return out
