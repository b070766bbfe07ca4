"""Non-square images keep their aspect: data.image_height with data.image_size as the width, through every method,
evaluation, save/load and the aspect warning."""
import numpy as np
import pytest
import torch

from ddad.config import ConfigError, DDADConfig, apply_overrides
from ddad.data import load_dataset, read_image, read_mask
from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset
from ddad.detector import Detector
from ddad.pipeline import aspect_note, stack_images

from conftest import fitted_detector
from test_d3ad import TINY_D3AD
from test_detector import TINY
from test_glad import TINY_GLAD
from test_ran import TINY_RAN

H, W = 32, 48  # multiples of 16 (the latent models: autoencoder 4x, cpu-32 UNet 4x)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    spec = SyntheticSpec(category="grain", size=96, height=64, gray=True, n_train=10, n_test_good=3,
                         n_test_per_defect=2, defects=("thin", "pit", "fray"), seed=3)
    return make_synthetic_dataset(tmp_path_factory.mktemp("wide"), spec)


def test_reading_resizes_to_height_and_width_and_masks_stay_binary(wide):
    img = read_image(wide / "test" / "fray" / "000.png", (H, W))
    mask = read_mask(wide / "ground_truth" / "fray" / "000_mask.png", (H, W))
    assert img.shape == (3, H, W) and mask.shape == (1, H, W)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
    assert read_image(wide / "test" / "fray" / "000.png", 32).shape == (3, 32, 32)  # an int is still a square


def test_image_height_validates_and_labels_the_size():
    cfg = apply_overrides(DDADConfig(), ["data.image_size=40", "data.image_height=24"])
    assert cfg.data.shape == (24, 40) and cfg.data.size_label == "40x24px"
    assert DDADConfig().data.shape == (64, 64) and DDADConfig().data.size_label == "64px"
    with pytest.raises(ConfigError, match="image_height must be >= 8"):
        apply_overrides(DDADConfig(), ["data.image_height=4"])
    with pytest.raises(ValueError, match="divisible by"):
        Detector.create(apply_overrides(DDADConfig(), [*TINY, "data.image_size=40", "data.image_height=26"]))


def test_aspect_warning_names_the_height_that_keeps_it(wide):
    f = wide / "train" / "good" / "000.png"  # 96x64
    assert aspect_note(f, (64, 96)) is None and aspect_note(f, (H, W)) is None
    note = aspect_note(f, (64, 64))
    assert note is not None and "stretched" in note and "data.image_size: 72 and data.image_height: 48" in note
    note = aspect_note(f, (48, 128))  # 2.67 for 1.5: the nearest exact pair to width 128 is 120 x 80
    assert "data.image_size: 120 and data.image_height: 80" in note


@pytest.mark.parametrize("overrides", [TINY, TINY_D3AD, TINY_GLAD, TINY_RAN], ids=["ddad", "d3ad", "glad", "ran"])
def test_every_method_trains_scores_and_reloads_at_a_non_square_size(wide, overrides, tmp_path):
    cfg = apply_overrides(DDADConfig(), [*overrides, f"data.image_size={W}", f"data.image_height={H}"])
    train = stack_images(load_dataset("mvtec", wide, "train", image_size=(H, W)))
    det = fitted_detector(cfg, train, tmp_path)
    test = load_dataset("mvtec", wide, "test", image_size=(H, W))
    x = stack_images(test)
    pred = det.predict(x)
    assert pred.maps.shape == (len(x), H, W) and torch.isfinite(pred.scores).all()
    with pytest.raises(ValueError, match=f"images must be {W}x{H}"):
        det.predict(torch.zeros(1, 3, W, H))
    det.save(tmp_path / "saved")
    again = Detector.load(tmp_path / "saved").predict(x)
    assert torch.allclose(again.scores, pred.scores, atol=1e-5)
    res = det.evaluate(test, save_dir=tmp_path / "eval")
    assert np.load(tmp_path / "eval" / "maps.npy").shape == (len(x), H, W)
    assert 0.0 <= res.metrics.pixel_auroc <= 1.0
