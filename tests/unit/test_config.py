import pytest

from ddad.config import ConfigError, DDADConfig, apply_overrides, load_config, save_config


def test_defaults_roundtrip(tmp_path):
    cfg = apply_overrides(DDADConfig(), ["sampling.w=4", "features.layers=[1,2]", "train.lr=1e-3"])
    assert cfg.sampling.w == 4.0 and cfg.features.layers == (1, 2) and cfg.train.lr == 1e-3
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_unknown_key_suggests(tmp_path):
    (tmp_path / "c.yaml").write_text("sampling:\n  stepz: 5\n")
    with pytest.raises(ConfigError, match="did you mean steps"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="did you mean sampling"):
        apply_overrides(DDADConfig(), ["samplng.w=1"])
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(DDADConfig(), ["sampling.steps=ten"])


def test_shipped_configs_load():
    from importlib import resources
    from pathlib import Path

    paths = [Path(str(resources.files("ddad") / "configs" / "demo.yaml"))]
    paths += sorted((Path(__file__).resolve().parents[2] / "configs").glob("**/*.yaml"))
    for p in paths:
        load_config(p)
