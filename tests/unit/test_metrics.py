import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ddad import metrics as M


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rounding", [None, 1])  # rounding=1 -> heavy ties
def test_classification_metrics_equal_sklearn(seed, rounding):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    s = rng.normal(size=500) + 0.8 * y
    if rounding is not None:
        s = np.round(s, rounding)
    assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(s, y, chunk=13) == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # streamed in small chunks
    assert M.average_precision(s, y, chunk=13) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    assert M.f1_max(s, y) == pytest.approx(f1.max(), abs=1e-12)
    assert M.f1_max(s, y, chunk=13) == pytest.approx(f1.max(), abs=1e-12)


def test_perfect_and_inverted_scores():
    y = np.array([0, 0, 1, 1])
    assert M.auroc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert M.auroc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert M.auroc(np.ones(4), y) == 0.5


def test_errors_are_clear():
    with pytest.raises(ValueError, match="both positive and negative"):
        M.auroc(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        M.auroc(np.array([np.nan, 0.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="differ in size"):
        M.auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))


def test_pro_hand_computed():
    # one 1x2 image row: region = pixels 0,1; nominal = pixels 2,3
    maps = np.array([[[0.9, 0.5, 0.7, 0.1]]])
    masks = np.array([[[1, 1, 0, 0]]], dtype=bool)
    fpr, pro = M.pro_curve(maps, masks)
    # thresholds 0.9, 0.7, 0.5, 0.1 -> (fpr, pro) = (0, .5), (.5, .5), (.5, 1), (1, 1)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1.0, 1.0])
    # area up to fpr 0.3: the curve is at pro 0.5 from fpr 0 to 0.5 (the vertical jump at fpr 0 counts as a step)
    assert M.pro_auc(maps, masks, fpr_limit=0.3) == pytest.approx(0.5)
    assert M.pro_auc(maps, masks, fpr_limit=1.0) == pytest.approx((0.5 * 0.5 + 1.0 * 0.5) / 1.0)


def _brute_force_pro(maps, masks, limit):
    """Reference: for every distinct threshold, binarise, label regions, average overlaps; then integrate."""
    neg = ~masks
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    pts = [(0.0, 0.0)]
    for h in np.sort(np.unique(maps))[::-1]:
        pred = maps >= h
        fpr = (pred & neg).sum() / neg.sum()
        pro = np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])
        pts.append((fpr, pro))
    x, y = map(np.array, zip(*pts))
    keep = x <= limit
    xs, ys = list(x[keep]), list(y[keep])
    if xs[-1] < limit and (~keep).any():
        j = np.argmax(~keep)
        ys.append(y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1]))
        xs.append(limit)
    return np.trapezoid(ys, xs) / limit


@pytest.mark.parametrize("seed", range(4))
def test_pro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 12, 12), dtype=bool)
    masks[0, 2:5, 2:6] = True
    masks[0, 8:11, 8:10] = True  # two regions in one image
    masks[1, 5:7, 1:3] = True
    maps = rng.random(masks.shape) + 0.6 * masks
    maps = np.round(maps, 2)  # ties across pixels
    for limit in (0.3, 0.05, 1.0):
        ref = _brute_force_pro(maps, masks, limit)
        assert M.pro_auc(maps, masks, limit) == pytest.approx(ref, abs=1e-6)
        # tiny chunks: tie groups and the limit crossing fall across chunk boundaries
        assert M.pro_auc(maps, masks, limit, chunk=7) == pytest.approx(ref, abs=1e-6)


def test_compute_metrics_full_and_image_only():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[3:, 4:8, 4:8] = True
    maps = rng.random(masks.shape) * 0.5 + masks
    scores = maps.max(axis=(1, 2))
    m = M.compute_metrics(scores, masks.any(axis=(1, 2)), maps, masks)
    assert m.image_auroc == 1.0 and m.pixel_auroc == 1.0 and m.pro == pytest.approx(1.0)
    only = M.compute_metrics(scores, masks.any(axis=(1, 2)))
    assert only.pixel_auroc is None and only.image_auroc == 1.0
    table = M.format_table({"x": m})
    assert "I-AUROC" in table and "100.0" in table


