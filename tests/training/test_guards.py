"""A run that learned nothing must never look like a result."""


import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sermo.cli import main
from sermo.config import RunError
from sermo.encoders import get_encoder
from sermo.encoders.base import FeatureOverflow
from sermo.features import FeatureStore
from sermo.training.runner import run_system
from tests.conftest import small_iemocap

FAST = ["train.epochs=1", "train.batch_size=8", "model.hidden=16", "model.embedding=8"]


def table_corpus(tmp_path, categories, n=30, dims=True):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        path = tmp_path / "audio" / f"u{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(8000) / 16000
        sf.write(path, (0.2 * np.sin(2 * np.pi * (120 + 20 * (i % 5)) * t)).astype(np.float32), 16000)
        row = {"path": f"audio/u{i}.wav", "speaker": f"s{i % 6}", "category": categories[i % len(categories)],
               "transcript": "so glad today" if i % 2 else "terrible day"}
        if dims:
            row.update(arousal=rng.uniform(1, 5), valence=rng.uniform(1, 5), dominance=rng.uniform(1, 5))
        rows.append(row)
    table = tmp_path / "corpus.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_a_label_space_that_maps_nothing_stops_the_run(tmp_path, capsys):
    table = table_corpus(tmp_path, ["calm", "bored", "joyful"], dims=False)
    code = main(["run", "baselines", "--profile", "demo", "--corpus", f"mine={table}", "--store", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "iemocap-4" in err and "calm 10" in err and "no A/V/D" in err


def test_a_row_that_learns_only_what_the_training_split_lacks_stops(iemocap_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "s.parquet", 4)
    from sermo.data.manifest import Manifest

    m = Manifest.load(small)
    m.df[["arousal", "valence", "dominance"]] = np.nan  # categories only
    m.save(small)
    with pytest.raises(RunError, match="predicts dimensions, but its training split has none"):
        run_system("baselines", [("iemocap", small)], folds=[1], out=tmp_path / "run", store=FeatureStore(tmp_path / "st"),
                   progress=False, overrides=["model.rows=[audio]", "model.tasks=[dims]", "train.epochs=1",
                                              "model.hidden=8", "model.embedding=8", "data.audio_encoder=logmel"], profile="demo")
    # a system that knows which rows need what skips them, and a run where none can run says why
    with pytest.raises(RunError, match="no row of hierarchical could run here: baseline_c: the corpus's training "
                                       "split has no dimensional labels"):
        run_system("hierarchical", [("iemocap", small)], folds=[1], out=tmp_path / "run2",
                   store=FeatureStore(tmp_path / "st"), progress=False,
                   overrides=["model.rows=[baseline_c]", "train.epochs=1", "model.conformer_layers=1", "model.hidden=8",
                              "model.mlp=[8, 4]", "data.audio_encoder=logmel"], profile="demo")


def test_a_nan_feature_stops_training_naming_the_utterance(iemocap_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "s.parquet", 4)
    store = FeatureStore(tmp_path / "st")
    enc = get_encoder("logmel")
    from sermo.data.manifest import Manifest
    from sermo.features import extract, feature_keys

    m = Manifest.load(small)
    extract(m, enc, store, progress=False)
    uid = m.df.loc[m.df["session"] == "Ses03", "id"].iloc[0]  # a training utterance of fold 1
    entry = store.get(enc.identity, feature_keys(m, "audio", store)[uid])
    poisoned = np.array(entry.hidden)
    poisoned[0, 3, 5] = np.nan
    from sermo.encoders.base import EncoderOutput

    store.put(enc.identity, feature_keys(m, "audio", store)[uid], EncoderOutput(poisoned, 100.0))
    with pytest.raises(RunError, match=f"utterance {uid}: 1 of its logmel features are not finite"):
        run_system("baselines", [("iemocap", small)], folds=[1], out=tmp_path / "run", store=store, progress=False,
                   overrides=FAST + ["model.rows=[audio]", "data.audio_encoder=logmel", "data.feature_mode=stored"], profile="demo")


def test_values_beyond_float16_never_become_infinite(tmp_path):
    enc = get_encoder("egemaps-functionals")
    assert enc.dtype == "float32" and enc.identity.dtype == "float32"  # eGeMAPS keeps its range
    big = np.zeros(16000, np.float32)
    big[::50] = 1.0  # clicks: some functionals reach the thousands
    out = enc.encode(big)
    assert np.isfinite(out.hidden).all() and out.hidden.dtype == np.float32
    forced = get_encoder("egemaps-functionals", dtype="float16")
    forced._encode_batch = lambda items: [type(out)(np.full((1, 1, 88), -85058.0, np.float32), None)]
    with pytest.raises(FeatureOverflow, match="beyond float16's range"):
        forced.encode_batch([big])
