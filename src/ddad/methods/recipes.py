"""Each method's label-free recipe (`--auto`, ddad.selection): the inference settings tried and the synthetic
defects they are ranked on. One entry per method, beside METHODS; `ddad info` prints them."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Recipe", "RECIPES"]


@dataclass(frozen=True)
class Recipe:
    # key -> values: the candidates are their product (plus the model as saved); every key is an inference setting a
    # trained model takes (its features/adapt/sampling/scoring sections or its method's inference_options)
    grid: dict[str, tuple]
    # the proxy's defects (ddad.data.anomalies): their shape, and their contents comma-separated (one defective copy
    # of each held-out image per content and draw). DRAEM's Perlin shapes filled from the image's own shuffled cells
    # (objects, regular patterns) and from a generated texture (stochastic textures, whose own cells look nominal)
    proxy_shape: str = "perlin"
    proxy_sources: str = "grid,texture"


RECIPES: dict[str, Recipe] = {
    # T': the paper's 250 and a deeper start that repaints more of a defect; v: the paper's 1 up to a pixel-led map
    # (x4 steps); m (ddad.memory): the nominal-memory term off, level with D_f, leading, or dominating the map
    # (the same x4 steps). None needs re-adaptation, and v, m only recombine the terms (combine_options,
    # terms_cover): two reconstructions of the proxy set, one per T', and one extractor pass over the training
    # images to measure the memory
    "ddad": Recipe({"sampling.start_level": (250, 500), "scoring.v": (1, 4, 16), "ddad.memory": (0, 1, 4, 16)}),
    # T'_max: SPEC's 80 latent steps and a deeper start (as DDAD's grid doubles T'), each image's own T' still a bin's
    # fraction of it; lambda: the paper's 0.85 (latent-led), an even map and a feature-led one (the paper fixed lambda
    # for every category; defects that change texture more than intensity need the feature term). Two
    # reconstructions of the proxy set
    "d3ad": Recipe({"sampling.start_level": (80, 160), "d3ad.latent_weight": (0.85, 0.5, 0.15)}),
    # T' (paper: 750 MVTec, 500 MPDD, 450 VisA) and below it; t_min (paper: 350) and below it. ATP trains the UNet to
    # repaint exactly the Perlin-shaped defects of the default proxy, so GLAD is ranked on CutPaste's shapes
    # (rectangles, scars) filled from the image displaced and colour-jittered and from a generated texture: neither
    # the shapes nor the displaced content is one ATP (glad.anomalies: Perlin, shuffled cells) trains on
    "glad": Recipe({"sampling.start_level": (250, 400, 750), "glad.t_min": (50, 150, 350)}, "cutpaste", "patch,texture"),
    # alpha: the paper's 0.5 for every category and either side of it (the paper's best results set alpha per
    # category); the noise scales: the paper's respaced steps 5, 50, 100 and a larger set for defects that "require
    # sufficiently large noise to overwhelm the anomalous pixels" (Sec. 3). Two sets of terms
    "ran": Recipe({"ran.timesteps": ("[5,50,100]", "[25,100,200]"), "ran.alpha": (0.25, 0.5, 0.75)}),
}
