"""Every system on a corpus of one's own (issue 29, item 3): a table with categories only (no
A/V/D), and a text-only table. Rows that need what the corpus lacks are skipped with the reason,
the rest train and report; a system none of whose rows can run says so in one error."""

import json

import pytest

from sermo.config import RunError
from sermo.features.store import FeatureStore
from sermo.training.runner import run_system
from tests.data.corpora.test_own_corpus import write_corpus

pytestmark = pytest.mark.long  # a minute of runs: in make check-paper (CI runs it), not make test

# the demo profile's encoders (Whisper tiny.en, MiniLM) on log-mel for speed; one epoch, tiny widths
TINY = {
    "hierarchical": ["model.conformer_layers=1", "model.hidden=16", "model.mlp=[16, 8]", "model.subsample=4"],
    "label_embedding": ["model.dim=8", "model.units=4", "model.speech_k=2", "model.text_k=2", "model.k_grid=[]",
                        "model.compare_inits=false", "model.rows=[text, text_context_le, speech_le, le_mer]",
                        "model.speech_subsample=1"],
    "cross_representation": ["model.rows=[speech_small, text, fusion]", "model.channels=8", "model.encoder_convs=1",
                             "model.decoder_lstm1=8", "model.decoder_lstm2=8", "model.postnet_convs=1",
                             "model.postnet_channels=8", "model.phone_dim=4", "model.classifier=[8]",
                             "model.text_filters=[8]", "model.probe_folds=0", "model.fusion_grid=[0.0, 1.0]",
                             "model.text_epochs=1", "model.segment=16", "model.bottlenecks={small: [4, 8]}",
                             "model.fusion_speech=speech_small"],
    # the demo's Whisper tiny.en, whose top layer the students and audio_ft fine-tune
    "teacher_student": ["data.audio_encoder=whisper-tiny.en", "data.audio_layers=[-1]", "data.frame_pool=4",
                        "model.hidden=8", "model.embedding=8", "model.gru_layers=1"],
    "distilled": ["data.audio_encoder=whisper-tiny.en", "data.frame_pool=4", "model.hidden=8",
                  "model.transcript_engines=[]", "model.importance_encoders=[]"],
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    (root / "audio").mkdir()
    (root / "text").mkdir()
    return {"categories": write_corpus(root / "audio"), "text": write_corpus(root / "text", audio=False, partition=True),
            "store": FeatureStore(root / "store")}


def run(system, tables, kind, tmp_path):
    protocol = "speaker-folds(3)" if kind == "categories" else "partitions"
    out = run_system(system, [("mine", tables[kind])], folds=[1], out=tmp_path / "run", store=tables["store"],
                     progress=False, profile="demo", overrides=[
                         "data.label_space=auto", f"data.protocol={protocol}", "data.audio_encoder=logmel",
                         "data.audio_layers=null", "data.frame_pool=1", "train.epochs=1", "train.batch_size=8",
                         *TINY[system]])
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["bored", "calm", "joyful"]  # the corpus's own category names
    return {r["name"]: r for r in results["rows"]}


def trained(rows):
    return sorted(n for n, r in rows.items() if not r.get("skipped") and "ua" in r["mean"])


EXPECTED = {  # system: (rows trained on categories only, rows trained on text only); baselines: tests/data
    "teacher_student": (["audio", "audio_ft", "cts", "multimodal", "text", "ts"], ["text"]),
    "label_embedding": (["le_mer", "speech_le", "text", "text_context_le"], ["text", "text_context_le"]),
    # its categories-only run: test_cross_representation.py::test_a_table_corpus_of_ones_own_trains_a_step
    "cross_representation": (None, ["text"]),
}


@pytest.mark.parametrize("system", sorted(EXPECTED))
def test_a_system_trains_what_a_categorical_corpus_and_a_text_only_one_allow(system, tables, tmp_path):
    on_categories, on_text = EXPECTED[system]
    if on_categories is not None:
        rows = run(system, tables, "categories", tmp_path / "categories")
        assert trained(rows) == on_categories
    rows = run(system, tables, "text", tmp_path / "text")
    assert trained(rows) == on_text
    for name, row in rows.items():
        if name not in on_text:  # every row that reads speech says why it did not run
            assert "the corpus has no audio" in row["skipped"] or "needs the rows" in row["skipped"], (name, row)


def test_hierarchical_trains_its_categorical_rows_and_refuses_a_text_only_corpus_with_each_rows_reason(tables,
                                                                                                     tmp_path):
    rows = run("hierarchical", tables, "categories", tmp_path / "categories")
    assert trained(rows) == ["baseline_d"]  # the rows that need A/V/D say so (test_hierarchical)
    with pytest.raises(RunError, match="no row of hierarchical could run.*baseline_d: the corpus has no audio"):
        run("hierarchical", tables, "text", tmp_path / "text")


def test_distilled_predicts_the_categories_of_a_corpus_without_dimensions_and_needs_speech(tables, tmp_path):
    rows = run("distilled", tables, "categories", tmp_path / "categories")
    assert trained(rows) == ["whisper-tiny.en", "whisper-tiny.en+text", "whisper-tiny.en+text@ft_frz"]
    with pytest.raises(RunError, match="no row of distilled could run.*whisper-tiny.en: the corpus has no audio"):
        run("distilled", tables, "text", tmp_path / "text")
