"""Feature sources: an encoder's frames per utterance, from the store or computed on the fly.

Both kinds answer the same questions (``has``, ``get``, ``length``, ``input``), so the input
pipeline (:mod:`sermo.features.pipeline`) does not care where frames come from:

- :class:`FeatureSource`: a frozen encoder's outputs for a manifest, extracted into the
  feature store on first use and memory-mapped from it afterwards (training).
- :class:`LiveFeatures`: the encoder run on the utterances themselves when asked, in
  batches (prediction for new audio).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from sermo.data.frames import pool_frames
from sermo.data.manifest import Manifest
from sermo.data.spec import FeatureInput
from sermo.encoders.base import EncoderIdentity
from sermo.features.extraction import extract, feature_keys
from sermo.features.store import FeatureStore


class Utterances(Protocol):
    """Where an utterance's raw inputs come from: its 16 kHz samples and its transcript."""

    def wave(self, uid: str) -> np.ndarray: ...

    def transcript(self, uid: str) -> str | None: ...


def feature_input(encoder, pool: int = 1) -> FeatureInput:
    """The :class:`FeatureInput` describing an encoder's features (every ``pool`` frames averaged)."""
    ident = encoder.identity
    pool = frame_pool(encoder, pool)
    rate = encoder.frame_rate / pool if encoder.frame_rate else encoder.frame_rate
    return FeatureInput(encoder.name, ident.layers, len(encoder.layers), int(encoder.dim), rate,
                        ident.weights, ident.dtype, pool, ident.padding or "exact")


def frame_pool(encoder, pool: int) -> int:
    """The pooling that applies to an encoder: ``pool`` for a speech encoder's frames, 1 for text
    tokens and utterance-level features (no frame rate)."""
    return max(1, int(pool)) if encoder.modality == "audio" and encoder.frame_rate else 1


