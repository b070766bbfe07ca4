"""Detector properties on a tiny untrained-or-briefly-trained model (32 px, cpu-32 preset)."""
import copy

import pytest
import torch

from ddad.checkpoint import ModelFileError
from ddad.config import ConfigError, DDADConfig, apply_overrides
from conftest import fitted_detector
from ddad.detector import Detector
from ddad.pipeline import nominal_split, stack_images
from ddad.data import AnomalyDataset, ImageSet, load_dataset
from ddad.diffusion.train import data_fingerprint
from ddad.methods.base import to_model

TINY = [
    "data.image_size=32", "model.preset=cpu-32", "train.steps=4", "train.batch_size=4", "train.checkpoint_every=2",
    "sampling.steps=3", "sampling.batch_size=4", "scoring.sigma=1.0", "adapt.batch_size=4", "features.layers=[1,2]",
]


@pytest.fixture(scope="module")
def det(images, tmp_path_factory):
    return fitted_detector(apply_overrides(DDADConfig(), TINY), images, tmp_path_factory.mktemp("run"))


def test_scores_do_not_depend_on_batch_size_or_batch_mates(det, images):
    x = images[:6]
    ref = det.predict(x).scores
    for bs in (1, 4):
        d = copy.copy(det)
        d.cfg = apply_overrides(det.cfg, [f"sampling.batch_size={bs}"])
        torch.testing.assert_close(d.predict(x).scores, ref, atol=1e-5, rtol=1e-5)
    mixed = torch.cat([images[10:12], x[3:4], images[8:9]])  # image 3 among other images
    torch.testing.assert_close(det.predict(mixed).scores[2], ref[3], atol=1e-5, rtol=1e-5)
    per_image = copy.copy(det)
    per_image.cfg = apply_overrides(det.cfg, ["scoring.balance=per_image"])
    torch.testing.assert_close(per_image.predict(x[3:4]).scores[0], per_image.predict(x).scores[3], atol=1e-5, rtol=1e-5)


def test_save_load_roundtrip_gives_identical_scores(det, images, tmp_path):
    det.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    assert loaded.calibration == det.calibration
    torch.testing.assert_close(loaded.predict(images[:3]).scores, det.predict(images[:3]).scores, rtol=0, atol=0)


