"""One streaming threshold sweep that every scalar metric shares.

Sort the scores once (descending); walk the sorted order in chunks, accumulating a positive and a negative
weight per pixel; emit the cumulative (neg, pos) sums at the last element of every run of equal scores,
i.e. one curve point per distinct threshold. Memory: the sort order (8 bytes per element) plus one chunk,
so a full MVTec category (~10^7 pixels) stays within a few hundred MB.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

__all__ = ["sweep", "CHUNK"]

CHUNK = 1 << 20

WeightFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # sorted indices -> (pos_w, neg_w) float64


def sweep(scores: np.ndarray, weights: WeightFn, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (neg_cum, pos_cum) arrays, chunk by chunk, at every distinct score (highest first)."""
    flat = scores.ravel()
    order = np.argsort(flat, kind="stable")[::-1]
    carry_pos = carry_neg = 0.0
    n = flat.size
    for a in range(0, n, chunk):
        idx = order[a : a + chunk]
        s = flat[idx]
        pos_w, neg_w = weights(idx)
        cp = np.cumsum(pos_w) + carry_pos
        cn = np.cumsum(neg_w) + carry_neg
        carry_pos, carry_neg = cp[-1], cn[-1]
        nxt = np.empty_like(s)
        nxt[:-1] = s[1:]
        if a + chunk < n:
            nxt[-1] = flat[order[a + chunk]]
            last_is_end = nxt[-1] != s[-1]
        else:
            last_is_end = True
        ends = np.flatnonzero(s[:-1] != nxt[:-1])
        if last_is_end:
            ends = np.append(ends, s.size - 1)
        if ends.size:
            yield cn[ends], cp[ends]
