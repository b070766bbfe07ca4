"""Command line: ddad {demo, synth, train, adapt, evaluate, predict, select, report, serve, benchmark, export,
info}. Thin wrappers over ddad.pipeline."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from . import __version__

log = logging.getLogger("ddad")


class UsageError(ValueError):
    """Bad command-line input, found before torch or a model is loaded."""


def _data_override(args: argparse.Namespace) -> list[str]:
    return [f"data.root={args.data}"] if getattr(args, "data", None) else []


def preflight(args: argparse.Namespace) -> None:
    """Check paths, config and --resume with the standard library only (no torch, no model load), so a wrong
    argument fails in well under a second with a message saying what to do."""
    model = getattr(args, "model", None)
    if model is not None:
        d = Path(model)
        if not d.is_dir():
            raise UsageError(f"--model {d}: no such directory; give a model directory made by `ddad train --out DIR`")
        if not (d / "model.json").is_file():
            raise UsageError(f"--model {d}: no model.json there, so it is not a ddad model directory (`ddad train "
                             "--out DIR` writes one)")
    run = getattr(args, "run", None)  # ddad report
    if run is not None and not Path(run).is_dir():
        raise UsageError(f"{run}: no such directory; give a model directory (its eval/ is used) or an evaluation "
                         "folder written by `ddad evaluate`")
    data = getattr(args, "data", None)
    if data is not None and not Path(data).is_dir():
        raise UsageError(f"--data {data}: no such directory; give the dataset folder (e.g. path/to/mvtec/bottle)")
    if getattr(args, "config", None):
        for c in args.config if isinstance(args.config, list) else [args.config]:
            if not Path(c).is_file():
                raise UsageError(f"--config {c}: no such file; configs/ in the repository has examples")
    for path in getattr(args, "inputs", None) or []:
        _check_input(Path(path))
    if args.command in ("train", "demo"):
        cfg = _config(args, default=_demo_config(args) if args.command == "demo" else None)  # strict YAML check
        if args.command == "train":
            root = cfg.data.root
            if not root:
                raise UsageError("no dataset given: pass --data PATH (the category folder of nominal images)")
            if not Path(root).is_dir():
                raise UsageError(f"dataset folder {root} does not exist; pass --data PATH")
    if getattr(args, "resume", False) and not _checkpoints(Path(args.out)):
        raise UsageError(f"--resume: no checkpoint under {Path(args.out) / 'checkpoints'}; nothing to continue. "
                         "Drop --resume to start training from step 0 there")


def _check_input(p: Path) -> None:
    """An input of `ddad predict`: an image file (its header is read, nothing decoded) or a folder holding one."""
    from .imagefiles import IMAGE_EXTENSIONS

    if p.is_dir():
        if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.rglob("*") if f.is_file()):
            raise UsageError(f"input folder {p} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return
    if not p.is_file():
        raise UsageError(f"input {p}: no such file or folder; give image files or folders of images")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            img.size  # header only
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UsageError(f"input {p} is not an image file Pillow can read (PNG, JPEG, BMP, TIFF, WebP)") from None


def _checkpoints(out: Path) -> list[Path]:
    """Training checkpoints of a run directory (one per stage: checkpoints/last.json or checkpoints/<stage>/last.json)."""
    return sorted((out / "checkpoints").glob("**/last.json")) if (out / "checkpoints").is_dir() else []


def _demo_config(args: argparse.Namespace) -> str:
    return f"demo-{args.method}.yaml" if getattr(args, "method", None) and args.method != "ddad" else "demo.yaml"


def _config(args: argparse.Namespace, default: str | None = None):
    from .config import load_config

    path = args.config or (str(resources.files("ddad") / "configs" / default) if default else None)
    method = getattr(args, "method", None)
    return load_config(path, ([f"method={method}"] if method else []) + _data_override(args) + (args.set or []))


def _dataset(cfg, args: argparse.Namespace, split: str = "test"):
    from .data import load_dataset

    root = args.data or cfg.data.root
    layout = args.layout or cfg.data.layout
    category = args.category or cfg.data.category
    return load_dataset(layout, root, split, category, cfg.data.shape, cfg.data.seed)


def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline import run_train

    cfg = _config(args)
    if args.auto:
        _require_auto_grids([cfg.method])
    det = run_train(cfg, args.out, resume=args.resume, device=args.device)
    if det.calibration is None:  # not rank 0 of a torchrun job
        return 0
    print(f"model saved to {args.out} (threshold {det.calibration.threshold:.4g})")
    if args.auto:
        if cfg.adapt.epochs > 0:  # choose on the features the model will score with, not ImageNet's
            from .pipeline import run_adapt

            run_adapt(args.out, device=args.device)
            print(f"adapted feature extractor saved to {args.out}/extractor.safetensors")
        _auto_select(args.out, type(det), args.device, cfg.data.seed)
    return 0


def _require_auto_grids(methods) -> None:
    """A method without an auto grid fails before anything is trained, not after (baselines have none to need)."""
    from .methods import METHODS
    from .selection import auto_candidates

    for m in methods:
        if m in METHODS:
            auto_candidates(METHODS[m])


def _auto_select(model: str, method_cls, device: str, seed: int, extra: list[str] = (), proxy_source: str | None = None,
                 data: str | None = None, apply: bool = True, strengths: tuple[float, ...] | None = None,
                 draws: int | None = None, max_draws: int | None = None, fallback: bool = True,
                 proxy_shape: str | None = None):
    """The label-free recipe (ddad.selection.auto_select), its table printed."""
    from .selection import STRENGTHS, auto_select

    sel = auto_select(model, method_cls, seed, device, extra, proxy_source, data, apply,
                      strengths=tuple(strengths or STRENGTHS),
                      draws=draws, max_draws=max_draws, fallback=fallback, proxy_shape=proxy_shape)
    _print_selection(sel)
    if apply:
        print(f"saved into {model} (selection.json beside it)")
    return sel


def _print_selection(sel) -> None:
    from .selection import SATURATED

    faint = "" if sel.strength == 1 else (f" at {sel.strength:g} of full contrast (the model as saved found every "
                                          f"defect at {', '.join(f'{k:g}' for k, v in sel.probes.items() if v >= SATURATED)})")
    grew = f", grown from {sel.first_draws}: the ranking on those was uncertain" if sel.grew else ""
    per = f"per defect source ({', '.join(sel.sources)}; {sel.shape} shapes)" + (f" and draw ({sel.draws} draws{grew})" if sel.draws > 1
                                                             else "")
    print(f"\nproxy set: {sel.n_proxy} held-out nominal images and, {per}, the same with synthetic defects{faint}; "
          f"calibrated on {sel.n_calibration}"
          f"{' (the same images: too few to split)' if sel.shared else ''}\n")
    print(sel.table())
    print(f"\nbest: {sel.best or '(as saved)'}")
    for line in sel.warning().splitlines():
        print(f"WARNING: {line}")


def cmd_adapt(args: argparse.Namespace) -> int:
    from .pipeline import run_adapt

    run_adapt(args.model, _data_override(args) + (args.set or []), device=args.device)
    print(f"adapted feature extractor saved to {args.model}/extractor.safetensors")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .pipeline import metrics_markdown, run_evaluate

    det = Detector.load(args.model, args.device, args.backend, args.precision)
    if args.set:
        from .config import apply_overrides

        det.cfg = apply_overrides(det.cfg, args.set)
    ds = _dataset(det.cfg, args)
    res = run_evaluate(det, ds, args.out or Path(args.model) / "eval")
    print(metrics_markdown(res, Path(args.model).name))
    print(f"\nresults in {args.out or Path(args.model) / 'eval'} (metrics.json, metrics.md, scores.json)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import distributed
    from .detector import Detector
    from .pipeline import input_files, run_predict

    w = distributed.init(args.device)  # under torchrun: every process scores its share of the files
    device = f"cuda:{w.local_rank}" if w.size > 1 and str(args.device).startswith("cuda") else args.device
    files = input_files(args.inputs)
    det = Detector.load(args.model, device, args.backend, args.precision)
    t0 = time.perf_counter()
    records = run_predict(det, files, args.out, progress=True)
    seconds = time.perf_counter() - t0
    if not w.main:
        return 0
    for r in records:
        norm = "" if r.normalised_score is None else f"  {r.normalised_score:6.2f}x threshold  {r.decision}"
        print(f"{r.score:8.4f}{norm}  {r.path}")
    print(f"\npictures in {args.out}: <folder>_<stem>_panel.png (input | reconstruction | heatmap | mask), "
          "_heatmap.png, _reconstruction.png, _mask.png; predictions.json")
    print(summary_line(records, seconds, skipped=len(files) - len(records))
          + (f" ({w.size} processes)" if w.size > 1 else ""))
    return 0


def summary_line(records, seconds: float, skipped: int = 0) -> str:
    n = len(records)
    fails = sum(r.decision == "FAIL" for r in records)
    passes = sum(r.decision == "PASS" for r in records)
    verdict = f"{passes} PASS, {fails} FAIL" if passes + fails else "not calibrated: no PASS/FAIL"
    unread = f"; {skipped} unreadable, skipped" if skipped else ""
    return f"{n} image{'s' * (n != 1)}: {verdict}{unread}; {n / max(seconds, 1e-9):.2f} img/s"


def cmd_select(args: argparse.Namespace) -> int:
    from .selection import STRENGTHS, apply_selection, candidates_from_grid, select_settings

    candidates = candidates_from_grid(args.grid, args.tries)
    if args.auto:
        from .checkpoint import load_json
        from .methods import METHODS

        # the method's name from model.json (models from before methods are DDAD); select_settings loads the model
        method = load_json(Path(args.model) / "model.json")["config"].get("method", "ddad")
        _auto_select(args.model, METHODS[method], args.device, args.seed, candidates[1:], args.proxy_source,
                     args.data, args.apply, args.proxy_strength, args.proxy_draws, args.proxy_max_draws,
                     not args.no_fallback, args.proxy_shape)
        return 0
    if args.no_fallback:
        raise ValueError("--no-fallback belongs to --auto (a --grid/--try selection has no fallback): add --auto, or "
                         "leave --no-fallback out")
    if len(candidates) == 1:
        raise ValueError("nothing to choose from: give --grid KEY V1 V2 ... and/or --try K=V[,K=V], or --auto")
    sel = select_settings(args.model, candidates, args.data, args.seed, args.device, proxy_source=args.proxy_source,
                          strengths=tuple(args.proxy_strength or STRENGTHS),
                          draws=args.proxy_draws, max_draws=args.proxy_max_draws, proxy_shape=args.proxy_shape)
    _print_selection(sel)
    if args.apply:
        apply_selection(args.model, sel, args.device)
        print(f"saved into {args.model} (selection.json beside it)")
    elif sel.best:
        print(f"apply it with --apply, or: ddad select ... --apply; the overrides: {sel.best}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    d = Path(args.run)
    eval_dir = d / "eval" if (d / "eval" / "metrics.json").is_file() else d
    out = build_report(eval_dir, args.out, worst=args.worst)
    print(f"report written to {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .detector import Detector
    from .serve import ServeLimits, create_app

    import os

    key = args.api_key or os.environ.get("DDAD_API_KEY") or None
    if not key and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who can reach this port can use the model "
                    "(set --api-key or DDAD_API_KEY)", args.host)
    det = Detector.load(args.model, args.device, args.backend, args.precision)
    limits = ServeLimits(max_bytes=int(args.max_mb * 2**20), max_pixels=args.max_pixels, max_batch=args.max_batch)
    print(f"serving {args.model} on http://{args.host}:{args.port}/  (POST /predict, GET /health, GET /model)"
          + ("; API key required" if key else ""))
    uvicorn.run(create_app(det, limits, api_key=key), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    import os
    from dataclasses import replace

    from .benchmark import run_benchmark
    from .config import load_config

    from .config import METHOD_SECTIONS

    root = args.data or os.environ.get("DDAD_BENCH_DATA")
    configs = []
    for path in args.config or [None]:
        method = load_config(path).method
        # an override of a method's own section (d3ad.k=5) goes to that method's config only
        mine = [o for o in args.set or [] if o.split(".", 1)[0] not in set(METHOD_SECTIONS.values()) - {None}
                or o.split(".", 1)[0] == METHOD_SECTIONS[method]]
        cfg = load_config(path, mine)
        cfg = replace(cfg, data=replace(cfg.data, root=root or cfg.data.root, layout=args.layout or cfg.data.layout,
                                        category=args.category or cfg.data.category))
        if not cfg.data.root:
            raise ValueError("no dataset: pass --data PATH or set DDAD_BENCH_DATA")
        configs.append(cfg)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    steps = tuple(int(n) for n in args.ddad_steps.split(",")) if args.ddad_steps else None
    if args.auto:
        _require_auto_grids(methods)
    print(run_benchmark(configs, methods, args.out, reuse=args.reuse, ddad_steps=steps, device=args.device,
                        auto=args.auto))
    print(f"tables in {args.out}/benchmark.md and benchmark.json")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .runtime import export_detector, fmt_backend

    det = Detector.load(args.model)
    out = export_detector(det, args.model, args.format, args.out)
    print(f"exported to {out} (export.json lists the networks); score with it: ddad evaluate|predict|serve "
          f"--model {args.model} --backend {fmt_backend(args.format)}"
          + (" [--precision bf16]" if args.format == "openvino" else ""))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .diffusion import PRESETS, build_unet, count_parameters
    from .features import BACKBONES
    from .methods import METHODS

    print(f"ddad {__version__}\n\nmethods (config key `method`, or --method):")
    for name, cls in METHODS.items():
        print(f"  {name:6s} {cls.summary}")
        grid = " x ".join(f"{k} {{{', '.join(map(str, v))}}}" for k, v in cls.auto_grid.items())
        print(f"         --auto tries: {grid or 'nothing (no default grid; ddad select --grid ...)'}")
        shape, sources = cls.auto_proxy
        print(f"         on proxy defects: {shape} shapes filled from {sources.replace(',', ' and ')}")
    print("\nUNet presets:")
    for name, p in PRESETS.items():
        n = count_parameters(build_unet(name, p.image_size, p.in_channels)) / 1e6
        where = f"{p.image_size} px" if p.in_channels == 3 else f"{p.in_channels}x{p.image_size}x{p.image_size} latents"
        print(f"  {name:10s} {n:6.2f} M parameters at {where}  {p.note}")
    print("\nfeature backbones: " + ", ".join(BACKBONES))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data.synthetic import SyntheticSpec, make_synthetic_dataset
    from .pipeline import metrics_markdown, run_adapt, run_evaluate, run_predict, run_train

    t0 = time.perf_counter()
    out = Path(args.out)
    cfg = _config(args, default=_demo_config(args))
    name = f"{cfg.method.upper()}-{cfg.sampling.steps}"
    print(f"[1/5] generating the synthetic '{args.category}' dataset (MVTec layout) in {out / 'data'}")
    root = make_synthetic_dataset(out / "data", SyntheticSpec(category=args.category, size=cfg.data.image_size,
                                                              height=cfg.data.image_height,
                                                              seed=cfg.data.seed))
    cfg = replace(cfg, data=replace(cfg.data, root=str(root), layout="mvtec"))
    ckpts = _checkpoints(out / "model")
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
    ds = _dataset(cfg, argparse.Namespace(data=None, layout=None, category=None))
    res = run_evaluate(det, ds, out / "model" / "eval", name=f"{name} (demo)")
    print("[5/5] writing predictions for one image per defect type")
    picks = {}
    for it in ds.items:
        picks.setdefault(it.defect_type, it.image)
    run_predict(det, list(picks.values()), out / "predictions")
    from .report import build_report

    report = build_report(out / "model" / "eval")
    print("\n" + metrics_markdown(res, f"{name} demo"))
    print(f"\nimage AUROC {100 * res.metrics.image_auroc:.1f}  pixel AUROC {100 * res.metrics.pixel_auroc:.1f}  "
          f"PRO {100 * res.metrics.pro:.1f}   ({time.perf_counter() - t0:.0f} s in all)")
    print(f"model: {out / 'model'}   metrics: {out / 'model' / 'eval'}   pictures: {out / 'predictions'}")
    print(f"report: {report}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import CLEAR_DEFECTS, DEFECTS, SUBTLE_DEFECTS, SyntheticSpec, make_synthetic_dataset

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddad", description="Anomaly detection with denoising diffusion models (DDAD, D3AD).")
    p.add_argument("--version", action="version", version=f"ddad {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp, config=True, device=True):
        if config:
            sp.add_argument("--config", help="YAML config (see configs/)")
            sp.add_argument("--method", help="method: ddad (default), d3ad, glad, ran (see `ddad info`); same as --set method=NAME")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set sampling.w=4")
        if device:
            sp.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")

    def backend_args(sp):
        sp.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino"],
                        help="what runs the networks: torch (default), or the model's `ddad export` on ONNX Runtime "
                             "or OpenVINO (CPU)")
        sp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-all"],
                        help="fp32 (default); bf16: the diffusion networks in bf16, the feature backbone in fp32; "
                             "bf16-all: the backbone too (torch autocast, or OpenVINO's bf16 on CPUs with "
                             "AVX512-BF16/AMX)")

    def data_args(sp):
        sp.add_argument("--data", help="dataset folder (default: the model's data.root)")
        sp.add_argument("--layout", help="dataset layout: mvtec, mpdd, btad, visa, mtd, folder")
        sp.add_argument("--category", help="category inside the dataset folder")

    s = sub.add_parser("demo", help="full pipeline on generated data, a few minutes on a CPU")
    common(s)
    s.add_argument("--out", default="ddad_demo", help="output folder (default: ddad_demo)")
    s.add_argument("--category", default="object", choices=["object", "texture", "surface", "grain"])
    s.set_defaults(func=cmd_demo)
    # (--method picks the demo config too: src/ddad/configs/demo-<method>.yaml)

    s = sub.add_parser("synth", help="write a seeded synthetic category (MVTec layout): textures, surfaces, objects, "
                                     "grey, non-square, subtle or small defects")
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
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("train", help="train a diffusion model on nominal images and calibrate it")
    common(s)
    s.add_argument("--out", required=True, help="run directory (model, checkpoints, resolved config)")
    s.add_argument("--data", help="dataset folder of nominal images (same as --set data.root=PATH)")
    s.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    s.add_argument("--auto", action="store_true",
                   help="after training, run the config's domain adaptation (`ddad adapt`, when adapt.epochs > 0), "
                        "then choose the inference settings without labels (`ddad select --auto --apply`: the method's "
                        "default grid on held-out nominal images with synthetic defects)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("adapt", help="domain adaptation of the feature extractor (Eq. 10)")
    common(s, config=False)
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--data", help="dataset folder of nominal images (default: the model's data.root)")
    s.set_defaults(func=cmd_adapt)

    s = sub.add_parser("evaluate", help="metrics table on a labelled test set")
    common(s, config=False)
    s.add_argument("--model", required=True)
    s.add_argument("--out", help="results folder (default: <model>/eval)")
    data_args(s)
    backend_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="score images, write heatmaps and reconstructions")
    s.add_argument("--model", required=True)
    s.add_argument("inputs", nargs="+", help="image files or folders")
    s.add_argument("--out", default="predictions")
    s.add_argument("--device", default="cpu")
    backend_args(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("select", help="choose inference settings without labels: synthetic defects in the held-out "
                                      "nominal images (ddad.selection)")
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--grid", nargs="+", action="append", default=[], metavar=("KEY", "VALUE"),
                   help="one axis of the candidate grid: a key and its values, e.g. --grid glad.t_min 100 200 350; "
                        "repeat for more axes (their product is tried)")
    s.add_argument("--try", dest="tries", action="append", default=[], metavar="K=V[,K=V]",
                   help="one more candidate, e.g. --try sampling.start_level=500,glad.t_min=150")
    s.add_argument("--data", help="dataset folder of the nominal images (default: the model's data.root)")
    s.add_argument("--seed", type=int, default=0, help="seed of the synthetic defects")
    s.add_argument("--proxy-source", help="content of the synthetic defects: grid (the image's own shuffled cells), "
                                          "patch (the image displaced, colour-jittered), texture (generated; use it "
                                          "for stochastic textures, whose shuffled cells look nominal) or a folder of "
                                          "texture images; several comma-separated give one defective copy each per "
                                          "draw (default: the config's, grid; with --auto: the method's, "
                                          "Detector.auto_proxy)")
    s.add_argument("--proxy-shape", choices=("perlin", "cutpaste"),
                   help="shape of the synthetic defects: perlin (DRAEM's blobs) or cutpaste (rectangles and scars) "
                        "(default: the config's, perlin; with --auto: the method's)")
    s.add_argument("--proxy-strength", nargs="+", type=float, metavar="S",
                   help="the synthetic defects' contrast, 1 = full (DRAEM's blend); several values are tried in turn "
                        "while the model as saved finds every defect (proxy image AUROC ~1), and the candidates are "
                        "scored at the first it does not (default: 1 0.5 0.25); one value: that contrast only")
    s.add_argument("--proxy-draws", type=int, metavar="K",
                   help="independent draws of synthetic defects (K defective copies of each image per source): the "
                        "candidates are ranked on all draws pooled, and the table's 'draws won' says on how many draws "
                        "alone each was the best (a warning when the best won fewer than half: the choice is "
                        "uncertain). Cost: about (1 + K * sources) / (1 + sources) times one draw (default: 3)")
    s.add_argument("--proxy-max-draws", type=int, metavar="M",
                   help="when the choice on the first K draws is uncertain, the proxy grows to M draws (the first K "
                        "kept, the rest measured) and the candidates are ranked again on all of them, once; the cost "
                        "of an uncertain choice grows accordingly (default: 3 K; K: never)")
    s.add_argument("--auto", action="store_true",
                   help="the label-free recipe: the method's default grid (Detector.auto_grid; --grid/--try add to it) "
                        "on the method's proxy (Detector.auto_proxy; by default defects filled from the image's own "
                        "cells AND a generated texture)")
    s.add_argument("--no-fallback", action="store_true",
                   help="with --auto: keep the proxy's best even where it cannot rank the candidates (no candidate "
                        "finds the synthetic defects, or one source's; by default the method's fallback is chosen "
                        "there: DDAD's memory-led map, T' 250, v 1, m 16 on feature layers 1-3)")
    s.add_argument("--apply", action="store_true",
                   help="save the best candidate into the model (re-calibrated) and write selection.json")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    s.set_defaults(func=cmd_select)

    s = sub.add_parser("report", help="self-contained HTML report from an evaluation's saved files")
    s.add_argument("run", help="model directory (uses its eval/) or an evaluation folder")
    s.add_argument("--out", help="HTML file (default: <eval dir>/report.html)")
    s.add_argument("--worst", type=int, default=40, help="images shown, hardest first")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("serve", help="REST API + browser page for a trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; set an API key)")
    s.add_argument("--port", type=int, default=8000, help="port")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--max-mb", type=float, default=20.0, help="largest upload in MiB (larger: 413)")
    s.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest image in pixels, read from the header before decoding (larger: 413)")
    s.add_argument("--max-batch", type=int, default=8, help="requests scored together")
    s.add_argument("--api-key", default=None,
                   help="require this key (X-API-Key header or Authorization: Bearer) on /predict and /model; "
                        "default: env DDAD_API_KEY, else no key (fine on localhost)")
    backend_args(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("benchmark", help="train/evaluate methods and baselines on one category, one table")
    common(s, config=False)
    s.add_argument("--config", action="append",
                   help="YAML config of one method (its `method:` key says which); repeat, one per method")
    s.add_argument("--data", help="dataset folder (or env DDAD_BENCH_DATA)")
    s.add_argument("--layout", help="dataset layout (default: the config's)")
    s.add_argument("--category", help="category inside the dataset folder")
    s.add_argument("--methods", default="ddad,patchcore",
                   help="comma list of methods (ddad, d3ad, glad, ran; see `ddad info`) and baselines (patchcore)")
    s.add_argument("--steps", "--ddad-steps", dest="ddad_steps", default=None,
                   help="denoising-step variants to evaluate for every diffusion method, comma list (default: "
                        "10,5 for ddad, the config's sampling.steps for the others)")
    s.add_argument("--out", default="runs/benchmark")
    s.add_argument("--reuse", action="store_true", help="reuse trained models in --out")
    s.add_argument("--auto", action="store_true",
                   help="choose each diffusion method's inference settings without labels before evaluating it "
                        "(`ddad select --auto --apply`: the label-free recipe); the rows name the choice")
    s.set_defaults(func=cmd_benchmark)

    s = sub.add_parser("export", help="export the inference networks to ONNX or OpenVINO (then --backend on "
                                      "evaluate, predict, serve)")
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--format", required=True, choices=["onnx", "openvino"])
    s.add_argument("--out", help="folder (default: <model>/export/<format>, where --backend looks)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("info", help="UNet presets with parameter counts, backbones")
    s.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        preflight(args)
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