class MemoryBudget:
    """Bytes of decoded features a run may keep in memory, shared by its sources: a source keeps
    what it has read while the budget lasts, so later epochs and folds read memory, not the store.

    Args:
        nbytes: the budget (0: keep nothing).
    """

    def __init__(self, nbytes: float):
        self.left = int(max(0.0, nbytes))

    def take(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more may be kept (they are then counted)."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


class FeatureSource:
    """Features of one frozen encoder for a manifest, extracted into the store when first read
    (a source that is built but never read, such as the frozen features of a row that fine-tunes
    the encoder, costs nothing).

    Args:
        name: encoder name (registry, Hub id or folder).
        layers: hidden states to keep (``None``: all).
        manifest: the utterances.
        store: the feature store.
        device: where the encoder runs when it extracts.
    """

    def __init__(self, name: str, layers, manifest: Manifest, store: FeatureStore, *, progress: bool = True,
                 device: str = "cpu", dtype: str | None = None, pool: int = 1, memory: MemoryBudget | None = None,
                 padding: str = "auto"):
        from sermo.encoders import get_encoder

        self.encoder = get_encoder(name, layers=layers, device=str(device), dtype=dtype, padding=padding)
        self.name, self.modality = name, self.encoder.modality
        self.identity = self.encoder.identity
        self.input = feature_input(self.encoder, pool)
        self.pool, self.num_layers, self.dim = self.input.pool, self.input.num_layers, self.input.dim
        self.frame_rate = self.input.frame_rate
        self.manifest, self.store, self.progress = manifest, store, progress
        self.memory = memory
        self._kept: dict[str, tuple[np.ndarray, list[int]]] = {}  # uid -> (features, word ids) held in memory
        self._keys: dict[str, str] | None = None
        self._full: EncoderIdentity | None = None  # an identity of all the encoder's layers to read these from
        self._lengths: dict[str, int] = {}

    @property
    def keys(self) -> dict[str, str]:
        """Content key per utterance id, the features extracted on first use (or, for some of the
        encoder's layers, read from an entry of all its layers that the store already holds
        for every utterance: no second pass of the encoder)."""
        if self._keys is None:
            keys = feature_keys(self.manifest, self.modality, self.store)
            full = dataclasses.replace(self.identity, layers=None)
            # every entry read is checked against its checksum first (a damaged one is recomputed):
            # one read of the features, against the many of training
            if self.identity.layers is not None and keys and all(self.store.verify(full, k) for k in keys.values()):
                self._full = full
            else:
                extract(self.manifest, self.encoder, self.store, verify=True, progress=self.progress)
                keys = feature_keys(self.manifest, self.modality, self.store)
            self._keys = keys
        return self._keys

    def _entry(self, uid: str) -> tuple[np.ndarray, list[int]]:
        kept = self._kept.get(uid)
        if kept is not None:
            return kept
        if self._full is not None:  # the layers asked for, from the entry of all layers
            entry = self.store.get(self._full, self.keys[uid])
            entry = dataclasses.replace(entry, hidden=entry.hidden[list(self.identity.layers or ())])
        else:
            entry = self.store.get(self.identity, self.keys[uid])
        hidden = pool_frames(entry.hidden, self.pool)
        if self.memory is not None and self.memory.take(hidden.nbytes):
            hidden = np.array(hidden)  # read out of the memory map, once
            self._kept[uid] = (hidden, entry.word_ids)
        return hidden, entry.word_ids

    def has(self, uid: str) -> bool:
        """Whether the utterance has features (readable audio / a transcript)."""
        return uid in self.keys

    def get(self, uid: str) -> np.ndarray:
        """``(layers, frames, dim)`` features of one utterance (memory-mapped from the store, or
        held in memory; frames pooled by ``pool``)."""
        return self._entry(uid)[0]

    def read(self, uid: str) -> tuple[np.ndarray, list[int]]:
        """Features and, for text, each token's word index (-1 on special tokens)."""
        return self._entry(uid)

    def length(self, uid: str) -> int:
        """Frames (or tokens) of one utterance; read from the store once, then remembered."""
        if uid not in self._lengths:
            self._lengths[uid] = int(self.get(uid).shape[1])
        return self._lengths[uid]


class LiveFeatures:
    """An encoder run on demand over utterances (their waveform, or their transcript for a
    text encoder); :meth:`prefetch` encodes several at once, in the encoder's own batches.

    Args:
        encoder: a :class:`~sermo.encoders.base.Encoder`.
        utterances: where the waveforms and transcripts come from.
    """

    def __init__(self, encoder, utterances: Utterances, *, pool: int = 1):
        self.encoder, self.utterances = encoder, utterances
        self.name, self.modality = encoder.name, encoder.modality
        self.input = feature_input(encoder, pool)
        self.pool, self.num_layers, self.dim = self.input.pool, self.input.num_layers, self.input.dim
        self.frame_rate = self.input.frame_rate
        self._cache: dict[str, tuple[np.ndarray, list[int]]] = {}

    def _raw(self, uid: str):
        if self.modality == "text":
            return str(self.utterances.transcript(uid) or "")
        return self.utterances.wave(uid)

    def has(self, uid: str) -> bool:
        """Every utterance can be encoded (a missing transcript encodes as empty text)."""
        return True

    def prefetch(self, uids: list[str]) -> None:
        """Encode the utterances not encoded yet, as one call of the encoder."""
        todo = [u for u in dict.fromkeys(uids) if u not in self._cache]
        if todo:
            for u, out in zip(todo, self.encoder.encode_batch([self._raw(u) for u in todo])):
                self._cache[u] = (pool_frames(out.hidden, self.pool), out.word_ids)

    def read(self, uid: str) -> tuple[np.ndarray, list[int]]:
        """Features and token word indices of one utterance (encoded now unless prefetched);
        each utterance is handed out once, so memory holds only the batch in flight."""
        self.prefetch([uid])
        return self._cache.pop(uid)

    def get(self, uid: str) -> np.ndarray:
        """``(layers, frames, dim)`` of one utterance."""
        return self.read(uid)[0]

    def length(self, uid: str) -> int:
        """Frames of one utterance (encodes it; prediction batches need no lengths)."""
        self.prefetch([uid])
        return int(self._cache[uid][0].shape[1])


class LiveSource(LiveFeatures):
    """A frozen encoder computed inside the data path of training instead of stored: the same
    answers as a :class:`FeatureSource` over the same manifest, nothing written to the store but
    the utterances' content keys and sample counts. Lengths (for length-bucketed batches) come
    from the encoder's frame arithmetic without running it, so batches are the ones stored
    features would give.
    """

    def __init__(self, name: str, layers, manifest: Manifest, store: FeatureStore, *, device: str = "cpu",
                 dtype: str | None = None, pool: int = 1, padding: str = "auto"):
        from sermo.encoders import get_encoder
        from sermo.features.pipeline import ManifestUtterances

        super().__init__(get_encoder(name, layers=layers, device=str(device), dtype=dtype, padding=padding),
                         ManifestUtterances(manifest),
                         pool=pool)
        self.name, self.identity = name, self.encoder.identity
        self.manifest, self.store = manifest, store
        self._keys: dict[str, str] | None = None
        self._lengths: dict[str, int] = {}
        self._rows = manifest.df.set_index("id")

    @property
    def keys(self) -> dict[str, str]:
        if self._keys is None:
            self._keys = feature_keys(self.manifest, self.modality, self.store)
        return self._keys

    def has(self, uid: str) -> bool:
        return uid in self.keys

    def length(self, uid: str) -> int:
        if uid not in self._lengths:
            n = None
            if self.modality == "text":
                n = self.encoder.num_tokens(str(self.utterances.transcript(uid)))
            else:
                row = self._rows.loc[uid]
                n = self.encoder.num_frames(self.store.audio_samples(str(row["audio"]), row["start"], row["end"]))
                n = None if n is None else -(-int(n) // self.pool)
            if n is None:  # only running the encoder tells (eGeMAPS frames)
                self.prefetch([uid])
                n = int(self._cache[uid][0].shape[1])
            self._lengths[uid] = int(n)
        return self._lengths[uid]
