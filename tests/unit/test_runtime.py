"""Inference backends (ddad.runtime): export to ONNX / OpenVINO, scores equal to PyTorch's, refusals that say why."""
import shutil

import pytest
import torch

from ddad.config import apply_overrides
from ddad.detector import Detector
from ddad.runtime import ExportError, export_detector, traced_networks, use_backend

from conftest import fitted_detector
from test_d3ad import TINY_D3AD
from test_glad import TINY_GLAD
from test_ran import TINY_RAN

pytest.importorskip("onnx", reason="the export extra: pip install -e '.[export]'")


def _need(module):
    pytest.importorskip(module, reason="the export extra: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """A copy of the tiny model with both exports."""
    d = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_model, d)
    det = Detector.load(d)
    for fmt, mod in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        if _importable(mod):
            export_detector(det, d, fmt)
    return d


def _importable(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def test_traced_networks_are_the_unet_and_the_backbone(tiny_model):
    traced = {t.name: t for t in traced_networks(Detector.load(tiny_model))}
    assert set(traced) == {"unet", "extractor"}
    assert traced["unet"].output == {"kind": "fields", "keys": ["sample"], "n": 1}  # UNet2DOutput(.sample)
    assert traced["extractor"].output["kind"] == "sequence"
    x, t = traced["unet"].inputs
    assert x.shape == (2, 3, 32, 32) and t.shape == (2,)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backend_scores_equal_torch_at_any_batch_size(exported, images, backend):
    _need(backend)
    ref = Detector.load(exported).predict(images)
    det = Detector.load(exported, backend=backend)
    assert det.runtime["backend"] == backend and det.runtime["export"].endswith(
        "onnx" if backend == "onnxruntime" else "openvino")
    _zero_torch_weights(det)  # the scores below can only come from the exported graphs
    got = det.predict(images)
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.maps, ref.maps, rtol=1e-4, atol=1e-5)
    # the dynamic batch axis: one image at a time gives the same scores
    det.cfg = apply_overrides(det.cfg, ["sampling.batch_size=1"])
    torch.testing.assert_close(det.predict(images[:3]).scores, ref.scores[:3], rtol=1e-4, atol=1e-5)


def _zero_torch_weights(det):
    """Zero the PyTorch weights of every network the backend took over (the UNet and the backbone at least)."""
    nets = {k: v for k, v in (det.networks() | {"extractor": det.extractor.body}).items()
            if hasattr(v, "_ddad_original_forward")}
    assert {"unet", "extractor"} <= set(nets)
    with torch.no_grad():
        for net in nets.values():
            for p in net.parameters():
                p.zero_()


def test_torch_bf16_close_to_fp32_and_changes_something(tiny_model, images):
    ref = Detector.load(tiny_model).predict(images)
    got = Detector.load(tiny_model, precision="bf16").predict(images)
    assert not torch.equal(got.maps, ref.maps)  # bf16 really ran
    torch.testing.assert_close(got.scores, ref.scores, rtol=0.05, atol=0.02)


def test_bf16_keeps_the_backbone_in_fp32_and_bf16_all_does_not(tiny_model):
    det = Detector.load(tiny_model, precision="bf16")
    assert hasattr(det.unet, "_ddad_original_forward") and not hasattr(det.extractor.body, "_ddad_original_forward")
    det = Detector.load(tiny_model, precision="bf16-all")
    assert hasattr(det.extractor.body, "_ddad_original_forward")


def test_openvino_bf16_runs_or_refuses_clearly(exported, images):
    _need("openvino")
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(ExportError, match="no native bf16"):
            Detector.load(exported, backend="openvino", precision="bf16")
        return
    ref = Detector.load(exported).predict(images)
    got = Detector.load(exported, backend="openvino", precision="bf16").predict(images)
    torch.testing.assert_close(got.scores, ref.scores, rtol=0.05, atol=0.02)


def test_missing_and_stale_exports_are_refused(tiny_model, exported, tmp_path):
    _need("onnxruntime")
    with pytest.raises(ExportError, match="ddad export --model .* --format onnx"):
        Detector.load(tiny_model, backend="onnxruntime")  # never exported
    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    det = Detector.load(stale)
    with torch.no_grad():
        next(det.unet.parameters()).add_(1.0)  # "retrained"
    det.save(stale)
    with pytest.raises(ExportError, match="other weights"):
        Detector.load(stale, backend="onnxruntime")
    with pytest.raises(ExportError, match="fp32 only"):
        Detector.load(exported, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="unknown backend"):
        use_backend(Detector.load(exported), exported, "tensorrt")


def test_gradients_still_flow_through_an_exported_backbone(exported):
    """Domain adaptation and RAN's gradient denoising differentiate through the backbone: they get PyTorch's."""
    _need("onnxruntime")
    det = Detector.load(exported, backend="onnxruntime")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    feats = det.extractor(x, (1, 2))
    feats[1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides", [TINY_D3AD, TINY_GLAD, TINY_RAN], ids=["d3ad", "glad", "ran"])
def test_every_method_exports_without_code_of_its_own(overrides, images, tmp_path):
    """The plug-in methods are exported by the same code; on ONNX Runtime their scores equal PyTorch's."""
    _need("onnxruntime")
    from ddad.config import DDADConfig

    det = fitted_detector(apply_overrides(DDADConfig(), overrides), images, tmp_path / "fit")
    det.save(tmp_path / "m")
    ref = Detector.load(tmp_path / "m").predict(images[:4])
    export_detector(Detector.load(tmp_path / "m"), tmp_path / "m", "onnx")
    det = Detector.load(tmp_path / "m", backend="onnxruntime")
    _zero_torch_weights(det)
    got = det.predict(images[:4])
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.maps, ref.maps, rtol=1e-4, atol=1e-4)


def test_cli_export_then_evaluate_and_predict_on_the_backend(tiny_model, tiny_object, tmp_path, caplog):
    _need("onnxruntime")
    import json

    from ddad.cli import main

    d = tmp_path / "model"
    shutil.copytree(tiny_model, d)
    args = ["evaluate", "--model", str(d), "--data", str(tiny_object)]
    assert main([*args, "--backend", "onnxruntime", "--out", str(tmp_path / "ort")]) == 2  # not exported yet
    assert f"ddad export --model {d} --format onnx" in caplog.text
    assert main(["export", "--model", str(d), "--format", "onnx"]) == 0
    assert json.loads((d / "export" / "onnx" / "export.json").read_text())["networks"].keys() == {"unet", "extractor"}
    assert main([*args, "--backend", "onnxruntime", "--out", str(tmp_path / "ort")]) == 0
    assert main([*args, "--out", str(tmp_path / "torch")]) == 0
    ort, ref = (json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("ort", "torch"))
    for k in ("image_auroc", "image_ap", "pixel_auroc", "pro"):
        assert ort[k] == pytest.approx(ref[k], abs=1e-3), k
    assert main(["predict", "--model", str(d), "--backend", "onnxruntime", "--out", str(tmp_path / "pred"),
                 str(tiny_object / "test" / "good")]) == 0


def test_an_export_that_disagrees_with_pytorch_is_refused_and_not_recorded(tiny_model, tmp_path, monkeypatch):
    from ddad import runtime

    def wrong(*args, **kwargs):
        return lambda *tensors: [torch.zeros(1)]  # a graph whose output is not PyTorch's

    monkeypatch.setattr(runtime, "_runner", wrong)
    with pytest.raises(ExportError, match="differs from PyTorch's"):
        export_detector(Detector.load(tiny_model), tiny_model, "onnx", tmp_path / "bad")
    assert not (tmp_path / "bad" / "export.json").exists()
