"""ddad's methods inside anomalib (ddad.anomalib): a tiny DDAD trained, tested and predicted through anomalib's Engine
on generated MVTec-layout data; it is the model ddad's own pipeline makes, its anomalib metrics are ddad's, its
checkpoint opens both ways, and export says where to go instead."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import METHOD_SETTINGS, TINY_SETTINGS

pytest.importorskip("anomalib", reason="ddad.anomalib needs anomalib (pip install -e '.[benchmark]')")

# the tiny model's settings; val_fraction 0.5 leaves the selection 6 images
OVERRIDES = [*TINY_SETTINGS, "data.val_fraction=0.5"]


def _engine(root):
    from anomalib.engine import Engine

    return Engine(default_root_dir=str(root), accelerator="cpu", logger=False, enable_progress_bar=False)


@pytest.fixture(scope="module")
def trained(tiny_object, tmp_path_factory):
    """DDAD trained through Engine.fit with the label-free selection (auto=True) on the MVTecAD datamodule."""
    from anomalib.data import MVTecAD

    from ddad.anomalib import DDAD

    out = tmp_path_factory.mktemp("anomalib")
    model = DDAD(overrides=OVERRIDES, run_dir=str(out / "model"), auto=True, progress=False)
    dm = MVTecAD(root=str(tiny_object.parent), category=tiny_object.name, train_batch_size=4, eval_batch_size=8,
                 num_workers=0)
    engine = _engine(out / "engine")
    engine.fit(model=model, datamodule=dm)
    return SimpleNamespace(model=model, dm=dm, engine=engine, run_dir=out / "model")


def _read(path):
    from ddad.data import read_image

    return read_image(path, 32)


def test_engine_test_metrics_are_ddad_evaluate_of_the_same_model(trained, tiny_object):
    from ddad.data import load_dataset
    from ddad.detector import Detector
    from ddad.pipeline import run_evaluate

    [metrics] = trained.engine.test(model=trained.model, datamodule=trained.dm)
    assert {"image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score", "pixel_AUPRO"} <= set(metrics)
    assert (trained.run_dir / "selection.json").is_file()  # auto=True ran the recipe and saved its choice
    res = run_evaluate(Detector.load(trained.run_dir), load_dataset("mvtec", tiny_object, "test", image_size=32), None,
                       progress=False)
    m = res.metrics
    assert metrics["image_AUROC"] == pytest.approx(m.image_auroc, abs=1e-4)
    assert metrics["pixel_AUROC"] == pytest.approx(m.pixel_auroc, abs=1e-4)
    assert metrics["pixel_AUPRO"] == pytest.approx(m.pro, abs=1e-3)


def test_engine_predict_gives_maps_and_the_calibrated_decisions(trained):
    from ddad.data import read_image

    preds = trained.engine.predict(model=trained.model, datamodule=trained.dm)
    det = trained.model.det
    for batch in preds:
        assert batch.anomaly_map.shape[-2:] == (32, 32) and batch.pred_mask.shape == batch.anomaly_map.shape
        assert bool(((batch.pred_score > 0) & (batch.pred_score < 1)).all())  # anomalib's convention, no clamp
        raw = det.predict(torch.stack([read_image(p, 32) for p in batch.image_path]))
        # PASS/FAIL at ddad's nominal threshold (held-out good images, no label), as `ddad predict` decides
        assert batch.pred_label.tolist() == (raw.scores > det.calibration.threshold).tolist()
        order = torch.argsort(raw.scores)
        assert bool((batch.pred_score[order].diff() >= 0).all())  # the same order as the raw scores


def test_the_model_is_the_one_ddad_train_adapt_and_select_make(trained, tiny_object, images, tmp_path):
    """Training images sorted by path and split as nominal_split splits them: anomalib's shuffling plays no part."""
    from ddad.config import load_config
    from ddad.detector import Detector
    from ddad.pipeline import run_adapt, run_train
    from ddad.selection import auto_select

    cfg = load_config(None, [*OVERRIDES, f"data.root={tiny_object}"])
    run_train(cfg, tmp_path / "m", progress=False)
    run_adapt(tmp_path / "m", progress=False)
    auto_select(tmp_path / "m", cfg.data.seed, progress=False)
    x = images
    ours, theirs = Detector.load(tmp_path / "m"), trained.model.det
    assert ours.cfg == theirs.cfg
    torch.testing.assert_close(theirs.predict(x).scores, ours.predict(x).scores, rtol=1e-5, atol=1e-6)


