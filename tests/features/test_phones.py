from sermo.data.corpora import prepare
from sermo.encoders.asr import SIL
from sermo.features import FeatureStore
from sermo.features.phones import align_manifest


def test_alignments_are_cached_and_failures_reported(iemocap_synth, tmp_path):
    manifest = prepare("iemocap", iemocap_synth)
    df = manifest.df.head(4).copy()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    df.loc[df.index[2], "audio"] = str(broken)
    df.loc[df.index[3], "transcript"] = None
    small = type(manifest)(df)
    store = FeatureStore(tmp_path / "store")
    phones, report = align_manifest(small, store, workers=1, progress=False)
    ids = df["id"].tolist()
    assert set(phones) == set(ids[:2]) and report.aligned == 2 and report.cached == 0
    assert {u for u, _ in report.failed} == set(ids[2:])
    assert any("broken.wav" in why for _, why in report.failed)
    assert any("no transcript" in why for _, why in report.failed)
    segs = phones[ids[0]]
    assert segs[0].id == SIL and all(a.start + a.frames <= b.start + 1 for a, b in zip(segs, segs[1:]))
    assert any(s.id > 2 for s in segs)  # real phones, not only silence / not identified
    again, report = align_manifest(small, store, workers=1, progress=False, ids=ids[:2])
    assert report.cached == 2 and report.aligned == 0 and again[ids[0]] == segs
