"""D3AD: the dynamic start policy, the noiseless start, the autoencoder, and the detector's properties."""
import copy
import json

import pytest
import torch

from ddad.config import DDADConfig, apply_overrides
from conftest import fitted_detector
from ddad.detector import Detector
from ddad.diffusion import NoiseSchedule
from ddad.sampling import KNNBinStart, knn_distances, reconstruct

TINY_D3AD = [
    "method=d3ad", "data.image_size=32", "model.preset=cpu-32", "train.steps=4", "train.batch_size=4",
    "train.checkpoint_every=2", "sampling.steps=3", "sampling.batch_size=4", "sampling.start_level=80",
    "scoring.sigma=1.0", "features.layers=[1,2]", "adapt.batch_size=4", "d3ad.k=3", "d3ad.start_layer=1",
    "d3ad.start_pool=4", "d3ad.autoencoder.train.steps=4", "d3ad.autoencoder.train.batch_size=4",
    "d3ad.autoencoder.train.checkpoint_every=2",
]


# ---- the dynamic start policy -------------------------------------------------------------------------------
def test_leave_one_out_knn_excludes_each_vector_itself():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(12, 5, generator=g)
    d = knn_distances(bank, bank, k=3, exclude_self=True)
    full = torch.cdist(bank.double(), bank.double(), p=1)
    for i in range(12):
        others = torch.cat([full[i, :i], full[i, i + 1 :]])
        assert d[i] == pytest.approx(float(others.sort().values[:3].mean()), rel=1e-6)
    assert (d > 0).all()  # with itself as a neighbour the nearest distance would be 0
    assert (knn_distances(bank, bank, k=3) < d).all()


def test_an_outlier_training_image_gets_a_higher_bin_and_level():
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(30, 8, generator=g) * 0.1
    bank[7] += 5.0  # one atypical training image
    policy = KNNBinStart.fit(bank, t_max=80, k=5)
    loo = knn_distances(bank, bank, 5, exclude_self=True)
    bins = policy.bin_of(loo)
    assert bins[7] == 10 and (torch.cat([bins[:7], bins[8:]]) < 10).all()
    far = bank[:3] + 10.0
    assert (policy.levels(far) == 80).all()  # beyond every training distance: the last bin, T'_max
    assert (policy.levels(bank[:1] + 1e-4) <= policy.levels(far)).all()


@pytest.mark.parametrize("t_max,round_to", [(80, 10), (80, 1), (74, 10), (250, 25)])
def test_start_level_is_monotone_in_the_bin_and_within_bounds(t_max, round_to):
    policy = KNNBinStart(torch.zeros(2, 1), torch.linspace(0, 1, 11), t_max, k=1, min_bin=2, round_to=round_to)
    levels = policy.level_of_bin(torch.arange(0, 13))
    assert (levels[1:] >= levels[:-1]).all()
    assert levels.min() >= 0.2 * t_max and levels.max() == t_max
    if round_to == 1:
        assert levels.tolist()[2:11] == [round(b / 10 * t_max) for b in range(2, 11)]


def test_noiseless_start_is_exactly_the_scaled_latent():
    sched = NoiseSchedule.linear(1000, 0.0015, 0.0195)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    start = torch.tensor([20, 50, 80])
    seen = []

    def eps(z_t, t):
        seen.append((z_t.clone(), t.clone()))
        return torch.zeros_like(z_t)

    reconstruct(eps, sched, z, z, start, 4, w=0.0, eta=0.0, noise_free_start=True)
    first, t = seen[0]
    assert torch.equal(t, start)  # the first UNet call is at each image's own level
    expected = sched.alpha_bar(start).view(-1, 1, 1, 1).sqrt() * z
    assert torch.equal(first, expected)
    seen.clear()
    reconstruct(eps, sched, z, z, start, 4, w=0.0, eta=0.0, noise_free_start=False)
    assert not torch.allclose(seen[0][0], expected)  # the noised start (option) does add noise


# ---- the detector -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det(images, tmp_path_factory):
    return fitted_detector(apply_overrides(DDADConfig(), TINY_D3AD), images, tmp_path_factory.mktemp("d3ad"))


def test_d3ad_is_built_from_the_method_key(det):
    assert type(det).__name__ == "D3AD" and det.policy is not None and det.space.scale > 0
    assert set(det.calibration.constants) == {"latent", "feature"}


