"""Power spectra of a waveform: :func:`stft_power` (``torch.stft``, what sermo's encoders compute)
and :func:`dft_power`, the same numbers as one matrix product, which ``sermo export`` puts in
its graphs (onnxruntime's STFT kernel is about ten times less precise, enough to move a
feature across a float16 rounding boundary)."""

from __future__ import annotations

import math

import torch


def stft_power(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """``(n_fft // 2 + 1, frames)`` power of the centred (reflect-padded) STFT of ``x``."""
    return torch.stft(x, n_fft, hop_length=hop, win_length=window.shape[0], window=window.to(x.device),
                      center=True, return_complex=True).abs() ** 2


def dft_power(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """:func:`stft_power` as frames times a windowed DFT basis (built in float64)."""
    pad = n_fft // 2
    frames = torch.nn.functional.pad(x[None, None], (pad, pad), mode="reflect")[0, 0].unfold(0, n_fft, hop)
    left = (n_fft - window.shape[0]) // 2
    w = torch.nn.functional.pad(window.double().cpu(), (left, n_fft - window.shape[0] - left))
    bins = n_fft // 2 + 1
    angle = 2 * math.pi * torch.arange(n_fft, dtype=torch.float64)[:, None] * torch.arange(bins, dtype=torch.float64)[None] / n_fft
    basis = torch.cat([w[:, None] * torch.cos(angle), w[:, None] * torch.sin(angle)], 1).float().to(x.device)
    z = frames @ basis
    return (z[:, :bins] ** 2 + z[:, bins:] ** 2).T
