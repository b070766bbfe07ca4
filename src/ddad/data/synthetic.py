"""Seeded synthetic inspection data written in the MVTec AD folder layout.

Four nominal kinds, each with realistic nuisance variation (so that a pixel-difference-to-mean
detector does not already solve it):
  texture  periodic woven pattern; random phase, period jitter, illumination gradient, sensor noise
  surface  brushed-metal-like random field; a new random field every image
  object   a round part (top view of a bottle-like object) on a plain background; position, size,
           lighting and rim shading vary
  grain    a fine stochastic texture (leather / sandblasted / sintered look): band-pass noise at three scales,
           a new field every image, so no two nominal images share a pixel pattern
Nine defect kinds. Clear ones: scratch, spot (contamination), missing (a piece gone), colour (local colour shift),
crack (thin jagged dark line). Subtle ones (the stand-ins for stochastic textures and small defects): thin (a hairline crack of low contrast),
faint (a low-contrast blob with soft edges), pit (a dot of a few pixels), fray (the pattern torn and displaced in a
ragged band at the part's edge: the intensities stay, the structure breaks). Each defect image has a 0/255 mask.

Options for harder stand-ins: grey images (`gray`, saved as 8-bit greyscale PNGs), non-square images (`height`),
smaller defects (`defect_scale` < 1 scales every defect's size).

    make_synthetic_dataset("data/", SyntheticSpec(category="grain", size=128, height=96, gray=True,
                                                   defects=SUBTLE_DEFECTS))

The same (arguments, seed) always writes byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .sample import hw

__all__ = ["SyntheticSpec", "KINDS", "DEFECTS", "CLEAR_DEFECTS", "SUBTLE_DEFECTS", "make_synthetic_dataset",
           "nominal_image", "add_defect", "to_gray"]

KINDS = ("texture", "surface", "object", "grain")
CLEAR_DEFECTS = ("scratch", "spot", "missing", "colour", "crack")
SUBTLE_DEFECTS = ("thin", "faint", "pit", "fray")
DEFECTS = CLEAR_DEFECTS + SUBTLE_DEFECTS


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Defaults make a small but non-trivial dataset (the demo's default)."""

    category: str = "object"  # one of KINDS
    size: int = 64  # width in pixels (and height unless `height` is given)
    n_train: int = 60
    n_test_good: int = 12
    n_test_per_defect: int = 6
    defects: tuple[str, ...] = CLEAR_DEFECTS
    seed: int = 0
    height: int | None = None  # non-square images: height in pixels (None = square)
    gray: bool = False  # grey images (luminance), written as 8-bit greyscale PNGs
    defect_scale: float = 1.0  # every defect's size times this (< 1: small defects relative to the image)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height or self.size, self.size)


Shape = tuple[int, int]


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """x, y in units of the image width (so a pattern keeps its aspect on a non-square image)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) / w
    return x, y


def _smooth_noise(rng: np.random.Generator, shape: Shape, sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def _illumination(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    x, y = _grid(shape)
    gx, gy = rng.uniform(-0.08, 0.08, 2)
    return 1.0 + gx * (x - 0.5) + gy * (y - 0.5 * shape[0] / shape[1]) + rng.uniform(-0.04, 0.04)


def nominal_image(kind: str, size: int | Shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One defect-free image (H, W, 3) in [0, 1] and its foreground mask (H, W) bool. size: an int (square) or
    (height, width)."""
    shape = hw(size)
    h, size = shape  # `size` (the width) sets every length scale, as on a square image
    x, y = _grid(shape)
    if kind == "texture":
        period = 8.0 / 64.0 * rng.uniform(0.97, 1.03)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        warp = np.sin(2 * np.pi * (x + px) / period) * np.sin(2 * np.pi * (y + py) / period)
        weft = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (x + y) / (2 * period) + px)) * np.abs(warp) ** 0.5
        base = np.array([0.55, 0.42, 0.30]) * rng.uniform(0.95, 1.05, 3)
        contrast = rng.uniform(0.25, 0.45)  # lighting changes brightness and contrast of the weave
        img = base * rng.uniform(0.88, 1.12) * (1.0 - contrast / 2 + contrast * weft)[..., None]
        fg = np.ones(shape, bool)
    elif kind == "surface":
        field = 0.6 * _smooth_noise(rng, shape, size / 16) + 0.4 * _smooth_noise(rng, shape, size / 64)
        streak = ndimage.gaussian_filter1d(rng.standard_normal(shape), size / 8, axis=1)
        streak /= streak.std() + 1e-8
        grey = 0.55 + 0.06 * field + 0.04 * streak
        img = grey[..., None] * np.array([0.98, 1.0, 1.04])
        fg = np.ones(shape, bool)
    elif kind == "grain":
        # band-pass noise at ~1, ~3 and ~10 px (at 128 px wide), slightly stretched along x, plus sparse bright
        # specks: detail the diffusion model cannot redraw pixel for pixel, as on leather, sandblasted metal or tiles
        s = size / 128.0
        fine = _smooth_noise(rng, shape, 0.8 * s)
        mid = ndimage.gaussian_filter(rng.standard_normal(shape), (2.0 * s, 3.5 * s), mode="wrap")
        mid /= mid.std() + 1e-8
        coarse = _smooth_noise(rng, shape, 10 * s)
        specks = ndimage.gaussian_filter((rng.random(shape) < 0.004).astype(np.float64), 0.7 * s) * 6
        grey = 0.48 * rng.uniform(0.94, 1.06) + 0.045 * fine + 0.05 * mid + 0.03 * coarse + 0.05 * specks
        img = grey[..., None] * np.array([1.02, 1.0, 0.96])
        fg = np.ones(shape, bool)
    elif kind == "object":
        cx, cy = 0.5 + rng.uniform(-0.02, 0.02, 2)
        cy = cy + 0.5 * (h / size - 1.0)  # centred on a non-square image
        radius = 0.36 * rng.uniform(0.96, 1.04)
        r = np.hypot(x - cx, y - cy) / radius
        background = np.array([0.82, 0.82, 0.80])
        body = np.array([0.25, 0.32, 0.22]) * rng.uniform(0.92, 1.08)
        shade = 0.75 + 0.5 * np.clip(1 - r, 0, 1) + 0.08 * _smooth_noise(rng, shape, size / 10)
        ring = 0.25 * np.exp(-(((r - 0.55) / 0.06) ** 2)) + 0.35 * np.exp(-(((r - 0.92) / 0.05) ** 2))
        edge = np.clip((1.0 - r) * size * radius / 1.5 + 0.5, 0, 1)  # anti-aliased rim
        obj = body * (shade + ring)[..., None]
        img = edge[..., None] * obj + (1 - edge[..., None]) * background
        fg = r < 0.95
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {KINDS}")
    img = img * _illumination(rng, shape)[..., None]
    img = img + rng.normal(0, 0.012, img.shape)
    return np.clip(img, 0, 1), fg


