import hashlib

import numpy as np
import pytest

from ddad.data import load_dataset
from ddad.data.synthetic import DEFECTS, KINDS, SyntheticSpec, make_synthetic_dataset
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
                                                          n_test_per_defect=2, seed=0))
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
