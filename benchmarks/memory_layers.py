"""Analysis (reads the TEST labels): which feature layers the nominal-memory map D_m should sum, on a trained model.

    python benchmarks/memory_layers.py runs/standins/grain3/ddad [--input-sizes 256,384]

D_m as `ddad.scoring.memory_distance` measures it (the model's adapted extractor, Euclidean, 3x3 mean with zero
padding counted in, every training patch in the memory) for each of the backbone's layers 1-3 (strides 4, 8, 16), then
summed over several layer sets: raw (as ddad.memory_layers sums them), or each layer divided by its mean (or max)
on the held-out nominal images first (equal weight per layer). Maps smoothed with the model's sigma, image score =
max; test image AUROC / pixel AUROC / PRO. The memory alone, without the reconstruction terms.
"""
import argparse
import time

import torch

from _testset import load_test
from ddad.detector import Detector
from ddad.metrics import MapAccumulator
from ddad.pipeline import nominal_split
from ddad.scoring import memory_bank, memory_distance, smooth

LAYER_SETS = ((2, 3), (1, 2, 3), (1, 2), (2,), (3,), (1,))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--input-sizes", help="comma-separated extractor input sizes (default: the model's)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    det = Detector.load(a.model)
    cfg = det.cfg
    sizes = [int(s) for s in a.input_sizes.split(",")] if a.input_sizes else [cfg.features.input_size]
    x, labels, masks = load_test(cfg)
    masks = masks.numpy()
    tr, va = (s.stack() for s in nominal_split(cfg))
    size = tuple(x.shape[-2:])

    def metrics(d: torch.Tensor) -> str:
        d = smooth(d, cfg.scoring.sigma)[:, 0]
        acc = MapAccumulator()
        acc.add(d.flatten(1).amax(1).numpy(), labels, d.numpy(), masks)
        m = acc.compute()
        return f"{100 * m.image_auroc:5.1f} / {100 * m.pixel_auroc:5.1f} / {100 * m.pro:5.1f}"

    ext = det.extractor
    print(f"{a.model}: test image AUROC / pixel AUROC / PRO of the memory alone, sigma {cfg.scoring.sigma:g}")
    for isz in sizes:
        ext.input_size = isz

        def feats(images: torch.Tensor) -> dict[int, torch.Tensor]:
            parts = {j: [] for j in (1, 2, 3)}
            with torch.inference_mode():
                for s in range(0, len(images), 16):
                    for j, f in ext(images[s:s + 16], (1, 2, 3)).items():
                        parts[j].append(f)
            return {j: torch.cat(v) for j, v in parts.items()}

        t0 = time.time()
        ft, fx, fv = feats(tr), feats(x), feats(va)
        bank = memory_bank(ft)
        dx = {j: memory_distance({j: fx[j]}, {j: bank[j]}, size) for j in (1, 2, 3)}
        dv = {j: memory_distance({j: fv[j]}, {j: bank[j]}, size) for j in (1, 2, 3)}
        print(f"input {isz} px: {time.time() - t0:.0f} s; held-out nominal D_m mean / max per layer: "
              + ", ".join(f"{j}: {float(dv[j].mean()):.2f} / {float(dv[j].amax()):.2f}" for j in dv), flush=True)
        print("| input | layers | summed | each / its nominal mean | each / its nominal max |\n|---|---|---|---|---|")
        for layers in LAYER_SETS:
            raw = sum(dx[j] for j in layers)
            by_mean = sum(dx[j] / dv[j].mean() for j in layers)
            by_max = sum(dx[j] / dv[j].amax() for j in layers)
            print(f"| {isz} | {', '.join(map(str, layers))} | {metrics(raw)} | {metrics(by_mean)} | "
                  f"{metrics(by_max)} |", flush=True)


if __name__ == "__main__":
    main()
