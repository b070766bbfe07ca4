"""GLAD: the ATP objective, ADS, SAFF, the patch nearest-neighbour map, and the detector's properties."""
import copy
import json
import math

import pytest
import torch

from conftest import fitted_detector
from ddad.config import ConfigError, DDADConfig, apply_overrides
from ddad.data.anomalies import AnomalySpec
from ddad.detector import Detector
from ddad.diffusion import NoiseSchedule
from ddad.methods.glad import atp_loss
from ddad.sampling import (adaptive_reconstruct, first_switch, image_seeds, reconstruct, saff_fuse,
                           saff_mask, switch_now)
from ddad.scoring import patch_nn_distance, patch_nn_map

TINY_GLAD = [
    "method=glad", "data.image_size=32", "model.preset=cpu-32", "train.steps=4", "train.batch_size=4",
    "train.checkpoint_every=2", "sampling.steps=4", "sampling.batch_size=4", "sampling.start_level=750",
    "sampling.eta=0", "scoring.sigma=1.0", "scoring.image_score=topk_mean", "scoring.topk=8",
    "features.layers=[1,2]", "glad.ads_layer=2", "adapt.epochs=0",
]


class _Out:
    def __init__(self, sample):
        self.sample = sample


class _Oracle(torch.nn.Module):
    """Predicts the noise whose Eq. 2 x0 is a known image (matched by row)."""

    def __init__(self, schedule, x0):
        super().__init__()
        self.schedule, self.x0 = schedule, x0
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t):
        ab = self.schedule.alpha_bar(t).view(-1, 1, 1, 1)
        return _Out((x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt() + 0 * self.w)


# ---- anomaly-oriented training (Eq. 10) ---------------------------------------------------------------------
def test_atp_objective_is_minimised_by_the_model_whose_x0_is_the_normal_image():
    sched = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1  # "normal" images in model space
    spec = AnomalySpec(probability=1.0, max_scale=3)
    loss_fn = atp_loss(sched, spec)

    def loss(model):
        return float(loss_fn(model, x, torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)).detach())

    assert loss(_Oracle(sched, x)) < 1e-8  # x0-prediction = the NORMAL image: zero loss
    from ddad.data.anomalies import synthesize_batch

    seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(3)).detach())
    x_syn = synthesize_batch((x + 1) / 2, seed, spec)[0] * 2 - 1
    assert not torch.allclose(x_syn, x)
    # a model that denoises perfectly but keeps the synthetic defect is penalised (the target is not plain eps),
    # and the flipped correction (x0 = x_syn + (x_syn - x): the defect amplified, as the official code) more so
    keep, amplify = loss(_Oracle(sched, x_syn)), loss(_Oracle(sched, 2 * x_syn - x))
    assert 1e-3 < keep < amplify


def test_atp_without_defects_is_the_ddpm_objective():
    sched = NoiseSchedule.linear(1000)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss_fn = atp_loss(sched, AnomalySpec(probability=0.0))
    assert float(loss_fn(_Oracle(sched, x), x, torch.Generator().manual_seed(2),
                         torch.Generator().manual_seed(2)).detach()) < 1e-8


# ---- SAFF ---------------------------------------------------------------------------------------------------
def test_saff_with_m_one_and_zero_returns_the_two_inputs():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert torch.equal(saff_fuse(a, b, torch.ones(2, 1, 8, 8)), a)
    assert torch.equal(saff_fuse(a, b, torch.zeros(2, 1, 8, 8)), b)
    half = saff_fuse(a, b, torch.full((2, 1, 8, 8), 0.5))
    torch.testing.assert_close(half, (a + b) / 2)


def test_saff_mask_is_zero_where_the_reconstruction_matches_unlike_the_official_floor():
    d = torch.linspace(0, 3, 31).view(1, 1, 1, -1)
    m = saff_mask(d, scale=0.4)
    assert m[..., 0].item() == 0.0 and ((m >= 0) & (m <= 1)).all() and (m.diff(dim=-1) > 0).all()
    assert saff_mask(torch.tensor(0.4), 0.4).item() == pytest.approx(2 * torch.sigmoid(torch.tensor(1.0)).item() - 1)
    official = saff_mask(d, scale=0.4, floor=True)
    assert official.min().item() == 0.5  # the official mask never lets a region keep the input alone


