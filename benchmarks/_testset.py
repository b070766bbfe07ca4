"""The test split of a model's dataset as tensors, for the analysis scripts that read the test labels
(grid_on_test.py, memory_variants.py, memory_layers.py, recon_variants.py). Not `ddad.data.collate`: its good images
have no mask, and a batch of them collates to masks=None."""
from __future__ import annotations

import numpy as np
import torch

from ddad.config import DDADConfig
from ddad.data import load_dataset


def load_test(cfg: DDADConfig) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """(images (N, 3, H, W) in [0, 1], labels (N,) 0/1, masks (N, H, W) bool; all-False for good images)."""
    d = cfg.data
    ds = load_dataset(d.layout, d.root, "test", d.category, d.shape, d.seed)
    samples = [ds[i] for i in range(len(ds))]
    x = torch.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    masks = torch.stack([s.mask[0] > 0.5 if s.mask is not None else torch.zeros(x.shape[-2:], dtype=torch.bool)
                         for s in samples])
    return x, labels, masks
