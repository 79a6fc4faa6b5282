"""Frame arithmetic the feature path and the exported-model runtime share (numpy only): how a
speech encoder without an attention mask pads its inputs, and how stored frames are averaged."""

from __future__ import annotations

import numpy as np

BUCKET_SAMPLES = 4000
"""Checkpoints without an attention mask are batched by lengths rounded up to 0.25 s (see
:func:`bucket_length`)."""


def bucket_length(samples: int) -> int:
    """``samples`` rounded up to the next multiple of :data:`BUCKET_SAMPLES` (0.25 s at 16 kHz)."""
    return -(-int(samples) // BUCKET_SAMPLES) * BUCKET_SAMPLES


def pool_frames(x: np.ndarray, n: int) -> np.ndarray:
    """``(L, T, D) -> (L, ceil(T / n), D)``: the mean of every ``n`` consecutive frames (the last
    of what remains), in ``x``'s dtype; the same frames :func:`sermo.nn.layers.average_frames`
    gives inside a model, computed once in the data path instead of every epoch."""
    if n <= 1:
        return x
    whole = x.shape[1] // n * n
    x32 = np.asarray(x, dtype=np.float32)
    out = x32[:, :whole].reshape(x.shape[0], whole // n, n, x.shape[2]).mean(2)
    if whole < x.shape[1]:
        out = np.concatenate([out, x32[:, whole:].mean(1, keepdims=True)], axis=1)
    return out.astype(x.dtype)
