import os
import subprocess
import sys

import pytest

# a forward pass of 4 convolutions on a (2, 32, 256, 256) activation (8 MB, like a UNet level), 5 times after a
# warm-up; prints whether the thresholds were set, the minor page faults per pass, and the pages of one activation
PROBE = """
import resource, torch
from ddad.allocator import keep_freed_memory
on = keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(*[torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)]).eval()
x = torch.randn(2, 32, 256, 256)
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(on, faults / 5, x.numel() * 4 // resource.getpagesize())
"""


def _probe(malloc: str) -> tuple[bool, float, int]:
    env = {**os.environ, "DDAD_MALLOC": malloc, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    on, faults, pages = out.stdout.split()
    return on == "True", float(faults), int(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_activations_are_reused_instead_of_page_faulted_in_at_every_pass():
    """keep_freed_memory (run by Detector.create/load): a network's activations come from memory freed by the
    previous pass; glibc's defaults map them anew, page-faulting every page of every activation again."""
    kept, kept_faults, pages = _probe("keep")
    if not kept:
        pytest.skip("the C library is not glibc")
    on, glibc_faults, _ = _probe("glibc")
    assert not on  # DDAD_MALLOC=glibc leaves glibc's defaults
    assert glibc_faults > 2 * pages  # the defaults: the activations faulted in again at every pass
    assert kept_faults < pages / 2 and kept_faults < glibc_faults / 8
