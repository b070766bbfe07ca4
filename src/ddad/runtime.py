"""Inference backends: the networks a detector calls at inference, run by PyTorch, ONNX Runtime or OpenVINO.

    ddad export --model runs/bottle --format openvino          # writes runs/bottle/export/openvino/
    det = Detector.load("runs/bottle", backend="openvino", precision="bf16")

What is exported is found, not declared: `export_detector` scores one blank image with the PyTorch networks and
records every network of `det.networks()` and the feature extractor's backbone that is called through its
forward (the UNet at every denoising step, the backbone on the reconstruction and the input), with the tensors it
was called with. Each is exported to ONNX (dynamic batch axis) and, for OpenVINO, converted to its IR. Everything
around the networks (the sampling loop, conditioning, maps, scores) stays the same PyTorch code for every backend,
so a method needs nothing of its own to be exported.

`use_backend` swaps those networks' forward for the exported graph's. The PyTorch forward stays behind it and is
used where a gradient is needed (domain adaptation, RAN's gradient denoising), so every command keeps working.
Precision: fp32 on every backend; with torch (CPU autocast) and OpenVINO (its bf16 inference precision, native
on CPUs with AVX512-BF16/AMX) also bf16 (the diffusion networks in bf16, the backbone whose features make the map
in fp32) and bf16-all (the backbone too). BENCHMARKS.md ("CPU inference backends") has the speed and the scores.
The exporter is torch.onnx's TorchScript-based one (dynamo=False): it needs only the onnx package and exports
diffusers' UNet and timm/torchvision backbones as they are.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import load_json, save_json

__all__ = ["BACKENDS", "PRECISIONS", "EXPORT_FORMATS", "ExportError", "export_detector", "use_backend",
           "export_dir", "swap_forward", "traced_networks"]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "bf16-all")
# bf16: the networks of det.networks() (the UNet called at every denoising step) in bf16, the feature backbone,
# whose features make the anomaly map, in fp32; bf16-all: the backbone too
EXPORT_FORMATS = ("onnx", "openvino")
_FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}
_EXTRAS = "pip install -e '.[export]' (onnx, onnxruntime, openvino)"


class ExportError(RuntimeError):
    """An export is missing, stale, or a backend cannot run it."""


def export_dir(model_dir: str | Path, fmt: str) -> Path:
    return Path(model_dir) / "export" / fmt


# ---- what a detector calls at inference ---------------------------------------------------------------
@dataclass(frozen=True)
class Traced:
    """One network as scored: its module, the positional tensors of its first call and what that call returned."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    outputs: tuple[torch.Tensor, ...]  # the first call's output, flattened (_flatten)
    output: dict  # {"kind": "tensor" | "sequence" | "fields", "keys": [...] for fields, "n": number of tensors}


def _flatten(out: Any) -> tuple[tuple[torch.Tensor, ...], dict]:
    if isinstance(out, torch.Tensor):
        return (out,), {"kind": "tensor", "n": 1}
    if isinstance(out, (tuple, list)):
        return tuple(out), {"kind": "sequence", "n": len(out)}
    if isinstance(out, dict):  # diffusers' BaseOutput (UNet2DOutput: .sample) is an OrderedDict
        return tuple(out.values()), {"kind": "fields", "keys": list(out.keys()), "n": len(out)}
    raise ExportError(f"cannot export a network returning {type(out).__name__}; expected tensors")


class Fields(dict):
    """A network's named outputs as the caller reads them: attribute (`.sample`) or position (`[0]`)."""

    def __getattr__(self, k: str):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None

    def __getitem__(self, k):
        return list(self.values())[k] if isinstance(k, int) else super().__getitem__(k)


def _rebuild(tensors: list[torch.Tensor], spec: dict):
    if spec["kind"] == "tensor":
        return tensors[0]
    if spec["kind"] == "sequence":
        return list(tensors)
    return Fields(zip(spec["keys"], tensors))


def traced_networks(det, images: torch.Tensor | None = None) -> list[Traced]:
    """The networks `det.terms` calls through forward, with their first call's tensors and output: scores `images`
    (default two mid-grey images of the model's size; two, so that no graph is specialised to a batch of one) with
    forward hooks on `det.networks()` and the extractor's backbone."""
    h, w = det.cfg.data.shape
    images = torch.full((2, 3, h, w), 0.5) if images is None else images
    candidates = dict(det.networks()) | {"extractor": det.extractor.body}
    seen: dict[str, Traced | None] = {}

    def hook(name):
        def record(module, args, kwargs, out):
            if name not in seen:
                plain = not kwargs and all(isinstance(a, torch.Tensor) for a in args)
                if not plain:
                    log.warning("%s is called with keyword or non-tensor arguments; it stays on PyTorch", name)
                    seen[name] = None
                    return
                flat, spec = _flatten(out)
                seen[name] = Traced(name, module, tuple(a.detach().clone() for a in args),
                                    tuple(o.detach().clone() for o in flat), spec)
        return record

    handles = [net.register_forward_hook(hook(name), with_kwargs=True) for name, net in candidates.items()]
    try:
        with torch.inference_mode():
            det.terms(images.to(det.device))
    finally:
        for handle in handles:
            handle.remove()
    traced = [t for t in seen.values() if t is not None]
    if not traced:
        raise ExportError(f"{det.name}: no network was called through forward while scoring; nothing to export")
    return traced