def test_model_dir_errors_are_clear(det, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        Detector.load(tmp_path / "nothing")
    det.save(tmp_path / "m")
    (tmp_path / "m" / "unet.safetensors").unlink()
    with pytest.raises(ModelFileError, match="unet.safetensors"):
        Detector.load(tmp_path / "m")
    det.save(tmp_path / "m")
    (tmp_path / "m" / "unet.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        Detector.load(tmp_path / "m")
    other = Detector.create(apply_overrides(det.cfg, ["model.preset=cpu-64"]))
    det.save(tmp_path / "m")
    other.save(tmp_path / "o")
    (tmp_path / "o" / "unet.safetensors").replace(tmp_path / "m" / "unet.safetensors")
    with pytest.raises(ModelFileError, match="do not match"):
        Detector.load(tmp_path / "m")


def test_resume_continues_the_step_count_exactly(images, tmp_path):
    cfg = apply_overrides(DDADConfig(), TINY)
    full = Detector.create(cfg)
    full.fit(images[:8], tmp_path / "a")
    half = Detector.create(apply_overrides(cfg, ["train.steps=2"]))
    half.fit(images[:8], tmp_path / "b")
    resumed = Detector.create(cfg)
    r = resumed.fit(images[:8], tmp_path / "b", resume=True)
    assert r.start_step == 2 and r.steps == 4
    for (k, a), b in zip(full.unet.state_dict().items(), resumed.unet.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_domain_adaptation_moves_weights_but_not_batchnorm_stats(det, images):
    d = copy.copy(det)
    before = {k: v.clone() for k, v in det.extractor.state_dict().items()}
    r = d.adapt(images[:8])
    after = d.extractor.state_dict()
    assert r.steps == 2 and r.last_loss == r.last_loss
    stats = [k for k in before if "running_" in k]
    weights = [k for k in before if k.endswith("weight") and "bn" not in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in weights)
    assert all(torch.equal(before[k], v) for k, v in det.extractor.state_dict().items())  # original untouched


def test_decision_and_mask_agree(det, images):
    """PASS (score <= threshold) images have an empty defect mask; FAIL images a non-empty one."""
    cal = det.calibration
    assert cal.threshold == pytest.approx(float(torch.tensor(cal.nominal_scores).quantile(0.99)), rel=1e-5)
    pred = det.predict(images)
    for score, amap in zip(pred.scores, pred.maps):
        assert bool((amap > cal.pixel_threshold).any()) == bool(score > cal.threshold)


def test_feature_input_size_resizes_before_the_backbone(images):
    from ddad.features import build_extractor

    native, resized = build_extractor(), build_extractor(input_size=64)
    x = images[:2]  # 32 px
    f32, f64 = native(x, (2, 3)), resized(x, (2, 3))
    assert f64[2].shape[-1] == 2 * f32[2].shape[-1]  # features of the 64-px image: twice the resolution
    up = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(resized(x, (2,))[2], native(up, (2,))[2])
    with pytest.raises(ValueError, match="input_size"):
        build_extractor(input_size=8)


def test_reuse_trained_keeps_the_unet_and_redoes_only_what_changed(tiny_model, tmp_path):
    import shutil

    from ddad.config import apply_overrides
    from ddad.pipeline import reuse_trained

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    before = Detector.load(d)
    same, changed = reuse_trained(d, before.cfg, progress=False)
    assert changed == ()
    cfg = apply_overrides(before.cfg, ["features.input_size=64", "adapt.epochs=1", "adapt.batch_size=4"])
    det, changed = reuse_trained(d, cfg, progress=False)
    assert set(changed) == {"features", "adapt"} and det.extractor.input_size == 64 and det.adapted
    for k, v in before.unet.state_dict().items():  # the UNet is untouched
        assert torch.equal(v, det.unet.state_dict()[k])
    again = Detector.load(d)  # saved in place: a second reuse finds nothing to redo
    assert again.cfg.features.input_size == 64 and reuse_trained(d, cfg, progress=False)[1] == ()
    with pytest.raises(ValueError, match="model.*trained with other settings|trained with other settings.*model"):
        reuse_trained(d, apply_overrides(cfg, ["model.preset=cpu-64"]), progress=False)
    with pytest.raises(ValueError, match="data.image_size"):
        reuse_trained(d, apply_overrides(cfg, ["data.image_size=64"]), progress=False)


def test_adapt_with_new_feature_settings_rebuilds_the_extractor(tiny_model, tmp_path):
    import shutil

    from ddad.pipeline import run_adapt

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    det = run_adapt(d, ["features.input_size=64", "adapt.epochs=1", "adapt.batch_size=4"], progress=False)
    assert det.extractor.input_size == 64  # adapted at the resolution it will be used at
    assert Detector.load(d).extractor.input_size == 64


def test_adapting_again_replaces_the_adaptation_instead_of_compounding_it(tiny_model, tmp_path):
    import shutil

    from ddad.pipeline import run_adapt

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    first = run_adapt(d, ["adapt.epochs=1", "adapt.batch_size=4"], progress=False).extractor.state_dict()
    second = run_adapt(d, progress=False).extractor.state_dict()  # starts again from the ImageNet weights
    assert any(not torch.equal(v, Detector.create(Detector.load(d).cfg).extractor.state_dict()[k])
               for k, v in first.items())  # adaptation did move the weights
    assert all(torch.equal(v, second[k]) for k, v in first.items())


def test_training_adaptation_and_calibration_from_an_imageset_equal_the_tensor_path(tiny_object, tmp_path):
    """Images read on demand (ImageSet: memory holds a batch) give the same weights, extractor and calibration as
    the stacked tensor, and the same data fingerprint (so a resume check accepts either)."""
    ds = load_dataset("mvtec", tiny_object, "test", image_size=32)
    sub = AnomalyDataset(ds.items[:8], 32, ds.mask_threshold, ds.name)
    lazy, whole = ImageSet(sub), stack_images(sub)
    assert lazy.shape == tuple(whole.shape) and len(lazy) == 8
    idx = torch.tensor([3, 1, 3])
    assert torch.equal(lazy[idx], whole[idx]) and torch.equal(lazy[2:5], whole[2:5]) and torch.equal(lazy[4], whole[4])
    assert torch.equal(to_model(lazy)[idx], to_model(whole)[idx])
    assert data_fingerprint(to_model(lazy)) == data_fingerprint(to_model(whole))
    ahead = list(ImageSet(sub, workers=1).draws([[0, 5], [7, 7, 2]]))  # decoded by a worker process
    assert torch.equal(ahead[0], whole[[0, 5]]) and torch.equal(ahead[1], whole[[7, 7, 2]])
    cfg = apply_overrides(DDADConfig(), TINY)
    a, b = Detector.create(cfg), Detector.create(cfg)
    ra, rb = a.fit(whole, tmp_path / "a"), b.fit(lazy, tmp_path / "b")
    assert ra.final_loss == rb.final_loss
    for (k, x), y in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)
    a.adapt(whole)
    b.adapt(lazy)
    for (k, x), y in zip(a.extractor.state_dict().items(), b.extractor.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)
    assert a.calibrate(whole) == b.calibrate(lazy)


def test_ema_update_equals_the_per_tensor_lerp():
    """The multi-tensor EMA step (ddad.diffusion.train.ema_update) is the same lerp, element for element, as one
    lerp per tensor; bf16 weights are averaged in float32, integer buffers copied."""
    from ddad.diffusion.train import ema_update

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g), torch.randn(4, generator=g).bfloat16(),
               torch.tensor([3, 1], dtype=torch.int64)]
    ema = [torch.randn(w.shape, generator=g) for w in weights]
    want = [e.clone().lerp_(w.float(), 1 - 0.99) if w.is_floating_point() else w.float() for e, w in zip(ema, weights)]
    ema_update(list(zip(ema, weights)), 0.99)
    for e, w in zip(ema, want):
        assert torch.equal(e, w)


