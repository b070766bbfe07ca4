"""Per-image latency of models, measured side by side in one process on the same test images.

Each model scores the same batches in turn, several rounds alternating, so a busy or throttled machine slows all
of them alike; prints the median seconds per image and each model's ratio to the first.
A model is a saved model directory, or a config YAML: an untrained detector of that config (same networks, same
sampling, same feature passes, so the same cost; its scores mean nothing). That times a configuration without
training it, e.g. DDAD-10 at the settings of configs/mvtec/bottle-cpu.yaml next to a trained D3AD:
    python benchmarks/latency.py configs/mvtec/bottle-cpu.yaml runs/bottle-cpu/d3ad \\
        --data ../shared/data/mvtec_bottle_256/bottle
"""
import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ddad.config import load_config
from ddad.data import load_dataset
from ddad.detector import Detector
from ddad.pipeline import stack_images


def _detector(spec: str, data: str) -> tuple[Detector, str]:
    if Path(spec).suffix in (".yaml", ".yml"):
        cfg = load_config(spec, [f"data.root={data}"])
        det = Detector.create(cfg)
        if det.name == "d3ad":
            raise SystemExit(f"{spec}: an untrained D3AD has no kNN bank to time; give a trained model directory")
        return det, "untrained"
    return Detector.load(spec), "trained"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model directories or config YAMLs; the first is the reference")
    p.add_argument("--data", required=True, help="dataset folder (its test split is scored)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", default=None, help="denoising steps for every model (default: each one's own)")
    args = p.parse_args()
    dets, kinds = zip(*(_detector(m, args.data) for m in args.models))
    c = dets[0].cfg.data
    if any(d.cfg.data.shape != c.shape for d in dets):
        raise SystemExit("the models work at different image sizes; compare at one size")
    x = stack_images(load_dataset(c.layout, args.data, "test", c.category, c.shape, c.seed))[: args.images]
    for det, kind in zip(dets, kinds):
        if args.steps:
            det.cfg = replace(det.cfg, sampling=replace(det.cfg.sampling, steps=int(args.steps)))
        if det.calibration is None:  # untrained: constants from a few images, only so that predict() runs
            det.calibrate(x[:4])
    times: dict[str, list[float]] = {m: [] for m in args.models}
    for _ in range(args.rounds):
        for m, det in zip(args.models, dets):
            t0 = time.perf_counter()
            det.predict(x)
            times[m].append((time.perf_counter() - t0) / len(x))
    ref = statistics.median(times[args.models[0]])
    print(f"{len(x)} images at {c.size_label.replace('px', ' px')}, batch {dets[0].cfg.sampling.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    for m, det, kind in zip(args.models, dets, kinds):
        med = statistics.median(times[m])
        print(f"{det.name.upper()}-{det.cfg.sampling.steps:<3d} {m:40s} ({kind}, {det.cfg.model.preset}) "
              f"{med:.3f} s/img  {ref / med:.2f}x the first's speed  "
              f"(rounds: {', '.join(f'{t:.3f}' for t in times[m])})")


if __name__ == "__main__":
    main()
