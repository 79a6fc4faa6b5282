"""Batched extraction of a corpus's features into the store, resumable and verified."""

from __future__ import annotations

import numpy as np

import time
from dataclasses import dataclass, field


from sermo.data.audio import SAMPLE_RATE, AudioError, load_audio
from sermo.data.manifest import Manifest
from sermo.encoders.base import Encoder, FeatureOverflow
from sermo.features.store import FeatureStore, _none, text_content_key

CHUNK_SECONDS = 600.0  # audio held in memory at once: bounds memory on corpora of any size
TEXT_CHUNK = 256  # sentences encoded per chunk: the progress bar moves and memory stays small


@dataclass
class ExtractReport:
    """What one extraction did.

    Attributes:
        computed: entries the encoder computed in this run.
        cached: entries found complete in the store.
        damaged: entries found damaged and recomputed.
        skipped: ``(utterance id, reason)`` for inputs that could not be encoded.
        audio_seconds: seconds of audio (or number of texts) encoded in this run.
        encoder_seconds: wall time spent inside the encoder.
        wall_seconds: wall time of the whole extraction.
    """

    encoder: str
    computed: int = 0
    cached: int = 0
    damaged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    encoder_seconds: float = 0.0
    wall_seconds: float = 0.0


def feature_keys(manifest: Manifest, modality: str, store: FeatureStore) -> dict[str, str]:
    """Content key per utterance id (audio: from the store's index, hashing unindexed files;
    text: from the transcript). Utterances that cannot be keyed are left out."""
    keys: dict[str, str] = {}
    df = manifest.df
    for uid, audio, start, end, text in zip(df["id"], df["audio"], df["start"], df["end"], df["transcript"]):
        if modality == "text":
            if text is not None:
                keys[uid] = text_content_key(str(text))
            continue
        try:
            keys[uid] = store.audio_key(str(audio), start, end)
        except (AudioError, OSError):
            continue
    return keys


def extract(manifest: Manifest, encoder: Encoder, store: FeatureStore, *, verify: bool = True,
            progress: bool = True) -> ExtractReport:
    """Encode every utterance of ``manifest`` that the store lacks.

    Inputs are gathered in chunks of at most ten minutes of audio, sorted by length and
    encoded in batches (the encoder decides how: with or without padding). Broken audio
    and missing transcripts are reported in ``skipped``; the rest goes on. With ``verify``
    every existing entry's checksum is checked and a damaged one is recomputed.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    identity = encoder.identity
    report = ExtractReport(encoder.name)
    df = manifest.df
    pending: list[tuple[str, str, object]] = []  # (utterance id, content key, input)
    held = 0.0
    bar = tqdm(total=len(df), desc=f"extracting {encoder.name}", unit="utt", disable=not progress)

    def flush() -> None:
        nonlocal pending, held
        if not pending:
            return
        t = time.perf_counter()
        try:
            outputs = encoder.encode_batch([x for _, _, x in pending])
        except FeatureOverflow as exc:  # name the utterance; nothing of the batch is stored
            raise FeatureOverflow(exc.encoder, exc.dtype, exc.value, exc.index,
                                  f"utterance {pending[exc.index][0]}") from None
        report.encoder_seconds += time.perf_counter() - t
        for (_, key, _), out in zip(pending, outputs):
            store.put(identity, key, out)
        report.computed += len(pending)
        bar.update(len(pending))
        pending, held = [], 0.0

    for uid, audio, start, end, text in zip(df["id"], df["audio"], df["start"], df["end"], df["transcript"]):
        if encoder.modality == "text":
            if text is None:
                report.skipped.append((uid, "no transcript"))
                bar.update()
                continue
            item: str | np.ndarray | None
            key, item, size = text_content_key(str(text)), str(text), 1.0
            known: str | None = key
        else:
            if audio is None:
                report.skipped.append((uid, "no audio (a text-only utterance)"))
                bar.update()
                continue
            try:
                known = store.known_audio_key(str(audio), start, end)
            except OSError as exc:
                report.skipped.append((uid, f"{audio}: {exc.strerror or exc}"))
                bar.update()
                continue
            item, key, size = None, known or "", 0.0
        if known is not None and _cached(store, identity, known, verify, report):
            bar.update()
            continue
        if item is None:
            try:
                samples = load_audio(str(audio), start=_none(start), end=_none(end))
            except AudioError as exc:
                report.skipped.append((uid, str(exc)))
                bar.update()
                continue
            key = store.audio_key(str(audio), start, end, samples=samples)
            if known is None and _cached(store, identity, key, verify, report):
                bar.update()
                continue
            item, size = samples, len(samples) / SAMPLE_RATE
        report.audio_seconds += size
        if any(k == key for _, k, _ in pending[-64:]):  # same content as a pending neighbour
            bar.update()
            continue
        pending.append((uid, key, item))
        held += size if encoder.modality == "audio" else CHUNK_SECONDS / TEXT_CHUNK
        if held >= CHUNK_SECONDS:
            flush()
    flush()
    bar.close()
    report.wall_seconds = time.perf_counter() - t0
    return report


def _cached(store: FeatureStore, identity, key: str, verify: bool, report: ExtractReport) -> bool:
    if not store.has(identity, key):
        if (store.folder(identity) / key[:2] / f"{key}.npy").exists():
            report.damaged += 1  # data without valid metadata: an interrupted or damaged write
            store.discard(identity, key)
        return False
    if verify and not store.verify(identity, key):
        report.damaged += 1
        store.discard(identity, key)
        return False
    report.cached += 1
    return True