# ---- ADS ----------------------------------------------------------------------------------------------------
def test_switch_rule_first_step_above_tau_and_never_after_t_min():
    t_plan = torch.tensor([750, 600, 450, 300, 150]).view(-1, 1).expand(5, 4)
    scores = torch.tensor([[0.0, 0.2, 0.5, 0.1, 0.9],   # above tau (0.3) at step 2
                           [0.0, 0.1, 0.1, 0.1, 0.9],   # never above before t_min: switches at 300 (step 3)
                           [0.0, 0.4, 0.1, 0.5, 0.9],   # the FIRST step above tau, not a later one
                           [0.5, 0.0, 0.0, 0.0, 0.0]])
    assert first_switch(scores, t_plan, tau=0.3, t_min=350).tolist() == [2, 3, 1, 0]
    assert first_switch(scores, t_plan, tau=math.inf, t_min=-1).tolist() == [5] * 4  # ADS off: never
    go, by_tau = switch_now(torch.tensor([0.1, 0.5]), torch.tensor([300, 700]), 0.3, 350)
    assert go.tolist() == [True, True] and by_tau.tolist() == [False, True]


def test_adaptive_reconstruction_switches_each_image_at_its_own_step():
    sched = NoiseSchedule.linear(1000)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    script = {(562, 0): 0.5, (375, 1): 0.6, (188, 1): 0.9}  # (step, image) -> score; all others 0
    state, seen = {"t": None, "active": [0, 1, 2]}, []

    def eps(x_t, t):
        state["t"] = int(t[0])
        return torch.zeros_like(x_t)

    def compare(a, b):  # the images still comparing, in order
        assert a.shape[0] == len(state["active"])
        s = torch.tensor([script.get((state["t"], i), 0.0) for i in state["active"]])
        seen.append((state["t"], list(state["active"])))
        state["active"] = [i for i, v in zip(state["active"], s) if not (v > 0.3 or state["t"] <= 350)]
        return s, torch.zeros(a.shape[0], 1, 8, 8)

    out = adaptive_reconstruct(eps, sched, x, torch.full((3,), 750), 4, compare, tau=0.3, t_min=350, mask=None,
                               seeds=image_seeds(x, 0))
    # image 0 above tau at 562, image 1 at 375; image 2 never: it switches at the first step below t_min (188)
    assert out.switch_t.tolist() == [562, 375, 188] and out.by_tau.tolist() == [True, True, False]
    assert seen == [(750, [0, 1, 2]), (562, [0, 1, 2]), (375, [1, 2]), (188, [2])]  # none compared after switching
    assert torch.isnan(out.scores[0, 2:]).all() and not torch.isnan(out.scores[2]).any()


def test_ads_off_is_plain_ddim_from_t_prime():
    """With tau = inf and no t_min the loop is exactly the shared DDIM reconstruction without conditioning."""
    sched = NoiseSchedule.linear(1000)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    start = torch.full((2,), 750)

    def eps(x_t, t):
        return 0.3 * x_t

    ads = adaptive_reconstruct(eps, sched, x, start, 5, lambda a, b: (None, None), math.inf, -1, None,
                               image_seeds(x, 0), eta=1.0)
    plain = reconstruct(eps, sched, x, x, start, 5, w=0.0, eta=1.0, seed=0)
    torch.testing.assert_close(ads.x0, plain.x0, rtol=0, atol=1e-6)
    assert (ads.switch_t == -1).all()


def test_an_image_that_never_deviates_switches_at_t_min_to_its_own_input():
    """An oracle model whose x0 is the input: every step scores 0, the switch comes at t_min with m = 0, and the
    reconstruction is the input itself."""
    sched = NoiseSchedule.linear(1000)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1

    def eps(x_t, t):  # x0 = x for the trajectory (B images) and for the input copies (appended after them)
        ab = sched.alpha_bar(t).view(-1, 1, 1, 1)
        ref = torch.cat([x, x])[: x_t.shape[0]] if x_t.shape[0] > 2 else x
        return (x_t - ab.sqrt() * ref) / (1 - ab).sqrt()

    def compare(a, b):
        d = (a - b).abs().mean(dim=1, keepdim=True)
        return d.flatten(1).amax(dim=1), d

    out = adaptive_reconstruct(eps, sched, x, torch.full((2,), 750), 10, compare, 0.1, 350,
                               lambda d: saff_mask(d, 0.1), image_seeds(x, 0))
    assert out.switch_t.tolist() == [300, 300] and not out.by_tau.any()
    torch.testing.assert_close(out.x0, x, rtol=0, atol=1e-4)


