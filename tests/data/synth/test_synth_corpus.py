"""The built-in corpus: layout, content, determinism, and the intended modality structure."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from sermo.data.audio import load_audio
from sermo.data.corpora import prepare
from sermo.data.labels import get_label_space
from sermo.data.protocols import build_protocol
from sermo.data.synth import GROUND_TRUTH, SynthError, synthesize_corpus
from sermo.data.synth.check import modality_check


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_iemocap_layout_manifest(iemocap_synth):
    m = prepare("iemocap", iemocap_synth)
    df = m.df
    assert len(df) == 200 and m.problems() == []
    assert df["session"].nunique() == 5 and df["speaker"].nunique() == 10
    for col in ("audio", "duration", "speaker", "gender", "session", "dialog", "turn_index", "dialog_start",
                "dialog_end", "transcript", "transcript_source", "arousal", "valence", "dominance", "category",
                "ratings"):
        assert df[col].notna().all(), col
    assert df["partition"].isna().all()  # IEMOCAP has no partitions
    assert set(df["category"]) <= {"neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"}
    assert df["arousal"].between(1, 5).all() and df["valence"].std() > 0.5
    assert all(len(m.ratings(i)) >= 6 for i in range(len(df)))  # >= 3 categorical + >= 3 dimensional raters
    assert df["dialog"].str.contains("impro").any() and df["dialog"].str.contains("script").any()
    # speakers alternate inside dialogs, and times are consistent with durations
    d = df[df["dialog"] == df["dialog"].iloc[0]].sort_values("turn_index")
    assert d["speaker"].nunique() == 2
    assert (d["dialog_end"] - d["dialog_start"]).to_numpy() == pytest.approx(d["duration"].to_numpy(), abs=2e-3)
    assert (d["dialog_start"].to_numpy()[1:] >= d["dialog_end"].to_numpy()[:-1]).all()
    # label spaces leave "xxx" out; the manifest keeps it
    space = get_label_space("iemocap-4")
    codes = df["category"]
    assert ((space.indices(codes) == -1) == ~codes.isin(["neu", "hap", "exc", "ang", "sad"])).all()
    assert len(build_protocol("iemocap-loso", m).folds) == 5


def test_words_and_audio_are_real(iemocap_synth):
    m = prepare("iemocap", iemocap_synth)
    assert m.df["transcript"].nunique() >= 150  # varied sentences
    x = load_audio(m.df["audio"].iloc[0])
    assert len(x) / 16000 == pytest.approx(m.df["duration"].iloc[0], abs=1e-3)
    edge = np.abs(x[:400]).mean()
    assert 0 < edge < np.abs(x).mean()  # light noise in the leading silence, never digital silence
    truth = pd.read_parquet(iemocap_synth / GROUND_TRUTH)
    assert len(truth) == 200 and truth["latent_valence"].between(-1, 1).all()
    share = (truth["incongruent"] != "").mean()
    assert 0.05 < share < 0.3  # default 15% of words disagree with their emotion
    # consensus follows the latent values
    merged = truth.merge(m.df, on="id")
    assert np.corrcoef(merged["latent_arousal"], merged["arousal"])[0, 1] > 0.7


def test_msp_layout(msp_synth):
    m = prepare("msp-podcast", msp_synth)
    df = m.df
    assert len(df) == 160 and m.problems() == []
    assert set(df["partition"]) == {"Train", "Development", "Test1", "Test2"}
    truth = pd.read_parquet(msp_synth / GROUND_TRUTH).set_index("id")
    by_split = truth.groupby("partition")["speaker"].apply(set)
    others = set().union(*(by_split[s] for s in ("Train", "Development", "Test1")))
    assert not by_split["Test2"] & others  # Test2 speakers appear in no other split
    assert df["speaker"].nunique() > 10 and df["speaker"].isna().any()  # some SpkrID "Unknown"
    assert df["arousal"].between(1, 7).all() and set(df["category"]) <= set("ASHUFDCNOX")
    assert all(len(m.ratings(i)) >= 3 for i in range(len(df)))
    assert build_protocol("msp-partitions", m).folds[0].tests.keys() == {"test1", "test2"}


def test_same_seed_same_bytes(tmp_path):
    a = synthesize_corpus("iemocap", tmp_path / "a", utterances=40, seed=7, progress=False, workers=2)
    b = synthesize_corpus("iemocap", tmp_path / "b", utterances=40, seed=7, progress=False, workers=1)
    assert not a.reused and not b.reused
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    synthesize_corpus("iemocap", tmp_path / "c", utterances=40, seed=8, progress=False)
    assert digest(tmp_path / "c") != digest(tmp_path / "a")


def test_reuse_and_refusal(tmp_path):
    synthesize_corpus("msp-podcast", tmp_path / "m", utterances=40, seed=3, progress=False)
    assert synthesize_corpus("msp-podcast", tmp_path / "m", utterances=40, seed=3, progress=False).reused
    with pytest.raises(SynthError, match="different sermo corpus"):
        synthesize_corpus("msp-podcast", tmp_path / "m", utterances=41, seed=3, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("precious")
    with pytest.raises(SynthError, match="not empty"):
        synthesize_corpus("iemocap", tmp_path / "other", utterances=40, progress=False)
    assert json.loads((tmp_path / "m" / "SERMO_SYNTH.json").read_text())["seed"] == 3


def test_words_carry_valence_prosody_carries_arousal(iemocap_synth):
    """The structure the papers report for real corpora, shown with simple features."""
    r = modality_check(prepare("iemocap", iemocap_synth))
    assert r["valence"]["text"] > r["valence"]["prosody"] + 0.1
    assert r["arousal"]["prosody"] > r["arousal"]["text"] + 0.3
    assert r["valence"]["text"] > 0.4 and r["arousal"]["prosody"] > 0.6
