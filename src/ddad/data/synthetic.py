"""Seeded synthetic inspection data written in the MVTec AD folder layout.

Three nominal kinds, each with realistic nuisance variation (so that a pixel-difference-to-mean
detector does not already solve it):
  texture  periodic woven pattern; random phase, period jitter, illumination gradient, sensor noise
  surface  brushed-metal-like random field; a new random field every image
  object   a round part (top view of a bottle-like object) on a plain background; position, size,
           lighting and rim shading vary
Five defect kinds: scratch, spot (contamination), missing (a piece gone), colour (local colour shift),
crack (thin jagged dark line). Each defect image has a 0/255 pixel mask.

    make_synthetic_dataset("data/", category="object", size=64, seed=0)

The same (arguments, seed) always writes byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["SyntheticSpec", "KINDS", "DEFECTS", "make_synthetic_dataset", "nominal_image", "add_defect"]

KINDS = ("texture", "surface", "object")
DEFECTS = ("scratch", "spot", "missing", "colour", "crack")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Defaults make a small but non-trivial dataset (the demo's default)."""

    category: str = "object"  # one of KINDS
    size: int = 64
    n_train: int = 60
    n_test_good: int = 12
    n_test_per_defect: int = 6
    defects: tuple[str, ...] = DEFECTS
    seed: int = 0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    return x, y


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    gx, gy = rng.uniform(-0.08, 0.08, 2)
    return 1.0 + gx * (x - 0.5) + gy * (y - 0.5) + rng.uniform(-0.04, 0.04)