def _stroke(shape: Shape, points: np.ndarray, width: float) -> np.ndarray:
    """Soft coverage (H, W) in [0, 1] of a polyline given as (N, 2) points in pixel units."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dense = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in zip(points[:-1], points[1:])])
    d = np.full(shape, np.inf)
    for chunk in np.array_split(dense, max(1, len(dense) // 64)):
        dist = np.hypot(xx[..., None] - chunk[:, 0], yy[..., None] - chunk[:, 1]).min(axis=-1)
        d = np.minimum(d, dist)
    return np.clip(width / 2 + 0.5 - d, 0, 1)


def _blob(rng: np.random.Generator, shape: Shape, centre: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    r = np.hypot(xx - centre[0], yy - centre[1]) / radius
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, radius / 3))
    wobble /= wobble.std() + 1e-8
    return (r + 0.25 * wobble) < 1.0


def _inside(rng: np.random.Generator, fg: np.ndarray, margin: float) -> np.ndarray:
    eroded = ndimage.binary_erosion(fg, iterations=max(1, int(margin)))
    ys, xs = np.nonzero(eroded if eroded.any() else fg)
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def _edge_point(rng: np.random.Generator, dist: np.ndarray) -> np.ndarray:
    """A random pixel (x, y) on the part's edge (distance 1-2 px inside it)."""
    ys, xs = np.nonzero((dist >= 1) & (dist < 2))
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def add_defect(
    img: np.ndarray, fg: np.ndarray, defect: str, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one defect; returns (image, mask bool). The mask covers exactly the changed pixels.
    scale multiplies every defect's size (the image width sets the unit: 1 at 64 px)."""
    shape = img.shape[:2]
    out = img.copy()
    s = shape[1] / 64.0 * scale
    if defect in ("scratch", "crack", "thin"):
        start = _inside(rng, fg, 10 * s)
        if defect == "scratch":
            ctrl = start + rng.uniform(-14, 14, (3, 2)) * s
            t = np.linspace(0, 1, 12)[:, None]
            pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl[0] + t**2 * ctrl[1]
            cover = _stroke(shape, pts, width=1.2 * s)
            delta = rng.choice([-1, 1]) * rng.uniform(0.18, 0.3)
            out = out + delta * cover[..., None]
        elif defect == "crack":
            steps = rng.normal(0, 1, (14, 2)) * 2.0 * s + rng.uniform(-1.6, 1.6, 2) * s
            pts = start + np.cumsum(np.vstack([[0, 0], steps]), axis=0)
            cover = _stroke(shape, pts, width=1.0 * s)
            out = out * (1 - rng.uniform(0.45, 0.65) * cover[..., None])
        else:  # a hairline: longer, narrower (never below 0.8 px) and a third of the crack's contrast
            steps = rng.normal(0, 1, (20, 2)) * 1.5 * s + rng.uniform(-1.4, 1.4, 2) * s
            pts = start + np.cumsum(np.vstack([[0, 0], steps]), axis=0)
            cover = _stroke(shape, pts, width=max(0.8, 0.6 * s)) * fg  # stays on the part
            out = out * (1 - rng.uniform(0.12, 0.22) * cover[..., None])
        mask = cover > 0.25
    elif defect in ("spot", "missing", "colour", "faint", "pit"):
        radius = {"missing": (5.0, 8.0), "faint": (4.0, 8.0), "pit": (1.0, 2.0)}.get(defect, (3.0, 6.0))
        radius = max(1.5, rng.uniform(*radius) * s)  # never below 1.5 px (a visible pit, not one pixel)
        centre = _inside(rng, fg, radius)
        mask = _blob(rng, shape, centre, radius)
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 1.5 * s if defect == "faint" else 0.7)[..., None]
        if defect == "spot":
            colour = rng.uniform(0.05, 0.9, 3)
            target = colour + 0.04 * rng.standard_normal(img.shape)
            out = out * (1 - 0.8 * soft) + 0.8 * soft * target
        elif defect == "missing":
            fill = np.array([0.82, 0.82, 0.80]) if not fg.all() else np.full(3, 0.15)
            out = out * (1 - soft) + soft * (fill + 0.012 * rng.standard_normal(img.shape))
        elif defect == "colour":
            gains = 1.0 + rng.choice([-1, 1], 3) * rng.uniform(0.15, 0.3, 3)
            out = out * (1 - soft) + soft * (out * gains)
        elif defect == "faint":  # a shift of 9-15 grey levels, smaller than the texture's own swing
            out = out + rng.choice([-1, 1]) * rng.uniform(0.035, 0.06) * soft
        else:  # pit
            out = out * (1 - rng.uniform(0.35, 0.55) * soft)
        mask = soft[..., 0] > 0.25
    elif defect == "fray":
        # the pattern torn at the part's edge (the image border for a full-frame texture, the rim for an object):
        # a ragged band whose content is displaced by a few pixels and softened; intensities stay, structure breaks
        dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
        anchor = _edge_point(rng, dist)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
        along = np.hypot(xx - anchor[0], yy - anchor[1]) / (rng.uniform(9.0, 16.0) * s)
        depth = rng.uniform(3.0, 6.0) * s * (1 + 0.45 * _smooth_noise(rng, shape, 1.5 * s))
        mask = fg & (dist <= depth) & (along < 1.0)
        shift = np.round(rng.uniform(2.5, 5.0) * s * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)]))
        torn = ndimage.gaussian_filter(np.roll(img, (int(shift[1]), int(shift[0])), axis=(0, 1)), (0.6 * s, 0.6 * s, 0))
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.5)[..., None]
        out = out * (1 - soft) + soft * torn
        mask = soft[..., 0] > 0.25
    else:
        raise ValueError(f"unknown defect {defect!r}; choose one of {DEFECTS}")
    return np.clip(out, 0, 1), mask & (np.abs(out - img).max(axis=-1) > 1e-3)


