"""RAN: learned-variance maths, respacing, gradient denoising, and the detector's properties."""
import copy
import json

import pytest
import torch

from conftest import fitted_detector
from ddad.config import DDADConfig, apply_overrides
from ddad.detector import Detector
from ddad.diffusion import NoiseSchedule
from ddad.diffusion.variance import learned_logvar, normal_kl, posterior, respace
from ddad.methods.ran import PaDiM, rotate
from ddad.sampling import gradient_denoise, matching_timestep

TINY_RAN = [
    "method=ran", "data.image_size=32", "model.preset=cpu-32", "train.steps=3", "train.batch_size=4",
    "train.checkpoint_every=2", "sampling.batch_size=4", "scoring.sigma=1.0", "scoring.image_score=topk_mean",
    "scoring.topk=8", "features.layers=[1,2]", "adapt.epochs=0", "ran.feature_grid=8", "ran.gd_steps=4",
    "ran.gd_denoise_every=2", "ran.padim_channels=16",
]


# ---- maths --------------------------------------------------------------------------------------------------
def test_gaussian_kl_equals_torch_distributions_and_is_zero_for_identical_ones():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    lv1, lv2 = torch.randn(50, generator=g), torch.randn(50, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref, rtol=1e-5, atol=1e-6)
    assert normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-6


def test_respacing_maps_respaced_steps_to_the_right_training_timesteps():
    sched = NoiseSchedule.linear(1000)
    p = respace(sched, 250)
    assert p.timesteps[[0, 5, 50, 100, 249]].tolist() == [0, 20, 201, 401, 999]
    torch.testing.assert_close(p.alpha_bar, sched.alphas_cumprod[p.timesteps].double())
    torch.testing.assert_close(torch.cumprod(1 - p.betas, 0), p.alpha_bar)  # a process of its own
    full = respace(sched, 1000)
    assert torch.equal(full.timesteps, torch.arange(1000))
    torch.testing.assert_close(full.alpha_bar, sched.alphas_cumprod.double())


def test_learned_variance_stays_between_posterior_variance_and_beta():
    p = respace(NoiseSchedule.linear(1000), 250)
    k = torch.tensor([1, 5, 50, 100, 249])
    v = torch.linspace(-1, 1, 11).view(1, 11, 1, 1).expand(5, 11, 2, 2)
    lv = learned_logvar(p, k, v)
    lo = p.posterior_log_variance[k].view(-1, 1, 1, 1).float()
    hi = p.betas[k].log().view(-1, 1, 1, 1).float()
    assert (lv >= lo - 1e-6).all() and (lv <= hi + 1e-6).all()
    torch.testing.assert_close(lv[:, :1], lo.expand(5, 1, 2, 2))
    torch.testing.assert_close(lv[:, -1:], hi.expand(5, 1, 2, 2))
    assert (lv.diff(dim=1) >= 0).all()


def test_posterior_of_the_true_x0_is_the_ddpm_posterior():
    sched = NoiseSchedule.linear(1000)
    p = respace(sched, 1000)
    x0 = torch.rand(3, 3, 4, 4) * 2 - 1
    t = torch.tensor([1, 10, 500])
    x_t = sched.q_sample(x0, t, torch.randn(3, 3, 4, 4))
    mean, logvar = posterior(p, t, x0, x_t)
    ab, ab_prev = sched.alpha_bar(t), sched.alpha_bar(t - 1)
    beta = 1 - ab / ab_prev
    c1 = (beta * ab_prev.sqrt() / (1 - ab)).view(-1, 1, 1, 1)
    c2 = ((1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)).view(-1, 1, 1, 1)
    torch.testing.assert_close(mean, c1 * x0 + c2 * x_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logvar.flatten(), (beta * (1 - ab_prev) / (1 - ab)).log(), rtol=1e-4, atol=1e-5)


def test_rotation_by_zero_is_identity_and_by_ninety_degrees_is_rot90():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(rotate(x, torch.zeros(2)), x, rtol=0, atol=1e-5)
    r = rotate(x, torch.tensor([90.0, -90.0]))
    torch.testing.assert_close(r[0], torch.rot90(x[0], 1, (1, 2)), rtol=0, atol=1e-4)
    torch.testing.assert_close(r[1], torch.rot90(x[1], -1, (1, 2)), rtol=0, atol=1e-4)


