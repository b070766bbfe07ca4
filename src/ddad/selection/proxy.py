"""The proxy set: held-out nominal images, as they are and with synthetic defects pasted in (steps 2-3 of
ddad.selection)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import DDADConfig
from ..data import ImageSet
from ..data.anomalies import AnomalySpec, spec_from_config, synthesize_batch
from ..pipeline import nominal_split

__all__ = ["ProxySet", "proxy_set", "proxy_spec", "proxy_sources", "held_out_split", "MIN_SPLIT", "MAX_HALF",
           "PROXY_DRAWS", "PROXY_FOREGROUND", "STRENGTHS", "SATURATED"]

MIN_SPLIT = 8  # held-out images per half below which calibration and proxy share the images
MAX_HALF = 16  # held-out images per half at most (calibration, proxy): a proxy of 16 nominal images and
# 16 * draws * sources defective ones costs the same on a category of 200 or of 2000 training images
PROXY_DRAWS = 3  # draws of synthetic defects by default (--proxy-draws): the ranking pooled, its stability shown
PROXY_FOREGROUND = "object"  # where proxy defects go (AnomalySpec.foreground): on the part, where the part has a
# background (an inspected part's defects are on the part); anywhere on a texture
STRENGTHS = (1.0, 0.5, 0.25)  # proxy defect contrast, tried in turn while the model as saved finds every defect
SATURATED = 0.99  # proxy image AUROC at or above which the proxy is too easy to rank image detection


@dataclass(frozen=True)
class ProxySet:
    images: torch.Tensor  # (N + D, 3, H, W) in [0, 1]: N nominal, then D = draws * sources * N with a synthetic defect
    masks: torch.Tensor  # (N + D, 1, H, W) in {0, 1}
    labels: torch.Tensor  # (N + D,) int64
    draw: torch.Tensor  # (N + D,) int64: -1 for the nominal images, else the defects' draw
    source: torch.Tensor  # (N + D,) int64: -1 for the nominal images, else the index of the defects' source

    def subset(self, j: int) -> torch.Tensor:
        """Bool (N + D,): the nominal images and the defective ones of draw j (what a one-draw proxy would hold)."""
        return (self.draw < 0) | (self.draw == j)

    def of_source(self, k: int) -> torch.Tensor:
        """Bool (N + D,): the nominal images and the defective ones filled from source k (all draws)."""
        return (self.source < 0) | (self.source == k)


def proxy_spec(cfg: DDADConfig) -> AnomalySpec:
    """The synthetic-defect generator of the config (glad.anomalies: GLAD's own settings, the defaults otherwise)."""
    return replace(spec_from_config(cfg.glad.anomalies), probability=1.0)  # every proxy copy gets a defect


def proxy_sources(source: str) -> tuple[str, ...]:
    """"grid,texture" -> ("grid", "texture"): the synthetic defects' contents, one defective copy of each nominal
    image per source."""
    out = tuple(s.strip() for s in source.split(",") if s.strip())
    if not out:
        raise ValueError(f"proxy source must name grid, texture or a folder (or several, comma-separated); got {source!r}")
    return out


def proxy_set(nominal: torch.Tensor, spec: AnomalySpec, seed: int = 0, sources: tuple[str, ...] | None = None,
              draws: int = 1) -> ProxySet:
    """Each nominal image (N, 3, H, W) in [0, 1] as it is and, for every draw and every defect source (default:
    spec.source), once more with a defect forced into it (sample i of source k in draw j drawn from
    (seed, (j * len(sources) + k) * N + i): the set does not depend on how it is batched, and draw 0 is the one-draw
    proxy). The proxy holds N nominal and draws * len(sources) * N defective images."""
    if draws < 1:
        raise ValueError(f"proxy draws must be 1 or more (defective copies of each image per source), got {draws}")
    n, sources = nominal.shape[0], tuple(sources or (spec.source,))
    images, masks = [nominal], [torch.zeros(n, 1, *nominal.shape[-2:])]
    draw, source = [torch.full((n,), -1, dtype=torch.int64)], [torch.full((n,), -1, dtype=torch.int64)]
    for j in range(draws):
        for k, src in enumerate(sources):
            defective, m, _ = synthesize_batch(nominal, seed, replace(spec, source=src), force=True,
                                               offset=(j * len(sources) + k) * n)
            images.append(defective)
            masks.append((m > 0.5).float())
            draw.append(torch.full((n,), j, dtype=torch.int64))
            source.append(torch.full((n,), k, dtype=torch.int64))
    draw = torch.cat(draw)
    return ProxySet(torch.cat(images), torch.cat(masks), (draw >= 0).long(), draw, torch.cat(source))


def held_out_split(cfg: DDADConfig) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(calibration images, proxy nominal images, shared) from the config's held-out nominal images: alternate
    images, or all of them for both when there are fewer than 2 * MIN_SPLIT (shared); at most MAX_HALF each, so that
    the selection's cost does not grow with the dataset."""
    held = nominal_split(cfg)[1]
    n = len(held)
    if n > 2 * MAX_HALF:  # evenly spread over the (sorted) held-out images
        held = held[torch.linspace(0, n - 1, 2 * MAX_HALF).round().long()]
    held = held.stack() if isinstance(held, ImageSet) else held  # the held-out images are few: used whole
    if held.shape[0] < 2 * MIN_SPLIT:
        return held, held, True
    return held[0::2], held[1::2], False
