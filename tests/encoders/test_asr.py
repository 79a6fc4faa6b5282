import pytest

from sermo.data.audio import load_audio
from sermo.data.corpora import prepare
from sermo.encoders.asr import (NOT_IDENTIFIED, PHONE_ID, PHONE_INVENTORY, SIL, AlignmentError, PhoneAligner,
                                PhoneSegment, normalise_words, phones_to_frames, word_error_rate)
from sermo.features import FeatureStore
from sermo.features.transcripts import transcribe_manifest


def test_inventory_has_128_ids():
    assert len(PHONE_INVENTORY) == 128 and len(set(PHONE_INVENTORY)) == 128
    assert PHONE_INVENTORY[SIL] == "<sil>" and "[LAUGHTER]" in PHONE_ID and "AH_B" in PHONE_ID


def test_word_error_rate_hand_computed():
    assert word_error_rate(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    assert word_error_rate(["Hello, world!", "a b"], ["hello world", ""]) == pytest.approx(2 / 4)
    assert normalise_words("I can't [laughter] go.") == ["i", "can't", "[LAUGHTER]", "go"]


def test_phones_to_frames_takes_the_longest_phone():
    segs = [PhoneSegment(SIL, "<sil>", 0, 3), PhoneSegment(PHONE_ID["AH_B"], "AH_B", 3, 5),
            PhoneSegment(PHONE_ID["T_E"], "T_E", 8, 2)]
    # 50 Hz frames cover two 10 ms frames each
    ids = phones_to_frames(segs, 6, 50.0)
    assert ids.tolist() == [SIL, SIL, PHONE_ID["AH_B"], PHONE_ID["AH_B"], PHONE_ID["T_E"], SIL]


def test_alignment_of_a_synthetic_utterance(iemocap_synth):
    df = prepare("iemocap", iemocap_synth).df
    row = df.iloc[3]
    x = load_audio(row["audio"])
    aligner = PhoneAligner()
    segs = aligner.align(x, row["transcript"])
    starts = [s.start for s in segs]
    assert starts == sorted(starts)
    assert segs[-1].start + segs[-1].frames <= len(x) / 160 + 2
    speech = [s for s in segs if s.id != SIL]
    assert speech[0].name.endswith("_B") and speech[-1].name.endswith("_E")
    assert speech[0].start >= 5  # the synthetic utterances start with at least 80 ms of silence
    spoken = sum(s.frames for s in speech) / 100
    assert 0.4 * row["duration"] < spoken < row["duration"]
    # unknown words never make alignment fatal; a guessed word is reported as not identified
    flagged = 0
    for _, r in df.iloc[:6].iterrows():
        words = r["transcript"].split()
        longest = max(range(len(words)), key=lambda i: len(words[i].strip(",.!?")))
        words[longest] = words[longest].strip(",.!?")[::-1] + "q"  # same letters reversed: not English
        segs = aligner.align(load_audio(r["audio"]), " ".join(words))
        flagged += any(s.id == NOT_IDENTIFIED for s in segs)
    assert flagged >= 2
    with pytest.raises(AlignmentError):
        aligner.align(x[:3200], row["transcript"] + " and many more words that were never said at all")


def test_transcribe_caches_and_reports_wer(iemocap_synth, tmp_path):
    m = prepare("iemocap", iemocap_synth)
    m = m.subset(m.ids[:6])
    store = FeatureStore(tmp_path / "s")
    out, rep = transcribe_manifest(m, store, engine="pocketsphinx", workers=2, progress=False)
    assert rep.transcribed == 6 and rep.cached == 0 and 0.0 <= rep.wer < 1.5
    assert set(out.df["transcript_source"]) == {"asr:pocketsphinx"}
    assert out.df["transcript_oracle"].tolist() == m.df["transcript"].tolist()
    again, rep2 = transcribe_manifest(m, store, engine="pocketsphinx", progress=False)
    assert rep2.cached == 6 and rep2.transcribed == 0
    assert again.df["transcript"].tolist() == out.df["transcript"].tolist()
    # the default engine: Whisper tiny.en through faster-whisper, offline, far closer to the words
    heard, rep3 = transcribe_manifest(m, store, progress=False)
    assert set(heard.df["transcript_source"]) == {"asr:whisper-tiny.en"} and rep3.wer < rep.wer
    with pytest.raises(ValueError, match="known: whisper-tiny.en, pocketsphinx, whisper-tiny"):
        transcribe_manifest(m, store, engine="kaldi")


def test_whisper_from_a_checkpoint_folder(iemocap_synth, tmp_path):
    from sermo.encoders.asr import WhisperASR, get_asr
    from tests.conftest import tiny_whisper_model

    folder = tiny_whisper_model(tmp_path / "tiny-whisper")
    asr = get_asr(folder)
    assert isinstance(asr, WhisperASR) and asr.engine == "tiny-whisper"
    m = prepare("iemocap", iemocap_synth)
    m = m.subset(m.ids[:3])
    store = FeatureStore(tmp_path / "s")
    out, rep = transcribe_manifest(m, store, engine=folder, progress=False)
    assert rep.transcribed == 3 and rep.wer is not None
    assert set(out.df["transcript_source"]) == {"asr:tiny-whisper"}
    assert all(isinstance(t, str) for t in out.df["transcript"])
    assert transcribe_manifest(m, store, engine=folder, progress=False)[1].cached == 3
    # another checkpoint in a folder of the same name is another engine: its own transcripts
    other = tiny_whisper_model(tmp_path / "elsewhere" / "tiny-whisper", seed=1)
    assert get_asr(other).engine == asr.engine and get_asr(other).cache_key != asr.cache_key
    again, rep2 = transcribe_manifest(m, store, engine=other, progress=False)
    assert rep2.cached == 0 and rep2.transcribed == 3
