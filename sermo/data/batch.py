"""The typed batch every system consumes.

Layout (B = batch, L = encoder layers kept, T = frames, N = tokens, D = feature dim, S = samples)::

    ids            list[str]                 utterance ids
    audio          (B, L, T, D) float32      speech features, zero-padded in time (or None)
    audio_mask     (B, T) bool               True on real frames
    text           (B, L, N, D) float32      token features, zero-padded (or None)
    text_mask      (B, N) bool               True on real tokens
    text_words     (B, N) int64              each token's word index; -1 on special tokens ([CLS], <sep>, ...)
    wave           (B, S) float32            16 kHz samples, zero-padded (fine-tuned speech encoders; or None)
    wave_lengths   (B,) int64                real samples per utterance
    tokens         (B, N) int64              token ids, zero-padded (fine-tuned text encoders; or None)
    token_lengths  (B,) int64                real tokens per utterance
    speaker        (B, E) float32            the speaker's embedding (or None)
    dims           (B, 3) float32            arousal, valence, dominance scaled to [0, 1]; NaN = missing
    category       (B,) int64                class index in the run's label space; -1 = missing
    extras         dict                      what a system adds for training (teacher embeddings,
                                             mel targets, ...); a sequence ``x`` comes with ``x_len``

Which of the inputs a batch carries is the row's :class:`~sermo.data.spec.InputSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

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
    text_words: torch.Tensor | None = None
    wave: torch.Tensor | None = None
    wave_lengths: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    token_lengths: torch.Tensor | None = None
    speaker: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    audio_pool: int = 1

    def __len__(self) -> int:
        return len(self.ids)

    def need(self, name: str) -> torch.Tensor:
        """An input the row's spec declares (``audio``, ``text_mask``, ``wave``, ...), or a clear error."""
        value = getattr(self, name)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"the batch has no {name}: the model reads an input its spec does not declare")
        return value

    def to(self, device) -> "Batch":
        """The batch on ``device`` (tensors in ``extras`` too); pinned tensors copy asynchronously."""
        return self._map(lambda x: x.to(device, non_blocking=x.is_pinned()))

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory (the DataLoader calls it with ``pin_memory=True``)."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, fn) -> "Batch":
        move = lambda x: fn(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
        values = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name not in ("ids", "extras")}  # ints stay
        return Batch(ids=self.ids, **values, extras={k: move(v) for k, v in self.extras.items()})


class Sequence:
    """A training extra whose values are variable-length sequences along their first axis: the
    batch always pads them and carries their lengths as ``<name>_len`` (see :func:`sequence`)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, uid: str):
        return self.fn(uid)


def sequence(fn) -> Sequence:
    """Mark an extra ``uid -> array (n_i, ...)`` as a variable-length sequence (phone ids, mel
    frames, ...): batches always pad it and carry ``<name>_len``."""
    return fn if isinstance(fn, Sequence) else Sequence(fn)


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool, True on the first ``lengths[b]`` positions of each row."""
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]


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
        # torch converts float16 -> float32 as it copies, several times faster than numpy's astype
        out[i, :, :n] = torch.from_numpy(np.require(a[:, :n], requirements=("C", "W")))
        mask[i, :n] = True
    return out, mask


def pad_first_axis(values: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad arrays of shape ``(n_i, ...)`` along the first axis: ``(B, max n, ...)`` and ``(B,)`` lengths."""
    n = max(len(v) for v in values)
    padded = np.zeros((len(values), n) + values[0].shape[1:], dtype=values[0].dtype)
    for j, v in enumerate(values):
        padded[j, : len(v)] = v
    return torch.from_numpy(padded), torch.tensor([len(v) for v in values], dtype=torch.long)
