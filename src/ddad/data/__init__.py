"""Datasets in the standard anomaly-detection layouts, all yielding `Sample`s.

    ds = load_dataset("mvtec", "path/to/mvtec", split="test", category="bottle", image_size=256)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import AnomalyDataset, Batch, DatasetLayoutError, ImageSet, Item, collate, loader, seeded_split
from .btad import btad_items
from .folder import folder_items
from .mtd import MTD_MASK_THRESHOLD, mtd_items
from .mvtec import mvtec_items
from .sample import ImageReadError, Sample, read_image, read_mask
from .visa import VISA_MASK_THRESHOLD, visa_items

__all__ = [
    "AnomalyDataset", "Batch", "DatasetLayoutError", "ImageReadError", "ImageSet", "Item", "Sample", "LAYOUTS",
    "collate", "load_dataset", "loader", "read_image", "read_mask", "seeded_split",
]

# layout name -> (item lister, mask threshold on grey/255, needs a category argument)
LAYOUTS: dict[str, tuple[Callable[..., list[Item]], float, bool]] = {
    "mvtec": (mvtec_items, 0.5, False),
    "mpdd": (mvtec_items, 0.5, False),
    "btad": (btad_items, 0.5, False),
    "visa": (visa_items, VISA_MASK_THRESHOLD, True),
    "mtd": (mtd_items, MTD_MASK_THRESHOLD, False),
    "folder": (folder_items, 0.5, False),
}


def load_dataset(
    layout: str,
    root: str | Path,
    split: str,
    category: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
) -> AnomalyDataset:
    """Index a dataset folder. split: "train" (nominal only) or "test".

    For mvtec/mpdd/btad, `root` is the category folder, or the dataset root with `category` naming it.
    For visa, `root` is the VisA root and `category` is required. seed drives the documented splits of
    layouts without an official one (mtd, folder).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    lister, threshold, needs_category = LAYOUTS[layout]
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder {root} does not exist; pass the folder that holds the {layout} data")
    if needs_category:
        if not category:
            raise ValueError(f"the {layout} layout needs a category (e.g. category='candle')")
        items = lister(root, split, category)
    else:
        if category and (root / category).is_dir():
            root = root / category
        items = lister(root, split, seed=seed) if layout in ("mtd", "folder") else lister(root, split)
    if not items:
        raise DatasetLayoutError(f"the {split} split of {root} ({layout} layout) holds no images")
    name = f"{layout}:{category or root.name}:{split}"
    return AnomalyDataset(items, image_size, threshold, name)