# ---- the map ------------------------------------------------------------------------------------------------
def test_identical_or_rearranged_reconstruction_gives_a_zero_map():
    # seeded, and 64 channels: a negated 8-channel patch could still find a close match among 35 random ones (it
    # depended on the RNG state the earlier tests left)
    g = torch.Generator().manual_seed(0)
    f = {1: torch.randn(2, 64, 6, 6, generator=g), 2: torch.randn(2, 16, 3, 3, generator=g)}
    assert patch_nn_map(f, f, (24, 24)).abs().max() < 1e-6
    # nearest-neighbour matching: the same patches at other positions are still a perfect match
    perm = {j: v.flatten(2)[..., torch.randperm(v.shape[2] * v.shape[3], generator=g)].view_as(v)
            for j, v in f.items()}
    assert patch_nn_map(f, perm, (24, 24), reverse=True).abs().max() < 1e-5
    new = {j: v.clone() for j, v in f.items()}
    new[1][0, :, 2, 2] = -new[1][0, :, 2, 2]  # one patch with no counterpart in the reconstruction
    d = patch_nn_distance(f[1], new[1])
    assert d[0, 0, 2, 2] > 0.1 and d[1].abs().max() < 1e-6  # the other image is untouched


# ---- the detector -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det(images, tmp_path_factory):
    return fitted_detector(apply_overrides(DDADConfig(), TINY_GLAD), images, tmp_path_factory.mktemp("glad"))


def test_glad_is_built_from_the_method_key_and_calibrates_tau(det):
    assert type(det).__name__ == "GLAD"
    assert set(det.calibration.constants) == {"tau"} and det.calibration.constants["tau"] > 0


def test_glad_scores_do_not_depend_on_batch_size_or_batch_mates(det, images):
    x = images[:6]
    ref = det.predict(x)
    for bs in (1, 4):
        d = copy.copy(det)
        d.cfg = apply_overrides(det.cfg, [f"sampling.batch_size={bs}"])
        p = d.predict(x)
        torch.testing.assert_close(p.scores, ref.scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(p.info["adaptive_step"], ref.info["adaptive_step"])
    mixed = torch.cat([images[10:12], x[3:4], images[8:9]])
    torch.testing.assert_close(det.predict(mixed).scores[2], ref.scores[3], atol=1e-4, rtol=1e-4)


def test_glad_save_load_gives_identical_scores(det, images, tmp_path):
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["method"] == "glad"
    loaded = Detector.load(tmp_path / "m")
    assert type(loaded).__name__ == "GLAD" and loaded.tau == det.tau
    torch.testing.assert_close(loaded.predict(images[:3]).scores, det.predict(images[:3]).scores, rtol=0, atol=0)


def test_glad_options_belong_to_glad():
    with pytest.raises(ConfigError, match="glad.t_min is an option of method 'glad'"):
        apply_overrides(DDADConfig(), ["glad.t_min=200"])


def test_reuse_takes_new_inference_options_but_refuses_new_training_options(det, images, tmp_path, monkeypatch):
    from ddad import pipeline

    det.save(tmp_path / "m")
    monkeypatch.setattr(pipeline, "nominal_split", lambda cfg: (images[:8], images[:4]))
    cfg = apply_overrides(det.cfg, ["glad.saff=false", "glad.tau_quantile=0.5"])
    again, changed = pipeline.reuse_trained(tmp_path / "m", cfg, progress=False)
    assert changed == ("glad",) and again.cfg.glad.saff is False and again.tau <= det.tau
    with pytest.raises(ValueError, match="glad.atp"):
        pipeline.reuse_trained(tmp_path / "m", apply_overrides(det.cfg, ["glad.atp=false"]), progress=False)


# ---- DINO from a local file -----------------------------------------------------------------------------------
def test_dino_backbone_loads_a_local_file_and_gives_four_token_grids(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    from ddad.features.extractor import WeightsNotFoundError, build_extractor

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="never downloads"):
        build_extractor("dino_vits8")
    vit = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0)
    # the official DINO file layout: a checkpoint dict whose "teacher" holds "backbone."-prefixed keys
    official = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, official)
    save_file(vit.state_dict(), tmp_path / "timm.safetensors")
    x = torch.rand(2, 3, 64, 48)
    outs = []
    for path in (official, tmp_path / "timm.safetensors"):
        ext = build_extractor("dino_vits8", str(path))
        f = ext(x, (1, 2, 3, 4))
        assert [tuple(v.shape) for v in f.values()] == [(2, 384, 8, 6)] * 4  # patch 8, any size divisible by 8
        outs.append(f[4])
    torch.testing.assert_close(outs[0], outs[1])
    with pytest.raises(ValueError, match="layers 1..4"):
        ext(x, (5,))


