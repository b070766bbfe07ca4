"""Time and memory of the full metric suite on a synthetic MVTec-category-sized problem.

    /usr/bin/time -v python benchmarks/metrics_memory.py      # see 'Maximum resident set size'
"""
import time

import numpy as np

from ddad.metrics import compute_metrics

rng = np.random.default_rng(0)
maps = rng.random((150, 256, 256), dtype=np.float32)
masks = np.zeros((150, 256, 256), bool)
masks[:100, 60:120, 80:140] = True
scores = maps.max(axis=(1, 2))
labels = masks.any(axis=(1, 2))
t = time.time()
m = compute_metrics(scores, labels, maps, masks)
print(f"all metrics, 150 x 256 x 256 maps: {time.time() - t:.1f} s (pixel AUROC {m.pixel_auroc:.4f}, PRO {m.pro:.4f})")
