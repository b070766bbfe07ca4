"""DDAD (Mousakhan et al.): a pixel-space eps-UNet, conditioned DDIM from T' (Algorithm 1), and the map
D = D_f + v * s * D_p (Eq. 8-9) with s calibrated on nominal images instead of the test batch.

Not in the paper, off by default: ddad.memory = m adds m * s_m * D_m, D_m the distance of each input patch to a
nominal memory (every pooled patch of the training images, ddad.scoring.memory_distance), s_m = max D_f / max D_m
on held-out nominal images. On a stochastic texture the reconstruction is a new sample of the texture, not the input
minus its defect, and D_f / D_p are high everywhere; the memory still knows what nominal patches look like
(docs/methods.md). `--auto` lets the proxy set decide between m = 0 and m > 0."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..config import DDADConfig, DDADMethodConfig, to_dict
from ..diffusion import build_unet
from ..diffusion.train import TrainResult, train_diffusion
from ..sampling import FixedStart, reconstruct
from ..checkpoint import ModelFileError
from ..scoring import combine, feature_distance, memory_bank, memory_coreset, memory_distance, pixel_distance
from .base import Detector, Terms, _extractor, to_image, to_model

__all__ = ["DDAD"]


class DDAD(Detector):
    name = "ddad"
    summary = "DDAD: pixel-space UNet, conditioned DDIM from a fixed T', pixel L1 + feature cosine map, domain adaptation"
    inference_options = ("memory", "memory_coreset", "memory_layers")  # the whole `ddad` section

    def __init__(self, cfg: DDADConfig, unet: nn.Module, extractor, calibration=None):
        super().__init__(cfg, extractor, calibration)
        self.unet = unet.eval()
        self.memory: dict[int, torch.Tensor] | None = None  # layer -> (C, N*h*w) nominal patches (ddad.memory)

    @classmethod
    def build(cls, cfg: DDADConfig, meta: dict | None = None) -> "DDAD":
        return cls(cfg, build_unet(cfg.model.preset, cfg.data.shape), _extractor(cfg))

    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def fit(self, images: torch.Tensor, run_dir: str | Path, resume: bool = False, progress: bool = False) -> TrainResult:
        meta = {"method": self.name, "preset": self.cfg.model.preset, "image_size": self.cfg.data.image_size,
                "config": to_dict(self.cfg), "schedule": to_dict(self.cfg.schedule),
                "normalisation": "images in [0,1] -> model space [-1,1]"}
        result, ema = train_diffusion(self.unet, self.schedule, to_model(images), self.cfg.train,
                                      Path(run_dir) / "checkpoints", resume, meta, progress)
        if ema is not None:
            self.unet.load_state_dict(ema)
        self.unet.eval()
        self.train_result = result
        return result

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor, target: torch.Tensor | None = None, w: float | None = None) -> torch.Tensor:
        """Algorithm 1, y = x by default."""
        s = self.cfg.sampling
        x = to_model(images.to(self.device))
        y = x if target is None else to_model(target.to(self.device))
        start = FixedStart(s.start_level).levels(x)

        def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x_t, t).sample

        out = reconstruct(eps, self.schedule, x, y, start, s.steps, s.w if w is None else w, s.eta, s.seed,
                          s.official_offbyone)
        return to_image(out.x0)

    # ---- nominal memory (ddad.memory) -----------------------------------------------------------------
    def fit_references(self, images: torch.Tensor) -> None:
        """The nominal memory from the training images with the current extractor, where ddad.memory > 0 (none
        otherwise: a model without the term carries no bank)."""
        self.memory = None
        if not self.cfg.ddad.memory:
            return
        layers = self.memory_layers
        parts: dict[int, list[torch.Tensor]] = {j: [] for j in layers}
        bs = self.cfg.sampling.batch_size
        with torch.inference_mode():
            for s in range(0, images.shape[0], bs):
                for j, f in self.extractor(images[s : s + bs].to(self.device), layers).items():
                    parts[j].append(f.cpu())
        self.memory = memory_coreset(memory_bank({j: torch.cat(p) for j, p in parts.items()}),
                                     self.cfg.ddad.memory_coreset)

    @staticmethod
    def memory_layers_of(cfg: DDADConfig) -> tuple[int, ...]:
        """The feature layers of D_m: ddad.memory_layers, or those of D_f."""
        return tuple(cfg.ddad.memory_layers or cfg.features.layers)

    @property
    def memory_layers(self) -> tuple[int, ...]:
        return self.memory_layers_of(self.cfg)

    @classmethod
    def terms_signature(cls, cfg: DDADConfig) -> str:
        # the memory map is a term, measured where ddad.memory is on (from the coreset and layers the section keeps);
        # its weight m (like v and sigma) only recombines
        d = cfg.ddad
        return super().terms_signature(replace(cfg, ddad=DDADMethodConfig())) + (
            f" memory coreset={d.memory_coreset} layers={list(cls.memory_layers_of(cfg))}" if d.memory else "")

    @classmethod
    def terms_cover(cls, cfg: DDADConfig, other: DDADConfig) -> bool:
        # the map without the memory term (m = 0) is recombined from the terms of one with it: the same
        # reconstruction, D_f and D_p, and a memory term it weighs by 0
        if not other.ddad.memory and cfg.ddad.memory:
            other = replace(other, ddad=cfg.ddad)  # for the comparison only: the same memory, weighed or not
        return super().terms_cover(cfg, other)

    def state(self) -> dict[str, torch.Tensor]:
        # float16 halves the file (bottle at 256-px features: ~26 MB); ~3 significant digits are plenty for a distance
        return {f"memory_{j}": b.half() for j, b in (self.memory or {}).items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        mem = {int(k.split("_", 1)[1]): v.float() for k, v in tensors.items() if k.startswith("memory_")}
        super().load_state({k: v for k, v in tensors.items() if not k.startswith("memory_")})
        self.memory = mem or None

    def memory_map(self, f_y: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """D_m from the input's features f_y (layer -> (B, C, h, w), at least the memory's layers)."""
        layers = self.memory_layers
        if self.memory is None or sorted(self.memory) != sorted(layers):
            have = "none" if self.memory is None else f"layers {sorted(self.memory)}"
            raise ModelFileError(f"ddad.memory={self.cfg.ddad.memory:g} needs the nominal memory of feature "
                                 f"layers {list(layers)}, this model has {have}: run `ddad adapt --model MODEL_DIR` "
                                 "(or det.fit_references(training images)) to measure it")
        return memory_distance({j: f_y[j] for j in layers}, self.memory, size)

    def terms(self, y: torch.Tensor) -> Terms:
        x0 = self.reconstruct(y)
        layers, size = self.cfg.features.layers, tuple(y.shape[-2:])
        mem = self.memory_layers if self.cfg.ddad.memory else ()
        with torch.inference_mode():
            f_y = self.extractor(y, tuple(sorted({*layers, *mem})))  # once, for D_f and (where on) D_m
            maps = {"pixel": pixel_distance(x0, y),
                    "feature": feature_distance(self.extractor(x0, layers), {j: f_y[j] for j in layers}, size)}
            if self.cfg.ddad.memory:
                maps["memory"] = self.memory_map(f_y, size)
            return Terms(x0, maps)

    def fit_constants(self, maps: dict[str, torch.Tensor]) -> dict[str, float]:
        c = {"scale": float(maps["feature"].max() / maps["pixel"].max().clamp_min(1e-8))}
        if "memory" in maps:
            c["memory_scale"] = float(maps["feature"].max() / maps["memory"].max().clamp_min(1e-8))
        return c

    def combine(self, maps: dict[str, torch.Tensor], constants: dict[str, float] | None) -> torch.Tensor:
        sc = self.cfg.scoring
        if sc.balance == "per_image":
            scale = None
        elif sc.balance != "calibrated":
            raise ValueError(f"unknown scoring.balance {sc.balance!r}; choose calibrated or per_image")
        elif constants is None:
            raise RuntimeError("scoring.balance=calibrated needs det.calibrate(nominal images) first "
                               "(or set scoring.balance=per_image)")
        else:
            scale = constants["scale"]
        d = combine(maps["pixel"], maps["feature"], sc.v, scale)
        m = self.cfg.ddad.memory
        if m:
            d_m = maps["memory"]
            if scale is None:  # per image, as combine's own balance
                peak = lambda t: t.amax(dim=(1, 2, 3), keepdim=True)  # noqa: E731
                s_m = peak(maps["feature"]) / peak(d_m).clamp_min(1e-8)
            elif "memory_scale" not in constants:
                raise RuntimeError("ddad.memory > 0 but the calibration has no memory_scale: re-calibrate "
                                   "(det.calibrate(nominal images), or `ddad adapt --model MODEL_DIR`)")
            else:
                s_m = constants["memory_scale"]
            d = d + m * s_m * d_m
        return d
