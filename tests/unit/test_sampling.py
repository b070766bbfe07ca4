import pytest
import torch
from diffusers import DDIMScheduler

from ddad.diffusion import NoiseSchedule
from ddad.sampling import ddad_condition, ddim_step, image_seeds, per_image_noise, predict_x0, reconstruct, timestep_plan

SCHED = NoiseSchedule.linear()


def oracle(x0: torch.Tensor):
    """An eps-model that knows the clean image: returns exactly the noise present in x_t."""

    def eps(x_t, t):
        ab = SCHED.alpha_bar(t).view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    return eps


def test_schedule_alpha_bar():
    ab = SCHED.alpha_bar(torch.tensor([-1, 0, 250, 999]))
    assert ab[0] == 1.0 and (ab[1:] < ab[:-1]).all()
    assert ab[2] == pytest.approx(float(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[250]))
    with pytest.raises(ValueError):
        SCHED.alpha_bar(torch.tensor([1000]))


def test_forward_noising_matches_diffusers_and_keeps_the_image_at_t_minus_one():
    from ddad.diffusion.schedule import noised

    x0, eps = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 250, 999])
    ref = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    torch.testing.assert_close(SCHED.q_sample(x0, t, eps), ref.add_noise(x0, eps, t), rtol=1e-5, atol=1e-5)
    ab = SCHED.alpha_bar(t).view(-1, 1, 1, 1)
    assert torch.equal(noised(x0, ab, eps), SCHED.q_sample(x0, t, eps))
    assert torch.equal(noised(x0, torch.ones(3, 1, 1, 1), eps), x0)  # alpha_bar 1 (t = -1): nothing added


def test_ddim_step_with_same_timestep_is_identity():
    x, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    ab = SCHED.alpha_bar(torch.tensor([100, 600]))
    out, _ = ddim_step(x, eps, ab, ab, eta=1.0, noise=torch.randn_like(x))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("w", [0.0, 3.0])
def test_oracle_model_recovers_x0_exactly(eta, w):
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    start = torch.tensor([250, 100, 400])  # per-sample start levels
    rec = reconstruct(oracle(x0), SCHED, x0, x0, start, n_steps=10, w=w, eta=eta, seed=0)
    torch.testing.assert_close(rec.x0, x0, atol=1e-4, rtol=0)


def test_first_denoising_timestep_equals_noise_level():
    seen = []

    def spy(x_t, t):
        seen.append(t.tolist())
        return torch.zeros_like(x_t)

    x = torch.zeros(2, 3, 8, 8)
    reconstruct(spy, SCHED, x, x, torch.tensor([250, 250]), n_steps=10, w=0, eta=0)
    assert seen[0] == [250, 250] and seen[-1] == [25, 25] and len(seen) == 10
    seen.clear()
    reconstruct(spy, SCHED, x, x, torch.tensor([250, 250]), n_steps=10, w=0, eta=0, official_offbyone=True)
    assert seen[0] == [225, 225] and seen[-1] == [0, 0]


def test_timestep_plan_ends_clean():
    t, tp = timestep_plan(torch.tensor([250, 80]), 5)
    assert t[:, 0].tolist() == [250, 200, 150, 100, 50] and tp[:, 0].tolist() == [200, 150, 100, 50, -1]
    assert t[:, 1].tolist() == [80, 64, 48, 32, 16] and tp[-1].tolist() == [-1, -1]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_w0_equals_plain_ddim_of_diffusers(eta):
    """With w = 0 our loop is diffusers' DDIMScheduler (same timesteps: the official-code plan 225..0)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    proj = torch.randn(3, 3)

    def model(x_t, t):  # any deterministic function of (x_t, t)
        return torch.tanh(torch.einsum("ij,bjhw->bihw", proj, x_t) * (1 + t.view(-1, 1, 1, 1) / 1000))

    ours = reconstruct(model, SCHED, x, x, torch.tensor([250, 250]), 10, w=0.0, eta=eta, seed=7,
                       official_offbyone=True).x0
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                          timestep_spacing="leading")
    sched.set_timesteps(40)  # stride 25
    noise = per_image_noise((3, 8, 8), image_seeds(x, 7), 11, x.device, x.dtype)
    x_t = sched.add_noise(x, noise[0], torch.tensor([250]))
    for i, t in enumerate(range(225, -1, -25)):
        x_t = sched.step(model(x_t, torch.full((2,), t)), t, x_t, eta=eta, variance_noise=noise[i + 1]).prev_sample
    torch.testing.assert_close(ours, x_t.clamp(-1, 1), atol=1e-5, rtol=1e-4)


def test_conditioning_formula():
    eps, x_t, y = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    ab = torch.tensor([0.5])
    out = ddad_condition(eps, x_t, y, ab, w=2.0)
    y_t = 0.5**0.5 * y + 0.5**0.5 * eps
    torch.testing.assert_close(out, eps - 2.0 * 0.5**0.5 * (y_t - x_t))
    assert ddad_condition(eps, x_t, y, ab, 0.0) is eps
    torch.testing.assert_close(predict_x0(0.5**0.5 * y + 0.5**0.5 * eps, eps, ab), y)


def test_per_image_noise_does_not_depend_on_batch():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    full = per_image_noise((3, 8, 8), image_seeds(x, 1), 3, "cpu", torch.float32)
    alone = per_image_noise((3, 8, 8), image_seeds(x[2:3], 1), 3, "cpu", torch.float32)
    torch.testing.assert_close(full[:, 2:3], alone)
    assert not torch.equal(full[:, 0], full[:, 1])


def test_resolution_matched_level_scales_snr_by_the_area_ratio():
    from ddad.diffusion.schedule import resolution_matched_level

    s = NoiseSchedule.linear()
    ab = s.alphas_cumprod
    snr = ab / (1 - ab)
    assert resolution_matched_level(s, 250, 256, 256) == 250
    t = resolution_matched_level(s, 250, 256, 128)
    assert t < 250 and abs(float(snr[t] / snr[250]) / 4 - 1) < 0.02  # half the size: 4x the SNR
    assert resolution_matched_level(s, 250, 256, 512) > 250
    with pytest.raises(ValueError):
        resolution_matched_level(s, 250, 0, 128)


def test_eps_for_x0_inverts_eq2_and_targets_the_normal_image():
    """GLAD's ATP target: from x_t made of an image WITH a synthetic defect, the target noise must make the
    x0-prediction equal the NORMAL image (the sign the official code flipped)."""
    from ddad.diffusion import NoiseSchedule
    from ddad.sampling import eps_for_x0, predict_x0

    sched = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    normal = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    defect = torch.zeros_like(normal)
    defect[:, :, 4:9, 4:9] = 0.8  # a synthetic anomaly in a patch
    noise = torch.randn(normal.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 250, 500, 900])
    ab = sched.alpha_bar(t).double()
    x_t = sched.q_sample(normal + defect, t, noise)
    target = eps_for_x0(x_t, normal, ab)
    torch.testing.assert_close(predict_x0(x_t, target, ab), normal)  # the x0 identity
    # no defect: the ordinary DDPM target
    torch.testing.assert_close(eps_for_x0(sched.q_sample(normal, t, noise), normal, ab), noise)
    # the target differs from the added noise exactly inside the defect, by +sqrt(ab / (1 - ab)) * defect
    scale = (ab / (1 - ab)).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(target - noise, scale * defect)
    # the flipped sign would reconstruct the defect twice as strong, not remove it
    flipped = noise - scale * defect
    assert (predict_x0(x_t, flipped, ab) - normal)[:, :, 4:9, 4:9].mean() > 1.5 * 0.8
