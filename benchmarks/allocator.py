"""The `ddad` UNet (256 px, the paper's architecture, seeded random weights) timed per image at batch 1 and 4, with
glibc's malloc defaults or with freed memory kept (ddad.allocator), and the process's page faults:

    DDAD_MALLOC=glibc /usr/bin/time -f "%e s, %R minor faults" python benchmarks/allocator.py
    /usr/bin/time -f "%e s, %R minor faults" python benchmarks/allocator.py

Best of 3 calls after one warm-up call, 2 threads. --channels-last: the UNet's weights and input in channels_last.
"""
import sys
import time

import torch

from ddad.allocator import keep_freed_memory
from ddad.diffusion import build_unet


def main() -> None:
    kept = keep_freed_memory()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    unet = build_unet("ddad", 256).eval()
    fmt = torch.channels_last if "--channels-last" in sys.argv else torch.contiguous_format
    unet.to(memory_format=fmt)
    for bs in (1, 4):
        x, t = torch.randn(bs, 3, 256, 256).contiguous(memory_format=fmt), torch.full((bs,), 100)
        with torch.inference_mode():
            unet(x, t)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                unet(x, t)
                best = min(best, time.perf_counter() - t0)
        print(f"{'freed memory kept' if kept else 'glibc defaults'}, {str(fmt).split('.')[-1]}, batch {bs}: "
              f"{best / bs:.3f} s per image", flush=True)


if __name__ == "__main__":
    main()
