"""The loaders on the real MVTec 'bottle' copy in ../shared/data (skipped where it is absent)."""
from pathlib import Path

import pytest

from ddad.data import load_dataset

BOTTLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_bottle_256" / "bottle"


@pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"real data not present at {BOTTLE}")
def test_bottle_counts():
    train = load_dataset("mvtec", BOTTLE, "train", image_size=64)
    test = load_dataset("mvtec", BOTTLE.parent, "test", category="bottle", image_size=64)
    assert len(train) == 209 and len(test) == 83
    assert sum(it.mask is not None for it in test.items) == 63
    assert test.counts() == {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20}
    s = test[test.labels.index(1)]
    assert s.mask.sum() > 0 and s.image.shape == (3, 64, 64)
