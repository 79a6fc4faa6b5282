import json

from sermo.serving.output import format_predictions
from sermo.serving.predictor import Prediction


def categorical(source, p_angry, **kw):
    return Prediction(source, categories={"angry": p_angry, "sad": 1 - p_angry},
                      category="angry" if p_angry > 0.5 else "sad", modalities=["audio"], duration=2.0, **kw)


def test_a_categorical_model_prints_no_empty_dimension_columns():
    rows = [categorical("a.wav", 0.8), categorical("b.wav", 0.3)]
    csv = format_predictions(rows, {}, "csv", bundle="b")
    header = csv.splitlines()[0].split(",")
    assert "p_angry" in header and not {"arousal", "valence", "dominance", "transcript"} & set(header)
    table = format_predictions(rows, {}, "table", bundle="b")
    assert "valence" not in table and "angry" in table


def test_segment_summaries_are_a_line_in_a_table_and_json_in_json():
    rows = [categorical("long.wav", 0.9, start=0.0, end=2.0)]
    summaries = {"long.wav": {"segments": 1, "speech_seconds": 2.0, "category": "angry",
                              "categories": {"angry": 0.9, "sad": 0.1}}}
    table = format_predictions(rows, summaries, "table", bundle="b")
    assert table.splitlines()[-1] == "long.wav: 1 segment(s), 2.0 s of speech, mostly angry" and "{" not in table
    data = json.loads(format_predictions(rows, summaries, "json", bundle="b"))
    assert data["summaries"]["long.wav"]["segments"] == 1 and data["predictions"][0]["start"] == 0.0
