"""Acoustic encoders: log-mel spectrogram and eGeMAPS (openSMILE)."""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from sermo.data.audio import SAMPLE_RATE
from sermo.encoders.base import Encoder, EncoderOutput
from sermo.encoders.spectrum import stft_power


def mel_filterbank(n_mels: int = 80, n_fft: int = 512, sr: int = SAMPLE_RATE, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters on the HTK mel scale, area-normalised."""
    fmax = fmax or sr / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


def log_mel(samples: np.ndarray, *, n_mels: int = 80, win: int = 400, hop: int = 160, n_fft: int = 512) -> np.ndarray:
    """``(frames, n_mels)`` natural-log mel energies: 25 ms Hann windows every 10 ms (100 Hz)."""
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    if x.numel() < win:
        x = torch.nn.functional.pad(x, (0, win - x.numel()))
    return log_mel_tensor(x, n_mels=n_mels, win=win, hop=hop, n_fft=n_fft).numpy()


def log_mel_tensor(x: torch.Tensor, *, n_mels: int = 80, win: int = 400, hop: int = 160, n_fft: int = 512,
                   power: Callable = stft_power) -> torch.Tensor:
    """:func:`log_mel` of at least ``win`` samples as a tensor function (``sermo export`` exports
    it; ``power``: how the spectrum is computed)."""
    spec = power(x, n_fft, hop, torch.hann_window(win))  # (freq, frames)
    fb = torch.from_numpy(mel_filterbank(n_mels, n_fft))
    return torch.log(fb @ spec + 1e-6).T


class LogMelEncoder(Encoder):
    """80-bin log-mel spectrogram, 25 ms window, 10 ms hop: one layer, 100 frames per second."""

    name = "logmel"
    modality = "audio"
    num_layers = 1
    dim = 80
    frame_rate = 100.0

    def weights_hash(self) -> str:
        return hashlib.sha256(b"logmel:htk:80:400:160:512:hann:ln").hexdigest()[:16]

    def num_frames(self, samples: int) -> int:
        return 1 + max(int(samples), 400) // 160  # centred STFT of a signal padded to one window

    def _encode_batch(self, items: list) -> list[EncoderOutput]:
        return [EncoderOutput(log_mel(x)[None], self.frame_rate) for x in items]


class EgemapsEncoder(Encoder):
    """eGeMAPS v02 from openSMILE: low-level descriptors (25 per 10 ms frame) or the 88
    functionals of the utterance (``functionals=True``: one frame)."""

    modality = "audio"
    num_layers = 1

    def __init__(self, *, functionals: bool = False, layers=None, dtype: str = "float16"):
        super().__init__(layers=layers, dtype=dtype)
        import opensmile

        self.functionals = functionals
        level = opensmile.FeatureLevel.Functionals if functionals else opensmile.FeatureLevel.LowLevelDescriptors
        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level)
        self.name = "egemaps-functionals" if functionals else "egemaps"
        self.dim = len(self._smile.feature_names)
        self.frame_rate = None if functionals else 100.0

    def num_frames(self, samples: int) -> int | None:
        return 1 if self.functionals else None

    def weights_hash(self) -> str:
        import opensmile

        tag = f"egemapsv02:{self.functionals}:{opensmile.__version__}"
        return hashlib.sha256(tag.encode()).hexdigest()[:16]

    def _encode_batch(self, items: list) -> list[EncoderOutput]:
        outs = []
        for x in items:
            df = self._smile.process_signal(np.asarray(x, dtype=np.float32), SAMPLE_RATE)
            feats = np.nan_to_num(df.to_numpy(dtype=np.float32))
            outs.append(EncoderOutput(feats[None], self.frame_rate))
        return outs
