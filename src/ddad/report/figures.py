"""Pictures for people: heatmap overlays and input | reconstruction | heatmap | mask panels (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

__all__ = ["to_uint8", "heatmap_rgb", "overlay", "panel", "labelled_panel", "colour_bar", "anomaly_sheet", "save_png"]


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] -> (H, W, 3) uint8."""
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2 or a.shape[-1] == 1:
        a = np.repeat(a.reshape(*a.shape[:2], 1), 3, axis=-1)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def heatmap_rgb(amap: torch.Tensor | np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 with a fixed scale [0, vmax] (comparable across images)."""
    a = amap.detach().cpu().numpy() if isinstance(amap, torch.Tensor) else np.asarray(amap)
    norm = np.clip(a / max(vmax, 1e-12), 0, 1)
    return (colormaps["jet"](norm)[..., :3] * 255 + 0.5).astype(np.uint8)


def overlay(image: torch.Tensor, amap: torch.Tensor, vmax: float, alpha: float = 0.45) -> np.ndarray:
    base = to_uint8(image).astype(np.float32)
    heat = heatmap_rgb(amap, vmax).astype(np.float32)
    return (base * (1 - alpha) + heat * alpha + 0.5).astype(np.uint8)


def panel(tiles: list[np.ndarray], scale: int = 1) -> np.ndarray:
    """Tiles (H, W, 3) uint8 side by side with a 2-px white gap, optionally upscaled (nearest)."""
    h = max(t.shape[0] for t in tiles)
    gap = np.full((h, 2, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    if scale > 1:
        row = np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)
    return row


def colour_bar(vmax: float, width: int, height: int = 12) -> np.ndarray:
    """(height, width, 3) uint8 strip of the heatmap colours from 0 (left) to vmax (right)."""
    ramp = np.linspace(0, vmax, width)[None].repeat(height, 0)
    return heatmap_rgb(ramp, vmax)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_panel(tiles: list[np.ndarray], labels: list[str], title: str, vmax: float, scale: int = 1) -> np.ndarray:
    """Tiles side by side (upscaled), each under its label, a title line above (score, decision), and the heatmap
    colour scale from 0 to vmax below: a picture that explains itself without the JSON beside it."""
    if len(tiles) != len(labels):
        raise ValueError(f"{len(tiles)} tiles but {len(labels)} labels")
    row = panel(tiles, scale)
    w = row.shape[1]
    font = _font(13)
    band, bar_h = 20, 12
    canvas = Image.new("RGB", (max(w, 360), 2 * band + row.shape[0] + bar_h + band), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black", font=font)
    x = 0
    for t, label in zip(tiles, labels):
        draw.text((x + 2, band + 3), label, fill="black", font=font)
        x += t.shape[1] * scale + 2 * scale
    canvas.paste(Image.fromarray(row), (0, 2 * band))
    y = 2 * band + row.shape[0] + 2
    bar_w = min(w, 256) - 8
    canvas.paste(Image.fromarray(colour_bar(vmax, bar_w, bar_h)), (4, y))
    draw.text((4 + bar_w + 4, y - 1), f"0 .. {vmax:.3g} (heatmap scale)", fill="black", font=font)
    return np.asarray(canvas)


def anomaly_sheet(normal: torch.Tensor, anomalous: torch.Tensor, masks: torch.Tensor, scale: int = 1) -> np.ndarray:
    """One row per sample: the nominal image, the same image with its synthetic defect, the defect mask (white) and
    the mask's outline drawn on the defective image in red. normal, anomalous (N, 3, H, W) in [0, 1]; masks
    (N, 1, H, W) in {0, 1}."""
    rows = []
    for x, a, m in zip(normal, anomalous, masks):
        mk = m[0].cpu().numpy() > 0.5
        edge = mk & ~(np.roll(mk, 1, 0) & np.roll(mk, -1, 0) & np.roll(mk, 1, 1) & np.roll(mk, -1, 1))
        outlined = to_uint8(a).copy()
        outlined[edge] = (255, 0, 0)
        rows.append(panel([to_uint8(x), to_uint8(a), to_uint8(m.float().expand(3, -1, -1)), outlined], scale))
    gap = np.full((2 * scale, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([r for row in rows for r in (row, gap)][:-1], axis=0)


def save_png(arr: np.ndarray, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)
    return p
