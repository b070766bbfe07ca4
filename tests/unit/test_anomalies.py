"""The synthetic-anomaly generator (GLAD's anomaly-oriented training; proxy validation sets): masks, seeding, rate,
blending, foreground restriction, batch independence."""
import numpy as np
import pytest
import torch

from ddad.data.anomalies import (AnomalySpec, cutpaste_mask, displaced_patch, object_foreground, perlin_mask,
                                 perlin_noise, shuffled_grid, synthesize, synthesize_batch)
from ddad.data.synthetic import nominal_image


def _object(seed: int = 0, size: int = 64, with_foreground: bool = False):
    img, fg = nominal_image("object", size, np.random.default_rng(seed))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return (x, fg) if with_foreground else x


def test_perlin_noise_is_bounded_seeded_and_smooth():
    a = perlin_noise(64, 64, (4, 4), np.random.default_rng(1))
    b = perlin_noise(64, 64, (4, 4), np.random.default_rng(1))
    assert np.array_equal(a, b) and np.abs(a).max() <= 1.5 and a.std() > 0.1
    assert np.abs(np.diff(a, axis=1)).max() < 0.5  # gradient noise, not white noise


@pytest.mark.parametrize("spec", [AnomalySpec(), AnomalySpec(source="texture"), AnomalySpec(foreground="object"),
                                  AnomalySpec(shape="cutpaste", source="patch")])
def test_masks_are_binary_non_empty_at_the_configured_rate(spec):
    x = _object()
    n, anomalous = 200, 0
    for i in range(n):
        s = synthesize(x, np.random.default_rng([7, i]), spec)
        m = s.mask.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0} and s.image.min() >= 0 and s.image.max() <= 1
        if s.anomalous:
            anomalous += 1
            assert m.sum() > 0 and 0 <= s.beta < spec.beta_max
        else:
            assert m.sum() == 0 and torch.equal(s.image, x)
    assert abs(anomalous / n - spec.probability) < 0.1  # binomial(200, 0.5): 0.1 is ~2.8 standard deviations


def test_same_seed_same_anomaly_other_seed_other_anomaly():
    x = _object()
    a, b = (synthesize(x, np.random.default_rng(3), force=True) for _ in range(2))
    c = synthesize(x, np.random.default_rng(4), force=True)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)


def test_pixels_outside_the_mask_are_untouched_and_inside_follow_the_blend():
    x = _object()
    s = synthesize(x, np.random.default_rng(5), AnomalySpec(source="texture"), force=True)
    outside = s.mask[0] == 0
    assert torch.equal(s.image[:, outside], x[:, outside])
    # inside: (1 - beta) source + beta x, so the change is (1 - beta)(source - x): never more than (1 - beta)
    inside = s.mask[0] == 1
    assert (s.image[:, inside] - x[:, inside]).abs().max() <= 1 - s.beta + 1e-6
    assert (s.image[:, inside] - x[:, inside]).abs().mean() > 0.01


def test_object_foreground_keeps_defects_on_the_object():
    x, truth = _object(seed=2, with_foreground=True)
    fg = object_foreground(x.permute(1, 2, 0).numpy())
    assert (fg & truth).sum() / (fg | truth).sum() > 0.8  # finds the generator's own foreground
    for i in range(30):
        s = synthesize(x, np.random.default_rng([11, i]), AnomalySpec(foreground="object"), force=True)
        assert (s.mask[0].numpy().astype(bool) & ~fg).sum() == 0


