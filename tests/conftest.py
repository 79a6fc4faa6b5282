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
