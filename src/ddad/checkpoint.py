"""Safe model files: tensors in safetensors, everything else in JSON. Nothing is ever unpickled.

Writes are atomic (temp file + rename), so a process killed mid-write leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_tensors", "load_tensors", "save_json", "load_json", "ModelFileError"]


class ModelFileError(FileNotFoundError):
    """A model directory is missing a file or holds one that does not match."""


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda p: save_file(flat, str(p), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"expected the tensor file {p}; is this a ddad model directory (made by `ddad train`)?")
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelFileError(f"{p} is not a valid safetensors file ({e}); re-create it with `ddad train`") from e


def save_json(obj: Any, path: str | Path) -> None:
    _atomic(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True)))


def load_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"expected the metadata file {p}; is this a ddad model directory?")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{p} is not valid JSON ({e})") from e