# ---- latent space ---------------------------------------------------------------------------------------------
def test_latent_glad_trains_its_autoencoder_first_and_saves_loads_exactly(images, tmp_path):
    cfg = apply_overrides(DDADConfig(), [*TINY_GLAD, "glad.space=latent", "glad.autoencoder.channels=[8,16,16]",
                                         "glad.autoencoder.train.steps=2", "glad.autoencoder.train.batch_size=4",
                                         "glad.autoencoder.train.checkpoint_every=2"])
    det = fitted_detector(cfg, images, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "autoencoder" / "last.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "unet" / "last.json").is_file()
    assert det.unet.config.in_channels == 4 and det.unet.config.sample_size == 8  # 32 px, 4x down
    assert det.space.scale > 0 and det.calibration.constants["tau"] > 0
    det.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    assert loaded.space.scale == det.space.scale and sorted(loaded.networks()) == ["autoencoder", "unet"]
    ref = det.predict(images[:3])
    torch.testing.assert_close(loaded.predict(images[:3]).scores, ref.scores, rtol=0, atol=0)
    assert ref.reconstructions.shape == (3, 3, 32, 32)
    torch.testing.assert_close(det.predict(images[2:3]).scores[0], ref.scores[2], atol=1e-4, rtol=1e-4)


# ---- fine-tuning a pretrained UNet (glad.init: the paper fine-tunes a pretrained diffusion UNet) ---------------
def _unet_state(det):
    return {k: v.clone() for k, v in det.unet.state_dict().items()}


def test_glad_fine_tunes_a_pretrained_ddad_model_and_records_it(images, tmp_path):
    pre = fitted_detector(apply_overrides(DDADConfig(), [o for o in TINY_GLAD if o != "method=glad"
                                                          and not o.startswith("glad.")]), images, tmp_path / "p")
    pre.save(tmp_path / "pre")
    # lr 0: the fine-tuned weights must be exactly the pretrained ones (and the EMA of unchanged weights)
    cfg = apply_overrides(DDADConfig(), [*TINY_GLAD, f"glad.init={tmp_path / 'pre'}", "train.lr=0"])
    det = fitted_detector(cfg, images, tmp_path / "run")
    for k, v in pre.unet.state_dict().items():
        torch.testing.assert_close(det.unet.state_dict()[k], v, rtol=0, atol=0)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["unet_init"]["path"] == str(tmp_path / "pre") and meta["unet_init"]["method"] == "ddad"
    # a trained run: the weights move away from the pretrained ones, and from-scratch weights are not those
    moved = fitted_detector(apply_overrides(cfg, ["train.lr=1e-3"]), images, tmp_path / "run2")
    assert any(not torch.equal(moved.unet.state_dict()[k], v) for k, v in pre.unet.state_dict().items())
    scratch = Detector.create(apply_overrides(DDADConfig(), TINY_GLAD))
    assert any(not torch.equal(scratch.unet.state_dict()[k], v) for k, v in pre.unet.state_dict().items())
    # reloading the fine-tuned model needs no access to the pretrained one
    import shutil

    shutil.rmtree(tmp_path / "pre")
    assert Detector.load(tmp_path / "m").loaded_meta["unet_init"]["method"] == "ddad"


def test_glad_init_loads_a_diffusers_folder_and_says_what_is_wrong(images, tmp_path):
    from ddad.diffusion import build_unet
    from ddad.diffusion.unet import load_pretrained_unet

    src = build_unet("cpu-32", 32)
    src.save_pretrained(tmp_path / "hf", safe_serialization=True)
    dst = build_unet("cpu-32", 32)
    info = load_pretrained_unet(dst, tmp_path / "hf")
    assert info == {"path": str(tmp_path / "hf")}
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_pretrained_unet(dst, tmp_path / "nothing")
    with pytest.raises(ValueError, match="not the architecture"):
        load_pretrained_unet(build_unet("cpu-64", 64), tmp_path / "hf")
    (tmp_path / "hf" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        load_pretrained_unet(dst, tmp_path / "hf")
    # a ddad model of another noise schedule: refused before any weight is loaded
    pre = Detector.create(apply_overrides(DDADConfig(), ["data.image_size=32", "model.preset=cpu-32"]))
    pre.save(tmp_path / "pre")
    with pytest.raises(ValueError, match="noise schedule"):
        load_pretrained_unet(dst, tmp_path / "pre", {"num_train_timesteps": 500, "beta_start": 1e-4, "beta_end": 0.02})
    with pytest.raises(ValueError, match="glad.init .* works in pixel space"):
        Detector.create(apply_overrides(DDADConfig(), [*TINY_GLAD, "glad.space=latent", "glad.init=somewhere"]))
