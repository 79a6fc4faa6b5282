"""IEMOCAP loader on hand-written files in the real formats."""

import json

import pytest

from sermo.data.corpora import detect_layout
from sermo.data.corpora.iemocap import IemocapLayoutError, parse_emo_evaluation, prepare_iemocap
from tests.conftest import write_tone

EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
C-E4:\tNeutral;\t()
C-F1:\tNeutral;\t(curious)
A-E3:\tval 3; act 2; dom  2;\t()
A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)
A-F1:\tval 3; act 2; dom  1;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\txxx\t[2.0000, 3.5000, 3.5000]
C-E1:\tFrustration; Anger;\t()
C-E2:\tSadness;\t()
C-E4:\tNeutral;\t()
A-E1:\tval 2; act 4; dom  4;\t()
A-E2:\tval 2; act 3; dom  3;\t()

[1.5000 - 4.2000]\tSes01F_impro01_M001\tfru\t[1.5000, 3.0000, 4.0000]
C-E1:\tFrustration;\t()
C-E2:\tFrustration;\t()
A-E1:\tval 1; act 3; dom  4;\t()
"""
WORDS = """Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_MXX0 [009.0000-009.5000]: [LAUGHTER]
M: this line is not an utterance
Ses01F_impro01_M001 [001.5000-004.2000]: Yeah.
"""


def make_iemocap(root):
    """A one-dialog IEMOCAP tree: the F-led dialog holds a male speaker's turns too."""
    s = root / "Session1"
    (s / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (s / "dialog" / "transcriptions").mkdir(parents=True)
    (s / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(EVAL)
    (s / "dialog" / "transcriptions" / "Ses01F_impro01.txt").write_text(WORDS)
    for utt in ("Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001"):
        write_tone(s / "sentences" / "wav" / "Ses01F_impro01" / f"{utt}.wav", seconds=1.5)
    return root


def test_parse_evaluation_keeps_every_rater(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text(EVAL)
    turns = parse_emo_evaluation(p)
    assert [t["id"] for t in turns] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001"]
    first = turns[0]
    # [V, A, D] order in the file
    assert (first["valence"], first["arousal"], first["dominance"]) == (2.5, 2.5, 2.5)
    raters = [r["rater"] for r in first["ratings"]]
    assert raters == ["C-E2", "C-E3", "C-E4", "C-F1", "A-E3", "A-E4", "A-F1"]
    assert first["ratings"][3] == {"rater": "C-F1", "categories": ["Neutral"], "comment": "curious"}
    assert first["ratings"][5]["valence"] == 2.0 and first["ratings"][5]["dominance"] == 3.0
    assert "aggravated" in first["ratings"][5]["comment"]
    assert turns[1]["ratings"][0]["categories"] == ["Frustration", "Anger"]


def test_prepare_iemocap(tmp_path):
    m = prepare_iemocap(make_iemocap(tmp_path / "IEMOCAP_full_release"))
    df = m.df.set_index("id")
    # the one utterance the transcription file does not name is reported, with what it costs
    assert len(df) == 3 and len(m.problems()) == 1 and "for 1 of the 3 utterance(s)" in m.problems()[0]
    # the speaker comes from the utterance's own suffix, not the dialog name
    assert df.loc["Ses01F_impro01_M000", "speaker"] == "Ses01_M"
    assert df.loc["Ses01F_impro01_F000", "speaker"] == "Ses01_F"
    assert df.loc["Ses01F_impro01_M000", "category"] == "xxx"  # kept in the manifest
    assert df.loc["Ses01F_impro01_F000", "transcript"] == "Excuse me."
    assert df.loc["Ses01F_impro01_F000", "transcript_source"] == "oracle"
    assert df.loc["Ses01F_impro01_M000", "transcript"] is None  # missing from the transcription file
    assert df.loc["Ses01F_impro01_M000", "transcript_source"] is None
    # turn order follows time in the dialog, not file order
    assert df.loc["Ses01F_impro01_M001", "turn_index"] == 0
    assert df.loc["Ses01F_impro01_F000", "turn_index"] == 1
    assert df.loc["Ses01F_impro01_M001", "valence"] == 1.5 and df.loc["Ses01F_impro01_M001", "arousal"] == 3.0
    assert df.loc["Ses01F_impro01_F000", "duration"] == pytest.approx(1.5)
    assert len(json.loads(df.loc["Ses01F_impro01_F000", "ratings"])) == 7
    assert set(df["session"]) == {"Ses01"} and set(df["scale_max"]) == {5.0}
    assert detect_layout(tmp_path / "IEMOCAP_full_release") == "iemocap"


def test_missing_audio_is_kept_and_reported(tmp_path):
    root = make_iemocap(tmp_path / "r")
    (root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav").unlink()
    m = prepare_iemocap(root)
    assert len(m) == 3
    assert any("do not exist" in p and "Ses01F_impro01_M001" in p for p in m.problems())


def test_not_iemocap(tmp_path):
    with pytest.raises(IemocapLayoutError, match="IEMOCAP_full_release"):
        prepare_iemocap(tmp_path)


def test_a_malformed_utterance_line_is_reported_and_its_ratings_attach_to_nothing(tmp_path):
    root = make_iemocap(tmp_path / "r")
    evaluation = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    # M000's V/A/D written with ';': the line must not vanish and pass its ratings to F000
    evaluation.write_text(EVAL.replace("[2.0000, 3.5000, 3.5000]", "[2.0000; 3.5000; 3.5000]"))
    m = prepare_iemocap(root)
    df = m.df.set_index("id")
    assert "Ses01F_impro01_M000" not in df.index
    assert len(json.loads(df.loc["Ses01F_impro01_F000", "ratings"])) == 7  # its own raters only
    (problem,) = [p for p in m.problems() if "cannot be parsed" in p]
    assert "Ses01F_impro01.txt line 12" in problem and "Ses01F_impro01_M000" in problem
    # a '-' for a value, a bad time: reported with file and line, no traceback
    evaluation.write_text(EVAL.replace("[2.5000, 2.5000, 2.5000]", "[-, 2.5000, 2.5000]")
                          .replace("[1.5000 - 4.2000]", "[1.5x00 - 4.2000]"))
    m = prepare_iemocap(root)
    lines = [p for p in m.problems() if "cannot be parsed" in p]
    assert len(lines) == 2 and "line 3:" in lines[0] and "line 19:" in lines[1]
    assert list(m.df["id"]) == ["Ses01F_impro01_M000"]
    evaluation.write_text(EVAL.replace("[", "(").replace("]", ")"))  # no utterance line left
    with pytest.raises(IemocapLayoutError, match="no utterance line"):
        prepare_iemocap(root)


def test_missing_or_unreadable_label_and_transcript_files_are_reported(tmp_path):
    root = make_iemocap(tmp_path / "r")
    (root / "Session1/dialog/transcriptions/Ses01F_impro01.txt").unlink()
    m = prepare_iemocap(root)
    assert len(m) == 3 and m.df["transcript"].isna().all()
    assert any("transcriptions/Ses01F_impro01.txt" in p and "does not exist" in p for p in m.problems())
    evaluation = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    evaluation.write_bytes(b"\xff\xfe\x00garbage\x00" * 10)  # the corpus's only label file
    with pytest.raises(IemocapLayoutError, match="no utterance could be read.*Ses01F_impro01.txt: no utterance line"):
        prepare_iemocap(root)


def test_lost_dialogs_transcripts_and_unreadable_audio_are_reported(tmp_path):
    # reliability review N6b, N6d, S11, N13f: each was a silent loss, --strict passing
    root = make_iemocap(tmp_path / "r")
    s = root / "Session1"
    for utt in ("Ses01F_impro02_F000", "Ses01F_impro02_M000"):  # a dialog with audio and no EmoEvaluation file
        write_tone(s / "sentences" / "wav" / "Ses01F_impro02" / f"{utt}.wav", seconds=1.0)
    (s / "dialog" / "transcriptions" / "Ses01F_impro01.txt").write_bytes(b"\x00\x01garbage\xff" * 20)
    (s / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M000.wav").write_text("not audio at all")
    link = s / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M001.wav"
    link.unlink()
    link.symlink_to(tmp_path / "nowhere.wav")
    loop = s / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    loop.unlink()
    loop.symlink_to(loop)  # N13e: a traceback before
    problems = prepare_iemocap(root).problems()
    text = "\n".join(problems)
    assert "EmoEvaluation/Ses01F_impro02.txt: does not exist; the 2 wav file(s) of Ses01F_impro02 have no labels" in text
    assert "transcriptions/Ses01F_impro01.txt: no line 'ID [start-end]: words' for 3 of the 3 utterance(s)" in text
    assert "Ses01F_impro01_M000.wav: cannot be read as audio" in text and "has no usable audio" in text
    assert "Ses01F_impro01_M001.wav: a broken symbolic link" in text
    assert "Ses01F_impro01_F000.wav: a symbolic link loop" in text
