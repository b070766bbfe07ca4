"""A plain folder of good and defective images:

    <root>/good/*                 nominal images (a seeded share is used for training)
    <root>/<any other name>/*     defective images, the folder name is the defect type
    <root>/masks/[<defect>/]<stem>[_mask].png   optional masks

Training uses `train_fraction` of good/ (seeded_split); testing the rest of good/ plus every defect folder.
A defective image without a mask gets mask None (pixel metrics are then skipped for the set).
"""
from __future__ import annotations

from pathlib import Path

from .base import Item, require_dir, seeded_split
from .sample import list_images

__all__ = ["folder_items"]

HINT = "folder layout: <root>/good/*.png, <root>/<defect>/*.png, optional <root>/masks/"


def _mask_for(root: Path, defect: str, stem: str) -> Path | None:
    for folder in (root / "masks" / defect, root / "masks"):
        for name in (f"{stem}.png", f"{stem}_mask.png"):
            if (folder / name).is_file():
                return folder / name
    return None


def folder_items(root: Path, split: str, train_fraction: float = 0.8, seed: int = 0) -> list[Item]:
    good = list_images(require_dir(root / "good", "a good/ folder of nominal images", HINT))
    train, held_out = seeded_split(good, train_fraction, seed)
    if split == "train":
        return [Item(p, None, 0, "good") for p in train]
    items = [Item(p, None, 0, "good") for p in held_out]
    for d in sorted(d for d in root.iterdir() if d.is_dir() and d.name not in ("good", "masks")):
        items += [Item(p, _mask_for(root, d.name, p.stem), 1, d.name) for p in list_images(d)]
    return items
