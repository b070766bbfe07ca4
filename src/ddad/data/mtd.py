"""Magnetic Tile Defects (MTD) layout:

    <root>/MT_Free/Imgs/<stem>.jpg            (defect-free)
    <root>/MT_<Defect>/Imgs/<stem>.jpg + <stem>.png   (mask with soft edges: grey >= 128 is a defect)

MTD has no official split. ddad's documented split (as the DDAD paper): 80% of MT_Free, chosen by
seeded_split(seed), for training; the other 20% of MT_Free and every defect image for testing.
"""
from __future__ import annotations

from pathlib import Path

from .base import DatasetLayoutError, Item, require_dir, seeded_split

__all__ = ["mtd_items", "MTD_MASK_THRESHOLD"]

MTD_MASK_THRESHOLD = 127.5 / 255.0  # grey >= 128
HINT = "MTD layout: <root>/MT_Free/Imgs/*.jpg and <root>/MT_<Defect>/Imgs/<stem>.jpg with <stem>.png masks"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".bmp"))


def mtd_items(root: Path, split: str, train_fraction: float = 0.8, seed: int = 0) -> list[Item]:
    free = _images(require_dir(root / "MT_Free" / "Imgs", "the MT_Free images", HINT))
    train, held_out = seeded_split(free, train_fraction, seed)
    if split == "train":
        return [Item(p, None, 0, "good") for p in train]
    items = [Item(p, None, 0, "good") for p in held_out]
    for defect_dir in sorted(d for d in root.glob("MT_*") if d.is_dir() and d.name != "MT_Free"):
        for p in _images(require_dir(defect_dir / "Imgs", f"{defect_dir.name}/Imgs", HINT)):
            mask = p.with_suffix(".png")
            if not mask.is_file():
                raise DatasetLayoutError(f"MTD defect image {p} has no mask {mask}. {HINT}")
            items.append(Item(p, mask, 1, defect_dir.name.removeprefix("MT_").lower()))
    return items