# ---- gradient denoising -------------------------------------------------------------------------------------
def test_gradient_denoising_lowers_the_mahalanobis_distance():
    g = torch.Generator().manual_seed(0)
    nominal = torch.randn(200, 4, 2, 2, generator=g) * 0.1  # "features" = the image itself: 4 channels, 2x2 grid
    padim = PaDiM.fit(nominal, d=4)
    x = torch.randn(3, 4, 2, 2, generator=g) * 0.1
    x[:, :, 0, 0] += 2.0  # an anomaly at one position
    before = padim.distance(x)
    after = padim.distance(gradient_denoise(x, padim.distance, lambda z: z, steps=40, lr=0.02, every=5))
    assert (after < 0.5 * before).all()
    # each image moves by its own gradient only: alone it ends where it ends in the batch
    alone = gradient_denoise(x[1:2], padim.distance, lambda z: z, steps=40, lr=0.02, every=5)
    torch.testing.assert_close(alone[0], gradient_denoise(x, padim.distance, lambda z: z, 40, 0.02, 5)[1])


def test_matching_timestep_has_the_noise_of_n_gradient_steps():
    sched = NoiseSchedule.linear(1000)
    t = matching_timestep(sched, 0.02, 5)
    target = (1 - 0.02**2) ** 5
    assert abs(float(sched.alphas_cumprod[t]) - target) <= min(
        abs(float(sched.alphas_cumprod[t + d]) - target) for d in (-1, 1))


# ---- the detector -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det(images, tmp_path_factory):
    return fitted_detector(apply_overrides(DDADConfig(), TINY_RAN), images, tmp_path_factory.mktemp("ran"))


def test_ran_has_learned_variance_a_feature_head_and_a_padim_gaussian(det):
    assert type(det).__name__ == "RAN" and det.net.unet.config.out_channels == 6
    assert det.padim is not None and det.padim.precision.shape == (64, 16, 16)  # 8x8 grid, 16 channels
    assert set(det.calibration.constants) == {"kl", "feature"}
    assert (det.net.feature_std > 0).all() and det.net.feature_mean.abs().sum() > 0


def test_ran_scores_do_not_depend_on_batch_size_or_batch_mates(det, images):
    x = images[:6]
    ref = det.predict(x).scores
    for bs in (1, 4):
        d = copy.copy(det)
        d.cfg = apply_overrides(det.cfg, [f"sampling.batch_size={bs}"])
        torch.testing.assert_close(d.predict(x).scores, ref, atol=1e-4, rtol=1e-4)
    mixed = torch.cat([images[10:12], x[3:4], images[8:9]])
    torch.testing.assert_close(det.predict(mixed).scores[2], ref[3], atol=1e-4, rtol=1e-4)


def test_ran_save_load_gives_identical_scores_and_reconstructions(det, images, tmp_path):
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["method"] == "ran"
    loaded = Detector.load(tmp_path / "m")
    a, b = loaded.predict(images[:3]), det.predict(images[:3])
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    torch.testing.assert_close(a.reconstructions, b.reconstructions, rtol=0, atol=0)


def test_ran_refuses_domain_adaptation_that_would_break_its_head(det, images):
    d = copy.copy(det)
    d.cfg = apply_overrides(det.cfg, ["adapt.epochs=1"])
    with pytest.raises(ValueError, match="adapt.epochs: 0"):
        d.adapt(images[:4])


def test_gradient_reconstruction_works_under_inference_mode(det, images):
    with torch.inference_mode():
        rec = det.reconstruct(images[:2])
    assert rec.shape == (2, 3, 32, 32) and rec.min() >= 0 and rec.max() <= 1


def test_the_maps_skip_gradient_denoising_unless_the_map_reads_it(det, images, monkeypatch):
    """Selection and calibration need the maps alone: the gradient-denoised picture (gd_steps backbone passes with
    gradients) is made only where gd_score_weight puts it in the map."""
    want = det.terms(images[:2]).maps
    d = copy.copy(det)
    monkeypatch.setattr(d, "gradient_reconstruction", lambda y: pytest.fail("gradient denoising for a map without it"))
    got = d.terms_maps(images[:2])
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    calls = []
    d.cfg = apply_overrides(det.cfg, ["ran.gd_score_weight=0.5"])
    monkeypatch.setattr(d, "gradient_reconstruction", lambda y: calls.append(len(y)) or det.gradient_reconstruction(y))
    assert "gradient" in d.terms_maps(images[:2]) and calls == [2]
