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
