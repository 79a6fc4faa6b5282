"""Audio of the built-in corpus: espeak-ng speech, loudness, silences and noise, 16 kHz.

Rendering runs in a pool of processes (espeak-ng's settings are global per process); each
worker writes its utterances' wav files itself and returns their durations.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from sermo.data.audio import SAMPLE_RATE, resample
from sermo.data.synth.espeak import Espeak
from sermo.data.synth.plan import Utterance, utterance_rng

REFERENCE_DB = -28.0  # speech RMS of a neutral utterance of an average speaker, dBFS
_engine: Espeak | None = None


def _worker_init() -> None:
    global _engine
    _engine = Espeak()


def render_utterance(u: Utterance, seed: int, engine: Espeak) -> np.ndarray:
    """The 16 kHz float32 signal of one planned utterance.

    Speech is scaled to ``REFERENCE_DB + u.gain_db`` dBFS RMS (so loudness follows arousal
    and dominance), framed by short silences, and mixed with light noise at ``u.snr_db``,
    so that no file is digital silence.
    """
    rng = utterance_rng(seed, u.index, 1)
    raw = engine.synthesize(u.text, u.prosody, seed=seed * 1_000_003 + u.index).astype(np.float32) / 32768.0
    speech = resample(raw, engine.sample_rate, SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(speech**2))) + 1e-9
    target = 10 ** ((REFERENCE_DB + min(u.gain_db, 12.0)) / 20)
    speech = speech * (target / rms)
    peak = float(np.abs(speech).max())
    if peak > 0.97:  # rare: keep the loudest utterances below full scale
        speech *= 0.97 / peak
    pre, post = (np.zeros(int(s * SAMPLE_RATE), np.float32) for s in (u.pre_silence, u.post_silence))
    signal = np.concatenate([pre, speech, post])
    noise_rms = target / 10 ** (u.snr_db / 20)
    white = rng.normal(0.0, 1.0, signal.size + 1).astype(np.float32)
    noise = (white[1:] + 0.6 * white[:-1]) / np.sqrt(1.36)  # gently low-passed
    return np.clip(signal + noise_rms * noise, -0.999, 0.999).astype(np.float32)


def _write_utterance(u: Utterance, seed: int, path: Path) -> None:
    assert _engine is not None
    signal = render_utterance(u, seed, _engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    sf.write(tmp, signal, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)


def _render_to_file(args: tuple[Utterance, int, str]) -> tuple[str, float]:
    u, seed, root = args
    path = Path(root) / u.file
    if hasattr(os, "fork"):
        # espeak-ng carries state from one utterance to the next (pitch flutter, echo
        # buffers) that no API call resets, so each utterance is spoken by a child forked
        # from an engine that has not spoken yet: the same plan gives the same samples,
        # whatever ran before it in this process.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _write_utterance(u, seed, path)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"synthesis of {u.id} ({u.text!r}) failed; see the error above")
    else:  # no fork: audio is right but not byte-reproducible across runs
        _write_utterance(u, seed, path)
    return u.id, sf.info(str(path)).frames / SAMPLE_RATE


def render_all(utts: list[Utterance], seed: int, root: str | Path, *, workers: int | None = None,
               progress: bool = True) -> dict[str, float]:
    """Render every utterance to ``root/<u.file>``; returns id -> duration in seconds."""
    from tqdm import tqdm

    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    jobs = [(u, seed, str(root)) for u in utts]
    durations: dict[str, float] = {}
    # fork where the platform has it: workers only touch espeak, numpy and soundfile, and
    # fork does not re-import the caller's __main__ (spawn would demand a main guard of
    # every script that calls this).
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        bar = tqdm(total=len(jobs), desc="synthesising speech", unit="utt", disable=not progress)
        for uid, dur in pool.map(_render_to_file, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
            durations[uid] = dur
            bar.update()
        bar.close()
    return durations
