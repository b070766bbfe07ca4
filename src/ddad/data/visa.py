"""VisA layout, read through its split CSV (split_csv/1cls.csv: object,split,label,image,mask).

Paths in the CSV are relative to the VisA root, e.g. candle/Data/Images/Anomaly/000.JPG and
candle/Data/Masks/Anomaly/000.png. VisA masks hold label indices (0 background, 1..n defects), so any
non-zero value is anomalous (threshold 0).
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import DatasetLayoutError, Item

__all__ = ["visa_items", "VISA_MASK_THRESHOLD"]

VISA_MASK_THRESHOLD = 0.0
HINT = "VisA layout: <root>/split_csv/1cls.csv and <root>/<object>/Data/{Images,Masks}/..."


def visa_items(root: Path, split: str, category: str, csv_name: str = "split_csv/1cls.csv") -> list[Item]:
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise DatasetLayoutError(f"expected the VisA split file at {csv_path}. {HINT}")
    items: list[Item] = []
    objects: set[str] = set()
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            objects.add(row["object"])
            if row["object"] != category or row["split"] != split:
                continue
            anomalous = row["label"].strip().lower() == "anomaly"
            mask = root / row["mask"] if anomalous and row.get("mask") else None
            if anomalous and (mask is None or not mask.is_file()):
                raise DatasetLayoutError(f"anomalous VisA image {row['image']} has no mask file ({row.get('mask')!r})")
            items.append(Item(root / row["image"], mask, int(anomalous), "anomaly" if anomalous else "good"))
    if category not in objects:
        raise DatasetLayoutError(f"VisA category {category!r} not in {csv_path}; choose one of {sorted(objects)}")
    return items
