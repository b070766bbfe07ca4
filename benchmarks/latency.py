"""Per-image latency of saved models, measured side by side in one process on the same test images.

Each model scores the same batches in turn, several rounds alternating, so a busy or throttled machine slows all
of them alike; prints the median seconds per image and each model's ratio to the first.
    python benchmarks/latency.py runs/bottle-cpu/ddad runs/bottle-cpu/d3ad --data ../shared/data/mvtec_bottle_256/bottle
"""
import argparse
import statistics
import time

import torch

from ddad.data import load_dataset
from ddad.detector import Detector
from ddad.pipeline import stack_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories; the first is the reference")
    p.add_argument("--data", required=True, help="dataset folder (its test split is scored)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    dets = [Detector.load(m) for m in args.models]
    c = dets[0].cfg.data
    x = stack_images(load_dataset(c.layout, args.data, "test", c.category, c.image_size, c.seed))[: args.images]
    times: dict[str, list[float]] = {m: [] for m in args.models}
    for _ in range(args.rounds):
        for m, det in zip(args.models, dets):
            t0 = time.perf_counter()
            det.predict(x)
            times[m].append((time.perf_counter() - t0) / len(x))
    ref = statistics.median(times[args.models[0]])
    print(f"{len(x)} images at {c.image_size} px, batch {dets[0].cfg.sampling.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    for m, det in zip(args.models, dets):
        med = statistics.median(times[m])
        print(f"{det.name.upper()}-{det.cfg.sampling.steps:<3d} {m:40s} {med:.3f} s/img  {ref / med:.2f}x faster "
              f"than the first  (rounds: {', '.join(f'{t:.3f}' for t in times[m])})")


if __name__ == "__main__":
    main()
