"""BTAD (BeanTech) layout, one product folder (01, 02, 03):

    <product>/train/ok/*.(bmp|png)
    <product>/test/ok/*, <product>/test/ko/*
    <product>/ground_truth/ko/<stem>.(png|bmp)      (same stem as the image, extension varies by product)
"""
from __future__ import annotations

from pathlib import Path

from .base import DatasetLayoutError, Item, require_dir
from .sample import IMAGE_EXTENSIONS, list_images

__all__ = ["btad_items"]

HINT = "BTAD layout: <product>/train/ok, <product>/test/{ok,ko}, <product>/ground_truth/ko/<stem>.png"


def btad_items(root: Path, split: str) -> list[Item]:
    if split == "train":
        return [Item(p, None, 0, "good") for p in list_images(require_dir(root / "train" / "ok", "train/ok", HINT))]
    test = require_dir(root / "test", "the test folder", HINT)
    items: list[Item] = []
    for defect_dir in sorted(d for d in test.iterdir() if d.is_dir()):
        for p in list_images(defect_dir):
            if defect_dir.name == "ok":
                items.append(Item(p, None, 0, "good"))
                continue
            gt = root / "ground_truth" / defect_dir.name
            masks = [gt / (p.stem + ext) for ext in IMAGE_EXTENSIONS if (gt / (p.stem + ext)).is_file()]
            if not masks:
                raise DatasetLayoutError(f"anomalous image {p} has no mask in {gt} (expected {p.stem}.png). {HINT}")
            items.append(Item(p, masks[0], 1, defect_dir.name))
    return items
