"""ddad demo, synth, train, adapt: making data and models. Each command's arguments sit above its handler."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_common, checkpoints, data_override, demo_config, load_cli_config, test_dataset
from .selecting import auto_select_and_print, require_auto_grids


def args_demo(s: argparse.ArgumentParser) -> None:
    add_common(s)  # --method picks the demo config too: src/ddad/configs/demo-<method>.yaml
    s.add_argument("--out", default="ddad_demo", help="output folder (default: ddad_demo)")
    s.add_argument("--category", default="object", choices=["object", "texture", "surface", "grain"])


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..data.synthetic import SyntheticSpec, make_synthetic_dataset
    from ..pipeline import metrics_markdown, run_adapt, run_evaluate, run_predict, run_train

    t0 = time.perf_counter()
    out = Path(args.out)
    cfg = load_cli_config(args, default=demo_config(args))
    name = f"{cfg.method.upper()}-{cfg.sampling.steps}"
    print(f"[1/5] generating the synthetic '{args.category}' dataset (MVTec layout) in {out / 'data'}")
    root = make_synthetic_dataset(out / "data", SyntheticSpec(category=args.category, size=cfg.data.image_size,
                                                              height=cfg.data.image_height,
                                                              seed=cfg.data.seed))
    cfg = replace(cfg, data=replace(cfg.data, root=str(root), layout="mvtec"))
    ckpts = checkpoints(out / "model")
    if ckpts:
        import json

        done = ", ".join(f"{c.parent.name if c.parent.name != 'checkpoints' else 'unet'} at step "
                         f"{json.loads(c.read_text()).get('step', '?')}" for c in ckpts)
        print(f"[2/5] resuming training of {cfg.method} from its checkpoints in {out / 'model' / 'checkpoints'} "
              f"({done}; {cfg.train.steps} steps in all)")
    else:
        print(f"[2/5] training {cfg.method} ({cfg.model.preset} UNet, {cfg.train.steps} steps)")
    run_train(cfg, out / "model", resume=bool(ckpts), device=args.device)
    print(f"[3/5] domain adaptation of the feature extractor ({cfg.adapt.epochs} epoch(s))")
    det = run_adapt(out / "model", device=args.device)
    print("[4/5] evaluating on the synthetic test set")
    ds = test_dataset(cfg, argparse.Namespace(data=None, layout=None, category=None))
    res = run_evaluate(det, ds, out / "model" / "eval", name=f"{name} (demo)")
    print("[5/5] writing predictions for one image per defect type")
    picks = {}
    for it in ds.items:
        picks.setdefault(it.defect_type, it.image)
    run_predict(det, list(picks.values()), out / "predictions")
    from ..report import build_report

    report = build_report(out / "model" / "eval")
    print("\n" + metrics_markdown(res, f"{name} demo"))
    print(f"\nimage AUROC {100 * res.metrics.image_auroc:.1f}  pixel AUROC {100 * res.metrics.pixel_auroc:.1f}  "
          f"PRO {100 * res.metrics.pro:.1f}   ({time.perf_counter() - t0:.0f} s in all)")
    print(f"model: {out / 'model'}   metrics: {out / 'model' / 'eval'}   pictures: {out / 'predictions'}")
    print(f"report: {report}")
    return 0


def args_synth(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, help="folder; the category is written to OUT/CATEGORY")
    s.add_argument("--category", default="object", choices=["object", "texture", "surface", "grain"])
    s.add_argument("--width", type=int, default=128, help="image width in pixels (default 128)")
    s.add_argument("--height", type=int, help="image height in pixels (default: the width)")
    s.add_argument("--gray", action="store_true", help="grey images (8-bit greyscale PNGs)")
    s.add_argument("--defects", default="clear", help="comma list of defect kinds, or clear (default), subtle, all")
    s.add_argument("--defect-scale", type=float, default=1.0, help="every defect's size times this (default 1)")
    s.add_argument("--n-train", type=int, default=120)
    s.add_argument("--n-test-good", type=int, default=20)
    s.add_argument("--n-test-per-defect", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import CLEAR_DEFECTS, DEFECTS, SUBTLE_DEFECTS, SyntheticSpec, make_synthetic_dataset

    groups = {"clear": CLEAR_DEFECTS, "subtle": SUBTLE_DEFECTS, "all": DEFECTS}
    defects: list[str] = []
    for d in args.defects.split(","):
        defects += groups.get(d.strip(), (d.strip(),))
    if args.gray and args.defects in ("clear", "all"):
        defects = [d for d in defects if d != "colour"]  # no colour on grey images
    unknown = sorted(set(defects) - set(DEFECTS))
    if unknown:
        raise SystemExit(f"unknown defects {unknown}: expected a comma list of {', '.join(DEFECTS)} or one of "
                         f"{', '.join(groups)}")
    spec = SyntheticSpec(category=args.category, size=args.width, height=args.height, gray=args.gray,
                         defect_scale=args.defect_scale, defects=tuple(dict.fromkeys(defects)), n_train=args.n_train,
                         n_test_good=args.n_test_good, n_test_per_defect=args.n_test_per_defect, seed=args.seed)
    root = make_synthetic_dataset(args.out, spec)
    h, w = spec.shape
    print(f"{root}: {spec.n_train} train/good, {spec.n_test_good} test/good, {spec.n_test_per_defect} each of "
          f"{', '.join(spec.defects)}; {w}x{h} px{' grey' if spec.gray else ''}, defect scale {spec.defect_scale}, "
          f"seed {spec.seed} (MVTec layout: --layout mvtec --data {root})")
    return 0


def args_train(s: argparse.ArgumentParser) -> None:
    add_common(s)
    s.add_argument("--out", required=True, help="run directory (model, checkpoints, resolved config)")
    s.add_argument("--data", help="dataset folder of nominal images (same as --set data.root=PATH)")
    s.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    s.add_argument("--auto", action="store_true",
                   help="then adapt and choose the inference settings without labels (docs/selection.md)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..pipeline import run_train

    cfg = load_cli_config(args)
    if args.auto:
        require_auto_grids([cfg.method])
    det = run_train(cfg, args.out, resume=args.resume, device=args.device)
    if det.calibration is None:  # not rank 0 of a torchrun job
        return 0
    print(f"model saved to {args.out} (threshold {det.calibration.threshold:.4g})")
    if args.auto:
        if cfg.adapt.epochs > 0:  # choose on the features the model will score with, not ImageNet's
            from ..pipeline import run_adapt

            run_adapt(args.out, device=args.device)
            print(f"adapted feature extractor saved to {args.out}/extractor.safetensors")
        auto_select_and_print(args.out, args.device, cfg.data.seed)
    return 0


def args_adapt(s: argparse.ArgumentParser) -> None:
    add_common(s, config=False)
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--data", help="dataset folder of nominal images (default: the model's data.root)")


def cmd_adapt(args: argparse.Namespace) -> int:
    from ..pipeline import run_adapt

    run_adapt(args.model, data_override(args) + (args.set or []), device=args.device)
    print(f"adapted feature extractor saved to {args.model}/extractor.safetensors")
    return 0


COMMANDS = {
    "demo": ("full pipeline on generated data, a few minutes on a CPU", args_demo, cmd_demo, {}),
    "synth": ("write a seeded synthetic category (MVTec layout)", args_synth, cmd_synth, {}),
    "train": ("train a diffusion model on nominal images and calibrate it", args_train, cmd_train, {}),
    "adapt": ("domain adaptation of the feature extractor (Eq. 10)", args_adapt, cmd_adapt, {}),
}
