"""The official DDAD code (arimousa/DDAD) and ddad, timed side by side in one process on the same images.

    python benchmarks/official.py /path/to/DDAD --data ../shared/data/mvtec_bottle_256/bottle --work /tmp/official

/path/to/DDAD is a checkout of the official repository (nothing is downloaded; e.g. `git clone` it elsewhere, or
write out a snapshot's files with `git show`). Its own modules are imported from there and run as its detection
loop runs them (ddad.py): `Reconstruction(unet, config)(x, x, w)[-1]` (conditioned DDIM from 250 in steps of 25: 10
UNet calls) then `heat_map(x0, x, FE, config)` (WideResNet101 on the input and on the reconstruction: 2 backbone
passes), the image score the map's maximum. Its UNet is main.py's `build_model` (DDAD, not DDAD-S), the backbone
feature_extractor.py's wide_resnet101_2, both in eval mode with seeded random weights (the cost of trained ones).

ddad runs configs/mvtec/paper.yaml (256 px, the `ddad` UNet preset = the same guided-diffusion architecture, DDAD-10,
WideResNet101 layers 2-3, seeded random weights) through `Detector.predict`, on each backend of --backends.

Both sides: the same N test images, batch sizes --batches, --threads threads, one warm-up batch of each size, then
--rounds rounds interleaved (every side and batch size once per round, so a busy machine slows all alike), median
s/img. The allocator policy is the process's, so both sides share it: ddad's (ddad.allocator, as ddad runs), or
glibc's defaults with DDAD_MALLOC=glibc (as the official code runs). --flops-only prints the FLOPs per image and the
matmul peak alone (a minute).

Printed: the UNet and backbone images each side processed per image (equal work), the FLOPs per image of each side
(torch.utils.flop_counter on one image), the machine's measured matmul peak (fp32, bf16) and the fraction of the
peak of its precision each side reaches, and per ddad backend the largest image-score difference to ddad eager fp32
(relative to the scores' spread).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backends import _load, _untrained_model_dir  # noqa: E402
from ddad.allocator import keep_freed_memory  # noqa: E402
from ddad.config import load_config  # noqa: E402
from ddad.data import load_dataset  # noqa: E402
from ddad.pipeline import stack_images  # noqa: E402
from ddad.runtime import export_detector  # noqa: E402

DEFAULT = "torch:fp32,onnxruntime:fp32,openvino:fp32,openvino:bf16"


class Counter:
    """Images through a module (forward hooks; an exported backend's forward is swapped in place, so hooks fire)."""

    def __init__(self, *modules: torch.nn.Module):
        self.images = 0
        self.calls = 0
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, args, out):
        self.calls += 1
        self.images += int(args[0].shape[0])

    def reset(self):
        self.images = self.calls = 0


class Official:
    """The official repository's detection path for one batch, as ddad.py runs it (minus metrics and plots)."""

    def __init__(self, root: Path, size: int, w: float, seed: int):
        sys.path.insert(0, str(root))
        self.unet_mod = importlib.import_module("unet")
        resnet = importlib.import_module("resnet")
        recon = importlib.import_module("reconstruction")
        amap = importlib.import_module("anomaly_map")
        sys.path.remove(str(root))
        from omegaconf import OmegaConf

        self.config = OmegaConf.load(root / "config.yaml")
        self.config.model.device = "cpu"
        self.config.data.image_size = size
        self.config.model.w = w
        torch.manual_seed(seed)
        unet = self.unet_mod.UNetModel(size, 64, dropout=0.0, n_heads=4, in_channels=3)  # main.py build_model
        self.unet = torch.nn.DataParallel(unet).eval()  # as main.py wraps it (on the CPU it calls the module)
        torch.manual_seed(seed)
        fe = resnet.wide_resnet101_2(pretrained=False)
        self.fe = torch.nn.DataParallel(fe).eval()
        self.reconstruction = recon.Reconstruction(self.unet, self.config)
        self.heat_map = amap.heat_map
        self.counters = {"UNet": Counter(unet), "backbone": Counter(fe)}

    @torch.no_grad()
    def scores(self, x01: torch.Tensor) -> torch.Tensor:
        x = x01 * 2 - 1  # the official dataset's transform: [0, 1] -> [-1, 1]
        x0 = self.reconstruction(x, x, self.config.model.w)[-1]
        anomaly_map = self.heat_map(x0, x, self.fe, self.config)
        return anomaly_map.flatten(1).amax(1)


