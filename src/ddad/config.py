"""Frozen dataclass configs, loaded strictly from YAML, with `--set a.b=v` overrides.

Every default says where it comes from. Unknown keys are errors that name the closest valid keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DataConfig", "ModelConfig", "ScheduleConfig", "TrainConfig", "SamplingConfig", "FeatureConfig",
    "ScoringConfig", "AdaptConfig", "DDADConfig", "ConfigError", "load_config", "from_dict", "to_dict",
    "apply_overrides", "save_config",
]


class ConfigError(ValueError):
    """A config file or override does not match the schema."""


@dataclass(frozen=True)
class DataConfig:
    layout: str = "mvtec"  # one of ddad.data.LAYOUTS
    root: str = ""  # dataset folder (category folder, or dataset root + category)
    category: str | None = None
    image_size: int = 64  # paper: 256; CPU presets train at 64-128
    val_fraction: float = 0.1  # nominal training images held out (seeded) for score calibration
    seed: int = 0  # seeds the documented splits (validation, MTD, folder)


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "cpu-64"  # ddad.diffusion.unet.PRESETS: ddad, ddad-s (paper), cpu-32/64/128 (CPU)


@dataclass(frozen=True)
class ScheduleConfig:
    num_train_timesteps: int = 1000  # DDAD paper, T = 1000
    beta_start: float = 1e-4  # linear betas as DDPM / DDAD
    beta_end: float = 0.02


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps (paper: 1000-3000 epochs at batch 32 on a GPU)
    batch_size: int = 32  # paper: 32
    lr: float = 3e-4  # paper: Adam 3e-4
    weight_decay: float = 0.05  # paper: 0.05 (Adam's L2 form, as the official code)
    optimizer: str = "adam"  # adam (paper) | adamw
    ema_decay: float = 0.0  # 0 disables the EMA of weights; e.g. 0.999 for long runs
    grad_clip: float = 1.0  # max grad norm (0 = off)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    mixed_precision: bool = True  # bf16 autocast where a CUDA GPU is present; ignored on CPU
    seed: int = 0


@dataclass(frozen=True)
class SamplingConfig:
    start_level: int = 250  # T' (paper: 250)
    steps: int = 10  # DDAD-n: denoising iterations from T'
    w: float = 3.0  # conditioning weight (paper Table 9/10 per category, 0..11; test-tuned there)
    eta: float = 1.0  # DDIM stochasticity (official code: 1)
    official_offbyone: bool = False  # True mimics the official code: noise to T', first UNet call at T'-T'/n
    batch_size: int = 16
    seed: int = 0  # per-image noise is seeded by (seed, image content): scores do not depend on batching


@dataclass(frozen=True)
class FeatureConfig:
    backbone: str = "efficientnet_lite0"  # offline default; wide_resnet50_2/101_2, resnet34/18 from a local file
    weights: str | None = None  # local weights file for torchvision backbones (never downloaded)
    layers: tuple[int, ...] = (2, 3)  # paper: j in {2, 3}
    # resize images (input and reconstruction alike) to this many px before the backbone; null = the model's size.
    # Lets a small, fast diffusion resolution keep the feature resolution the backbone was trained at.
    input_size: int | None = None


@dataclass(frozen=True)
class ScoringConfig:
    v: float = 1.0  # weight of the pixel distance (paper: 1 MVTec, 7 VisA)
    balance: str = "calibrated"  # calibrated: max D_f / max D_p measured once on held-out nominal images; per_image
    sigma: float = 4.0  # Gaussian smoothing of the map (paper: 4)
    image_score: str = "max"  # max (paper) | topk_mean
    topk: int = 64  # pixels averaged when image_score = topk_mean
    false_reject_rate: float = 0.01  # image threshold = this quantile of held-out nominal scores


@dataclass(frozen=True)
class AdaptConfig:
    epochs: int = 1  # domain-adaptation epochs (paper Table 9: 0-16 per category, test-tuned there)
    lr: float = 1e-4  # paper: AdamW 1e-4
    lambda_dl: float = 0.1  # distillation weight (paper: 0.1 MVTec, 0.01 VisA)
    w: float = 3.0  # conditioning weight when generating x0 from another image (paper: w_DA = 3)
    layers: tuple[int, ...] = (1, 2, 3)  # paper: J = {1, 2, 3}
    batch_size: int = 16
    bn_train: bool = False  # False keeps BatchNorm statistics frozen (official code silently updated them)
    seed: int = 0


@dataclass(frozen=True)
class DDADConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}? " if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(v, inner, where) for v in value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict | None, where: str = "config") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError with suggestions."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; {_suggest(key, names)}valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)

    def lists(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: lists(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    return lists(out)


def apply_overrides(cfg: DDADConfig, overrides: list[str] | tuple[str, ...]) -> DDADConfig:
    """Apply `a.b=value` strings (value parsed as YAML) and re-validate strictly."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. sampling.w=4)")
        path, raw = item.split("=", 1)
        node = data
        parts = path.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], dict):
                valid = [k for k, v in node.items() if isinstance(v, dict)]
                raise ConfigError(f"override {item!r}: unknown section {part!r}; {_suggest(part, valid)}valid: {valid}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; {_suggest(parts[-1], list(node))}"
                              f"valid keys: {', '.join(node)}")
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(DDADConfig, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DDADConfig:
    """Defaults <- YAML file (strict) <- overrides."""
    cfg = DDADConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; see configs/ for examples")
        cfg = from_dict(DDADConfig, yaml.safe_load(p.read_text()) or {}, where=p.name)
    return apply_overrides(cfg, overrides)


def save_config(cfg: DDADConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
