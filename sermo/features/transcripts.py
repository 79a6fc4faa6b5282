"""``sermo transcribe``: ASR transcripts for a corpus, cached in the feature store, with WER."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sermo.data.audio import AudioError, load_audio
from sermo.data.manifest import Manifest
from sermo.features.store import FeatureStore, _none

_engine = None


def _init(engine: str) -> None:
    global _engine
    from sermo.encoders.asr import get_asr

    _engine = get_asr(engine)


def _run(job: tuple[str, str, float | None, float | None]) -> tuple[str, str | None, str | None]:
    uid, audio, start, end = job
    try:
        samples = load_audio(audio, start=start, end=end)
    except AudioError as exc:
        return uid, None, str(exc)
    assert _engine is not None, "the worker's ASR engine is set by its initializer"
    return uid, _engine.transcribe(samples), None


@dataclass
class TranscribeReport:
    """Outcome of one transcription run; ``wer`` against the oracle transcripts where present."""

    engine: str
    transcribed: int = 0
    cached: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    wer: float | None = None
    wer_utterances: int = 0

    def summary(self) -> dict:
        """JSON-ready: the engine, the word error rate against the oracle and on how many
        utterances, how many could not be transcribed."""
        return {"engine": self.engine, "wer": self.wer, "wer_utterances": self.wer_utterances,
                "transcribed": self.transcribed, "cached": self.cached, "skipped": len(self.skipped)}


def transcribe_manifest(manifest: Manifest, store: FeatureStore, *, engine: str = "whisper-tiny.en",
                        workers: int | None = None, progress: bool = True,
                        device: str = "cpu") -> tuple[Manifest, TranscribeReport]:
    """Replace each transcript with the engine's, source ``asr:<engine>``.

    The oracle transcript is kept in the column ``transcript_oracle`` (nothing is dropped).
    Results are cached in the store per audio content and per checkpoint (the engine's name and
    a fingerprint of its weights), so a rerun or an interrupted run transcribes only what is
    missing and another checkpoint under the same name transcribes afresh.

    Raises:
        ValueError: unknown engine (the message lists the known ones).
    """
    from tqdm import tqdm

    from sermo.encoders.asr import get_asr

    asr = get_asr(engine, device=str(device))  # fails early on an unknown or unavailable engine
    engine, cache = asr.engine, getattr(asr, "cache_key", asr.engine)
    df = manifest.df.copy()
    report = TranscribeReport(engine)
    keys: dict[str, str] = {}
    texts: dict[str, str] = {}
    jobs = []
    for uid, audio, start, end in zip(df["id"], df["audio"], df["start"], df["end"]):
        try:
            key = store.audio_key(str(audio), start, end)
        except (AudioError, OSError) as exc:
            report.skipped.append((uid, str(exc)))
            continue
        keys[uid] = key
        known = store.transcript(cache, key)
        if known is not None:
            texts[uid] = known
            report.cached += 1
        else:
            jobs.append((uid, str(audio), _none(start), _none(end)))
    def record(uid: str, text: str | None, error: str | None) -> None:
        if error is not None or text is None:
            report.skipped.append((uid, error or "no transcript"))
            return
        texts[uid] = text
        store.put_transcript(cache, keys[uid], text)
        report.transcribed += 1

    if jobs and engine != "pocketsphinx":  # a neural engine: batched in this process, torch uses the cores
        bar = tqdm(total=len(jobs), desc=f"transcribing ({engine})", unit="utt", disable=not progress)
        for start in range(0, len(jobs), 32):
            loaded = []
            for uid, audio, s, e in jobs[start:start + 32]:
                try:
                    loaded.append((uid, load_audio(audio, start=s, end=e)))
                except AudioError as exc:
                    record(uid, None, str(exc))
            for (uid, _), text in zip(loaded, asr.transcribe_batch([x for _, x in loaded])):
                record(uid, text, None)
            bar.update(len(jobs[start:start + 32]))
        bar.close()
    elif jobs:  # pocketsphinx is single-threaded: one decoder per process
        workers = workers or max(1, min(os.cpu_count() or 1, len(jobs)))
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(engine,)) as pool:
            bar = tqdm(total=len(jobs), desc=f"transcribing ({engine})", unit="utt", disable=not progress)
            for uid, text, error in pool.map(_run, jobs, chunksize=4):
                bar.update()
                record(uid, text, error)
            bar.close()
    if "transcript_oracle" not in df.columns:
        df["transcript_oracle"] = df["transcript"].where(df["transcript_source"] == "oracle", None)
    df["transcript"] = [texts.get(u) for u in df["id"]]
    df["transcript_source"] = [f"asr:{engine}" if u in texts else None for u in df["id"]]
    pairs = [(r, h) for r, h in zip(df["transcript_oracle"], df["transcript"]) if r is not None and h is not None]
    if pairs:
        from sermo.encoders.asr import word_error_rate

        report.wer = word_error_rate([r for r, _ in pairs], [h for _, h in pairs])
        report.wer_utterances = len(pairs)
    return Manifest(df), report