def test_object_foreground_finds_a_dark_textured_part_on_a_dark_background_and_all_of_a_texture():
    rng = np.random.default_rng(0)
    # a dark, textured part (grey 0.10-0.20 checks) on a dark blue, noisy background: darker than its own highlight,
    # which a grey-level threshold would take for the object
    bg = np.clip(np.array([0.05, 0.06, 0.12]) + 0.01 * rng.standard_normal((96, 64, 3)), 0, 1)
    truth = np.zeros((96, 64), bool)
    truth[20:80, 16:48] = True
    checks = 0.10 + 0.10 * ((np.arange(96)[:, None] // 4 + np.arange(64)[None] // 4) % 2)
    x = bg.copy()
    x[truth] = checks[truth][:, None]
    x[45:55, 28:36] = 0.9  # a specular highlight on the part
    fg = object_foreground(x)
    assert (fg & truth).sum() / (fg | truth).sum() > 0.8
    # a stochastic texture filling the frame: no plain background, every pixel may hold a defect
    tex = np.clip(0.5 + 0.2 * rng.standard_normal((64, 64, 3)), 0, 1)
    assert object_foreground(tex).all()


def test_mask_falls_back_to_a_blob_inside_a_tiny_foreground():
    allowed = np.zeros((32, 32), bool)
    allowed[10, 20] = True
    m = perlin_mask(32, 32, np.random.default_rng(0), AnomalySpec(threshold=0.99), allowed)
    assert m.any() and not (m & ~allowed).any()


def test_shuffled_grid_is_a_permutation_of_cells():
    x = np.random.default_rng(0).random((64, 64, 3))
    y = shuffled_grid(x, np.random.default_rng(1), grid=8)
    assert not np.array_equal(x, y)
    assert np.allclose(np.sort(x.ravel()), np.sort(y.ravel()))  # the same pixels, moved


def test_a_sample_does_not_depend_on_its_batch_mates():
    xs = torch.stack([_object(seed=s) for s in range(4)])
    a_img, a_mask, a_flag = synthesize_batch(xs, seed=9)
    other = xs.clone()
    other[0] = _object(seed=99)
    b_img, b_mask, b_flag = synthesize_batch(other, seed=9)
    assert torch.equal(a_img[1:], b_img[1:]) and torch.equal(a_mask[1:], b_mask[1:])
    assert torch.equal(a_flag, b_flag)


def test_bad_specs_fail_clearly():
    with pytest.raises(ValueError, match="beta_max"):
        AnomalySpec(beta_max=1.5)
    with pytest.raises(ValueError, match="source"):
        AnomalySpec(source="/no/such/texture/folder")
    with pytest.raises(ValueError, match="foreground"):
        AnomalySpec(foreground="magic")
    with pytest.raises(ValueError, match="shape must be perlin or cutpaste"):
        AnomalySpec(shape="blob")


def test_cutpaste_masks_are_rectangles_or_thin_scars_inside_the_allowed_region():
    h, w = 96, 64
    areas, scars = [], 0
    for i in range(60):
        m = cutpaste_mask(h, w, np.random.default_rng([2, i]))
        assert m.any()
        ys, xs = np.nonzero(m)
        box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
        if m.sum() == box:  # an axis-aligned rectangle (cut at the border where it reaches it)
            areas.append(m.sum() / (h * w))
        else:  # a rotated scar: thin, at most 25 px long at 256 px (a few pixels on this 64-px side)
            scars += 1
            assert m.sum() <= 25 * 16 * (64 / 256) ** 2 + 2 * (np.ptp(ys) + np.ptp(xs) + 2)
    assert scars > 10 and len(areas) > 10 and max(areas) <= 0.15 + 1e-9
    allowed = np.zeros((h, w), bool)
    allowed[10:30, 5:20] = True
    for i in range(20):
        m = cutpaste_mask(h, w, np.random.default_rng([3, i]), allowed)
        assert m.any() and not (m & ~allowed).any()


def test_displaced_patch_is_the_image_elsewhere_with_a_small_colour_change():
    x = _object().permute(1, 2, 0).numpy().astype(np.float64)
    p = displaced_patch(x, np.random.default_rng(0))
    assert p.shape == x.shape and p.min() >= 0 and p.max() <= 1
    # some shift of the image explains the patch to within the jitter, and it is not the image in place
    best = min(np.abs(np.roll(x, (dy, dx), axis=(0, 1)) - p).mean() for dy in range(64) for dx in range(64))
    assert best < 0.12 and np.abs(p - x).mean() > best


def test_anomaly_sheet_shows_each_sample_with_its_mask_and_outline():
    from ddad.report import anomaly_sheet

    x = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    anomalous, masks, _ = synthesize_batch(x, 5, AnomalySpec(), force=True)
    sheet = anomaly_sheet(x, anomalous, masks)
    assert sheet.shape == (3 * 24 + 2 * 2, 4 * 20 + 3 * 2, 3) and sheet.dtype == np.uint8
    for i in range(3):
        row = sheet[i * 26 : i * 26 + 24]
        shown_mask = row[:, 2 * 22 : 2 * 22 + 20, 0] > 127
        assert np.array_equal(shown_mask, masks[i, 0].numpy() > 0.5)
        red = (row[:, 3 * 22 : 3 * 22 + 20] == (255, 0, 0)).all(axis=-1)
        assert red.any() and not (red & ~shown_mask).any()  # the outline lies on the mask


@pytest.mark.parametrize("source", ["grid", "texture", "patch"])
def test_a_grey_image_gets_a_grey_defect(source):
    x = _object(3).mean(dim=0, keepdim=True).repeat(3, 1, 1)
    s = synthesize(x, np.random.default_rng(0), AnomalySpec(source=source), force=True)
    assert s.mask.any() and (s.image - x).abs().max() > 0.01
    assert torch.allclose(s.image[0], s.image[1], atol=1e-6) and torch.allclose(s.image[1], s.image[2], atol=1e-6)