def test_accumulator_is_batch_independent():
    rng = np.random.default_rng(1)
    masks = rng.random((8, 10, 10)) > 0.8
    maps = rng.random((8, 10, 10)) + masks
    labels = masks.any(axis=(1, 2)) & (np.arange(8) % 2 == 0)
    scores = maps.max(axis=(1, 2))
    results = []
    for bs in (1, 3, 8):
        acc = M.MapAccumulator()
        for i in range(0, 8, bs):
            acc.add(scores[i : i + bs], labels[i : i + bs], maps[i : i + bs], masks[i : i + bs])
        results.append(acc.compute())
    assert results[0] == results[1] == results[2]


# ---- streaming pixel metrics (ddad.metrics.streaming) ----------------------------------------------------------
from ddad.metrics.streaming import PixelHistogram, quantise, score_keys  # noqa: E402


def test_score_keys_preserve_order_and_quantise_is_close():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, 5000), [0.0, -0.0, 1e-30, -1e-30, 7e4, -7e4, 1e30]]).astype(np.float32)
    order = np.argsort(x, kind="stable")
    assert (np.diff(score_keys(x)[order]) >= 0).all(), "keys must be non-decreasing in the value"
    q = quantise(x)
    assert (np.diff(q[order]) >= 0).all()
    assert np.all(np.abs(q - x) <= np.abs(x) * 2.0**-11 + 1e-38), "within float16 precision, float32 range"
    assert score_keys(np.float32([-0.0]))[0] == score_keys(np.float32([0.0]))[0]
    np.testing.assert_array_equal(score_keys(q), score_keys(x))  # a bin's value lies in the bin


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_pixel_metrics_equal_exact_ones_of_quantised_maps(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 24, 20), dtype=bool)
    for i in range(1, 6):  # blobs of several sizes, some images with two regions, image 0 nominal
        masks[i, 3 * i : 3 * i + 4 + i, 2 : 5 + i] = True
        if i % 2:
            masks[i, 18:21, 14:18] = True
    maps = (rng.normal(0, 1, masks.shape) + 2 * masks + rng.random(masks.shape) * masks).astype(np.float32)
    maps[0, :2] = maps[1, :2]  # exact ties across images
    h = PixelHistogram()
    for a, b in ((0, 1), (1, 4), (4, 6)):  # uneven batches
        h.add(maps[a:b], masks[a:b])
    roc, ap, f1, pro = h.compute()
    q = quantise(maps)
    exact = M.classification.curve_metrics(q.ravel(), masks.ravel())
    assert (roc, ap, f1) == pytest.approx(exact, abs=1e-12)
    assert roc == pytest.approx(roc_auc_score(masks.ravel(), q.ravel()), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(masks.ravel(), q.ravel()), abs=1e-12)
    assert pro == pytest.approx(M.pro_auc(q, masks), abs=1e-12)
    # and the quantisation itself moves nothing that matters
    assert roc == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-3)
    assert pro == pytest.approx(M.pro_auc(maps, masks), abs=1e-3)


def test_streaming_pixel_metrics_need_both_classes_and_finite_maps():
    h = PixelHistogram()
    h.add(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), dtype=bool))
    assert h.compute() is None
    with pytest.raises(ValueError, match="NaN"):
        h.add(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="differ"):
        h.add(np.zeros((1, 4, 4)), np.zeros((1, 4, 5), dtype=bool))


def test_accumulator_memory_does_not_grow_with_images():
    acc = M.MapAccumulator()
    rng = np.random.default_rng(0)
    size0 = acc.pixels.pos.nbytes + acc.pixels.neg.nbytes + acc.pixels.region.nbytes
    for _ in range(20):
        masks = rng.random((4, 32, 32)) > 0.9
        acc.add(rng.random(4), masks.any(axis=(1, 2)), rng.random((4, 32, 32)) + masks, masks)
    assert acc.pixels.pos.nbytes + acc.pixels.neg.nbytes + acc.pixels.region.nbytes == size0
    assert not hasattr(acc, "maps")
    m = acc.compute()
    assert 0.5 < m.pixel_auroc <= 1.0 and m.pro is not None