def nominal_image(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One defect-free image (H, W, 3) in [0, 1] and its foreground mask (H, W) bool."""
    x, y = _grid(size)
    if kind == "texture":
        period = 8.0 / 64.0 * rng.uniform(0.97, 1.03)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        warp = np.sin(2 * np.pi * (x + px) / period) * np.sin(2 * np.pi * (y + py) / period)
        weft = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (x + y) / (2 * period) + px)) * np.abs(warp) ** 0.5
        base = np.array([0.55, 0.42, 0.30]) * rng.uniform(0.95, 1.05, 3)
        contrast = rng.uniform(0.25, 0.45)  # lighting changes brightness and contrast of the weave
        img = base * rng.uniform(0.88, 1.12) * (1.0 - contrast / 2 + contrast * weft)[..., None]
        fg = np.ones((size, size), bool)
    elif kind == "surface":
        field = 0.6 * _smooth_noise(rng, size, size / 16) + 0.4 * _smooth_noise(rng, size, size / 64)
        streak = ndimage.gaussian_filter1d(rng.standard_normal((size, size)), size / 8, axis=1)
        streak /= streak.std() + 1e-8
        grey = 0.55 + 0.06 * field + 0.04 * streak
        img = grey[..., None] * np.array([0.98, 1.0, 1.04])
        fg = np.ones((size, size), bool)
    elif kind == "object":
        cx, cy = 0.5 + rng.uniform(-0.02, 0.02, 2)
        radius = 0.36 * rng.uniform(0.96, 1.04)
        r = np.hypot(x - cx, y - cy) / radius
        background = np.array([0.82, 0.82, 0.80])
        body = np.array([0.25, 0.32, 0.22]) * rng.uniform(0.92, 1.08)
        shade = 0.75 + 0.5 * np.clip(1 - r, 0, 1) + 0.08 * _smooth_noise(rng, size, size / 10)
        ring = 0.25 * np.exp(-(((r - 0.55) / 0.06) ** 2)) + 0.35 * np.exp(-(((r - 0.92) / 0.05) ** 2))
        edge = np.clip((1.0 - r) * size * radius / 1.5 + 0.5, 0, 1)  # anti-aliased rim
        obj = body * (shade + ring)[..., None]
        img = edge[..., None] * obj + (1 - edge[..., None]) * background
        fg = r < 0.95
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {KINDS}")
    img = img * _illumination(rng, size)[..., None]
    img = img + rng.normal(0, 0.012, img.shape)
    return np.clip(img, 0, 1), fg


def _stroke(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Soft coverage (H, W) in [0, 1] of a polyline given as (N, 2) points in pixel units."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dense = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in zip(points[:-1], points[1:])])
    d = np.full((size, size), np.inf)
    for chunk in np.array_split(dense, max(1, len(dense) // 64)):
        dist = np.hypot(xx[..., None] - chunk[:, 0], yy[..., None] - chunk[:, 1]).min(axis=-1)
        d = np.minimum(d, dist)
    return np.clip(width / 2 + 0.5 - d, 0, 1)


def _blob(rng: np.random.Generator, size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(xx - centre[0], yy - centre[1]) / radius
    wobble = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(1.0, radius / 3))
    wobble /= wobble.std() + 1e-8
    return (r + 0.25 * wobble) < 1.0


def _inside(rng: np.random.Generator, fg: np.ndarray, margin: float) -> np.ndarray:
    eroded = ndimage.binary_erosion(fg, iterations=max(1, int(margin)))
    ys, xs = np.nonzero(eroded if eroded.any() else fg)
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def add_defect(
    img: np.ndarray, fg: np.ndarray, defect: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one defect; returns (image, mask bool). The mask covers exactly the changed pixels."""
    size = img.shape[0]
    out = img.copy()
    s = size / 64.0
    if defect in ("scratch", "crack"):
        start = _inside(rng, fg, 10 * s)
        if defect == "scratch":
            ctrl = start + rng.uniform(-14, 14, (3, 2)) * s
            t = np.linspace(0, 1, 12)[:, None]
            pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl[0] + t**2 * ctrl[1]
            cover = _stroke(size, pts, width=1.2 * s)
            delta = rng.choice([-1, 1]) * rng.uniform(0.18, 0.3)
            out = out + delta * cover[..., None]
        else:
            steps = rng.normal(0, 1, (14, 2)) * 2.0 * s + rng.uniform(-1.6, 1.6, 2) * s
            pts = start + np.cumsum(np.vstack([[0, 0], steps]), axis=0)
            cover = _stroke(size, pts, width=1.0 * s)
            out = out * (1 - rng.uniform(0.45, 0.65) * cover[..., None])
        mask = cover > 0.25
    elif defect in ("spot", "missing", "colour"):
        radius = rng.uniform(3.0, 6.0) * s if defect != "missing" else rng.uniform(5.0, 8.0) * s
        centre = _inside(rng, fg, radius)
        mask = _blob(rng, size, centre, radius)
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.7)[..., None]
        if defect == "spot":
            colour = rng.uniform(0.05, 0.9, 3)
            target = colour + 0.04 * rng.standard_normal(img.shape)
            out = out * (1 - 0.8 * soft) + 0.8 * soft * target
        elif defect == "missing":
            fill = np.array([0.82, 0.82, 0.80]) if not fg.all() else np.full(3, 0.15)
            out = out * (1 - soft) + soft * (fill + 0.012 * rng.standard_normal(img.shape))
        else:
            gains = 1.0 + rng.choice([-1, 1], 3) * rng.uniform(0.15, 0.3, 3)
            out = out * (1 - soft) + soft * (out * gains)
        mask = soft[..., 0] > 0.25
    else:
        raise ValueError(f"unknown defect {defect!r}; choose one of {DEFECTS}")
    return np.clip(out, 0, 1), mask & (np.abs(out - img).max(axis=-1) > 1e-3)


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(path)


def make_synthetic_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write <root>/<category>/{train/good, test/<defect>, ground_truth/<defect>} and return the category dir."""
    if spec.category not in KINDS:
        raise ValueError(f"unknown synthetic category {spec.category!r}; choose one of {KINDS}")
    unknown = set(spec.defects) - set(DEFECTS)
    if unknown:
        raise ValueError(f"unknown defects {sorted(unknown)}; choose from {DEFECTS}")
    base = Path(root) / spec.category
    rng = np.random.default_rng(spec.seed)
    for i in range(spec.n_train):
        _save(nominal_image(spec.category, spec.size, rng)[0], base / "train" / "good" / f"{i:03d}.png")
    for i in range(spec.n_test_good):
        _save(nominal_image(spec.category, spec.size, rng)[0], base / "test" / "good" / f"{i:03d}.png")
    for defect in spec.defects:
        for i in range(spec.n_test_per_defect):
            img, fg = nominal_image(spec.category, spec.size, rng)
            bad, mask = add_defect(img, fg, defect, rng)
            _save(bad, base / "test" / defect / f"{i:03d}.png")
            _save(mask.astype(np.float64), base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return base
