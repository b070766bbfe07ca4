"""Synthetic anomalies pasted into nominal images (DRAEM-style), seeded.

What GLAD's anomaly-oriented training needs (a defect-free target for an image with a synthetic defect) and what a
label-free model selection can use as a proxy validation set (nominal held-out images with pasted defects, whose
masks are known):

    mask   = Perlin noise (random frequency) > threshold (shape "perlin", DRAEM's), or CutPaste's shapes (shape
             "cutpaste", Li et al. 2021: a rectangle or a thin rotated scar), restricted to the object's foreground if
             asked (the pixels unlike the image border, or a given mask); never empty for an anomalous sample
    source = the image's own grid cells shuffled (default), the image itself displaced and colour-jittered ("patch",
             CutPaste's content), a generated colour texture, or an image from a local texture folder (e.g. DTD,
             which cannot be downloaded here)
    x_anom = (1 - m) x + m ((1 - beta) source + beta x),   beta ~ U(0, beta_max)      (DRAEM Eq. 1; beta_max 0.8)
    x_faint = x + strength (x_anom - x)                    strength in (0, 1], 1 = DRAEM (a fainter proxy defect)

and an anomaly in a fraction `probability` of the samples (GLAD: half). Everything is drawn from one
numpy Generator, so (image, seed) gives the same result on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..imagefiles import IMAGE_EXTENSIONS
from .synthetic import to_gray

__all__ = ["AnomalySpec", "SyntheticAnomaly", "perlin_noise", "perlin_mask", "cutpaste_mask", "displaced_patch",
           "object_foreground", "shuffled_grid",
           "generated_texture", "spec_from_config", "synthesize", "synthesize_batch"]


SOURCES = ("grid", "patch", "texture")  # the built-in defect contents (besides a folder of texture images)
SHAPES = ("perlin", "cutpaste")
FOREGROUNDS = ("none", "object")


@dataclass(frozen=True)
class AnomalySpec:
    probability: float = 0.5  # fraction of samples that get an anomaly (GLAD: half)
    beta_max: float = 0.8  # blend factor beta ~ U(0, beta_max): how much of the original shows through (DRAEM)
    threshold: float = 0.5  # Perlin noise above this is the defect (DRAEM: 0.5)
    min_scale: int = 0  # Perlin lattice 2**k cells per side, k drawn in [min_scale, max_scale) (DRAEM: 0..6 at 256)
    max_scale: int = 6
    foreground: str = "none"  # none | object (defects only where the image is unlike its border: object_foreground)
    source: str = "grid"  # grid (the image's own shuffled cells) | patch (the image displaced, colour-jittered) |
    # texture (generated) | a folder of texture images
    grid: int = 8  # cells per side for source=grid
    shape: str = "perlin"  # perlin (DRAEM: thresholded Perlin noise) | cutpaste (CutPaste: rectangles and scars)
    # the defect's contrast against the image, scaled after the blend (1 = DRAEM): `ddad select` lowers it when every
    # pasted defect is found, so that image detection still ranks the candidates (selection.STRENGTHS)
    strength: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not 0.0 <= self.beta_max < 1.0:
            raise ValueError(f"beta_max must be in [0, 1), got {self.beta_max}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1] (1 = the full DRAEM blend), got {self.strength}")
        if not 0 <= self.min_scale < self.max_scale:
            raise ValueError(f"need 0 <= min_scale < max_scale, got {self.min_scale}, {self.max_scale}")
        if self.foreground not in FOREGROUNDS:
            raise ValueError(f"foreground must be {' or '.join(FOREGROUNDS)}, got {self.foreground!r}")
        if self.source not in SOURCES and not Path(self.source).is_dir():
            raise ValueError(f"source must be {', '.join(SOURCES)} or an existing folder of texture images, got "
                             f"{self.source!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be {' or '.join(SHAPES)}, got {self.shape!r}")


def spec_from_config(a) -> AnomalySpec:
    """The AnomalySpec of a config's anomaly section (ddad.config.AnomalyConfig: the same fields)."""
    return AnomalySpec(a.probability, a.beta_max, a.threshold, a.min_scale, a.max_scale, a.foreground, a.source,
                       a.grid, a.shape)


@dataclass(frozen=True)
class SyntheticAnomaly:
    image: torch.Tensor  # (3, H, W) in [0, 1], with the anomaly (or the input itself)
    mask: torch.Tensor  # (1, H, W) in {0, 1}
    anomalous: bool
    beta: float  # 1.0 where no anomaly was pasted


