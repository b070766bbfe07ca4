"""Analysis (reads the TEST labels): DDAD map variants on a trained model, on its proxy set and on its test set.

    python benchmarks/recon_variants.py runs/standins/grain/ddad /tmp/x/gv --settings 250:3,500:0,500:1,750:0 --k 4
    python benchmarks/recon_variants.py runs/standins/grain/ddad /tmp/x/gv --settings 250:3,500:1 --layers 1,2,3
    python benchmarks/recon_variants.py runs/standins/grain/ddad /tmp/x/gv --settings 250:3,500:1 --k 1 --memory

For each start level and conditioning weight (T':w), K reconstructions with different noise seeds (cached in CACHE),
and maps built from them:
    feat1 + v pix1        the shipped map from the first reconstruction (DDAD Eq. 8-9)
    featmean + v pixmean  both terms averaged over the K reconstructions
    featmin + v pixmin    per pixel, the closest of the K reconstructions
    nn + v pixmin/mean    every input feature patch against all positions of all K reconstructions (GLAD's patch-NN)
with v in {0, 1, 4, 16} (`--memory`: plus m * s_m * M, m in {0, 1, 4}, M = DDAD's nominal-memory term,
ddad.scoring.memory_distance against the training images, s_m = max D_f / max M on the calibration images) and the
scale s = max / max on the calibration images, Gaussian sigma as the model's, image
score = max. Rows: proxy image AUROC / pixel AUROC / PRO and objective (what `ddad select` would see), then the test
set's. Not a selection procedure: the test columns are there to see whether any variant could reach a bar at all.
"""
import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path
import time

import numpy as np
import torch
import torch.nn.functional as F