def test_d3ad_scores_do_not_depend_on_batch_size_or_batch_mates(det, images):
    """Start levels are identical; scores agree to float rounding (CPU conv kernels differ with the batch size,
    and encoder -> UNet -> decoder -> features carries ~1e-5 relative differences through)."""
    x = images[:6]
    ref, ref_levels = det.predict(x).scores, det.levels(x)
    for bs in (1, 4):
        d = copy.copy(det)
        d.cfg = apply_overrides(det.cfg, [f"sampling.batch_size={bs}"])
        torch.testing.assert_close(d.predict(x).scores, ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(torch.cat([d.levels(x[i : i + bs]) for i in range(0, 6, bs)]), ref_levels)
    mixed = torch.cat([images[10:12], x[3:4], images[8:9]])
    torch.testing.assert_close(det.predict(mixed).scores[2], ref[3], atol=1e-4, rtol=1e-4)


def test_d3ad_save_load_gives_identical_scores_without_naming_the_method(det, images, tmp_path):
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["method"] == "d3ad"
    loaded = Detector.load(tmp_path / "m")
    assert type(loaded).__name__ == "D3AD" and loaded.calibration == det.calibration and loaded.space.scale == det.space.scale
    torch.testing.assert_close(loaded.predict(images[:3]).scores, det.predict(images[:3]).scores, rtol=0, atol=0)
    torch.testing.assert_close(loaded.levels(images), det.levels(images), rtol=0, atol=0)


def test_d3ad_two_stage_training_resumes_exactly(images, tmp_path):
    """Killed during the autoencoder stage, or during the UNet stage: --resume ends where the full run ends. (A UNet
    checkpoint made on another autoencoder's latents is refused by its data fingerprint.)"""
    cfg = apply_overrides(DDADConfig(), TINY_D3AD)
    full = Detector.create(cfg)
    full.fit(images[:8], tmp_path / "full")
    for name, cut in (("in_ae", ["d3ad.autoencoder.train.steps=2", "train.steps=0"]), ("in_unet", ["train.steps=2"])):
        Detector.create(apply_overrides(cfg, cut)).fit(images[:8], tmp_path / name)
        resumed = Detector.create(cfg)
        r = resumed.fit(images[:8], tmp_path / name, resume=True)
        assert r.steps == 4 and r.start_step == (0 if name == "in_ae" else 2)
        assert resumed.space.fit_result.start_step == (2 if name == "in_ae" else 4)
        for net in ("autoencoder", "unet"):
            a, b = full.networks()[net].state_dict(), resumed.networks()[net].state_dict()
            for k in a:
                torch.testing.assert_close(a[k], b[k], msg=f"{name}: {net}.{k}")
        assert resumed.space.scale == pytest.approx(full.space.scale)


def test_pretrained_autoencoder_path_errors_name_what_is_expected(tmp_path):
    cfg = apply_overrides(DDADConfig(), [*TINY_D3AD, f"d3ad.autoencoder.path={tmp_path / 'vae'}"])
    with pytest.raises(FileNotFoundError, match="does not exist.*AutoencoderKL folder"):
        Detector.create(cfg)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        Detector.create(cfg)


def test_pretrained_autoencoder_folder_loads_and_is_not_retrained(det, images, tmp_path):
    det.space.vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    cfg = apply_overrides(det.cfg, [f"d3ad.autoencoder.path={tmp_path / 'vae'}"])
    other = Detector.create(cfg)
    before = {k: v.clone() for k, v in other.space.vae.state_dict().items()}
    assert all(torch.equal(v, det.space.vae.state_dict()[k]) for k, v in before.items())
    other.fit(images[:8], tmp_path / "run")
    assert all(torch.equal(v, other.space.vae.state_dict()[k]) for k, v in before.items())
    assert not (tmp_path / "run" / "checkpoints" / "autoencoder").exists()


def test_knn_bank_keeps_its_extractor_when_feature_settings_change(det, images, tmp_path):
    """Re-adapting at another features.input_size must not change the features the kNN bank was fitted on."""
    det.save(tmp_path / "m")
    assert Detector.load(tmp_path / "m").start_extractor.input_size is None
    moved = Detector.load(tmp_path / "m")
    moved.cfg = apply_overrides(moved.cfg, ["features.input_size=64"])
    moved.reset_extractor()
    moved.save(tmp_path / "m")
    again = Detector.load(tmp_path / "m")
    assert again.extractor.input_size == 64 and again.start_extractor.input_size is None
    torch.testing.assert_close(again.levels(images), det.levels(images), rtol=0, atol=0)


def test_a_new_t_max_on_a_trained_model_takes_effect(det, images):
    """sampling.start_level (T'_max) is an inference setting: a model loaded with another one bins as before and
    starts each image at its bin's fraction of the new T'_max."""
    from dataclasses import replace

    d = copy.copy(det)
    d.cfg = apply_overrides(det.cfg, ["sampling.start_level=160"])
    v = det.start_vectors(images)
    assert torch.equal(d.levels(images), replace(det.policy, t_max=160).levels(v))
    assert (d.levels(images) > det.levels(images)).all() and d.levels(images).max() <= 160
