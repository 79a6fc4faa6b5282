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

from sermo.data.manifest import Manifest
from sermo.data.spec import FeatureInput
from sermo.features.extraction import extract, feature_keys
from sermo.features.store import FeatureStore


class Utterances(Protocol):
    """Where an utterance's raw inputs come from: its 16 kHz samples and its transcript."""

    def wave(self, uid: str) -> np.ndarray: ...

    def transcript(self, uid: str) -> str | None: ...


def feature_input(encoder) -> FeatureInput:
    """The :class:`FeatureInput` describing an encoder's features."""
    ident = encoder.identity
    return FeatureInput(encoder.name, ident.layers, len(encoder.layers), int(encoder.dim), encoder.frame_rate,
                        ident.weights, ident.dtype)


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
                 device: str = "cpu", dtype: str | None = None):
        from sermo.encoders import get_encoder

        self.encoder = get_encoder(name, layers=layers, device=str(device), dtype=dtype)
        self.name, self.modality = name, self.encoder.modality
        self.identity = self.encoder.identity
        self.input = feature_input(self.encoder)
        self.num_layers, self.dim = self.input.num_layers, self.input.dim
        self.frame_rate = self.encoder.frame_rate
        self.manifest, self.store, self.progress = manifest, store, progress
        self._keys: dict[str, str] | None = None
        self._report = None
        self._full = None  # an identity of all the encoder's layers to read these from
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
                self._full, self._report = full, None
            else:
                self._report = extract(self.manifest, self.encoder, self.store, verify=True, progress=self.progress)
                keys = feature_keys(self.manifest, self.modality, self.store)
            self._keys = keys
        return self._keys

    def _entry(self, uid: str):
        if self._full is not None:  # the layers asked for, from the entry of all layers
            entry = self.store.get(self._full, self.keys[uid])
            return dataclasses.replace(entry, hidden=entry.hidden[list(self.identity.layers)])
        return self.store.get(self.identity, self.keys[uid])

    @property
    def report(self):
        """What the extraction did (it runs now if it has not yet)."""
        self.keys  # noqa: B018  (extracts)
        return self._report

    def has(self, uid: str) -> bool:
        """Whether the utterance has features (readable audio / a transcript)."""
        return uid in self.keys

    def get(self, uid: str) -> np.ndarray:
        """``(layers, frames, dim)`` features of one utterance (memory-mapped float16)."""
        return self._entry(uid).hidden

    def read(self, uid: str) -> tuple[np.ndarray, list[int]]:
        """Features and, for text, each token's word index (-1 on special tokens)."""
        entry = self._entry(uid)
        return entry.hidden, entry.word_ids

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

    def __init__(self, encoder, utterances: Utterances):
        self.encoder, self.utterances = encoder, utterances
        self.name, self.modality = encoder.name, encoder.modality
        self.input = feature_input(encoder)
        self.num_layers, self.dim = self.input.num_layers, self.input.dim
        self.frame_rate = encoder.frame_rate
        self._cache: dict[str, np.ndarray] = {}

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
                self._cache[u] = (out.hidden, out.word_ids)

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
                 dtype: str | None = None):
        from sermo.encoders import get_encoder
        from sermo.features.pipeline import ManifestUtterances

        super().__init__(get_encoder(name, layers=layers, device=str(device), dtype=dtype), ManifestUtterances(manifest))
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
            if n is None:  # only running the encoder tells (eGeMAPS frames)
                self.prefetch([uid])
                n = int(self._cache[uid][0].shape[1])
            self._lengths[uid] = int(n)
        return self._lengths[uid]
