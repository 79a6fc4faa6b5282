import pandas as pd
import pytest

from sermo.data.manifest import Manifest
from sermo.data.protocols import (Fold, ProtocolError, build_protocol, check_speaker_independence,
                                  default_protocol, protocol_for)


def iemocap_like():
    rows = [{"id": f"Ses{s:02d}_{g}_{i}", "audio": "x", "session": f"Ses{s:02d}", "speaker": f"Ses{s:02d}_{g}",
             "corpus": "iemocap"} for s in range(1, 6) for g in "FM" for i in range(3)]
    return Manifest(pd.DataFrame(rows))


def test_iemocap_loso():
    m = iemocap_like()
    p = build_protocol("iemocap-loso", m)
    assert len(p.folds) == 5 and default_protocol(m) == "iemocap-loso"
    f1, f5 = p.folds[0], p.folds[4]
    assert {i[:5] for i in f1.test} == {"Ses01"} and {i[:5] for i in f1.valid} == {"Ses02"}
    assert {i[:5] for i in f1.train} == {"Ses03", "Ses04", "Ses05"}
    assert {i[:5] for i in f5.test} == {"Ses05"} and {i[:5] for i in f5.valid} == {"Ses01"}
    for f in p.folds:
        assert len(f.train) + len(f.valid) + len(f.test) == len(m)
    assert [f.name for f in p.select([1, 3]).folds] == ["fold1", "fold3"]
    with pytest.raises(ProtocolError, match="folds 1..5"):
        p.select([6])


def test_speaker_folds_are_disjoint_and_cover():
    rows = [{"id": f"u{s}_{i}", "audio": "x", "speaker": f"s{s}"} for s in range(12) for i in range(s + 1)]
    rows.append({"id": "anon", "audio": "x", "speaker": None})
    m = Manifest(pd.DataFrame(rows))
    p = build_protocol("speaker-folds(4)", m)
    assert len(p.folds) == 4
    tested = [i for f in p.folds for i in f.test]
    assert sorted(tested) == sorted(i for i in m.ids if i != "anon")  # each labelled utterance tested once
    spk = dict(zip(m.df["id"], m.df["speaker"]))
    for f in p.folds:
        assert not ({spk[i] for i in f.train} - {None}) & {spk[i] for i in f.test}
        assert "anon" in f.train
    with pytest.raises(ProtocolError, match="at least 20 speakers"):
        build_protocol("speaker-folds(20)", m)


def test_msp_partitions():
    rows = [{"id": f"{p}{i}", "audio": "x", "speaker": f"{p}spk", "partition": p, "corpus": "msp-podcast"}
            for p in ("Train", "Development", "Test1", "Test2") for i in range(2)]
    m = Manifest(pd.DataFrame(rows))
    p = build_protocol("msp-partitions", m)
    (fold,) = p.folds
    assert set(fold.tests) == {"test1", "test2"} and fold.test == ("Test10", "Test11")
    assert default_protocol(m) == "msp-partitions"
    # the papers' IEMOCAP protocol in a recipe: MSP-Podcast is still tested on its partitions
    assert protocol_for("iemocap-loso-holdout", m) == "msp-partitions"
    assert protocol_for("iemocap-loso-holdout", iemocap_like()) == "iemocap-loso-holdout"
    both = Manifest.concat([iemocap_like(), m])
    assert protocol_for("iemocap-loso-holdout", both) == "corpus-transfer"
    assert protocol_for("speaker-folds(3)", both) == "speaker-folds(3)" and protocol_for(None, m) == "msp-partitions"


def test_speaker_in_two_parts_is_an_error():
    m = iemocap_like()
    fold = Fold("bad", ("Ses01_F_0",), ("Ses01_F_1",), {"test": ("Ses02_M_0",)})
    with pytest.raises(ProtocolError, match="Ses01_F is in both train and valid"):
        check_speaker_independence(fold, m)
    with pytest.raises(ProtocolError, match="known: iemocap-loso"):
        build_protocol("loso", m)


def test_loso_holdout_trains_on_all_four_other_sessions_and_validates_on_held_out_dialogs():
    rows = [{"id": f"Ses{s:02d}_{g}_d{d}_{i}", "audio": "x", "session": f"Ses{s:02d}", "speaker": f"Ses{s:02d}_{g}",
             "dialog": f"Ses{s:02d}_d{d}", "corpus": "iemocap"}
            for s in range(1, 6) for d in range(5) for g in "FM" for i in range(2)]
    m = Manifest(pd.DataFrame(rows))
    p = build_protocol("iemocap-loso-holdout(0.2)", m, seed=3)
    assert p.spec == "iemocap-loso-holdout(0.2)" and len(p.folds) == 5
    dialog = dict(zip(m.df["id"], m.df["dialog"]))
    for k, f in enumerate(p.folds):
        test_s = f"Ses{k + 1:02d}"
        assert {i[:5] for i in f.test} == {test_s}
        # training and validation together are every other session: 8 speakers, never the test's
        assert {i[:5] for i in f.train + f.valid} == {f"Ses{s:02d}" for s in range(1, 6)} - {test_s}
        assert len({i.split("_d")[0] for i in f.train + f.valid}) == 8
        assert len(f.train) + len(f.valid) + len(f.test) == len(m)
        # whole dialogs are held out: no dialog is in both, and about the share asked for
        assert not {dialog[i] for i in f.train} & {dialog[i] for i in f.valid}
        assert 0.2 <= len(f.valid) / (len(f.train) + len(f.valid)) < 0.3
    assert build_protocol("iemocap-loso-holdout", m).spec == "iemocap-loso-holdout(0.1)"
    with pytest.raises(ProtocolError, match="share"):
        build_protocol("iemocap-loso-holdout(0.7)", m)
