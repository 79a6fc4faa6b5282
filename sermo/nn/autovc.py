"""AutoVC's building blocks (Qian et al. 2019), as paper 004 uses them: ConvNorm layers and the
bidirectional down- and upsampling of the bottleneck codes."""

from __future__ import annotations

import torch
from torch import nn


def conv_norm(c_in: int, c_out: int, kernel: int, activation: nn.Module | None = None) -> nn.Sequential:
    """ConvNorm (Figure 1): a 1-D convolution, same length, then batch normalisation."""
    layers = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out)]
    return nn.Sequential(*layers, *([activation] if activation is not None else []))


def downsample(h: torch.Tensor, f: int) -> torch.Tensor:
    """AutoVC's downsampler: ``(B, T, 2d) -> (B, T/f, 2d)``; of each block of ``f`` frames the
    forward direction's output at its last frame and the backward direction's at its first."""
    d = h.shape[-1] // 2
    return torch.cat([h[:, f - 1::f, :d], h[:, ::f, d:]], dim=-1)


def upsample(codes: torch.Tensor, f: int) -> torch.Tensor:
    """Each code repeated ``f`` times along time: ``(B, T/f, C) -> (B, T, C)``."""
    return codes.repeat_interleave(f, dim=1)