def peak_flops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Matmul FLOP/s on this machine (n x n, best of reps): the practical peak of the GEMM library."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_image(fn, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn(x[:1])
    return float(fc.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("official", type=Path, help="checkout of github.com/arimousa/DDAD (read only)")
    p.add_argument("--data", required=True, help="dataset folder (its test split is scored)")
    p.add_argument("--config", default=str(HERE.parent / "configs/mvtec/paper.yaml"), help="ddad's config")
    p.add_argument("--work", type=Path, required=True, help="folder for ddad's untrained model and its exports")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default=DEFAULT, help=f"ddad backend:precision list (default {DEFAULT})")
    p.add_argument("--flops-only", action="store_true", help="FLOPs per image and the matmul peak, no timing")
    p.add_argument("--set", action="append", default=[], help="override of ddad's config (e.g. data.image_size=64)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # process-wide: both sides run with it, or (DDAD_MALLOC=glibc) both without
    malloc = "freed memory kept (ddad.allocator)" if kept else "glibc's defaults"

    cfg = load_config(args.config, [f"data.root={args.data}", *args.set])
    size = cfg.data.image_size
    test = load_dataset(cfg.data.layout, args.data, "test", cfg.data.category, cfg.data.shape, cfg.data.seed)
    x = stack_images(test)[: args.images]
    official = Official(args.official, size, cfg.sampling.w, seed=0)
    if args.flops_only:
        from ddad.detector import Detector
        from backends import _random_backbone

        args.work.mkdir(parents=True, exist_ok=True)
        det = Detector.create(_random_backbone(cfg, args.work))
        det.calibrate(x[:1])
        f_off = flops_per_image(official.scores, x)
        f_ddad = flops_per_image(lambda xb: det.predict(xb).scores, x)
        peak = {"fp32": peak_flops(torch.float32), "bf16": peak_flops(torch.bfloat16)}
        print(f"{size} px: FLOPs per image official {f_off / 1e9:.0f} G, ddad {f_ddad / 1e9:.0f} G; matmul peak "
              f"({args.threads} threads) fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s; "
              f"at the peak: ddad fp32 {f_ddad / peak['fp32']:.2f} s/img, bf16 {f_ddad / peak['bf16']:.2f} s/img")
        return
    model = _untrained_model_dir(cfg, args.work, True, x)
    runs = [tuple(b.split(":")) for b in args.backends.split(",")]
    for fmt, needed in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        if any(b == needed for b, _ in runs) and not (model / "export" / fmt).exists():
            export_detector(_load(model, "torch", "fp32"), model, fmt)
    batches = [int(b) for b in args.batches.split(",")]
    sides: dict[str, tuple] = {"official": (official.scores, official.counters)}
    for b, prec in runs:
        det = _load(model, b, prec)
        counters = {"UNet": Counter(det.unet), "backbone": Counter(det.extractor.body)}
        sides[f"ddad {b} {prec}"] = (det, counters)

    def scorer(side: str, bs: int):
        obj = sides[side][0]
        if side == "official":
            return obj
        obj.cfg = replace(obj.cfg, sampling=replace(obj.cfg.sampling, batch_size=bs))  # predict's own batches
        return lambda xb: obj.predict(xb).scores

    def run(side: str, bs: int) -> tuple[float, torch.Tensor]:
        fn = scorer(side, bs)
        t0 = time.perf_counter()
        scores = torch.cat([fn(x[s : s + bs]) for s in range(0, len(x), bs)])
        return (time.perf_counter() - t0) / len(x), scores

    for side in sides:  # warm-up: one batch of every timed shape; the work each side does per image
        for c in sides[side][1].values():
            c.reset()
        for bs in batches:
            scorer(side, bs)(x[:bs])
    work = {s: {k: c.images / sum(batches) for k, c in sides[s][1].items()} for s in sides}
    times = {(s, bs): [] for s in sides for bs in batches}
    scores = {}
    for r in range(args.rounds):
        for bs in batches:
            for s in sides:
                t, scores[(s, bs)] = run(s, bs)
                times[(s, bs)].append(t)
                print(f"round {r + 1}/{args.rounds} batch {bs} {s}: {t:.2f} s/img", flush=True)

    flops = {"official": flops_per_image(official.scores, x)}
    ref_det = sides[f"ddad {runs[0][0]} {runs[0][1]}"][0]
    flops["ddad"] = flops_per_image(lambda xb: ref_det.predict(xb).scores, x)
    peak = {"fp32": peak_flops(torch.float32), "bf16": peak_flops(torch.bfloat16)}
    print(f"\n{len(x)} images at {size} px, {args.threads} threads, {args.rounds} rounds, median s/img; "
          f"torch {torch.__version__}; malloc for both sides: {malloc}")
    print(f"matmul peak of this machine (2048^3, {args.threads} threads): fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"FLOPs per image: official {flops['official'] / 1e9:.0f} G, ddad {flops['ddad'] / 1e9:.0f} G "
          "(torch.utils.flop_counter: convolutions, matmuls, attention)")
    for s in sides:
        print(f"work per image, {s}: " + ", ".join(f"{v:g} {k} images" for k, v in work[s].items()))
    print("\n| side | batch | s/img | official / this | GFLOP/s | of its peak | max score diff / spread |")
    print("|---|---|---|---|---|---|---|")
    first = f"ddad {runs[0][0]} {runs[0][1]}"
    for bs in batches:
        t_off = statistics.median(times[("official", bs)])
        ref = scores[(first, bs)]
        spread = float(ref.max() - ref.min()) or 1.0
        for s in sides:
            t = statistics.median(times[(s, bs)])
            f = flops["official" if s == "official" else "ddad"]
            diff = "-" if s == "official" else f"{float((scores[(s, bs)] - ref).abs().max()) / spread:.1e}"
            top = peak["bf16" if s.split()[-1].startswith("bf16") else "fp32"]  # the peak of the side's precision
            print(f"| {s} | {bs} | {t:.2f} | {t_off / t:.2f}x | {f / t / 1e9:.0f} | {f / t / top:.0%} "
                  f"| {diff} |")


if __name__ == "__main__":
    main()