def test_nominal_memory_term_zero_on_training_images_saved_and_rebuilt_with_the_extractor(images, tmp_path):
    """ddad.memory (not in the paper): the memory of the training images is measured after fit/adapt, a training
    image's memory term is 0, the bank travels in state.safetensors, and a model without one is told how to get it."""

    cfg = apply_overrides(DDADConfig(), TINY + ["ddad.memory=1", "adapt.epochs=1"])
    d = Detector.create(cfg)
    d.fit(images[:8], tmp_path / "run")
    with pytest.raises(ModelFileError, match="ddad adapt"):  # fit alone measures no memory (the pipeline does)
        d.calibrate(images[:4])
    d.adapt(images[:8])  # measures it with the adapted extractor
    assert d.terms(images[:8]).maps["memory"].abs().max() < 1e-3  # every training patch is in the memory
    d.calibrate(images[:4])
    assert "memory_scale" in d.calibration.constants
    ref = d.predict(images[8:14])
    assert ref.terms["memory"].amax() > 0
    d.save(tmp_path / "m")
    back = Detector.load(tmp_path / "m")
    assert sorted(back.memory) == sorted(cfg.features.layers)
    assert torch.allclose(back.predict(images[8:14]).scores, ref.scores, rtol=1e-2)  # float16 memory on disk
    # a model without the term carries no memory; switching it on (select/reuse) measures it from the training images
    plain = Detector.create(apply_overrides(cfg, ["ddad.memory=0"]))
    plain.fit(images[:8], tmp_path / "run2")
    plain.fit_references(images[:8])
    assert plain.memory is None and plain.state() == {}
    with pytest.raises(ValueError, match="ddad.memory is an option of method 'ddad'"):  # no such term elsewhere
        apply_overrides(cfg, ["method=glad"])


def test_switching_the_memory_term_on_for_a_saved_model_measures_it(tiny_model, tmp_path):
    import shutil

    from ddad.pipeline import reuse_trained

    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    before = Detector.load(d)
    assert before.memory is None
    det, changed = reuse_trained(d, apply_overrides(before.cfg, ["ddad.memory=4"]), progress=False)
    assert changed == ("ddad",) and sorted(det.memory) == sorted(before.cfg.features.layers)
    assert (d / "state.safetensors").is_file() and "memory_scale" in Detector.load(d).calibration.constants
    full = {j: b.shape[1] for j, b in det.memory.items()}
    det, changed = reuse_trained(d, apply_overrides(before.cfg, ["ddad.memory=4", "ddad.memory_coreset=0.1"]),
                                 progress=False)  # a coreset of the memory: measured again, a tenth of the patches
    assert changed == ("ddad",) and {j: b.shape[1] for j, b in Detector.load(d).memory.items()} == {
        j: -(-n // 10) for j, n in full.items()}
    # on other layers than D_f's (1-3): a memory of those layers, a term of its own signature
    # (not shared with a memory on D_f's layers), zero on a training image
    finer = apply_overrides(before.cfg, ["ddad.memory=4", "ddad.memory_layers=[1,2,3]"])
    assert finer.ddad.memory_layers == (1, 2, 3) and finer.features.layers != (1, 2, 3)
    assert type(det).terms_signature(finer) != type(det).terms_signature(
        apply_overrides(before.cfg, ["ddad.memory=4"]))
    det, changed = reuse_trained(d, finer, progress=False)
    assert changed == ("ddad",) and sorted(Detector.load(d).memory) == [1, 2, 3]
    train = nominal_split(det.cfg)[0].stack()[:2]
    t = det.terms(train)
    assert t.maps["memory"].abs().max() < 1e-3 and t.maps["memory"].shape == t.maps["feature"].shape
    det.cfg = apply_overrides(det.cfg, ["ddad.memory_layers=[2,3]"])  # a memory of other layers than the config's
    with pytest.raises(ModelFileError, match=r"layers \[2, 3\], this model has layers \[1, 2, 3\]"):
        det.terms(train)
    det, _ = reuse_trained(d, before.cfg, progress=False)  # and off again: the memory is dropped from the model
    assert det.memory is None and not (d / "state.safetensors").exists()
    with pytest.raises(ConfigError, match="memory_coreset must be in"):
        apply_overrides(before.cfg, ["ddad.memory_coreset=0"])
    with pytest.raises(ConfigError, match="memory_layers must name at least one"):
        apply_overrides(before.cfg, ["ddad.memory_layers=[]"])
