"""Shared fixtures: small built-in corpora, synthesised once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sermo.data.synth import synthesize_corpus


@pytest.fixture(scope="session")
def iemocap_synth(tmp_path_factory):
    """A 200-utterance built-in corpus in the IEMOCAP layout (seed 1)."""
    root = tmp_path_factory.mktemp("synth") / "iemocap"
    synthesize_corpus("iemocap", root, utterances=200, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def msp_synth(tmp_path_factory):
    """A 160-utterance built-in corpus in the MSP-Podcast layout (seed 2)."""
    root = tmp_path_factory.mktemp("synth") / "msp"
    synthesize_corpus("msp-podcast", root, utterances=160, seed=2, progress=False)
    return root


def write_tone(path, seconds=1.0, sr=16000, channels=1, freq=220.0, **kw):
    """Write a sine tone (a tiny real audio file) and return its path."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, **kw)
    return path


TINY_SPEECH = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24,
                   conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=2)


def tiny_speech_model(folder, *, kind="hubert", attention_mask=False, seed=0):
    """Save a randomly initialised tiny HF speech model (frame rate 800 Hz) with its feature
    extractor to ``folder``, as a real checkpoint folder would look."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg_cls, model_cls = (HubertConfig, HubertModel) if kind == "hubert" else (Wav2Vec2Config, Wav2Vec2Model)
    extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if attention_mask else {}
    model = model_cls(cfg_cls(**TINY_SPEECH, **extra)).eval()
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask, do_normalize=True).save_pretrained(folder)
    return str(folder)


def tiny_text_model(folder, *, seed=0):
    """Save a randomly initialised tiny BERT with a small word-piece vocabulary to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "am", "so", "glad", "the", "dinner", "was",
             "terrible", "okay", ".", ",", "!", "won", "##der", "##ful", "you", "hate", "this"]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=64)).eval().save_pretrained(folder)
    return str(folder)