from _testset import load_test
from ddad.detector import Detector
from ddad.methods import RECIPES
from ddad.metrics import MapAccumulator
from ddad.scoring import feature_distance, pixel_distance, smooth
from ddad.scoring.patch_match import memory_bank, memory_distance, patch_nn_distance
from ddad.selection import held_out_split, proxy_set, proxy_sources, proxy_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("cache", type=Path, help="folder for the reconstructions (reused when there)")
    ap.add_argument("--settings", default="250:3,500:0,500:1,750:0", help="T':w pairs, comma-separated")
    ap.add_argument("--k", type=int, default=4, help="reconstructions per image (noise seeds 0..K-1)")
    ap.add_argument("--layers", help="feature layers, e.g. 1,2,3 (default: the model's)")
    ap.add_argument("--memory", action="store_true",
                    help="also a nominal-memory term: each input patch against all training-image patches (kNN, k=1)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    a.cache.mkdir(parents=True, exist_ok=True)
    det = Detector.load(a.model, "cpu")
    cfg = det.cfg
    layers = tuple(int(v) for v in a.layers.split(",")) if a.layers else cfg.features.layers
    x_test, labels, m_test = load_test(cfg)
    cal, nom, _ = held_out_split(cfg)  # as ddad select
    proxy = proxy_set(nom, proxy_spec(cfg), 0, proxy_sources(RECIPES["ddad"].proxy_sources))
    sets = {"cal": (cal, None, None), "test": (x_test, labels, m_test),
            "proxy": (proxy.images, proxy.labels.numpy(), proxy.masks[:, 0] > 0.5)}

    def feats(x):
        parts = [det.extractor(x[s:s + 16], layers) for s in range(0, len(x), 16)]
        return {j: torch.cat([p[j] for p in parts]) for j in layers}

    def recon(x, t_start, w, seed):
        det.cfg = replace(cfg, sampling=replace(cfg.sampling, start_level=int(t_start), w=w, seed=seed))
        return torch.cat([det.reconstruct(x[s:s + 16]) for s in range(0, len(x), 16)])

    def metrics(maps, labels, masks):
        acc = MapAccumulator()
        acc.add(maps.flatten(1).amax(1).numpy(), labels, maps.numpy(), masks.numpy())
        m = acc.compute()
        return m.image_auroc, m.pixel_auroc, m.pro

    print(f"layers {layers}, K {a.k}; proxy image AUROC / pixel AUROC / PRO, objective | test the same")
    res = {}
    with torch.inference_mode():
        f_in = {name: feats(v[0]) for name, v in sets.items()}
        mem = {}
        if a.memory:
            from ddad.pipeline import nominal_split

            bank = memory_bank(feats(nominal_split(cfg)[0].stack()))
            for name, (x, _, _) in sets.items():
                mem[name] = torch.cat([memory_distance({j: f[i:i + 16] for j, f in f_in[name].items()}, bank,
                                                       tuple(x.shape[-2:])) for i in range(0, len(x), 16)])
            row = {n: metrics(smooth(mem[n], cfg.scoring.sigma)[:, 0], sets[n][1], sets[n][2]) for n in ("proxy", "test")}
            res["mem"] = row
            p, t = row["proxy"], row["test"]
            print(f"{'memory alone':38s} proxy {100 * p[0]:5.1f} {100 * p[1]:5.1f} {100 * p[2]:5.1f} obj {np.mean(p):.3f}"
                  f" | test {100 * t[0]:5.1f} {100 * t[1]:5.1f} {100 * t[2]:5.1f}", flush=True)
        for t_start, w in (tuple(map(float, s.split(":"))) for s in a.settings.split(",")):
            terms = {}
            for name, (x, _, _) in sets.items():
                f = a.cache / f"{name}-{int(t_start)}-{w}-K{a.k}.pt"
                if f.exists():
                    x0s = torch.load(f)
                else:
                    t0 = time.time()
                    x0s = torch.stack([recon(x, t_start, w, k) for k in range(a.k)])
                    torch.save(x0s, f)
                    print(f"reconstructed {name} at T' {t_start:g}, w {w:g}: {time.time() - t0:.0f} s", flush=True)
                size = tuple(x.shape[-2:])
                f_rec = [feats(x0) for x0 in x0s]
                pix = torch.stack([pixel_distance(x0, x) for x0 in x0s])  # (K, B, 1, H, W)
                fal = torch.stack([feature_distance(fr, f_in[name], size) for fr in f_rec])
                nn = 0
                for j in layers:
                    r = F.avg_pool2d(torch.cat([fr[j] for fr in f_rec], dim=-1), 3, 1, 1, count_include_pad=False)
                    p = F.avg_pool2d(f_in[name][j], 3, 1, 1, count_include_pad=False)
                    nn = nn + F.interpolate(patch_nn_distance(p, r), size=size, mode="bilinear", align_corners=False)
                terms[name] = {"pix1": pix[0], "feat1": fal[0], "pixmean": pix.mean(0), "featmean": fal.mean(0),
                               "pixmin": pix.amin(0), "featmin": fal.amin(0), "nn": nn}
            pairs = [("feat1", "pix1"), ("featmean", "pixmean"), ("featmin", "pixmin"), ("nn", "pixmin"),
                     ("nn", "pixmean")] if a.k > 1 else [("feat1", "pix1"), ("nn", "pix1")]
            for fn, pn in pairs:
                s = float(terms["cal"][fn].amax() / terms["cal"][pn].amax())
                s_m = float(terms["cal"][fn].amax() / mem["cal"].amax()) if mem else 0.0
                for v, m in itertools.product((0, 1, 4, 16), (0, 1, 4) if mem else (0,)):
                    row = {n: metrics(smooth(terms[n][fn] + v * s * terms[n][pn] + (m * s_m * mem[n] if m else 0),
                                             cfg.scoring.sigma)[:, 0], sets[n][1], sets[n][2])
                           for n in ("proxy", "test")}
                    key = f"T'{int(t_start)} w{w:g} {fn}+{v}*{pn}" + (f"+{m}*mem" if m else "")
                    res[key] = row
                    p, t = row["proxy"], row["test"]
                    print(f"{key:38s} proxy {100 * p[0]:5.1f} {100 * p[1]:5.1f} {100 * p[2]:5.1f} obj {np.mean(p):.3f}"
                          f" | test {100 * t[0]:5.1f} {100 * t[1]:5.1f} {100 * t[2]:5.1f}", flush=True)
    (a.cache / f"variants-{'-'.join(map(str, layers))}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
