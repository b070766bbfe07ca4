"""Analysis (reads the TEST labels): how to measure the distance to a nominal memory, on a trained DDAD model.

    python benchmarks/memory_variants.py runs/standins/grain/ddad

Each test image's patches against every patch of the training images (nearest neighbour, k = 1), with the model's
feature layers, maps bilinearly upsampled and smoothed with the model's sigma, image score = max. Variants: the
model's (domain-adapted) extractor or the ImageNet one; cosine or Euclidean distance; the 3x3 mean with zero padding
counted in (PatchCore's AvgPool2d(3, 1, 1), the official DDAD patchify) or left out (count_include_pad=False, as
DDAD's Eq. 8 here); layer by layer (summed, as Eq. 8) or concatenated (layer 3 upsampled onto layer 2's grid, as
PatchCore). ddad.scoring.memory_distance is the adapted / l2 / zero-padded / per-layer row.
"""
import argparse

import torch
import torch.nn.functional as F

from _testset import load_test

from ddad.detector import Detector
from ddad.features.extractor import build_extractor
from ddad.metrics import MapAccumulator
from ddad.pipeline import nominal_split
from ddad.scoring import smooth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    a = ap.parse_args()
    torch.set_num_threads(2)
    det = Detector.load(a.model)
    cfg = det.cfg
    layers = cfg.features.layers
    x, labels, masks = load_test(cfg)
    masks = masks.numpy()
    train = nominal_split(cfg)[0].stack()
    size = tuple(x.shape[-2:])

    def metrics(d):
        acc = MapAccumulator()
        acc.add(d.flatten(1).amax(1).numpy(), labels, d.numpy(), masks)
        m = acc.compute()
        return f"{100 * m.image_auroc:5.1f} / {100 * m.pixel_auroc:5.1f} / {100 * m.pro:5.1f}"

    def feats(ext, images, pad):
        parts = {j: [] for j in layers}
        with torch.inference_mode():
            for s in range(0, len(images), 16):
                for j, f in ext(images[s:s + 16], layers).items():
                    parts[j].append(f)
        return {j: F.avg_pool2d(torch.cat(v), 3, 1, 1, count_include_pad=pad) for j, v in parts.items()}

    def concat(f):
        h, w = f[layers[0]].shape[-2:]
        return torch.cat([F.interpolate(f[j], size=(h, w), mode="bilinear", align_corners=False) for j in layers], 1)

    def nn_map(q, bank, kind):
        b, c, h, w = q.shape
        qs, bk = q.flatten(2).transpose(1, 2), bank.permute(1, 0, 2, 3).flatten(1)
        out = []
        for i in range(b):
            if kind == "cosine":
                d = 1 - (F.normalize(qs[i], dim=1) @ F.normalize(bk, dim=0)).amax(1)
            else:
                d = torch.cdist(qs[i], bk.T).amin(1)
            out.append(d.view(1, 1, h, w))
        return F.interpolate(torch.cat(out), size=size, mode="bilinear", align_corners=False)

    print(f"{a.model}: test image AUROC / pixel AUROC / PRO, sigma {cfg.scoring.sigma:g}, layers {layers}")
    print("| extractor | distance | 3x3 mean | layers | test |\n|---|---|---|---|---|")
    exts = {"adapted": det.extractor,
            "ImageNet": build_extractor(cfg.features.backbone, cfg.features.weights, cfg.features.input_size)}
    for en, ext in exts.items():
        for pad in (True, False):
            ft, fx = feats(ext, train, pad), feats(ext, x, pad)
            for kind in ("euclidean", "cosine"):
                per = sum(nn_map(fx[j], ft[j], kind) for j in layers)
                for ln, d in (("per layer, summed", per), ("concatenated", nn_map(concat(fx), concat(ft), kind))):
                    print(f"| {en} | {kind} | {'zero padding counted' if pad else 'padding left out'} | {ln} | "
                          f"{metrics(smooth(d, cfg.scoring.sigma)[:, 0])} |", flush=True)


if __name__ == "__main__":
    main()
