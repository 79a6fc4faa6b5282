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
        pred = Predictor.from_pretrained(tmp_path / "run" / "bundles" / "pooled").predict(wav)
        assert pred.category in ("neutral", "happy", "angry", "sad") and 1.0 <= pred.valence <= 5.0
    finally:
        SYSTEMS.pop("toy", None)
