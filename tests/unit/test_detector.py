"""Detector properties on a tiny untrained-or-briefly-trained model (32 px, cpu-32 preset)."""
import copy

import pytest
import torch

from ddad.checkpoint import ModelFileError
from ddad.config import DDADConfig, apply_overrides
from ddad.detector import Detector
from ddad.pipeline import stack_images
from ddad.data import load_dataset

TINY = [
    "data.image_size=32", "model.preset=cpu-32", "train.steps=4", "train.batch_size=4", "train.checkpoint_every=2",
    "sampling.steps=3", "sampling.batch_size=4", "scoring.sigma=1.0", "adapt.batch_size=4", "features.layers=[1,2]",
]


@pytest.fixture(scope="module")
def images(tiny_object):
    return stack_images(load_dataset("mvtec", tiny_object, "test", image_size=32))


@pytest.fixture(scope="module")
def det(images, tmp_path_factory):
    d = Detector.create(apply_overrides(DDADConfig(), TINY))
    d.fit(images[:8], tmp_path_factory.mktemp("run"))
    d.calibrate(images[:4])
    return d


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
