import hashlib

import numpy as np
import pytest

from ddad.data import load_dataset
from PIL import Image

from ddad.data.synthetic import DEFECTS, KINDS, SUBTLE_DEFECTS, SyntheticSpec, add_defect, make_synthetic_dataset, nominal_image
from ddad.metrics import auroc


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_given_seed(tmp_path):
    spec = SyntheticSpec(category="texture", size=32, n_train=3, n_test_good=2, n_test_per_defect=1, seed=5)
    a = make_synthetic_dataset(tmp_path / "a", spec)
    b = make_synthetic_dataset(tmp_path / "b", spec)
    c = make_synthetic_dataset(tmp_path / "c", SyntheticSpec(**{**spec.__dict__, "seed": 6}))
    assert _digest(a) == _digest(b) != _digest(c)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_defect_has_masks(tmp_path, kind):
    root = make_synthetic_dataset(tmp_path, SyntheticSpec(category=kind, size=48, n_train=2, n_test_good=1,
                                                          n_test_per_defect=2, seed=0, defects=DEFECTS))
    test = load_dataset("mvtec", root, "test", image_size=48)
    assert {s.defect_type for s in (test[i] for i in range(len(test)))} == {"good", *DEFECTS}
    for i in range(len(test)):
        s = test[i]
        area = float(s.mask.mean())
        assert (s.label == 0 and area == 0) or (s.label == 1 and 0.0005 < area < 0.2)


@pytest.mark.parametrize("kind", KINDS)
def test_pixel_difference_to_mean_is_not_already_perfect(tmp_path, kind):
    root = make_synthetic_dataset(tmp_path, SyntheticSpec(category=kind, size=64, n_train=30, n_test_good=15,
                                                          n_test_per_defect=6, seed=2))
    train = load_dataset("mvtec", root, "train")
    test = load_dataset("mvtec", root, "test")
    mean = np.mean([train[i].image.numpy() for i in range(len(train))], axis=0)
    scores = [np.abs(test[i].image.numpy() - mean).mean(axis=0).max() for i in range(len(test))]
    assert auroc(np.array(scores), np.array(test.labels)) < 0.97


def test_grey_non_square_stand_in_keeps_its_shape_and_one_channel(tmp_path):
    spec = SyntheticSpec(category="grain", size=80, height=48, gray=True, n_train=2, n_test_good=1,
                         n_test_per_defect=1, defects=SUBTLE_DEFECTS, seed=0)
    root = make_synthetic_dataset(tmp_path, spec)
    files = sorted(root.rglob("*.png"))
    assert all(Image.open(f).size == (80, 48) and Image.open(f).mode == "L" for f in files)
    test = load_dataset("mvtec", root, "test")  # no image_size: read as stored
    for i in range(len(test)):
        s = test[i]
        assert s.image.shape == (3, 48, 80) and s.mask.shape == (1, 48, 80)
        assert bool((s.image[0] == s.image[1]).all() and (s.image[1] == s.image[2]).all())
        assert (s.label == 1) == bool(s.mask.any())
    with pytest.raises(ValueError, match="colour"):
        make_synthetic_dataset(tmp_path / "x", SyntheticSpec(gray=True, defects=("colour",)))


def test_subtle_defects_are_faint_small_or_at_the_edge():
    rng = np.random.default_rng(0)
    img, fg = nominal_image("grain", (96, 128), rng)
    for _ in range(5):
        bad, mask = add_defect(img, fg, "faint", rng)
        assert mask.any() and np.abs(bad - img).max() <= 0.061  # at most 15 grey levels
        bad, mask = add_defect(img, fg, "pit", rng)
        assert 0 < mask.sum() <= np.pi * 4.6**2  # radius <= 2 units (4 px at 128 px) plus the soft rim
        bad, mask = add_defect(img, fg, "fray", rng)
        border = np.zeros_like(mask)
        border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
        assert mask.any() and (mask & border).any()  # a full-frame texture frays at the image border
    obj, ofg = nominal_image("object", 96, rng)
    bad, mask = add_defect(obj, ofg, "thin", rng)
    assert mask.any() and not (mask & ~ofg).any()  # a hairline stays on the part


def test_defect_scale_shrinks_the_defects():
    def area(scale):
        rng = np.random.default_rng(1)
        img, fg = nominal_image("surface", 128, rng)
        return np.mean([add_defect(img, fg, d, rng, scale)[1].sum() for d in ("spot", "faint", "fray") * 4])

    assert area(0.5) < 0.4 * area(1.0)