# ---- export -------------------------------------------------------------------------------------------
def _weights_digest(model_dir: Path) -> str:
    """sha256 over the model directory's network weights (*.safetensors): an export made from other weights (after
    `ddad adapt`, a retraining) is refused."""
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class _Flat(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args):
        return _flatten(self.net(*args))[0]


def _export_onnx(t: Traced, path: Path) -> dict:
    if importlib.util.find_spec("onnx") is None:
        raise ExportError(f"exporting to ONNX needs the onnx package: {_EXTRAS}")
    in_names = [f"input{i}" for i in range(len(t.inputs))]
    out_names = [f"output{i}" for i in range(t.output["n"])]
    batch = t.inputs[0].shape[0]
    dynamic = {n: {0: "batch"} for n, a in zip(in_names, t.inputs) if a.ndim >= 1 and a.shape[0] == batch}
    dynamic |= {n: {0: "batch"} for n in out_names}
    inputs = tuple(a.clone() for a in t.inputs)  # normal tensors (the traced ones were made in inference mode)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks in diffusers/timm
        torch.onnx.export(_Flat(t.module).eval(), inputs, str(path), input_names=in_names, output_names=out_names,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    inputs_meta = [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype).removeprefix("torch.")}
                   for n, a in zip(in_names, t.inputs)]
    return {"file": path.name, "inputs": inputs_meta, "outputs": out_names, "output": t.output}


def export_detector(det, model_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export the networks `det` (loaded from model_dir) calls at inference to `fmt` (onnx or openvino) in
    out (default model_dir/export/<fmt>), with export.json; returns the folder. Each export is checked: the
    exported graph's outputs on the traced inputs must match PyTorch's (fp32)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    model_dir = Path(model_dir)
    d = Path(out) if out else export_dir(model_dir, fmt)
    d.mkdir(parents=True, exist_ok=True)
    (d / "export.json").unlink(missing_ok=True)  # written last, once every graph has passed the check
    t0 = time.perf_counter()
    det.to("cpu")
    traced = traced_networks(det)
    nets = {}
    for t in traced:
        entry = _export_onnx(t, d / f"{t.name}.onnx")
        if fmt == "openvino":
            ov = _openvino()
            onnx_file = d / entry["file"]
            ov.save_model(ov.convert_model(str(onnx_file)), str(d / f"{t.name}.xml"), compress_to_fp16=False)
            onnx_file.unlink()
            entry["file"] = f"{t.name}.xml"
        nets[t.name] = entry
    meta = {"format": fmt, "ddad_version": __version__, "method": det.name, "networks": nets,
            "image_shape": list(det.cfg.data.shape), "features_input_size": det.cfg.features.input_size,
            "weights_sha256": _weights_digest(model_dir), "torch_version": torch.__version__}
    # the check: each exported graph against PyTorch on the traced inputs, in fp32
    for t in traced:
        got = _runner(fmt_backend(fmt), d, t.name, nets[t.name], "fp32")(*t.inputs)
        for a, b in zip(t.outputs, got):
            err = float((a.float() - b).abs().max() / a.float().abs().max().clamp_min(1e-6))
            if err > 1e-3:
                raise ExportError(f"the exported {t.name} differs from PyTorch's by {err:.2e} (relative max); "
                                  "the export is not usable")
    save_json(meta, d / "export.json")
    log.info("exported %s to %s (%s) in %.1f s", ", ".join(nets), d, fmt, time.perf_counter() - t0)
    return d


def fmt_backend(fmt: str) -> str:
    """The backend that runs an export format (onnx -> onnxruntime)."""
    return {f: b for b, f in _FORMAT_OF.items()}[fmt]


# ---- running an export --------------------------------------------------------------------------------
def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise ExportError(f"the OpenVINO backend needs the openvino package: {_EXTRAS}") from e
    return openvino


def _runner(backend: str, d: Path, name: str, entry: dict, precision: str) -> Callable[..., list[torch.Tensor]]:
    """A callable (*tensors) -> list of float tensors running one exported network."""
    names = [i["name"] for i in entry["inputs"]]
    dtypes = [np.dtype(i["dtype"]) for i in entry["inputs"]]
    threads = torch.get_num_threads()
    if backend == "onnxruntime":
        if precision != "fp32":
            raise ExportError("the onnxruntime backend runs fp32 only; use --precision fp32, or the openvino backend "
                              "for bf16")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExportError(f"the onnxruntime backend needs the onnxruntime package: {_EXTRAS}") from e
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(d / entry["file"]), so, providers=["CPUExecutionProvider"])

        def run(*args):
            feed = {n: a.detach().cpu().numpy().astype(dt, copy=False) for n, a, dt in zip(names, args, dtypes)}
            return [torch.from_numpy(o) for o in sess.run(None, feed)]
        return run
    ov = _openvino()
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise ExportError("this CPU has no native bf16 (AVX512-BF16 or AMX); use --precision fp32")
    compiled = core.compile_model(str(d / entry["file"]), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})  # OpenVINO's default is bf16 on AMX
    request = compiled.create_infer_request()

    def run(*args):
        feed = [a.detach().cpu().numpy().astype(dt, copy=False) for a, dt in zip(args, dtypes)]
        res = request.infer(feed)
        return [torch.from_numpy(np.array(res[o])) for o in compiled.outputs]
    return run


