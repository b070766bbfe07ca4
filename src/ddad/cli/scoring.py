"""ddad evaluate, predict, report, serve, export, convert, info: using a trained model. Each command's arguments
sit above its handler."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .. import __version__
from .common import UsageError, add_backend, add_common, add_data, test_dataset

log = logging.getLogger("ddad")


def args_evaluate(s: argparse.ArgumentParser) -> None:
    add_common(s, config=False)
    s.add_argument("--model", required=True)
    s.add_argument("--out", help="results folder (default: <model>/eval)")
    add_data(s)
    add_backend(s)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..detector import Detector
    from ..pipeline import metrics_markdown, run_evaluate

    det = Detector.load(args.model, args.device, args.backend, args.precision)
    if args.set:
        from ..config import apply_overrides

        det.cfg = apply_overrides(det.cfg, args.set)
    ds = test_dataset(det.cfg, args)
    res = run_evaluate(det, ds, args.out or Path(args.model) / "eval")
    print(metrics_markdown(res, Path(args.model).name))
    print(f"\nresults in {args.out or Path(args.model) / 'eval'} (metrics.json, metrics.md, scores.json)")
    return 0


def args_predict(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True)
    s.add_argument("inputs", nargs="+", help="image files or folders")
    s.add_argument("--out", default="predictions")
    s.add_argument("--device", default="cpu")
    add_backend(s)


def cmd_predict(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..detector import Detector
    from ..pipeline import input_files, run_predict

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


def args_report(s: argparse.ArgumentParser) -> None:
    s.add_argument("run", help="model directory (uses its eval/) or an evaluation folder")
    s.add_argument("--out", help="HTML file (default: <eval dir>/report.html)")
    s.add_argument("--worst", type=int, default=40, help="images shown, hardest first")


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_report

    d = Path(args.run)
    eval_dir = d / "eval" if (d / "eval" / "metrics.json").is_file() else d
    out = build_report(eval_dir, args.out, worst=args.worst)
    print(f"report written to {out}")
    return 0


def args_serve(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; set a key)")
    s.add_argument("--port", type=int, default=8000, help="port")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--max-mb", type=float, default=20.0, help="largest upload in MiB (larger: 413)")
    s.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest image in pixels, read from the image header before decoding")
    s.add_argument("--max-batch", type=int, default=8, help="requests scored together")
    s.add_argument("--api-key", default=None,
                   help="key required on /predict and /model (default: env DDAD_API_KEY, else none)")
    add_backend(s)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..detector import Detector
    from ..serve import ServeLimits, create_app

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


def args_export(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", required=True, help="model directory from `ddad train`")
    s.add_argument("--format", required=True, choices=["onnx", "openvino"])
    s.add_argument("--out", help="folder (default: <model>/export/<format>, where --backend looks)")


def cmd_export(args: argparse.Namespace) -> int:
    from ..detector import Detector
    from ..runtime import export_detector, fmt_backend

    det = Detector.load(args.model)
    out = export_detector(det, args.model, args.format, args.out)
    print(f"exported to {out} (export.json lists the networks); score with it: ddad evaluate|predict|serve "
          f"--model {args.model} --backend {fmt_backend(args.format)}"
          + (" [--precision bf16]" if args.format == "openvino" else ""))
    return 0


def args_convert(s: argparse.ArgumentParser) -> None:
    s.add_argument("checkpoint", help="Lightning checkpoint (.ckpt) of a ddad.anomalib model (anomalib's Engine)")
    s.add_argument("--out", required=True, help="model directory to write (ddad evaluate|predict|serve --model OUT)")


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        from ..anomalib import checkpoint_to_model_dir
    except ImportError as e:
        raise UsageError(f"{e}") from e
    out = checkpoint_to_model_dir(args.checkpoint, args.out)
    print(f"wrote the model directory {out}; use it with ddad evaluate|predict|serve|export --model {out}")
    return 0


def args_info(s: argparse.ArgumentParser) -> None:
    pass


def cmd_info(args: argparse.Namespace) -> int:
    from ..diffusion import PRESETS, build_unet, count_parameters
    from ..features import BACKBONES
    from ..methods import METHODS, RECIPES

    print(f"ddad {__version__}\n\nmethods (config key `method`, or --method):")
    for name, cls in METHODS.items():
        print(f"  {name:6s} {cls.summary}")
        recipe = RECIPES.get(name)
        grid = " x ".join(f"{k} {{{', '.join(map(str, v))}}}" for k, v in (recipe.grid if recipe else {}).items())
        print(f"         --auto tries: {grid or 'nothing (no recipe; ddad select --grid ...)'}")
        if recipe:
            print(f"         on proxy defects: {recipe.proxy_shape} shapes filled from "
                  f"{recipe.proxy_sources.replace(',', ' and ')}, on the part")
    print("\nUNet presets:")
    for name, p in PRESETS.items():
        n = count_parameters(build_unet(name, p.image_size, p.in_channels)) / 1e6
        where = f"{p.image_size} px" if p.in_channels == 3 else f"{p.in_channels}x{p.image_size}x{p.image_size} latents"
        print(f"  {name:10s} {n:6.2f} M parameters at {where}  {p.note}")
    print("\nfeature backbones: " + ", ".join(BACKBONES))
    return 0


COMMANDS = {
    "evaluate": ("metrics table on a labelled test set", args_evaluate, cmd_evaluate, {}),
    "predict": ("score images, write heatmaps and reconstructions", args_predict, cmd_predict, {}),
    "report": ("self-contained HTML report from an evaluation's saved files", args_report, cmd_report, {}),
    "serve": ("REST API + browser page for a trained model", args_serve, cmd_serve,
              {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}),
    "export": ("export the inference networks to ONNX or OpenVINO", args_export, cmd_export, {}),
    "convert": ("a ddad.anomalib Lightning checkpoint as a ddad model directory", args_convert, cmd_convert, {}),
    "info": ("methods, UNet presets with parameter counts, backbones", args_info, cmd_info, {}),
}
