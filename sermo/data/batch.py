"""The typed batch every system consumes.

Layout (B = batch, L = encoder layers kept, T = frames, N = tokens, D = feature dim)::

    ids            list[str]                 utterance ids
    audio          (B, L, T, D) float32      speech features, zero-padded in time (or None)
    audio_mask     (B, T) bool               True on real frames
    text           (B, L, N, D) float32      token features, zero-padded (or None)
    text_mask      (B, N) bool               True on real tokens
    dims           (B, 3) float32            arousal, valence, dominance scaled to [0, 1]; NaN = missing
    category       (B,) int64                class index in the run's label space; -1 = missing
    extras         dict                      anything a system adds (speaker embeddings, phone ids, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    """A padded, masked batch; see the module docstring for shapes."""

    ids: list[str]
    dims: torch.Tensor
    category: torch.Tensor
    audio: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device) -> "Batch":
        """The batch on ``device`` (tensors in ``extras`` too)."""
        move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
        return Batch(self.ids, move(self.dims), move(self.category), move(self.audio), move(self.audio_mask),
                     move(self.text), move(self.text_mask), {k: move(v) for k, v in self.extras.items()})


def pad_sequences(arrays: list[np.ndarray], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``(L, T_i, D)`` arrays along T into ``(B, L, T, D)`` with a ``(B, T)`` mask.

    Sequences longer than ``max_len`` are cut to their first ``max_len`` frames.
    """
    lengths = [min(a.shape[1], max_len) if max_len else a.shape[1] for a in arrays]
    t = max(max(lengths), 1)
    layers, dim = arrays[0].shape[0], arrays[0].shape[2]
    out = torch.zeros(len(arrays), layers, t, dim, dtype=torch.float32)
    mask = torch.zeros(len(arrays), t, dtype=torch.bool)
    for i, (a, n) in enumerate(zip(arrays, lengths)):
        out[i, :, :n] = torch.from_numpy(np.asarray(a[:, :n], dtype=np.float32))
        mask[i, :n] = True
    return out, mask
