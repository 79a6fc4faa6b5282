"""The contract between encoders and everything after them.

An encoder turns one input (16 kHz mono float32 audio, or a text) into the frames of every
layer it keeps, ``[layers, frames, dim]``, plus its frame rate. Its :class:`EncoderIdentity`
(name, weights hash, layers kept, dtype) keys the feature store: two encoders with the
same identity give the same features.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np


class EncoderError(ValueError):
    """An encoder that cannot be built or used; the message says what to do."""


class FeatureOverflow(EncoderError):
    """An encoder output with a value its storage dtype cannot hold (``index``: which input)."""

    def __init__(self, encoder: str, dtype: str, value: float, index: int, item: str = ""):
        self.encoder, self.dtype, self.value, self.index = encoder, dtype, value, index
        where = f" for {item}" if item else ""
        super().__init__(f"the encoder {encoder!r} gave {value:,.0f}{where}, beyond {dtype}'s range (it would be stored "
                         f"as infinite): keep its features in float32 (data.feature_dtype: float32, or sermo extract "
                         f"--dtype float32)")


@dataclass(frozen=True)
class EncoderIdentity:
    """What makes two encoders' features interchangeable.

    Attributes:
        name: the registry name or the Hub id / folder it was loaded from.
        weights: hash of the weights (or of the algorithm's settings for acoustic encoders).
        layers: the hidden-state indices kept (``None``: all).
        dtype: the dtype features are stored in.
        padding: how a speech model without an attention mask was batched (``bucket``; ``None``:
            exactly, unpadded, or a model whose mask makes padding irrelevant).
    """

    name: str
    weights: str
    layers: tuple[int, ...] | None
    dtype: str = "float16"
    padding: str | None = None

    def key(self) -> str:
        """A short stable hex key of the identity (the feature store's folder name); identities
        without a padding keep the keys they had before padding was part of them."""
        d = asdict(self)
        if d["padding"] is None:
            del d["padding"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class EncoderOutput:
    """Frames of one input.

    Attributes:
        hidden: ``(layers, frames, dim)`` float array.
        frame_rate: frames per second (``None`` for text: frames are tokens).
        tokens: text encoders: the tokens, special tokens included.
        word_ids: text encoders: the index of the word each token belongs to (``-1`` for
            special tokens), so token features can be pooled back to words.
    """

    hidden: np.ndarray
    frame_rate: float | None
    tokens: list[str] = field(default_factory=list)
    word_ids: list[int] = field(default_factory=list)


class Encoder:
    """Base of every encoder: ``modality`` is ``"audio"`` or ``"text"``.

    Subclasses set ``name``, ``modality``, ``num_layers`` (hidden states it can return),
    ``dim``, ``frame_rate`` and implement :meth:`_encode_batch`.
    """

    name: str
    modality: str
    num_layers: int
    dim: int
    frame_rate: float | None

    def __init__(self, *, layers=None, dtype: str = "float16"):
        self._layers = None if layers is None else tuple(int(i) for i in layers)
        self.dtype = dtype

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden-state indices kept (negative indices resolved)."""
        if self._layers is None:
            return tuple(range(self.num_layers))
        out = tuple(i % self.num_layers for i in self._layers)
        bad = [i for i in self._layers if not -self.num_layers <= i < self.num_layers]
        if bad:
            raise EncoderError(f"{self.name} has hidden states 0..{self.num_layers - 1}; asked for {bad}")
        return out

    @property
    def identity(self) -> EncoderIdentity:
        """The identity that keys this encoder's features."""
        kept = None if self._layers is None else self.layers
        return EncoderIdentity(self.name, self.weights_hash(), kept, self.dtype)

    def weights_hash(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def num_frames(self, samples: int) -> int | None:
        """Frames this encoder gives for ``samples`` 16 kHz samples, without running it (``None``
        when only running it tells)."""
        return None

    def to(self, device) -> "Encoder":
        """Run on ``device`` from now on (neural encoders move their weights; others ignore it)."""
        return self

    def encode(self, item) -> EncoderOutput:
        """Encode one input (audio array or text)."""
        return self.encode_batch([item])[0]

    def encode_batch(self, items: list) -> list[EncoderOutput]:
        """Encode several inputs; outputs keep only the kept layers, in the store's dtype.

        Raises:
            FeatureOverflow: a value the dtype cannot hold (float16 tops out at 65,504): stored, it
                would become infinite and poison every model that reads it.
        """
        outs = self._encode_batch(items)
        keep = list(self.layers)
        limit = float(np.finfo(self.dtype).max) if np.dtype(self.dtype).kind == "f" else None
        for i, o in enumerate(outs):
            if o.hidden.shape[0] != len(keep):
                o.hidden = o.hidden[keep]
            if limit is not None and o.hidden.size:
                peak = float(np.nanmax(np.abs(np.where(np.isfinite(o.hidden), o.hidden, 0.0))))
                if peak > limit:
                    raise FeatureOverflow(self.name, self.dtype, peak, i)
            o.hidden = o.hidden.astype(self.dtype, copy=False)
        return outs

    def _encode_batch(self, items: list) -> list[EncoderOutput]:  # pragma: no cover
        raise NotImplementedError


def file_digest(paths) -> str:
    """sha256 over the bytes of several files (weights), memoised per (path, size, mtime)."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        h.update(_file_sha(p).encode())
    return h.hexdigest()[:16]


_SHA_CACHE: dict[tuple, str] = {}


def _file_sha(path: str) -> str:
    import os

    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]