def perlin_noise(h: int, w: int, res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(h, w) gradient noise in about [-1, 1] on a res[0] x res[1] lattice (Perlin 1985, the quintic fade)."""
    ry, rx = res
    gy, gx = np.linspace(0, ry, h, endpoint=False), np.linspace(0, rx, w, endpoint=False)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return np.sqrt(2) * (top * (1 - uy) + bottom * uy)


def perlin_mask(h: int, w: int, rng: np.random.Generator, spec: AnomalySpec = AnomalySpec(),
                allowed: np.ndarray | None = None, tries: int = 20) -> np.ndarray:
    """(h, w) bool defect mask: thresholded Perlin noise at a random lattice, rotated by a random multiple of 90
    degrees, restricted to `allowed`; redrawn until non-empty (after `tries`, one allowed pixel's neighbourhood)."""
    for _ in range(tries):
        ry, rx = (2 ** int(rng.integers(spec.min_scale, spec.max_scale)) for _ in range(2))
        noise = np.rot90(perlin_noise(max(h, w), max(h, w), (ry, rx), rng), int(rng.integers(4)))[:h, :w]
        m = noise > spec.threshold
        if allowed is not None:
            m &= allowed
        if m.any():
            return m
    m = np.zeros((h, w), bool)  # a tiny blob where the noise never rose high enough inside `allowed`
    ys, xs = np.nonzero(allowed if allowed is not None and allowed.any() else np.ones((h, w), bool))
    i = int(rng.integers(len(ys)))
    m[max(0, ys[i] - 1): ys[i] + 2, max(0, xs[i] - 1): xs[i] + 2] = True
    return m if allowed is None or not allowed.any() else m & allowed


def cutpaste_mask(h: int, w: int, rng: np.random.Generator, allowed: np.ndarray | None = None) -> np.ndarray:
    """(h, w) bool defect mask of CutPaste's shapes (Li et al. 2021), scaled from its 256-px settings to the image's
    shorter side: half the time an axis-aligned rectangle of 2-15 % of the image's area and aspect 0.3-3.3, else a
    scar, 2-16 px wide and 10-25 px long at 256 px, rotated by -45..45 degrees. Its centre is an `allowed` pixel; the
    mask is cut to `allowed` and never empty."""
    side = min(h, w)
    if rng.random() < 0.5:
        area = rng.uniform(0.02, 0.15) * h * w
        aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3))))
        half_h, half_w = min(h, np.sqrt(area / aspect)) / 2, min(w, np.sqrt(area * aspect)) / 2
        angle = 0.0
    else:
        half_w = rng.uniform(2, 16) * side / 256 / 2
        half_h = rng.uniform(10, 25) * side / 256 / 2
        angle = np.deg2rad(rng.uniform(-45, 45))
    half_h, half_w = max(half_h, 0.75), max(half_w, 0.75)  # at least one pixel at any size
    where = allowed if allowed is not None and allowed.any() else np.ones((h, w), bool)
    ys, xs = np.nonzero(where)
    i = int(rng.integers(len(ys)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - ys[i], xx - xs[i]
    along = np.cos(angle) * dy + np.sin(angle) * dx  # the shape's own axes
    across = -np.sin(angle) * dy + np.cos(angle) * dx
    m = (np.abs(along) <= half_h) & (np.abs(across) <= half_w) & where
    m[ys[i], xs[i]] = True
    return m


def displaced_patch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image moved by a random offset (a quarter to three quarters of each side, wrapping round) with CutPaste's
    colour jitter (brightness and contrast x0.9-1.1 per channel, a shift of -0.1..0.1): what lies under a mask is
    the part's own texture from elsewhere, a little off in colour."""
    h, w = image.shape[:2]
    dy, dx = (int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4))) for n in (h, w))
    moved = np.roll(image, (dy, dx), axis=(0, 1))
    gain, shift = rng.uniform(0.9, 1.1, 3), rng.uniform(-0.1, 0.1, 3)
    mean = moved.mean(axis=(0, 1))
    return np.clip((moved - mean) * gain + mean + shift, 0, 1)