def use_backend(det, model_dir: str | Path | None, backend: str = "torch", precision: str = "fp32"):
    """Run `det`'s inference networks on `backend` at `precision` (see the module's docstring). torch + fp32 changes
    nothing. Returns det."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    det.runtime = {"backend": backend, "precision": precision}
    if backend == "torch":
        if precision != "fp32":  # the networks' forward (and with bf16-all the backbone's) under bf16 autocast
            for net in [*det.networks().values(), *([det.extractor.body] if precision == "bf16-all" else [])]:
                swap_forward(net, _autocast)
        return det
    if det.device.type != "cpu":
        raise ExportError(f"the {backend} backend runs on the CPU here; drop --device {det.device} or use "
                          "--backend torch")
    if model_dir is None:
        raise ExportError(f"the {backend} backend runs an export from a model directory; save the model first")
    fmt = _FORMAT_OF[backend]
    d = export_dir(model_dir, fmt)
    if not (d / "export.json").is_file():
        raise ExportError(f"no {fmt} export in {d}: run `ddad export --model {model_dir} --format {fmt}` first")
    meta = load_json(d / "export.json")
    if meta["weights_sha256"] != _weights_digest(Path(model_dir)):
        raise ExportError(f"the export in {d} was made from other weights than {model_dir}'s now (re-trained or "
                          f"adapted since): run `ddad export --model {model_dir} --format {fmt}` again")
    if list(det.cfg.data.shape) != meta["image_shape"] or det.cfg.features.input_size != meta["features_input_size"]:
        raise ExportError(f"the export in {d} is for {meta['image_shape']} px images (features at "
                          f"{meta['features_input_size']}), the model now runs at {list(det.cfg.data.shape)} "
                          f"({det.cfg.features.input_size}): export again after changing sizes")
    modules = dict(det.networks()) | {"extractor": det.extractor.body}
    for name, entry in meta["networks"].items():
        if name not in modules:
            raise ExportError(f"the export in {d} has a network {name!r} this {det.name} model does not have")
        run = _runner(backend, d, name, entry, _network_precision(name, precision))
        swap_forward(modules[name], partial(_exported, modules[name], run, entry["output"]))
    det.runtime["export"] = str(d)
    return det


def _network_precision(name: str, precision: str) -> str:
    if precision == "fp32" or (name == "extractor" and precision == "bf16"):
        return "fp32"
    return "bf16"


def swap_forward(net: nn.Module, wrap: Callable[[Callable], Callable]) -> None:
    """net(...) calls wrap(its PyTorch forward) from now on; that forward is kept as net._ddad_original_forward (a
    second swap wraps it, not the first swap's wrapper)."""
    if not hasattr(net, "_ddad_original_forward"):
        net._ddad_original_forward = net.forward
    net.forward = wrap(net._ddad_original_forward)


def _needs_autograd(net: nn.Module, args) -> bool:
    return torch.is_grad_enabled() and (net.training or any(isinstance(a, torch.Tensor) and a.requires_grad
                                                             for a in args))


def _exported(net: nn.Module, run: Callable, spec: dict, original: Callable) -> Callable:
    """net's forward on an exported graph (`run`), PyTorch's (`original`) where a gradient is wanted."""
    def forward(*args, **kwargs):
        if kwargs or _needs_autograd(net, args):
            return original(*args, **kwargs)
        device = args[0].device
        return _rebuild([o.to(device) for o in run(*args)], spec)
    return forward


def _autocast(original: Callable) -> Callable:
    def forward(*args, **kwargs):
        with torch.autocast(args[0].device.type, dtype=torch.bfloat16):  # CPU or CUDA
            out = original(*args, **kwargs)
        flat, spec = _flatten(out)
        return _rebuild([o.float() for o in flat], spec)
    return forward
