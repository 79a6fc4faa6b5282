"""The one input pipeline: utterances -> items -> :class:`~sermo.data.batch.Batch`.

Training, evaluation and prediction for new audio all build their batches here. An
:class:`UtteranceDataset` gives, per utterance, exactly the inputs of a row's
:class:`~sermo.data.spec.InputSpec` (and its targets, when it has labels); :func:`collate`
pads and stacks them. Where the inputs come from is the only difference between the two
uses: the engine hands it feature-store sources and the corpus on disk, the predictor live
encoders and the waveforms it was given.

Item layout (before collation)::

    id         str
    dims       (3,) float32 [0, 1], NaN = missing        category   int, -1 = missing
    audio      (L, T, D) features, T <= max_frames       text       (L, N, D), N <= max_tokens    text_words (N,) int64, -1 on special tokens
    wave       (S,) float32 16 kHz samples               tokens     (N,) int64 token ids
    speaker    (E,) float32
    <extra>    whatever a system adds for training; sequences marked with :func:`sequence`
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from sermo.data.audio import SAMPLE_RATE
from sermo.data.batch import Batch, Sequence, pad_first_axis, pad_sequences
from sermo.data.labels import Labels
from sermo.data.spec import InputSpec

NO_DIMS = np.full(3, np.nan, dtype=np.float32)


class ManifestUtterances:
    """The waveforms and transcripts of a manifest's utterances (segments honoured)."""

    def __init__(self, manifest, transcripts: dict[str, str | None] | None = None):
        self._df = manifest.df.set_index("id")
        self._text = transcripts if transcripts is not None else dict(zip(manifest.df["id"], manifest.df["transcript"]))

    def wave(self, uid: str) -> np.ndarray:
        from sermo.data.audio import load_audio

        row = self._df.loc[uid]
        start = None if row["start"] != row["start"] else float(row["start"])
        end = None if row["end"] != row["end"] else float(row["end"])
        return load_audio(row["audio"], start=start, end=end)

    def transcript(self, uid: str) -> str | None:
        return self._text.get(uid)


class GivenUtterances:
    """Waveforms (16 kHz) and transcripts handed over in memory, by id (prediction)."""

    def __init__(self, waves: dict[str, np.ndarray], transcripts: dict[str, str | None]):
        self._waves, self._text = waves, transcripts

    def wave(self, uid: str) -> np.ndarray:
        return self._waves[uid]

    def transcript(self, uid: str) -> str | None:
        return self._text.get(uid)


class SpeakerEmbeddings:
    """``uid -> (E,)``: each utterance's own embedding from a live speaker encoder (new audio,
    whose speaker is unknown)."""

    def __init__(self, source):
        self.source = source

    def prefetch(self, uids: list[str]) -> None:
        self.source.prefetch(uids)

    def __call__(self, uid: str) -> np.ndarray:
        return np.asarray(self.source.get(uid), dtype=np.float32).reshape(-1)


