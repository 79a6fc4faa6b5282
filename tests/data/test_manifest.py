import json

import numpy as np
import pandas as pd
import pytest

from sermo.data.manifest import COLUMNS, Manifest, ManifestError
from tests.conftest import write_tone


def small(tmp_path):
    a = write_tone(tmp_path / "a.wav")
    b = write_tone(tmp_path / "b.wav")
    return Manifest(pd.DataFrame({
        "id": ["u1", "u2"], "corpus": "c", "audio": [str(a), str(b)], "speaker": ["s1", "s2"],
        "valence": [2.0, np.nan], "arousal": [4.5, 3.0], "category": ["ang", None], "turn_index": [0, 1],
        "scale_min": 1.0, "scale_max": 5.0, "transcript": ["hi", None], "transcript_source": ["oracle", None],
        "ratings": [json.dumps([{"rater": "E1", "valence": 2}]), None],
    }))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_roundtrip(tmp_path, suffix):
    m = small(tmp_path)
    back = Manifest.load(m.save(tmp_path / f"m{suffix}"))
    assert list(back.df.columns) == list(COLUMNS)
    assert back.ids == ["u1", "u2"]
    assert np.isnan(back.df.at[1, "valence"]) and back.df.at[0, "valence"] == 2.0  # missing stays missing
    assert back.df.at[1, "category"] is None and back.df.at[1, "transcript"] is None
    assert back.ratings(0) == [{"rater": "E1", "valence": 2}] and back.ratings(1) == []
    assert back.df.at[1, "turn_index"] == 1
    assert back.problems() == []


def test_validation_lists_every_problem(tmp_path):
    m = small(tmp_path)
    df = m.df.copy()
    df.loc[1, "id"] = "u1"
    df.loc[0, "valence"] = 6.0
    df.loc[1, "audio"] = str(tmp_path / "gone.wav")
    df.loc[0, "transcript_source"] = "human"
    with pytest.raises(ManifestError) as e:
        Manifest(df).validate()
    text = str(e.value)
    assert "duplicate id" in text and "u1" in text
    assert "valence label(s) outside the corpus scale" in text and "6.0 not in [1.0, 5.0]" in text
    assert "do not exist" in text and "gone.wav" in text
    assert "transcript_source" in text


def test_subset_and_errors(tmp_path):
    m = small(tmp_path)
    assert m.subset(["u2", "u1"]).ids == ["u2", "u1"]
    with pytest.raises(KeyError, match="u9"):
        m.subset(["u9"])
    with pytest.raises(ManifestError, match="unknown manifest format"):
        m.save(tmp_path / "m.xlsx")
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.load(tmp_path / "none.parquet")
    with pytest.raises(ManifestError, match="required column"):
        Manifest(pd.DataFrame({"id": ["x"]}))
