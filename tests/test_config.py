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


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", "train.epochs: -1 is out of range; it must be >= 1"),
    ("train.epochs=0", "train.epochs: 0 is out of range; it must be >= 1"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.lr=-0.001", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.scheduler=cosine", "train.scheduler: 'cosine' is not one of"),
    ("model.head=lstm", "model.head: 'lstm' is not one of"),
    ("model.dropout=1.5", "model.dropout"),
    ("model.tasks=[dims, colour]", "model.tasks"),
])
def test_recipe_values_are_checked_when_read(override, message):
    with pytest.raises(ConfigError) as e:
        load_recipe("baselines", "demo", BaselinesConfig, [override])
    text = str(e.value)
    assert message in text and "baselines" in text and "\n" not in text.strip()


def test_every_system_checks_its_model_values():
    from sermo.systems import load_all

    bad = {"teacher_student": "model.residual_sigmas=0", "distilled": "model.mode=fast",
           "hierarchical": "model.conformer_layers=-2", "label_embedding": "model.speech_k=0",
           "cross_representation": "model.segment=0"}
    systems = load_all()
    for name, override in bad.items():
        with pytest.raises(ConfigError, match=override.split("=")[0]):
            load_recipe(name, "demo", systems[name].config_cls, [override])