def test_checkpoint_loads_back_and_converts_to_a_model_directory(trained, tiny_object, images, tmp_path, caplog):
    from ddad.anomalib import DDAD
    from ddad.cli import main
    from ddad.detector import Detector

    ckpt = trained.engine.best_model_path
    x = images
    want = trained.model.det.predict(x).scores
    loaded = DDAD.load_from_checkpoint(ckpt)
    torch.testing.assert_close(loaded.det.predict(x).scores, want)
    assert loaded.det.calibration == trained.model.det.calibration
    # the Engine restores a fresh, untrained model from the checkpoint: the same scores, on a folder of images too
    fresh = DDAD(overrides=OVERRIDES)
    folder = tiny_object / "test" / "crack"
    batches = trained.engine.predict(model=fresh, data_path=folder, ckpt_path=ckpt)
    paths = [p for b in batches for p in b.image_path]
    assert len(paths) == len(list(folder.iterdir()))
    torch.testing.assert_close(torch.cat([b.pred_score for b in batches]), trained.model.post_processor.to_unit(
        trained.model.det.predict(torch.stack([_read(p) for p in paths])).scores,
        trained.model.post_processor._image_threshold))
    assert main(["convert", ckpt, "--out", str(tmp_path / "converted")]) == 0
    torch.testing.assert_close(Detector.load(tmp_path / "converted").predict(x).scores, want)
    assert main(["evaluate", "--model", ckpt]) == 2  # a checkpoint is not a model directory: says what to run
    assert "ddad convert" in caplog.text


def test_a_ddad_trained_model_opens_in_anomalib_on_a_folder_datamodule(tiny_model, tiny_object, tmp_path):
    from anomalib.data import Folder

    from ddad.anomalib import DDAD
    from ddad.detector import Detector
    from ddad.metrics import image_auroc

    model = DDAD(model_dir=str(tiny_model))
    defects = sorted(d.name for d in (tiny_object / "test").iterdir() if d.name != "good")
    dm = Folder(name="tiny", root=str(tiny_object), normal_dir="train/good", normal_test_dir="test/good",
                abnormal_dir=[f"test/{d}" for d in defects], train_batch_size=4, eval_batch_size=8, num_workers=0)
    [metrics] = _engine(tmp_path).test(model=model, datamodule=dm)
    tested = dm.test_data.samples  # the images anomalib's split put in the test set, with their labels
    scores = Detector.load(tiny_model).predict(torch.stack([_read(p) for p in tested.image_path])).scores
    assert metrics["image_AUROC"] == pytest.approx(image_auroc(scores.numpy(), tested.label_index.to_numpy()),
                                                   abs=1e-4)
    with pytest.raises(ValueError, match="holds a ddad model; open it with ddad.anomalib.DDAD"):
        from ddad.anomalib import D3AD

        D3AD(model_dir=str(tiny_model))  # a DDAD model is not opened as another method


def test_export_names_ddad_export(trained, tmp_path):
    from anomalib.deploy import ExportType

    for kind in (ExportType.ONNX, ExportType.OPENVINO, ExportType.TORCH):
        with pytest.raises(NotImplementedError, match="ddad export"):
            trained.engine.export(model=trained.model, export_type=kind, export_root=tmp_path)


def test_one_anomalib_model_per_method_and_the_post_processor_keeps_the_order():
    import ddad.anomalib as da
    from ddad.methods import METHODS

    assert {getattr(da, cls.__name__).method for cls in METHODS.values()} == set(METHODS)
    with pytest.raises(TypeError, match="DDAD, D3AD"):
        da.AnomalibDetector()
    t = torch.tensor(2.0)
    x = torch.tensor([-5.0, 0.0, 1.0, 2.0, 20.0, 2000.0])
    y = da.NominalPostProcessor.to_unit(x, t)
    assert bool((y.diff() > 0).all()) and bool(((y > 0) & (y < 1)).all())
    assert float(da.NominalPostProcessor.to_unit(t, t)) == 0.5



@pytest.mark.parametrize("name", ["D3AD", "GLAD", "RAN"])
def test_every_method_trains_tests_and_round_trips_through_the_engine(name, tiny_object, images, tmp_path):
    """The one adapter serves every method: its fitted state (D3AD's kNN bank, RAN's PaDiM Gaussian) and calibration
    travel in the checkpoint, and its anomalib metrics are ddad's."""
    from anomalib.data import MVTecAD

    import ddad.anomalib as da
    from ddad.data import load_dataset
    from ddad.detector import Detector
    from ddad.pipeline import run_evaluate

    model = getattr(da, name)(overrides=[*OVERRIDES, "adapt.batch_size=4", *METHOD_SETTINGS[name.lower()]],
                              run_dir=str(tmp_path / "m"), progress=False)
    dm = MVTecAD(root=str(tiny_object.parent), category=tiny_object.name, train_batch_size=4, eval_batch_size=8,
                 num_workers=0)
    engine = _engine(tmp_path / "engine")
    engine.fit(model=model, datamodule=dm)
    [metrics] = engine.test(model=model, datamodule=dm)
    res = run_evaluate(Detector.load(tmp_path / "m"), load_dataset("mvtec", tiny_object, "test", image_size=32), None,
                       progress=False)
    assert metrics["image_AUROC"] == pytest.approx(res.metrics.image_auroc, abs=1e-4)
    assert metrics["pixel_AUROC"] == pytest.approx(res.metrics.pixel_auroc, abs=1e-4)
    x = images[:4]
    loaded = getattr(da, name).load_from_checkpoint(engine.best_model_path)
    assert sorted(loaded.det.state()) == sorted(model.det.state())
    torch.testing.assert_close(loaded.det.predict(x).scores, model.det.predict(x).scores)
