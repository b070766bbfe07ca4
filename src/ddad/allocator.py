"""Keep freed memory for the next allocation instead of handing it back to the operating system (glibc's malloc).

glibc serves every block above its mmap threshold (128 KiB, raised as large blocks are freed, to at most 32 MiB on
64-bit) with a fresh mmap and unmaps it when freed, and trims the heap's free top above the trim threshold. A
diffusion model's activations are such blocks (a 256-px UNet level of 64 channels: 16.8 MB per image), freed and
allocated again at every denoising step, so each step maps and page-faults them in anew. On the 2-core CPU, the
`ddad` UNet at 256 px took 0.93 s per image at batch 1 and 1.28 s at batch 4 with glibc's defaults (8.6 M minor
page faults in the run), 0.78 and 0.71 s with both thresholds at 1 GiB (0.50 M faults): the same arithmetic, only
where the memory comes from (benchmarks/allocator.py; BENCHMARKS.md, "Against the official implementation").

The cost: memory freed stays with the process (up to the trim threshold above what it uses); its peak is unchanged.
`keep_freed_memory` runs when a detector is created or loaded. Setting the environment variable
`DDAD_MALLOC=glibc` leaves glibc's defaults; other C libraries (musl, macOS, Windows) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["keep_freed_memory", "set_malloc_thresholds"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
LIMIT = 1 << 30  # 1 GiB: above any single activation of the models here
_done = False


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD for this process (bytes); False where the C library is not
    glibc. Fixing either turns glibc's own adjustment of the mmap threshold off."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def keep_freed_memory() -> bool:
    """Both thresholds at LIMIT, once per process, unless DDAD_MALLOC=glibc; whether they are set."""
    global _done
    if _done:
        return True
    if os.environ.get("DDAD_MALLOC", "").lower() == "glibc":
        return False
    _done = set_malloc_thresholds(LIMIT, LIMIT)
    if _done:
        log.debug("malloc: freed blocks up to %d bytes stay with the process (DDAD_MALLOC=glibc: glibc's defaults)",
                  LIMIT)
    return _done
