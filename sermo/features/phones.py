"""Phone alignments of a corpus (pocketsphinx forced alignment), cached in the feature store.

Paper 004 gives its decoder the phone sequence of each speech segment: the phone that covers
most of each frame, one of a 128-id inventory (:mod:`sermo.encoders.asr`). Alignments are
cached per audio content and transcript, so a rerun aligns only what is new.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sermo.data.audio import AudioError, load_audio
from sermo.data.manifest import Manifest
from sermo.features.store import FeatureStore, _none

_aligner = None


def _init() -> None:
    global _aligner
    from sermo.encoders.asr import PhoneAligner

    _aligner = PhoneAligner()


def _run(job: tuple[str, str, float | None, float | None, str]) -> tuple[str, list | None, str | None]:
    from sermo.encoders.asr import AlignmentError

    uid, audio, start, end, transcript = job
    try:
        samples = load_audio(audio, start=start, end=end)
        assert _aligner is not None, "the worker's aligner is set by its initializer"
        segments = _aligner.align(samples, transcript)
    except (AudioError, AlignmentError) as exc:
        return uid, None, str(exc)
    return uid, [[s.id, s.name, s.start, s.frames] for s in segments], None


@dataclass
class AlignReport:
    """Outcome of one alignment run: counts, and the utterances that could not be aligned."""

    aligned: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def align_manifest(manifest: Manifest, store: FeatureStore, *, ids=None, workers: int | None = None,
                   progress: bool = True) -> tuple[dict[str, list], AlignReport]:
    """Phone segments of each utterance (``ids``: only these) with a transcript.

    Returns:
        utterance id -> list of :class:`~sermo.encoders.asr.PhoneSegment`, and the report;
        utterances that failed (unreadable audio, transcript that does not fit) are listed
        in the report with the reason and missing from the dict.
    """
    from tqdm import tqdm

    from sermo.encoders.asr import PhoneSegment

    df = manifest.df
    if ids is not None:
        df = df[df["id"].isin(set(ids))]
    report = AlignReport()
    keys: dict[str, tuple[str, str]] = {}
    out: dict[str, list] = {}
    jobs = []
    for uid, audio, start, end, text in zip(df["id"], df["audio"], df["start"], df["end"], df["transcript"]):
        if text is None or (isinstance(text, float) and text != text):
            report.failed.append((uid, "no transcript to align"))
            continue
        try:
            key = store.audio_key(str(audio), start, end)
        except (AudioError, OSError) as exc:
            report.failed.append((uid, str(exc)))
            continue
        text_key = hashlib.sha256(str(text).encode()).hexdigest()[:16]
        keys[uid] = (key, text_key)
        known = store.phones(key, text_key)
        if known is not None:
            out[uid] = [PhoneSegment(*s) for s in json.loads(known)]
            report.cached += 1
        else:
            jobs.append((uid, str(audio), _none(start), _none(end), str(text)))
    if jobs:  # pocketsphinx is single-threaded: one aligner per process
        workers = workers or max(1, min(os.cpu_count() or 1, len(jobs)))
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init) as pool:
            bar = tqdm(total=len(jobs), desc="aligning phones", unit="utt", disable=not progress)
            for uid, segments, error in pool.map(_run, jobs, chunksize=4):
                bar.update()
                if error is not None or segments is None:
                    report.failed.append((uid, error or "no alignment"))
                    continue
                store.put_phones(*keys[uid], json.dumps(segments))
                out[uid] = [PhoneSegment(*s) for s in segments]
                report.aligned += 1
            bar.close()
    return out, report
