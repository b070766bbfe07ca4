"""The D3AD autoencoder of `ddad demo --method d3ad`, trained as the demo trains it (~2 min on 2 CPU cores)."""
from importlib import resources

import pytest
import torch

from ddad.config import load_config
from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset
from ddad.diffusion.autoencoder import autoencoder_loss, build_autoencoder, decode, encode
from ddad.diffusion.train import train_model
from ddad.pipeline import nominal_split

pytestmark = pytest.mark.slow

# Measured: held-out MAE 0.023 (0..1 grey levels) after the demo's 400 steps; the mean nominal image is 0.037 away.
BOUND = 0.03


def test_nominal_images_survive_the_demo_autoencoder_round_trip(tmp_path):
    cfg = load_config(str(resources.files("ddad") / "configs" / "demo-d3ad.yaml"))
    root = make_synthetic_dataset(tmp_path / "data", SyntheticSpec(category="object", size=cfg.data.image_size,
                                                                   seed=cfg.data.seed))
    cfg = load_config(str(resources.files("ddad") / "configs" / "demo-d3ad.yaml"), [f"data.root={root}"])
    train, val = nominal_split(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        vae = build_autoencoder(cfg.d3ad.autoencoder)
    train_model(vae, train * 2 - 1, autoencoder_loss(cfg.d3ad.autoencoder.kl_weight), cfg.d3ad.autoencoder.train,
                tmp_path / "ckpt")
    with torch.no_grad():
        rec = (decode(vae, encode(vae, val * 2 - 1, 1.0), 1.0) + 1) / 2
    mae = float((rec - val).abs().mean())
    baseline = float((train.mean(0) - val).abs().mean())
    assert mae < BOUND and mae < 0.75 * baseline, (mae, baseline)
    assert rec.shape == val.shape and torch.isfinite(rec).all()
