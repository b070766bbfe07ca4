import pytest
import torch

from ddad.scoring import anomaly_maps, combine, image_score, pixel_distance, smooth


def _feats(x):
    return {2: torch.nn.functional.avg_pool2d(x, 4), 3: torch.nn.functional.avg_pool2d(x, 8)}


def test_identical_images_give_zero_map():
    x = torch.rand(2, 3, 32, 32)
    m = anomaly_maps(x, x.clone(), _feats(x), _feats(x.clone()), v=1.0, scale=None, sigma=4.0)
    assert torch.allclose(m.combined, torch.zeros_like(m.combined), atol=1e-6)
    assert torch.allclose(m.scores, torch.zeros(2), atol=1e-6)


def test_defect_is_localised():
    y = torch.rand(1, 3, 32, 32) * 0.1 + 0.5
    x0 = y.clone()
    x0[..., 10:14, 20:24] = 0.0
    m = anomaly_maps(x0, y, _feats(x0), _feats(y), v=1.0, scale=None, sigma=1.0)
    peak = torch.nonzero(m.combined[0, 0] == m.combined.max())[0]
    assert 8 <= peak[0] <= 16 and 18 <= peak[1] <= 26


def test_combine_eq9_per_image_and_calibrated():
    d_p = torch.rand(3, 1, 8, 8)
    d_f = torch.rand(3, 1, 8, 8) * 5
    per = combine(d_p, d_f, v=2.0, scale=None)
    for i in range(3):
        expect = d_f[i] + 2.0 * d_f[i].max() / d_p[i].max() * d_p[i]
        torch.testing.assert_close(per[i], expect)
    torch.testing.assert_close(combine(d_p, d_f, v=1.0, scale=3.0), d_f + 3.0 * d_p)


def test_maps_are_per_image():
    x, y = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    full = anomaly_maps(x, y, _feats(x), _feats(y), 1.0, None, 2.0)
    one = anomaly_maps(x[1:2], y[1:2], _feats(x[1:2]), _feats(y[1:2]), 1.0, None, 2.0)
    torch.testing.assert_close(full.combined[1:2], one.combined)


def test_image_score_modes_and_smoothing():
    d = torch.zeros(1, 1, 16, 16)
    d[0, 0, 8, 8] = 1.0  # away from the border (reflect padding)
    assert image_score(d, "max") == 1.0
    assert image_score(d, "topk_mean", topk=4) == 0.25
    s = smooth(d, 1.0)
    assert s.sum() == pytest_approx(1.0) and s.max() < 1.0
    assert pixel_distance(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)).shape == (1, 1, 2, 2)


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-4)


def test_kcenter_greedy_covers_the_points_better_than_a_random_subset_and_a_coreset_only_raises_distances():
    from ddad.scoring import kcenter_greedy, memory_bank, memory_coreset, memory_distance

    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(8, 4, generator=g)  # 8 tight clusters of 50 points: a coreset of 8 takes one each
    pts = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(400, 4, generator=g)).T  # (C, N) columns
    idx = kcenter_greedy(pts, 8, chunk=64)
    assert idx[0] == 0 and len(set(idx.tolist())) == 8 and sorted((idx // 50).tolist()) == list(range(8))
    radius = lambda sel: torch.cdist(pts.T, pts.T[sel]).amin(1).max()  # noqa: E731
    assert radius(idx) < 1.0 < radius(torch.randperm(400, generator=g)[:8])
    assert torch.equal(kcenter_greedy(pts, 8), idx)  # the chunk size changes nothing
    with pytest.raises(ValueError, match="1 <= n <= 400"):
        kcenter_greedy(pts, 0)
    train = {2: torch.rand(3, 5, 6, 8, generator=g), 3: torch.rand(3, 7, 3, 4, generator=g)}
    bank = memory_bank(train)
    assert memory_coreset(bank, 1.0) is bank
    small = memory_coreset(bank, 0.25)
    assert small[2].shape == (5, 36) and small[3].shape == (7, 9)  # ceil(0.25 * 144), ceil(0.25 * 36)
    test = {j: f[:2] + 0.3 * torch.rand(f[:2].shape, generator=g) for j, f in train.items()}
    exact, approx = memory_distance(test, bank, (12, 16)), memory_distance(test, small, (12, 16))
    assert (approx >= exact - 1e-5).all() and (approx > exact + 1e-3).any()  # nearest in a subset: never nearer


def test_memory_distance_is_zero_on_the_memory_and_equals_brute_force_patchcore_distance():
    import torch.nn.functional as F

    from ddad.scoring import memory_bank, memory_distance

    g = torch.Generator().manual_seed(0)
    train = {2: torch.rand(3, 5, 6, 8, generator=g), 3: torch.rand(3, 7, 3, 4, generator=g)}
    bank = memory_bank(train)
    assert bank[2].shape == (5, 3 * 6 * 8) and bank[3].shape == (7, 3 * 3 * 4)
    # every training patch is in the memory: its distance is 0 (up to float error), whatever the chunk size
    assert memory_distance(train, bank, (12, 16)).abs().max() < 1e-3
    test = {j: f[:2] + 0.3 * torch.rand(f[:2].shape, generator=g) for j, f in train.items()}
    d = memory_distance(test, bank, (12, 16), chunk=5, block=7)
    assert torch.allclose(d, memory_distance(test, bank, (12, 16)), atol=1e-5)
    # brute force: zero-padded 3x3 mean (PatchCore's AvgPool2d(3, 1, 1)), Euclidean nearest neighbour per layer
    ref = 0
    for j, f in test.items():
        p = F.avg_pool2d(f, 3, 1, 1).permute(0, 2, 3, 1)
        b = F.avg_pool2d(train[j], 3, 1, 1).permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        nn = torch.cdist(p.reshape(-1, f.shape[1]), b).amin(1).view(2, 1, *f.shape[-2:])
        ref = ref + F.interpolate(nn, size=(12, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(d, ref, atol=1e-4)
    # per image: an image's map does not depend on its batch mates
    assert torch.allclose(memory_distance({j: f[1:] for j, f in test.items()}, bank, (12, 16)), d[1:], atol=1e-5)
