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
    with pytest.raises(ConfigError, match="profiles: paper, demo, default"):
        load_recipe("baselines", "fast", BaselinesConfig)


def test_every_recipe_profile_validates():
    from sermo.systems import load_all
    from sermo.config import recipe_path

    for name, system in load_all().items():
        assert recipe_path(name).is_file(), name
        for profile in ("paper", "demo", "default"):
            load_recipe(name, profile, system.config_cls)


def test_a_profile_extends_another_and_replaces_only_the_keys_it_gives(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("system: baselines\nprofiles:\n"
                      "  base: {train: {epochs: 3, lr: 0.01}, model: {hidden: 16}}\n"
                      "  mid: {extends: base, train: {epochs: 7}}\n"
                      "  top: {extends: mid, data: {max_folds: 2}}\n"
                      "  loop: {extends: loop2}\n  loop2: {extends: loop}\n  lost: {extends: nowhere}\n"
                      "  odd: {extends: base, trian: {epochs: 1}}\n")
    cfg = load_recipe("baselines", "top", BaselinesConfig, ["train.lr=0.5"], path=recipe)
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.hidden, cfg.data.max_folds) == (7, 0.5, 16, 2)
    assert cfg.lineage == ("top", "mid", "base")
    with pytest.raises(ConfigError, match="cycle: loop -> loop2 -> loop"):
        load_recipe("baselines", "loop", BaselinesConfig, path=recipe)
    with pytest.raises(ConfigError, match="no profile 'nowhere' \\(extended by 'lost'\\)"):
        load_recipe("baselines", "lost", BaselinesConfig, path=recipe)
    with pytest.raises(ConfigError, match="profile odd: unknown section"):
        load_recipe("baselines", "odd", BaselinesConfig, path=recipe)


def test_sermo_run_defaults_to_a_profile_for_ones_own_corpus_every_fold_until_validation_stops_improving():
    from sermo.cli import build_parser
    from sermo.systems import load_all

    args = build_parser().parse_args(["run", "baselines", "--corpus", "mine=t.csv"])
    assert args.profile == "default"
    for name, system in load_all().items():
        demo = load_recipe(name, "demo", system.config_cls)
        own = load_recipe(name, "default", system.config_cls)
        assert demo.data.max_folds == 1 and own.data.max_folds is None, name
        assert own.train.early_stopping and own.train.epochs >= 5 * own.train.early_stopping, name
        assert own.data.audio_encoder == demo.data.audio_encoder and own.lineage == ("default", "demo"), name
        # what the demo profile declares of its stand-in encoders holds for the profile built on it
        assert set(system.deviations_for(demo.lineage)) <= set(system.deviations_for(own.lineage)), name


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
