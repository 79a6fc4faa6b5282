"""A corpus of one's own: any category names, extra columns, unique ids, text only, its own splits."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sermo.cli import main
from sermo.data.corpora import prepare
from sermo.data.corpora.table import TableLayoutError
from sermo.data.labels import resolve_label_space


def write_corpus(root, n=36, *, audio=True, folders=("a",), partition=False):
    rows = []
    rng = np.random.default_rng(0)
    cats = ["calm", "bored", "joyful"]
    for i in range(n):
        c = (i // 6) % 3  # every speaker says every category
        row = {"speaker": f"s{i % 6}", "category": cats[c], "intensity": "strong" if i % 2 else "normal",
               "transcript": ["what a calm evening", "this is so dull", "i am thrilled"][c]}
        if audio:
            folder = folders[i % len(folders)]
            path = root / folder / f"utt{i // len(folders)}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(6400) / 16000
            sf.write(path, (0.2 * np.sin(2 * np.pi * (100 + 40 * (i % 3)) * t) + 0.01 * rng.normal(size=t.size))
                     .astype(np.float32), 16000)
            row["path"] = f"{folder}/utt{i // len(folders)}.wav"
        if partition:
            row["partition"] = ["train", "train", "train", "dev", "test"][i % 5]
        rows.append(row)
    table = root / "corpus.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_extra_columns_are_kept_and_ids_stay_unique_across_folders(tmp_path):
    table = write_corpus(tmp_path, n=12, folders=("train", "test"))
    with pytest.warns(UserWarning, match="intensity"):
        m = prepare("table", table)
    assert m.df["id"].is_unique and {"train/utt0", "test/utt0"} <= set(m.df["id"])
    assert list(m.df["intensity"][:2]) == ["normal", "strong"]  # an unknown column, kept
    bad = pd.read_csv(table)
    bad["id"] = ["same"] * len(bad)
    bad.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(TableLayoutError, match=r"share an id, e.g. 'same' on lines \[2, 3,"):
        prepare("table", tmp_path / "dup.csv")
    bad = pd.read_csv(table)
    bad["valence"] = ["3"] * 3 + ["high"] + ["2"] * (len(bad) - 4)
    bad.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(TableLayoutError, match="line 5: valence 'high' is not a number"):
        prepare("table", tmp_path / "nan.csv", scale=(1, 5))


def test_label_spaces_from_data_from_lists_and_from_files(tmp_path):
    auto = resolve_label_space("auto", ["calm", "bored", None, "joyful", "calm"])
    assert auto.classes == ("bored", "calm", "joyful")
    listed = resolve_label_space("joyful,calm", [])
    assert listed.classes == ("joyful", "calm") and listed.index_of("bored") == -1
    (tmp_path / "space.yaml").write_text("happy: [hap, exc]\nsad: sad\n")
    merged = resolve_label_space(str(tmp_path / "space.yaml"))
    assert merged.classes == ("happy", "sad") and merged.class_of("exc") == "happy"
    (tmp_path / "clash.yaml").write_text("happy: [hap]\njoy: [hap]\n")
    with pytest.raises(ValueError, match="more than one class"):
        resolve_label_space(str(tmp_path / "clash.yaml"))


@pytest.mark.slow
def test_own_categories_train_without_recoding_and_text_only_trains_the_text_rows(tmp_path, capsys):
    table = write_corpus(tmp_path / "audio")
    store = ["--store", str(tmp_path / "store"), "--quiet", "--set", "train.epochs=2", "--set", "model.hidden=16",
             "--set", "model.embedding=8", "--set", "data.audio_encoder=logmel", "--set", "data.protocol=speaker-folds(3)"]
    assert main(["run", "baselines", "--profile", "demo", "--corpus", f"mine={table}", "--label-space", "auto", "--folds", "1",
                 "--out", str(tmp_path / "run"), *store]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["classes"] == ["bored", "calm", "joyful"] and {r["name"] for r in results["rows"]} == {
        "linear", "audio", "text", "fusion"}
    assert "Label space `auto`: bored, calm, joyful" in (tmp_path / "run" / "REPORT.md").read_text()
    bundle = json.loads((tmp_path / "run" / "bundles" / "text" / "config.json").read_text())
    assert bundle["label_space"]["classes"] == ["bored", "calm", "joyful"]
    # no audio at all: the text row trains, the others say why they could not
    (tmp_path / "text").mkdir()
    text_only = write_corpus(tmp_path / "text", audio=False, partition=True)
    code = main(["run", "baselines", "--profile", "demo", "--corpus", f"words={text_only}", "--label-space", "calm,bored,joyful",
                 "--out", str(tmp_path / "text-run"), *store[:-2], "--set", "data.protocol=partitions"])
    assert code == 1  # rows that produced nothing make the exit code non-zero
    rows = {r["name"]: r for r in json.loads((tmp_path / "text-run" / "results.json").read_text())["rows"]}
    assert "ua" in rows["text"]["mean"] and "no audio" in rows["audio"]["skipped"] and rows["fusion"]["skipped"]
    assert "no audio" in rows["linear"]["skipped"]
    assert "row audio produced nothing" in capsys.readouterr().err


def test_a_corpus_too_small_for_its_protocol_is_one_error_naming_the_fold(tmp_path, capsys):
    # reliability review S21: one utterance per class and speaker ended in tracebacks from the rows
    t = np.arange(6400) / 16000
    lines = ["path,speaker,category"]
    for i, cat in enumerate(["angry", "happy", "sad", "calm"]):
        sf.write(tmp_path / f"u{i}.wav", (0.2 * np.sin(2 * np.pi * (100 + 30 * i) * t)).astype(np.float32), 16000)
        lines.append(f"u{i}.wav,s{i},{cat}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    code = main(["run", "baselines", "--profile", "demo", "--corpus", f"tiny={tmp_path / 't.csv'}", "--label-space", "auto", "--out",
                 str(tmp_path / "run"), "--quiet", "--set", "data.protocol=speaker-folds(3)", "--set",
                 "data.audio_encoder=logmel", "--set", "model.rows=[linear, audio]"])
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("sermo: warning:")]
    assert code == 2 and len(err) == 1 and "fold1 of protocol speaker-folds(3) has no" in err[0], err
