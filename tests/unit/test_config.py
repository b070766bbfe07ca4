import pytest

from ddad.config import ConfigError, DDADConfig, apply_overrides, from_dict, load_config, save_config, to_dict


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


def test_method_key_and_method_sections():
    from ddad.config import METHOD_NAMES
    from ddad.methods import METHODS

    assert set(METHOD_NAMES) == set(METHODS)  # the config's method sections and the class table stay in step
    assert all(cls.name == name and cls.summary for name, cls in METHODS.items())
    assert DDADConfig().method == "ddad"
    cfg = apply_overrides(DDADConfig(), ["method=d3ad", "d3ad.k=5"])
    assert cfg.method == "d3ad" and cfg.d3ad.k == 5
    with pytest.raises(ConfigError, match="d3ad.k is an option of method 'd3ad', but method is 'ddad'"):
        apply_overrides(DDADConfig(), ["d3ad.k=5"])
    with pytest.raises(ConfigError, match="unknown method 'd3da'; did you mean .*d3ad"):
        apply_overrides(DDADConfig(), ["method=d3da"])


def test_file_section_of_another_method_is_an_error_unless_method_is_set(tmp_path):
    (tmp_path / "c.yaml").write_text("d3ad:\n  autoencoder:\n    channels: [8, 16]\n")
    with pytest.raises(ConfigError, match="d3ad.autoencoder is an option of method 'd3ad'.*set method: d3ad"):
        load_config(tmp_path / "c.yaml")
    cfg = load_config(tmp_path / "c.yaml", ["method=d3ad"])  # --method d3ad on the command line
    assert cfg.d3ad.autoencoder.channels == (8, 16) and cfg.d3ad.autoencoder.train.steps == 1000
    (tmp_path / "d.yaml").write_text("d3ad:\n  autoencoder:\n    chanels: [8]\n")
    with pytest.raises(ConfigError, match="did you mean channels"):
        load_config(tmp_path / "d.yaml", ["method=d3ad"])


def test_test_extra_stays_light_and_heavy_parts_are_optional():
    """`pip install -e '.[test]'` must not pull anomalib/lightning or selenium (a 6 GB install was reported); they
    live in their own extras, and torch stays pinned."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    heavy = ("anomalib", "lightning", "selenium")
    assert not [r for r in extras["test"] if r.split("=")[0].split(">")[0].strip() in heavy]
    assert any(r.startswith("anomalib") for r in extras["benchmark"])
    assert any(r.startswith("selenium") for r in extras["browser"])
    assert "torch==2.14.1" in project["dependencies"] and "torchvision==0.29.1" in project["dependencies"]


def test_moved_keys_are_read_from_saved_models_and_named_for_users(tmp_path):
    """DDAD's memory options live in its own section: a model.json saved with them under scoring loads with the
    same values (migrate), a config file or override using the old place is told the new one."""
    from ddad.config import MOVED, migrate

    saved = to_dict(DDADConfig())
    for k, v in saved.pop("ddad").items():
        saved["scoring"][k] = v
    saved["scoring"].update(memory=4.0, memory_layers=[1, 2, 3])
    cfg = from_dict(DDADConfig, migrate(saved))
    assert cfg.ddad.memory == 4.0 and cfg.ddad.memory_layers == (1, 2, 3) and cfg.scoring == DDADConfig().scoring
    assert migrate(to_dict(cfg)) == to_dict(cfg)  # a current file is unchanged
    for old, new in MOVED.items():
        with pytest.raises(ConfigError, match=f"{old} is now {new}"):
            apply_overrides(DDADConfig(), [f"{old}=1"])
    (tmp_path / "c.yaml").write_text("scoring:\n  memory: 4\n")
    with pytest.raises(ConfigError, match="scoring.memory is now ddad.memory"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="ddad.memory is an option of method 'ddad'"):
        apply_overrides(DDADConfig(), ["method=d3ad", "ddad.memory=1"])
