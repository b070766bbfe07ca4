import pytest
import torch

from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_object(tmp_path_factory):
    """A tiny synthetic MVTec-layout category (32 px), generated once per test session."""
    root = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticSpec(category="object", size=32, n_train=12, n_test_good=4, n_test_per_defect=2, seed=1)
    return make_synthetic_dataset(root, spec)
