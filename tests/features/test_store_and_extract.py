import numpy as np
import pandas as pd
import pytest

import sermo.features.extraction as extract_mod
from sermo.data.corpora import prepare
from sermo.data.manifest import Manifest
from sermo.encoders import EncoderOutput, get_encoder
from sermo.features import FeatureStore, extract, feature_keys
from sermo.features.store import DamagedEntry


@pytest.fixture()
def manifest(iemocap_synth):
    return prepare("iemocap", iemocap_synth).subset(prepare("iemocap", iemocap_synth).ids[:24])


def all_entries(store, encoder, manifest):
    keys = feature_keys(manifest, encoder.modality, store)
    return {uid: np.asarray(store.get(encoder.identity, k).hidden) for uid, k in keys.items()}


def test_put_get_roundtrip(tmp_path):
    store = FeatureStore(tmp_path / "s")
    enc = get_encoder("logmel")
    out = EncoderOutput(np.arange(24, dtype=np.float16).reshape(1, 3, 8), 100.0, ["a"], [0])
    assert not store.has(enc.identity, "ab" * 16)
    store.put(enc.identity, "ab" * 16, out)
    got = store.get(enc.identity, "ab" * 16)
    assert isinstance(got.hidden, np.memmap) and not got.hidden.flags.writeable
    np.testing.assert_array_equal(got.hidden, out.hidden)
    assert got.frame_rate == 100.0 and got.tokens == ["a"] and store.verify(enc.identity, "ab" * 16)
    with pytest.raises(KeyError):
        store.get(enc.identity, "cd" * 16)


def test_second_run_runs_no_encoder(tmp_path, manifest):
    store = FeatureStore(tmp_path / "s")
    enc = get_encoder("logmel")
    first = extract(manifest, enc, store, progress=False)
    assert first.computed == 24 and first.cached == 0
    calls = []
    original = enc._encode_batch
    enc._encode_batch = lambda items: calls.append(len(items)) or original(items)
    second = extract(manifest, enc, store, progress=False)
    assert second.computed == 0 and second.cached == 24 and calls == []


def test_interrupted_run_resumes_to_identical_features(tmp_path, manifest, monkeypatch):
    monkeypatch.setattr(extract_mod, "CHUNK_SECONDS", 10.0)  # several flushes
    enc = get_encoder("logmel")
    clean = FeatureStore(tmp_path / "clean")
    extract(manifest, enc, clean, progress=False)
    expected = all_entries(clean, enc, manifest)

    store = FeatureStore(tmp_path / "killed")
    original = enc._encode_batch
    state = {"batches": 0}

    def dies_on_third(items):
        state["batches"] += 1
        if state["batches"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        return original(items)

    enc._encode_batch = dies_on_third
    with pytest.raises(KeyboardInterrupt):
        extract(manifest, enc, store, progress=False)
    enc._encode_batch = original
    done = extract(manifest, enc, store, progress=False)
    assert 0 < done.cached < 24 and done.cached + done.computed == 24
    got = all_entries(store, enc, manifest)
    assert got.keys() == expected.keys()
    for uid in expected:
        np.testing.assert_array_equal(got[uid], expected[uid])


def test_damaged_entries_are_recomputed(tmp_path, manifest):
    store = FeatureStore(tmp_path / "s")
    enc = get_encoder("logmel")
    extract(manifest, enc, store, progress=False)
    keys = list(feature_keys(manifest, "audio", store).values())
    npy = store.folder(enc.identity) / keys[0][:2] / f"{keys[0]}.npy"
    data = bytearray(npy.read_bytes())
    data[-10:] = b"\x00" * 10  # silent corruption inside the array
    npy.write_bytes(bytes(data))
    meta = store.folder(enc.identity) / keys[1][:2] / f"{keys[1]}.json"
    meta.unlink()  # killed between the array and its metadata
    npy2 = store.folder(enc.identity) / keys[2][:2] / f"{keys[2]}.npy"
    npy2.write_bytes(npy2.read_bytes()[:50])  # truncated
    with pytest.raises(DamagedEntry):
        store.get(enc.identity, keys[2])
    rep = extract(manifest, enc, store, progress=False)
    assert rep.damaged == 3 and rep.computed == 3 and rep.cached == 21
    assert all(store.verify(enc.identity, k) for k in keys)


def test_broken_audio_is_reported_and_skipped(tmp_path, manifest):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF1234")
    df = pd.concat([manifest.df.head(3), pd.DataFrame([{"id": "broken", "audio": str(bad)}])], ignore_index=True)
    rep = extract(Manifest(df), get_encoder("logmel"), FeatureStore(tmp_path / "s"), progress=False)
    assert rep.computed == 3
    assert rep.skipped[0][0] == "broken" and "bad.wav" in rep.skipped[0][1]


def test_text_features_and_missing_transcripts(tmp_path, manifest):
    df = manifest.df.copy()
    df.loc[0, "transcript"] = None
    store = FeatureStore(tmp_path / "s")
    enc = get_encoder("minilm", layers=[0, 6])
    rep = extract(Manifest(df), enc, store, progress=False)
    assert rep.skipped == [(df.loc[0, "id"], "no transcript")]
    keys = feature_keys(Manifest(df), "text", store)
    f = store.get(enc.identity, keys[df.loc[1, "id"]])
    assert f.hidden.shape[0] == 2 and f.tokens[0] == "[CLS]" and len(f.word_ids) == f.hidden.shape[1]


def test_text_is_encoded_in_chunks_of_sentences(tmp_path, manifest, monkeypatch):
    """Many sentences are not one huge batch: the progress bar moves chunk by chunk."""
    monkeypatch.setattr(extract_mod, "TEXT_CHUNK", 5)
    enc = get_encoder("minilm", layers=[6])
    sizes = []
    real = enc.encode_batch
    monkeypatch.setattr(enc, "encode_batch", lambda items: sizes.append(len(items)) or real(items))
    rep = extract(manifest, enc, FeatureStore(tmp_path / "s"), progress=False)
    assert rep.computed == sum(sizes) == len(set(manifest.df["transcript"]))
    assert max(sizes) == 5 and len(sizes) >= 4


def test_cli_extract(tmp_path, iemocap_synth, capsys):
    from sermo.cli import main

    args = ["extract", "--corpus", f"iemocap={iemocap_synth}", "--encoder", "logmel", "--store", str(tmp_path / "s"),
            "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "200 computed" in out and "0 computed, 200 cached" in out


def test_sharded_extraction_with_two_processes(tmp_path, manifest):
    """`sermo extract --devices 2` runs Lightning DDP on CPU (gloo) and fills the store exactly
    as a single process does."""
    import os
    import subprocess
    import sys

    small = tmp_path / "m.jsonl"
    manifest.save(small)
    cmd = [sys.executable, "-m", "sermo.cli", "extract", "--corpus", f"c={small}", "--encoder", "logmel",
           "--store", str(tmp_path / "sharded"), "--devices", "2", "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "24 computed" in done.stdout
    enc = get_encoder("logmel")
    single = FeatureStore(tmp_path / "single")
    extract(manifest, enc, single, progress=False)
    a = all_entries(FeatureStore(tmp_path / "sharded"), enc, manifest)
    b = all_entries(single, enc, manifest)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
