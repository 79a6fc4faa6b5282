"""MSP-Podcast loader on hand-written files in the real formats (new and old releases)."""

import json

import pytest

from sermo.data.corpora.msp_podcast import MspLayoutError, prepare_msp_podcast
from tests.conftest import write_tone

IDS = ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0002", "MSP-PODCAST_0002_0001", "MSP-PODCAST_0003_0001"]


def make_msp(root, *, old=False):
    for i in IDS:
        write_tone(root / "Audios" / f"{i}.wav", seconds=1.0)
    (root / "Labels").mkdir(parents=True)
    header = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender" + ("" if old else ",Split_Set")
    rows = [
        ("A", 5.2, 2.0, 5.6, "127", "Male", "Train"),
        ("N", 4.0, 4.0, 4.0, "127", "Male", "Train"),
        ("X", 3.4, 3.8, 4.2, "Unknown", "Unknown", "Development"),
        ("H", 4.6, 6.2, 4.0, "55", "Female", "Test1"),
    ]
    lines = [header] + [",".join([f"{i}.wav", *[str(x) for x in r[:6]]] + ([] if old else [r[6]]))
                        for i, r in zip(IDS, rows)]
    name = "labels_concensus.csv" if old else "labels_consensus.csv"
    (root / "Labels" / name).write_text("\n".join(lines) + "\n")
    if old:
        (root / "Partitions.txt").write_text("\n".join(f"{r[6]}; {i}.wav" for i, r in zip(IDS, rows)) + "\n")
    (root / "Labels" / "labels_detailed.csv").write_text(
        "FileName,WorkerID,EmoClass,EmoAct,EmoVal,EmoDom\n"
        f"{IDS[0]}.wav,W1,A,5,2,6\n{IDS[0]}.wav,W2,C,6,2,5\n")
    (root / "Transcripts").mkdir()
    (root / "Transcripts" / f"{IDS[0]}.txt").write_text("I told you already.\n")
    return root


@pytest.mark.parametrize("old", [False, True])
def test_prepare_msp(tmp_path, old):
    m = prepare_msp_podcast(make_msp(tmp_path / "msp", old=old))
    df = m.df.set_index("id")
    assert len(df) == 4 and m.problems() == []
    assert df.loc[IDS[0], "partition"] == "Train" and df.loc[IDS[3], "partition"] == "Test1"
    assert df.loc[IDS[2], "speaker"] is None  # SpkrID Unknown
    assert df.loc[IDS[0], "speaker"] == "msp_127" and df.loc[IDS[0], "gender"] == "male"
    assert (df.loc[IDS[0], "arousal"], df.loc[IDS[0], "valence"], df.loc[IDS[0], "dominance"]) == (5.2, 2.0, 5.6)
    assert df.loc[IDS[2], "category"] == "X"
    assert df.loc[IDS[0], "transcript"] == "I told you already."
    assert df.loc[IDS[1], "transcript"] is None
    # segments of one podcast are ordered by their number
    assert df.loc[IDS[1], "turn_index"] == 0 and df.loc[IDS[0], "turn_index"] == 1
    assert df.loc[IDS[0], "dialog"] == "MSP-PODCAST_0001"
    ratings = json.loads(df.loc[IDS[0], "ratings"])
    assert [r["rater"] for r in ratings] == ["W1", "W2"] and ratings[1]["category"] == "C"
    assert set(df["scale_max"]) == {7.0}


def test_old_release_without_partitions_is_an_error(tmp_path):
    root = make_msp(tmp_path / "msp", old=True)
    (root / "Partitions.txt").unlink()
    with pytest.raises(MspLayoutError, match="Partitions.txt"):
        prepare_msp_podcast(root)


def test_no_label_file(tmp_path):
    with pytest.raises(MspLayoutError, match="labels_consensus.csv"):
        prepare_msp_podcast(tmp_path)


def test_non_numeric_labels_are_reported_with_file_and_line_and_strict_fails(tmp_path, capsys):
    from sermo.cli import main

    root = make_msp(tmp_path / "msp")
    consensus = root / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace(",4.0,4.0,4.0,", ",4.0,n/a,4.0,"))  # line 3
    detailed = root / "Labels" / "labels_detailed.csv"
    detailed.write_text(detailed.read_text().replace("W2,C,6,2,5", "W2,C,six,2,5"))
    m = prepare_msp_podcast(root)
    df = m.df.set_index("id")
    assert len(df) == 4 and df["valence"].isna().sum() == 1  # the row is kept, the value missing
    problems = m.problems()
    assert any("labels_consensus.csv line 3: EmoVal 'n/a' is not a number" in p for p in problems), problems
    assert any("labels_detailed.csv line 3" in p and "'six'" in p for p in problems), problems
    out = tmp_path / "m.jsonl"
    assert main(["prepare", "msp-podcast", str(root), "--out", str(out)]) == 0
    assert main(["prepare", "msp-podcast", str(root), "--out", str(out), "--strict"]) == 1
    assert "EmoVal 'n/a'" in capsys.readouterr().err


def test_malformed_partition_lines_are_reported(tmp_path):
    root = make_msp(tmp_path / "msp", old=True)
    part = root / "Partitions.txt"
    part.write_text(part.read_text() + "this line has no separator\n")
    m = prepare_msp_podcast(root)
    assert len(m) == 4
    assert any("Partitions.txt line 5: expected 'Split; FileName'" in p for p in m.problems())
