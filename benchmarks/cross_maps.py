"""Score one method's saved reconstructions with another map (reads test labels: analysis, never for defaults).

    python benchmarks/cross_maps.py runs/bottle-cpu/ddad/eval-ddad10 runs/bottle-glad-scratch/eval-selected

For each evaluation folder (inputs.npy, reconstructions.npy, masks.npy from `ddad evaluate`), the maps between
input and reconstruction on Lite0 layers 2-3 at 256 px (ImageNet weights): GLAD's patch nearest-neighbour map
(ddad.scoring.patch_match) and DDAD's aligned feature cosine (+ pixel L1, per-image balance v = 1), Gaussian sigma 3,
image score = mean of the top 62 pixels. It separates a weak reconstruction from a weak map: the same map on two
methods' reconstructions of the same test images.
"""
import argparse

import numpy as np
import torch

from ddad.features.extractor import build_extractor
from ddad.metrics.evaluate import compute_metrics
from ddad.scoring import patch_nn_map
from ddad.scoring.anomaly_map import combine, feature_distance, image_score, pixel_distance, smooth


def _load(folder: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    img = lambda n: torch.from_numpy(np.load(f"{folder}/{n}.npy")).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    return img("inputs"), img("reconstructions"), np.load(f"{folder}/masks.npy").astype(bool)


def main(folders: list[str], sigma: float = 3.0, topk: int = 62) -> None:
    ext = build_extractor("efficientnet_lite0", None, 256)
    print("| reconstructions | map | I-AUROC | P-AUROC | PRO |\n|---|---|---|---|---|")
    for folder in folders:
        y, x0, masks = _load(folder)
        labels = masks.reshape(len(masks), -1).any(1)
        nn_maps, aligned = [], []
        with torch.inference_mode():
            for s in range(0, len(y), 16):
                fy, fx = ext(y[s : s + 16], (2, 3)), ext(x0[s : s + 16], (2, 3))
                nn_maps.append(patch_nn_map(fy, fx, tuple(y.shape[-2:])))
                aligned.append(feature_distance(fx, fy, tuple(y.shape[-2:])))
        d_p = pixel_distance(x0, y)
        maps = {"patch-NN (GLAD)": torch.cat(nn_maps),
                "aligned cosine + pixel L1 (DDAD, v 1)": combine(d_p, torch.cat(aligned), 1.0, None)}
        for name, m in maps.items():
            m = smooth(m, sigma)
            r = compute_metrics(image_score(m, "topk_mean", topk).numpy(), labels, m[:, 0].numpy(), masks)
            print(f"| {folder} | {name} | {100 * r.image_auroc:.1f} | {100 * r.pixel_auroc:.1f} | {100 * r.pro:.1f} |",
                  flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="evaluation folders written by `ddad evaluate --out`")
    main(ap.parse_args().folders)
