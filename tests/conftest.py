import pytest
import torch

from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset

torch.set_num_threads(2)

# The 32-px settings the plumbing tests train with (a few steps: plumbing, not accuracy), and each method's own on
# top of them; `as_cli` spells a list as the CLI's --set arguments.
TINY_SETTINGS = ["data.image_size=32", "model.preset=cpu-32", "train.steps=2", "train.batch_size=4", "sampling.steps=2",
                 "sampling.batch_size=8", "scoring.sigma=1.0", "features.layers=[1,2]"]
METHOD_SETTINGS = {
    "d3ad": ["sampling.start_level=80", "d3ad.k=3", "d3ad.start_layer=1", "d3ad.start_pool=4",
             "d3ad.autoencoder.train.steps=3", "d3ad.autoencoder.train.batch_size=4"],
    "glad": ["sampling.start_level=750", "sampling.steps=3", "sampling.eta=0", "scoring.image_score=topk_mean",
             "scoring.topk=8", "glad.ads_layer=2", "adapt.epochs=0"],
    "ran": ["scoring.image_score=topk_mean", "scoring.topk=8", "adapt.epochs=0", "ran.feature_grid=8", "ran.gd_steps=2",
            "ran.gd_denoise_every=2", "ran.padim_channels=16"],
}


def as_cli(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


@pytest.fixture(scope="session")
def tiny_object(tmp_path_factory):
    """A tiny synthetic MVTec-layout category (32 px), generated once per test session."""
    root = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticSpec(category="object", size=32, n_train=12, n_test_good=4, n_test_per_defect=2, seed=1)
    return make_synthetic_dataset(root, spec)


@pytest.fixture(scope="session")
def tiny_model(tiny_object, tmp_path_factory):
    """A saved, calibrated 32-px model (a few training steps: for plumbing tests, not accuracy)."""
    from ddad.config import DDADConfig, apply_overrides
    from ddad.data import load_dataset
    from ddad.detector import Detector
    from ddad.pipeline import stack_images

    cfg = apply_overrides(DDADConfig(), [*TINY_SETTINGS, f"data.root={tiny_object}"])
    images = stack_images(load_dataset("mvtec", tiny_object, "train", image_size=32))
    out = tmp_path_factory.mktemp("tiny_model")
    det = Detector.create(cfg)
    det.fit(images[:8], out)
    det.calibrate(images[8:])
    det.save(out)
    return out


@pytest.fixture(scope="session")
def images(tiny_object):
    """The tiny category's test images (N, 3, 32, 32) in [0, 1]."""
    from ddad.data import load_dataset
    from ddad.pipeline import stack_images

    return stack_images(load_dataset("mvtec", tiny_object, "test", image_size=32))


def fitted_detector(cfg, images, run_dir):
    """A detector of cfg.method fitted on images[:8] and calibrated on images[:4] (plumbing, not accuracy)."""
    from ddad.detector import Detector

    d = Detector.create(cfg)
    d.fit(images[:8], run_dir)
    d.calibrate(images[:4])
    return d
