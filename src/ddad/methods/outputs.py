"""What a detector produces and stores: the terms of a batch, its predictions, the calibration kept with a model;
and the conversion between images in [0, 1] and the diffusion models' space [-1, 1]."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data import ImageSet

__all__ = ["Calibration", "Prediction", "Terms", "to_model", "to_image"]


@dataclass(frozen=True)
class Calibration:
    """Constants measured once on held-out nominal images and stored with the model."""

    constants: dict[str, float]  # the method's map constants (DDAD: scale = max D_f / max D_p, Eq. 9)
    threshold: float  # image-score threshold at the configured false-reject rate
    nominal_scores: tuple[float, ...]
    pixel_threshold: float  # map value above which a pixel is marked defective (= threshold: PASS -> empty mask)

    def to_json(self) -> dict:
        return {"constants": dict(self.constants), "threshold": self.threshold,
                "nominal_scores": list(self.nominal_scores), "pixel_threshold": self.pixel_threshold}

    @classmethod
    def from_json(cls, c: dict) -> "Calibration":
        constants = c["constants"] if "constants" in c else {"scale": c["scale"]}  # models before methods
        return cls(dict(constants), c["threshold"], tuple(c["nominal_scores"]), c["pixel_threshold"])


@dataclass(frozen=True)
class Terms:
    x0: torch.Tensor  # (B, 3, H, W) reconstructions in [0, 1]
    maps: dict[str, torch.Tensor]  # name -> (B, 1, H, W) unsmoothed distance terms, e.g. pixel, feature
    # name -> (B,) per-image values the method decided on its own (GLAD: its adaptive step), kept with the scores
    # (scores.json) and shown in the report
    info: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    scores: torch.Tensor  # (B,)
    maps: torch.Tensor  # (B, H, W) smoothed anomaly maps
    reconstructions: torch.Tensor | None  # (B, 3, H, W) in [0, 1]; None for a baseline that reconstructs nothing
    terms: dict[str, torch.Tensor]  # name -> (B, H, W) the method's unsmoothed terms (DDAD: pixel, feature)
    info: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B,) per-image values (Terms.info)

    @staticmethod
    def cat(parts: list["Prediction"]) -> "Prediction":
        return Prediction(torch.cat([p.scores for p in parts]), torch.cat([p.maps for p in parts]),
                          torch.cat([p.reconstructions for p in parts]),
                          {k: torch.cat([p.terms[k] for p in parts]) for k in parts[0].terms},
                          {k: torch.cat([p.info[k] for p in parts]) for k in parts[0].info})


def to_model(x01: torch.Tensor | ImageSet) -> torch.Tensor | ImageSet:
    """[0, 1] -> model space [-1, 1]; an ImageSet gives a view whose batches are converted as they are read."""
    return x01.map(to_model) if isinstance(x01, ImageSet) else x01 * 2 - 1


def to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)