def to_gray(img: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601, as Pillow's 'L'), repeated over 3 channels."""
    g = img @ np.array([0.299, 0.587, 0.114])
    return np.repeat(g[..., None], 3, axis=-1)


def _save(arr: np.ndarray, path: Path, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round((arr[..., 0] if gray else arr) * 255).astype(np.uint8)).save(path)


def make_synthetic_dataset(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write <root>/<category>/{train/good, test/<defect>, ground_truth/<defect>} and return the category dir."""
    if spec.category not in KINDS:
        raise ValueError(f"unknown synthetic category {spec.category!r}; choose one of {KINDS}")
    unknown = set(spec.defects) - set(DEFECTS)
    if unknown:
        raise ValueError(f"unknown defects {sorted(unknown)}; choose from {DEFECTS}")
    if min(spec.shape) < 8:
        raise ValueError(f"images of {spec.shape[1]}x{spec.shape[0]} px are too small; give size/height >= 8")
    if spec.gray and "colour" in spec.defects:
        raise ValueError("a 'colour' defect has no meaning on grey images; leave it out of defects (gray=True)")
    base = Path(root) / spec.category
    rng = np.random.default_rng(spec.seed)

    def nominal() -> tuple[np.ndarray, np.ndarray]:
        img, fg = nominal_image(spec.category, spec.shape, rng)
        return (to_gray(img) if spec.gray else img), fg

    for i in range(spec.n_train):
        _save(nominal()[0], base / "train" / "good" / f"{i:03d}.png", spec.gray)
    for i in range(spec.n_test_good):
        _save(nominal()[0], base / "test" / "good" / f"{i:03d}.png", spec.gray)
    for defect in spec.defects:
        for i in range(spec.n_test_per_defect):
            img, fg = nominal()
            bad, mask = add_defect(img, fg, defect, rng, spec.defect_scale)
            _save(bad, base / "test" / defect / f"{i:03d}.png", spec.gray)
            _save(mask.astype(np.float64), base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return base
