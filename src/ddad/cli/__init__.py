"""Command line: ddad {demo, synth, train, adapt, evaluate, predict, select, report, serve, benchmark, export,
info}. Thin wrappers over ddad.pipeline; each command's arguments sit beside its handler (training, scoring,
selecting), and nothing here imports torch before a command runs (a wrong argument fails in well under a second)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import __version__
from .common import UsageError, checkpoints, demo_config, load_cli_config
from .scoring import COMMANDS as SCORING
from .selecting import COMMANDS as SELECTING
from .training import COMMANDS as TRAINING

__all__ = ["main", "build_parser", "preflight", "UsageError", "COMMANDS"]

log = logging.getLogger("ddad")
# command -> (one-line help, adds its arguments, handler, parser options), from the modules beside their handlers
COMMANDS = {**TRAINING, **SCORING, **SELECTING}
ORDER = (  # as `ddad --help` lists them
"demo", "synth", "train", "adapt", "evaluate", "predict", "select", "report", "serve", "benchmark", "export",
         "convert", "info")


def preflight(args: argparse.Namespace) -> None:
    """Check paths, config and --resume with the standard library only (no torch, no model load), so a wrong
    argument fails in well under a second with a message saying what to do."""
    model = getattr(args, "model", None)
    if model is not None:
        d = Path(model)
        if d.is_file() and d.suffix == ".ckpt":
            raise UsageError(f"--model {d}: a Lightning checkpoint, not a model directory. For a ddad.anomalib "
                             f"model's checkpoint, `ddad convert {d} --out DIR` writes its model directory (the "
                             "model's run_dir already is one)")
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
        cfg = load_cli_config(args, default=demo_config(args) if args.command == "demo" else None)  # strict YAML check
        if args.command == "train":
            root = cfg.data.root
            if not root:
                raise UsageError("no dataset given: pass --data PATH (the category folder of nominal images)")
            if not Path(root).is_dir():
                raise UsageError(f"dataset folder {root} does not exist; pass --data PATH")
    if getattr(args, "resume", False) and not checkpoints(Path(args.out)):
        raise UsageError(f"--resume: no checkpoint under {Path(args.out) / 'checkpoints'}; nothing to continue. "
                         "Drop --resume to start training from step 0 there")


def _check_input(p: Path) -> None:
    """An input of `ddad predict`: an image file (its header is read, nothing decoded) or a folder holding one."""
    from ..imagefiles import IMAGE_EXTENSIONS

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddad", description="Anomaly detection with denoising diffusion models.")
    p.add_argument("--version", action="version", version=f"ddad {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in ORDER:
        help_, add_args, handler, kwargs = COMMANDS[name]
        s = sub.add_parser(name, help=help_, **kwargs)
        add_args(s)
        s.set_defaults(func=handler)
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
