"""What the commands share: argument groups, the config and dataset of a command line, checkpoints."""
from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

__all__ = ["UsageError", "add_common", "add_backend", "add_data", "load_cli_config", "demo_config", "test_dataset",
           "checkpoints", "data_override"]


class UsageError(ValueError):
    """Bad command-line input, found before torch or a model is loaded."""


def add_common(sp: argparse.ArgumentParser, config: bool = True, device: bool = True) -> None:
    """--config/--method (a command that builds a config), --set, --device."""
    if config:
        sp.add_argument("--config", help="YAML config (see configs/)")
        sp.add_argument("--method", help="ddad (default), d3ad, glad or ran (`ddad info`); same as --set method=NAME")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set sampling.w=4")
    if device:
        sp.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def add_backend(sp: argparse.ArgumentParser) -> None:
    """--backend/--precision: what runs the inference networks (docs/service.md)."""
    sp.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino"],
                    help="torch (default), or the model's `ddad export` on ONNX Runtime or OpenVINO")
    sp.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-all"],
                    help="fp32 (default); bf16: diffusion networks in bf16; bf16-all: the backbone too")


def add_data(sp: argparse.ArgumentParser) -> None:
    """--data/--layout/--category: the labelled test set (default: the model's)."""
    sp.add_argument("--data", help="dataset folder (default: the model's data.root)")
    sp.add_argument("--layout", help="dataset layout: mvtec, mpdd, btad, visa, mtd, folder")
    sp.add_argument("--category", help="category inside the dataset folder")


def data_override(args: argparse.Namespace) -> list[str]:
    return [f"data.root={args.data}"] if getattr(args, "data", None) else []


def checkpoints(out: Path) -> list[Path]:
    """Training checkpoints of a run directory (one per stage: checkpoints/last.json or checkpoints/<stage>/last.json)."""
    return sorted((out / "checkpoints").glob("**/last.json")) if (out / "checkpoints").is_dir() else []


def demo_config(args: argparse.Namespace) -> str:
    return f"demo-{args.method}.yaml" if getattr(args, "method", None) and args.method != "ddad" else "demo.yaml"


def load_cli_config(args: argparse.Namespace, default: str | None = None):
    from ..config import load_config

    path = args.config or (str(resources.files("ddad") / "configs" / default) if default else None)
    method = getattr(args, "method", None)
    return load_config(path, ([f"method={method}"] if method else []) + data_override(args) + (args.set or []))


def test_dataset(cfg, args: argparse.Namespace, split: str = "test"):
    from ..data import load_dataset

    root = args.data or cfg.data.root
    layout = args.layout or cfg.data.layout
    category = args.category or cfg.data.category
    return load_dataset(layout, root, split, category, cfg.data.shape, cfg.data.seed)
