"""MVTec AD layout (also MPDD, which uses the same folders):

    <category>/train/good/*.png
    <category>/test/<defect or good>/*.png
    <category>/ground_truth/<defect>/<stem>_mask.png
"""
from __future__ import annotations

from pathlib import Path

from .base import DatasetLayoutError, Item, require_dir
from .sample import list_images

__all__ = ["mvtec_items"]

HINT = "MVTec layout: <category>/train/good, <category>/test/<defect>, <category>/ground_truth/<defect>/<stem>_mask.png"


def _find_mask(gt_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask.png", f"{stem}.png", f"{stem}_mask.bmp"):
        if (gt_dir / name).is_file():
            return gt_dir / name
    return None


def mvtec_items(root: Path, split: str) -> list[Item]:
    if split == "train":
        folder = require_dir(root / "train" / "good", "the nominal training images", HINT)
        return [Item(p, None, 0, "good") for p in list_images(folder)]
    test = require_dir(root / "test", "the test folder", HINT)
    items: list[Item] = []
    for defect_dir in sorted(d for d in test.iterdir() if d.is_dir()):
        defect = defect_dir.name
        for p in list_images(defect_dir):
            if defect == "good":
                items.append(Item(p, None, 0, "good"))
                continue
            mask = _find_mask(root / "ground_truth" / defect, p.stem)
            if mask is None:
                raise DatasetLayoutError(
                    f"anomalous image {p} has no mask: expected {root / 'ground_truth' / defect / (p.stem + '_mask.png')}. "
                    f"{HINT}"
                )
            items.append(Item(p, mask, 1, defect))
    return items
