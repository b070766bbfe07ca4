"""Frozen dataclass configs, loaded strictly from YAML, with `--set a.b=v` overrides: DDADConfig, the whole config,
made of the shared sections (config/sections.py) and one section per method (config/methods.py).

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
    "ScoringConfig", "AdaptConfig", "AutoencoderConfig", "D3ADConfig", "AnomalyConfig", "GLADConfig", "RANConfig",
    "DDADMethodConfig", "DDADConfig", "ConfigError", "METHOD_NAMES", "MOVED", "migrate",
    "load_config", "from_dict", "to_dict", "apply_overrides", "save_config",
]

from .methods import AnomalyConfig, AutoencoderConfig, D3ADConfig, DDADMethodConfig, GLADConfig, RANConfig
from .sections import (AdaptConfig, ConfigError, DataConfig, FeatureConfig, ModelConfig, SamplingConfig, ScheduleConfig,
                       ScoringConfig, TrainConfig)


@dataclass(frozen=True)
class DDADConfig:
    method: str = "ddad"  # one of METHOD_NAMES (ddad info lists them)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    # each method's own options, in a section named after it (a method-section field, see METHOD_NAMES)
    ddad: DDADMethodConfig = field(default_factory=DDADMethodConfig, metadata={"method": True})
    d3ad: D3ADConfig = field(default_factory=D3ADConfig, metadata={"method": True})
    glad: GLADConfig = field(default_factory=GLADConfig, metadata={"method": True})
    ran: RANConfig = field(default_factory=RANConfig, metadata={"method": True})

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ConfigError(f"method: unknown method {self.method!r}; {_suggest(self.method, list(METHOD_NAMES))}"
                              f"choose one of {', '.join(METHOD_NAMES)}")
        for owner in METHOD_NAMES:
            if owner == self.method:
                continue
            mine, default = getattr(self, owner), type(getattr(self, owner))()
            if mine != default:
                changed = [k for k in to_dict(default) if to_dict(mine)[k] != to_dict(default)[k]]
                raise ConfigError(f"{owner}.{changed[0]} is an option of method {owner!r}, but method is "
                                  f"{self.method!r}; set method: {owner} (or --method {owner}), or remove the "
                                  f"{owner} section")


# The methods, one per method-section field of DDADConfig (its options live in the section named after it); their
# classes are ddad.methods.METHODS, which a test keeps in step with this tuple.
METHOD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DDADConfig) if f.metadata.get("method"))

# Keys that moved to another section: model.json files saved with the old name are read with the new one
# (migrate), a config file or override that uses it is told the new name.
MOVED: dict[str, str] = {f"scoring.{k}": f"ddad.{k}" for k in ("memory", "memory_coreset", "memory_layers")}


def migrate(data: dict) -> dict:
    """A saved config dict (model.json) with every MOVED key at its current place."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED.items():
        (osec, okey), (nsec, nkey) = old.split("."), new.split(".")
        if okey in data.get(osec, {}):
            data.setdefault(nsec, {})[nkey] = data[osec].pop(okey)
    return data


def _moved(section: str, key: str) -> str:
    new = MOVED.get(f"{section}.{key}")
    return f"{section}.{key} is now {new}; " if new else ""


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
            raise ConfigError(f"{where}: unknown key {key!r}; {_moved(where.rsplit('.', 1)[-1], key)}"
                              f"{_suggest(key, names)}valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)

    def lists(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: lists(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x

    return lists(out)


def _override(data: dict, item: str) -> None:
    """Set one `a.b=value` (value parsed as YAML) in the nested dict `data`, naming what is valid on a typo."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. sampling.w=4)")
    path, raw = item.split("=", 1)
    node = data
    parts = path.strip().split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], dict):
            valid = [k for k, v in node.items() if isinstance(v, dict)]
            raise ConfigError(f"override {item!r}: unknown section {part!r}; {_suggest(part, valid)}valid: {valid}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; {_moved('.'.join(parts[:-1]), parts[-1])}"
                          f"{_suggest(parts[-1], list(node))}"
                          f"valid keys: {', '.join(node)}")
    node[parts[-1]] = yaml.safe_load(raw)


def _merge(base: dict, update: dict, where: str) -> dict:
    """`update` laid over `base` (nested); unknown keys are left for from_dict to report."""
    if not isinstance(update, dict):
        raise ConfigError(f"{where}: expected a mapping, got {update!r}")
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(base[k], v, f"{where}.{k}") if isinstance(base.get(k), dict) and isinstance(v, dict) else v
    return out


def apply_overrides(cfg: DDADConfig, overrides: list[str] | tuple[str, ...]) -> DDADConfig:
    """Apply `a.b=value` strings (value parsed as YAML) and re-validate strictly."""
    data = to_dict(cfg)
    for item in overrides:
        _override(data, item)
    return from_dict(DDADConfig, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DDADConfig:
    """Defaults <- YAML file (strict) <- overrides, validated once at the end (so `--set method=d3ad` may
    select the method whose section the file sets)."""
    data = to_dict(DDADConfig())
    where = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; see configs/ for examples")
        where = p.name
        data = _merge(data, yaml.safe_load(p.read_text()) or {}, where)
    for item in overrides:
        _override(data, item)
    return from_dict(DDADConfig, data, where)


def save_config(cfg: DDADConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
