"""The system contract, checked for every registered system (transformers' ModelTesterMixin
style): each row's model is built from its spec, takes one training step on a random batch
that carries exactly the spec's inputs, predicts, and survives a bundle round trip.

Every registered system must have examples of its own (``tests/systems/examples/<system>.py``):
a new system fails this test until it adds them; the kit is ``tests/systems/contract.py``."""

from __future__ import annotations

import pytest

from sermo.systems import load_all
from tests.conftest import tiny_speech_model, tiny_text_model
from tests.systems.contract import check_example, examples


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"speech": tiny_speech_model(root / "hubert"), "text": tiny_text_model(root / "bert")}


def test_every_registered_system_has_examples(encoders):
    missing = [name for name, sysdef in load_all().items() if not examples(sysdef, encoders)]
    assert missing == [], f"add contract examples for {missing} in tests/systems/examples/<system>.py"


@pytest.mark.parametrize("system", sorted(load_all()))
def test_each_row_builds_trains_predicts_and_round_trips(system, encoders, tmp_path):
    sysdef = load_all()[system]
    for k, ex in enumerate(examples(sysdef, encoders)):
        check_example(sysdef, k, ex, tmp_path)


def test_a_system_written_outside_sermo_declares_rows_runs_and_serves(iemocap_synth, encoders, tmp_path):
    """A module and a recipe in the test folder, nothing under sermo/: its declared rows pass the
    contract, `sermo run` trains them and `Predictor` serves its bundle."""
    import json

    from sermo.cli import main
    from sermo.serving import Predictor
    from sermo.systems import SYSTEMS
    from tests.conftest import small_iemocap
    from tests.systems.toy_system import define

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("system: toy\nprofiles:\n  demo:\n    data: {audio_encoder: logmel, text_encoder: null}\n"
                      "    train: {epochs: 2, batch_size: 8}\n    model: {rows: [pooled]}\n")
    sysdef = define(recipe)
    try:
        for k, ex in enumerate(examples(sysdef, encoders)):
            check_example(sysdef, k, ex, tmp_path)
        small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 4)
        assert main(["run", "toy", "--profile", "demo", "--corpus", f"iemocap={small}", "--folds", "1",
                     "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store"), "--quiet"]) == 0
        rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
        assert [r["name"] for r in rows] == ["pooled"] and "ua" in rows[0]["mean"]
        assert main(["run", "toy", "--profile", "demo", "--corpus", f"iemocap={small}", "--set", "model.rows=[other]",
                     "--out", str(tmp_path / "bad"), "--store", str(tmp_path / "store"), "--quiet"]) == 2
        wav = sorted(iemocap_synth.rglob("*.wav"))[0]
        pred = Predictor.from_pretrained(tmp_path / "run" / "bundles" / "pooled").predict_file(wav)
        assert pred.category in ("neutral", "happy", "angry", "sad") and 1.0 <= pred.valence <= 5.0
    finally:
        SYSTEMS.pop("toy", None)


def test_a_run_lists_the_features_it_read_that_its_declarations_did_not_plan(iemocap_synth, tmp_path):
    """The plan sizes what the declared rows read; a fold that reads anything else (here the
    toy's log-mel at one layer, declared nowhere) is listed in results.json as ``unplanned``."""
    import json

    from sermo.cli import main
    from sermo.systems import SYSTEMS
    from sermo.systems.definition import SystemDef, register
    from tests.conftest import small_iemocap
    from tests.systems import toy_system

    def sneaky(ctx):
        ctx.features("logmel", [0])  # read, never declared
        return toy_system.run_fold(ctx)

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("system: toy\nprofiles:\n  demo:\n    data: {audio_encoder: logmel, text_encoder: null}\n"
                      "    train: {epochs: 1, batch_size: 8}\n    model: {rows: [pooled]}\n")
    small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 4)
    unplanned = {}
    try:
        for name, run_fold in (("honest", toy_system.run_fold), ("sneaky", sneaky)):
            register(SystemDef(name="toy", config_cls=toy_system.ToyConfig, run_fold=run_fold,
                               build_model=toy_system.build_model, declare=toy_system.rows, rows=("pooled",),
                               recipe=recipe))
            assert main(["run", "toy", "--profile", "demo", "--corpus", f"iemocap={small}", "--folds", "1",
                         "--out", str(tmp_path / name), "--store", str(tmp_path / "store"), "--quiet"]) == 0
            unplanned[name] = json.loads((tmp_path / name / "results.json").read_text())["unplanned"]
    finally:
        SYSTEMS.pop("toy", None)
    assert unplanned == {"honest": [], "sneaky": ["logmel layers [0]"]}