def object_foreground(image: np.ndarray, quantile: float = 0.99, min_fraction: float = 0.05) -> np.ndarray:
    """(H, W) bool: where an (H, W, 3) image in [0, 1] shows the inspected part, the pixels unlike its border.

    Objects are photographed on a background that fills the image border; the border pixels therefore sample the
    background. A pixel is foreground when its colour (smoothed, distance to the border's median colour) or its local
    contrast (grey-level standard deviation) exceeds the `quantile` of the border's values, with holes filled (a part's
    dark interior is part). This finds dark parts on a dark background too (tire), where a grey-level threshold picks
    the specular highlight. On a texture filling the frame the border samples the texture itself: only about
    1 - quantile of the pixels exceed it, scattered, so below `min_fraction` of the image the whole image is
    foreground."""
    from scipy import ndimage

    h, w = image.shape[:2]
    sigma = max(h, w) / 128  # 2 px at 256 px: sensor noise smoothed, edges kept
    border = np.zeros((h, w), bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    smooth = ndimage.gaussian_filter(image.astype(np.float64), (sigma, sigma, 0))
    colour = np.sqrt(((smooth - np.median(smooth[border], axis=0)) ** 2).sum(-1))
    grey = image.mean(-1).astype(np.float64)
    mean = ndimage.gaussian_filter(grey, sigma)
    contrast = np.sqrt(np.clip(ndimage.gaussian_filter(grey * grey, sigma) - mean * mean, 0, None))
    # a window straddling the part's outline has contrast too: eroded by the window's radius, so it stops at the edge
    textured = ndimage.binary_erosion(contrast > np.quantile(contrast[border], quantile),
                                      iterations=max(1, round(sigma)))
    fg = ndimage.binary_fill_holes((colour > np.quantile(colour[border], quantile)) | textured)
    return fg if fg.mean() >= min_fraction else np.ones((h, w), bool)


def shuffled_grid(image: np.ndarray, rng: np.random.Generator, grid: int = 8) -> np.ndarray:
    """The image's grid x grid cells in a random order (and each cell rotated by a random multiple of 90 degrees
    where square): local texture of the part itself, in the wrong place."""
    h, w = image.shape[:2]
    ch, cw = h // grid, w // grid
    out = image.copy()
    cells = [(i, j) for i in range(grid) for j in range(grid)]
    order = rng.permutation(len(cells))
    for (i, j), k in zip(cells, order):
        si, sj = cells[k]
        cell = image[si * ch:(si + 1) * ch, sj * cw:(sj + 1) * cw]
        if ch == cw:
            cell = np.rot90(cell, int(rng.integers(4)))
        out[i * ch:(i + 1) * ch, j * cw:(j + 1) * cw] = cell
    return out


def generated_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) in [0, 1]: two random colours mixed by multi-octave Perlin noise (a stand-in for DTD textures)."""
    side = max(h, w)
    noise = sum(perlin_noise(side, side, (2 ** k, 2 ** k), rng) / 2 ** (k - 1) for k in range(1, 5))[:h, :w]
    t = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-8)
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    return a * t[..., None] + b * (1 - t[..., None])


def _folder_texture(folder: Path, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    from .sample import read_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"texture folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    img = read_image(files[int(rng.integers(len(files)))])  # (3, H', W')
    img = torch.nn.functional.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return img.permute(1, 2, 0).numpy()


def synthesize(image: torch.Tensor, rng: np.random.Generator, spec: AnomalySpec = AnomalySpec(),
               foreground: torch.Tensor | None = None, force: bool | None = None) -> SyntheticAnomaly:
    """One sample: an anomaly pasted into `image` (3, H, W) in [0, 1] with probability spec.probability (or
    always / never with force=True / False). `foreground` (H, W) bool overrides spec.foreground."""
    x = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    h, w = x.shape[:2]
    anomalous = bool(rng.random() < spec.probability) if force is None else force
    if not anomalous:
        return SyntheticAnomaly(image.clone(), torch.zeros(1, h, w), False, 1.0)
    allowed = None
    if foreground is not None:
        allowed = foreground.cpu().numpy().astype(bool)
    elif spec.foreground == "object":
        allowed = object_foreground(x)
    m = perlin_mask(h, w, rng, spec, allowed) if spec.shape == "perlin" else cutpaste_mask(h, w, rng, allowed)
    if spec.source == "grid":
        src = shuffled_grid(x, rng, spec.grid)
    elif spec.source == "patch":
        src = displaced_patch(x, rng)
    elif spec.source == "texture":
        src = generated_texture(h, w, rng)
    else:
        src = _folder_texture(Path(spec.source), h, w, rng)
    if np.ptp(x, axis=-1).max() < 1e-6:  # a grey image gets a grey defect (its luminance), not a colour patch
        src = to_gray(src)
    beta = float(rng.uniform(0, spec.beta_max))
    mf = m[..., None].astype(np.float64)
    out = (1 - mf) * x + mf * ((1 - beta) * src + beta * x)
    if spec.strength != 1.0:
        out = x + spec.strength * (out - x)
    t = torch.from_numpy(np.clip(out, 0, 1)).permute(2, 0, 1).to(image.dtype).contiguous()
    return SyntheticAnomaly(t, torch.from_numpy(m.astype(np.float32))[None], True, beta)


def synthesize_batch(images: torch.Tensor, seed: int, spec: AnomalySpec = AnomalySpec(),
                     force: bool | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anomalous images (B, 3, H, W), masks (B, 1, H, W), flags (B,)) for images (B, 3, H, W) in [0, 1]; sample i
    is drawn from Generator(seed, offset + i), so it does not depend on the rest of the batch (`offset`: where this
    batch starts in a larger one)."""
    samples = [synthesize(images[i], np.random.default_rng([seed, offset + i]), spec, force=force)
               for i in range(len(images))]
    return (torch.stack([s.image for s in samples]), torch.stack([s.mask for s in samples]),
            torch.tensor([s.anomalous for s in samples]))
