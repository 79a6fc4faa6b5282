import pytest

from sermo.systems.baselines import BaselinesConfig
from sermo.config import ConfigError, DataConfig, build, load_recipe


def test_misspelt_key_names_it_and_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        build(DataConfig, {"audio_encodr": "logmel"}, "recipe: data")
    text = str(e.value)
    assert "audio_encodr" in text and "valid keys: audio_encoder, audio_layers" in text


def test_overrides_and_types():
    cfg = load_recipe("baselines", "demo", BaselinesConfig, ["train.epochs=3", "model.rows=[audio]",
                                                            "data.text_layers=null"])
    assert cfg.train.epochs == 3 and cfg.model.rows == ["audio"] and cfg.data.text_layers is None
    assert cfg.to_dict()["train"]["epochs"] == 3
    with pytest.raises(ConfigError, match="expected int"):
        load_recipe("baselines", "demo", BaselinesConfig, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_recipe("baselines", "demo", BaselinesConfig, ["model.hiden=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_recipe("baselines", "demo", BaselinesConfig, ["epochs=3"])
    with pytest.raises(ConfigError, match="profiles: paper, demo"):
        load_recipe("baselines", "fast", BaselinesConfig)


def test_every_recipe_profile_validates():
    from sermo.systems import load_all
    from sermo.config import recipe_path

    for name, system in load_all().items():
        assert recipe_path(name).is_file(), name
        for profile in ("paper", "demo"):
            load_recipe(name, profile, system.config_cls)
