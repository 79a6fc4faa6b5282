import numpy as np
import pytest

from sermo.encoders import get_encoder
from sermo.encoders.acoustic import log_mel, mel_filterbank
from sermo.encoders.speaker import speaker_embeddings
from tests.conftest import tiny_text_model


def test_tiny_bert_tokens_and_word_ids(tmp_path):
    enc = get_encoder(tiny_text_model(tmp_path / "bert"))
    assert enc.modality == "text" and enc.num_layers == 3
    out = enc.encode("I am so wonderful !")
    assert out.hidden.shape == (3, len(out.tokens), 16)
    assert out.tokens[0] == "[CLS]" and out.tokens[-1] == "[SEP]"
    assert out.word_ids[0] == -1 and out.word_ids[-1] == -1
    # "wonderful" is one word split into word pieces: they share its word id
    assert [w for t, w in zip(out.tokens, out.word_ids) if t in ("won", "##der", "##ful")] == [3, 3, 3]
    batch = enc.encode_batch(["the dinner was okay .", "I am so wonderful !"])
    np.testing.assert_allclose(batch[1].hidden.astype(float), out.hidden.astype(float), atol=2e-3)


def test_minilm_real_weights():
    enc = get_encoder("minilm", layers=[-1])
    a, b, c = (enc.encode(t).hidden[0].astype(np.float32).mean(0) for t in
               ("I love this wonderful dinner", "What a lovely, great meal", "The train leaves at noon"))
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c)  # real weights: meaning shows


def test_logmel_shape_and_filterbank():
    fb = mel_filterbank(80, 512)
    assert fb.shape == (80, 257) and (fb >= 0).all() and (fb.sum(1) > 0).all()
    x = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)
    m = log_mel(x)
    assert m.shape == (101, 80)
    peak_bin = int(np.argmax(m[50]))
    assert 20 < peak_bin < 40  # 1 kHz sits in the lower-middle mel bins
    enc = get_encoder("logmel")
    assert enc.encode(x).hidden.shape == (1, 101, 80) and enc.frame_rate == 100.0


def test_egemaps(iemocap_synth):
    from sermo.data.audio import load_audio

    wav = load_audio(sorted(iemocap_synth.rglob("*.wav"))[0])
    lld = get_encoder("egemaps").encode(wav)
    fun = get_encoder("egemaps-functionals").encode(wav)
    assert lld.hidden.shape[0] == 1 and lld.hidden.shape[2] == 25
    assert abs(lld.hidden.shape[1] - len(wav) / 160) < 10
    assert fun.hidden.shape == (1, 1, 88) and np.isfinite(fun.hidden.astype(float)).all()


@pytest.mark.slow
def test_resemblyzer_tells_speakers_apart(iemocap_synth):
    import pandas as pd

    from sermo.data.audio import load_audio
    from sermo.data.corpora import prepare

    df = prepare("iemocap", iemocap_synth).df
    enc = get_encoder("resemblyzer")
    picks = pd.concat([df[df.speaker == s].head(3) for s in ("Ses01_F", "Ses01_M")])
    emb = {u: enc.encode(load_audio(a)).hidden[0, 0].astype(np.float32) for u, a in zip(picks.id, picks.audio)}
    spk = speaker_embeddings(emb, dict(zip(picks.id, picks.speaker)))
    assert set(spk) == {"Ses01_F", "Ses01_M"} and spk["Ses01_F"].shape == (256,)
    same = [float(emb[u] @ spk["Ses01_F"]) for u in picks.id[:3]]
    other = [float(emb[u] @ spk["Ses01_F"]) for u in picks.id[3:]]
    assert min(same) > max(other)
