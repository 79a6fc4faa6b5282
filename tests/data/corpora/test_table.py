import pytest

from sermo.data.corpora import detect_layout, prepare
from sermo.data.corpora.table import TableLayoutError
from tests.conftest import write_tone


def test_table_csv(tmp_path):
    write_tone(tmp_path / "audio" / "x.wav", seconds=2.0)
    write_tone(tmp_path / "audio" / "y.wav", seconds=1.0)
    t = tmp_path / "mine.csv"
    t.write_text("path,speaker,category,valence,transcript,start,end\n"
                 "audio/x.wav,s1,angry,2.0,hello there,0.5,1.5\n"
                 "audio/y.wav,s2,happy,,,,\n")
    assert detect_layout(t) == "table"
    m = prepare("table", t, scale=(1, 5))
    df = m.df.set_index("id")
    assert m.problems() == []
    assert df.loc["audio/x", "corpus"] == "mine" and df.loc["audio/x", "duration"] == pytest.approx(1.0)
    assert df.loc["audio/x", "transcript_source"] == "oracle" and df.loc["audio/y", "transcript_source"] is None
    assert df.loc["audio/y", "audio"].endswith("audio/y.wav")


def test_table_errors(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("path,category\na.wav,angry\n")
    with pytest.raises(TableLayoutError, match="speaker"):
        prepare("table", t)
    t.write_text("path,speaker,valence\na.wav,s,3\n")
    with pytest.raises(TableLayoutError, match="--scale"):
        prepare("table", t)
    t.write_text("path,speaker,valance\na.wav,s,3\n")
    with pytest.warns(UserWarning, match=r"\['valance'\] kept") as caught:  # a misspelt label is named
        m = prepare("table", t)
    assert len(caught) == 1 and "valance" in m.df.columns and m.df["valence"].isna().all()
    with pytest.raises(ValueError, match="known: iemocap, msp-podcast, table"):
        prepare("crema", t)


def test_cells_are_read_as_written(tmp_path):
    write_tone(tmp_path / "a.wav")
    t = tmp_path / "t.csv"
    t.write_text("path,speaker,category,transcript,valence\na.wav,s1,angry,NA,3\n")
    m = prepare("table", t, scale=(1, 5))
    assert m.df["transcript"].iloc[0] == "NA"  # words, not a missing value
    t.write_text("path,speaker,category,valence\na.wav,s1,angry,n/a\n")
    with pytest.raises(TableLayoutError, match=r"line 2: valence 'n/a' is not a number"):
        prepare("table", t, scale=(1, 5))


def test_unreadable_audio_in_a_table_is_reported_with_its_line(tmp_path):
    # reliability review S11 (table layout): the utterance was dropped from the test set in silence
    write_tone(tmp_path / "a.wav", seconds=1.0)
    (tmp_path / "b.wav").write_text("text bytes named .wav")
    table = tmp_path / "t.csv"
    table.write_text("path,speaker,category\na.wav,s1,angry\nb.wav,s2,happy\n")
    problems = prepare("table", table).problems()
    assert any("t.csv, line 3:" in p and "b.wav: cannot be read as audio" in p for p in problems), problems