class UtteranceDataset(Dataset):
    """Items of a list of utterances with the inputs a row's model reads.

    Utterances lacking an input (features, readable audio, a transcript to tokenise) are
    left out; ``dropped`` counts them.

    Args:
        ids: the utterances.
        labels: their targets (``None``: unknown, as for new audio).
        utterances: waveforms and transcripts (needed for ``wave`` and ``tokenizer``).
        audio, text: feature sources (stored or live) for ``audio`` and ``text``.
        wave: read the waveform (capped at ``max_wave_seconds``).
        tokenizer: ``(name, callable text -> ids)`` of a fine-tuned text encoder.
        speaker: ``uid -> (E,)`` speaker embedding.
        readable: ``uid -> bool``, whether an utterance's audio can be read (for ``wave``).
        extras: a system's training extras ``name -> (uid -> array)``.
        length_of: ``uid -> int``, the length batches are bucketed by when no feature source gives
            one (samples for ``wave``, tokens for ``tokenizer``).
    """

    def __init__(self, ids, *, labels: Labels | None = None, utterances=None, audio=None, text=None,
                 wave: bool = False, tokenizer: tuple[str, Callable] | None = None, speaker: Callable | None = None,
                 readable: Callable[[str], bool] | None = None, extras: dict | None = None, max_frames: int = 3000,
                 max_tokens: int = 128, max_wave_seconds: float | None = None,
                 length_of: Callable[[str], int] | None = None):
        ids = list(ids)

        def usable(u: str) -> bool:
            return ((audio is None or audio.has(u)) and (text is None or text.has(u))
                    and (not wave or readable is None or readable(u))
                    and (tokenizer is None or utterances.transcript(u) is not None))

        self.ids = [u for u in ids if usable(u)]
        self.dropped = len(ids) - len(self.ids)
        self.labels, self.utterances, self.audio, self.text = labels, utterances, audio, text
        self.wave, self.tokenizer, self.speaker, self.readable = wave, tokenizer, speaker, readable
        self.extras = extras or {}
        self.max_frames, self.max_tokens, self.max_wave_seconds = max_frames, max_tokens, max_wave_seconds
        self.length_of = length_of
        self.checked: set[tuple[str, str]] = set()  # (modality, utterance) found finite: checked once, not every epoch
        self.spec = InputSpec(audio=audio.input if audio is not None else None,
                              text=text.input if text is not None else None, wave=wave,
                              tokens=tokenizer[0] if tokenizer else None, speaker=speaker is not None,
                              max_frames=max_frames, max_tokens=max_tokens, max_wave_seconds=max_wave_seconds)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, ids) -> "UtteranceDataset":
        """The same inputs for other utterances (a subset of these, or any of the source's)."""
        return UtteranceDataset(ids, labels=self.labels, utterances=self.utterances, audio=self.audio, text=self.text,
                                wave=self.wave, tokenizer=self.tokenizer, speaker=self.speaker, readable=self.readable,
                                extras=self.extras, max_frames=self.max_frames, max_tokens=self.max_tokens,
                                max_wave_seconds=self.max_wave_seconds, length_of=self.length_of)

    def length(self, i: int) -> int:
        """Sequence length of item ``i`` (frames, else tokens, else samples or token ids), for bucketing."""
        uid = self.ids[i]
        src = self.audio or self.text
        if src is not None:
            return src.length(uid)
        return self.length_of(uid) if self.length_of is not None else 1

    def __getitem__(self, i: int) -> dict:
        uid = self.ids[i]
        if self.labels is not None:
            item = {"id": uid, "dims": self.labels.dims[uid], "category": self.labels.category[uid]}
        else:
            item = {"id": uid, "dims": NO_DIMS, "category": -1}
        if self.audio is not None:
            item["audio"] = self._finite("audio", uid, self.audio.get(uid)[:, : self.max_frames], self.audio)
        if self.text is not None:
            hidden, words = self.text.read(uid)
            item["text"] = self._finite("text", uid, hidden[:, : self.max_tokens], self.text)
            if len(words) == hidden.shape[1]:
                item["text_words"] = np.asarray(words[: self.max_tokens], dtype=np.int64)
        if self.wave:
            w = self.utterances.wave(uid)
            item["wave"] = w[: int(self.max_wave_seconds * SAMPLE_RATE)] if self.max_wave_seconds else w
        if self.tokenizer is not None:
            item["tokens"] = self.tokenizer[1](self.utterances.transcript(uid))
        if self.speaker is not None:
            item["speaker"] = self.speaker(uid)
        for name, fn in self.extras.items():
            item[name] = fn(uid)
        return item

    def _finite(self, modality: str, uid: str, x: np.ndarray, source) -> np.ndarray:
        """``x`` checked by :func:`finite` the first time this dataset reads it (features do not
        change during a run: checking every epoch cost 7% of a demo epoch)."""
        if (modality, uid) not in self.checked:
            finite(x, uid, source)
            self.checked.add((modality, uid))
        return x

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch's items; live encoders encode the batch's utterances in one call."""
        uids = [self.ids[i] for i in indices]
        for src in (self.audio, self.text, self.speaker):
            prefetch = getattr(src, "prefetch", None)
            if prefetch is not None:
                prefetch(uids)
        return [self[i] for i in indices]


def finite(x: np.ndarray, uid: str, source) -> np.ndarray:
    """``x``, unless it holds an infinite or NaN value: then an error naming the utterance and the
    encoder (a model would train on it to NaN and predict one class for everything)."""
    if not np.isfinite(x).all():
        from sermo.config import RunError

        bad = int((~np.isfinite(x)).sum())
        raise RunError(f"utterance {uid}: {bad} of its {source.name} features are not finite (inf or NaN): a damaged "
                       "store entry (sermo extract recomputes it) or values beyond the storage dtype's range "
                       "(data.feature_dtype: float32)")
    return x


TYPED = ("id", "dims", "category", "audio", "text", "text_words", "wave", "tokens", "speaker")


def collate(items: list[dict], sequences: frozenset[str] = frozenset(), audio_pool: int = 1) -> Batch:
    """Stack items into a :class:`Batch`: features padded with masks, samples and token ids
    padded with lengths; extras stacked, or padded with ``<name>_len`` where they are
    sequences (marked, or of unequal shapes). ``audio_pool``: the frames the data path averaged
    into each audio frame (models average only what remains of their own ``subsample``)."""
    batch = Batch(ids=[it["id"] for it in items],
                  dims=torch.from_numpy(np.stack([it["dims"] for it in items]).astype(np.float32)),
                  category=torch.tensor([it["category"] for it in items], dtype=torch.long))
    first = items[0]
    if "audio" in first:
        batch.audio, batch.audio_mask = pad_sequences([it["audio"] for it in items])
        batch.audio_pool = int(audio_pool)
    if "text" in first:
        batch.text, batch.text_mask = pad_sequences([it["text"] for it in items])
        if all("text_words" in it for it in items):
            words = torch.full(batch.text_mask.shape, -1, dtype=torch.long)
            for j, it in enumerate(items):
                words[j, : len(it["text_words"])] = torch.from_numpy(it["text_words"])
            batch.text_words = words
    if "wave" in first:
        batch.wave, batch.wave_lengths = pad_first_axis([np.asarray(it["wave"], dtype=np.float32) for it in items])
    if "tokens" in first:
        batch.tokens, batch.token_lengths = pad_first_axis([np.asarray(it["tokens"], dtype=np.int64) for it in items])
    if "speaker" in first:
        batch.speaker = torch.from_numpy(np.stack([np.asarray(it["speaker"], dtype=np.float32) for it in items]))
    for key in first:
        if key in TYPED:
            continue
        values = [np.asarray(it[key]) for it in items]
        if key not in sequences and all(v.shape == values[0].shape for v in values):
            batch.extras[key] = torch.from_numpy(np.stack(values))
        else:
            batch.extras[key], batch.extras[f"{key}_len"] = pad_first_axis(values)
    return batch


def collate_for(dataset: UtteranceDataset) -> Callable[[list[dict]], Batch]:
    """The collate function of a dataset (its sequence extras always padded, its audio frames'
    pooling recorded)."""
    from functools import partial

    return partial(collate, sequences=frozenset(k for k, fn in dataset.extras.items() if isinstance(fn, Sequence)),
                   audio_pool=dataset.spec.audio.pool if dataset.spec.audio is not None else 1)
