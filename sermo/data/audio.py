"""Audio input: any common file format, any sample rate and channel count, in 16 kHz mono.

Every reader of audio in sermo goes through :func:`load_audio`, so a broken file gives the
same clear error everywhere: an :class:`AudioError` that names the file and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""The sample rate every encoder and system in sermo consumes."""


class AudioError(ValueError):
    """A file that cannot serve as audio; ``path`` and ``problem`` say which and why."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples read)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioError: the file is missing, empty, or not readable as audio.
    """
    p = _check_file(path)
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(p, f"cannot be read as audio ({_short(exc)}); is it truncated or not an audio file?") from None
    return AudioInfo(str(p), int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def load_audio(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Load ``path`` (wav, flac, ogg, mp3, ...) as mono float32 at ``sample_rate``.

    Channels are averaged; other sample rates are resampled with soxr.

    Args:
        path: the audio file.
        start: segment start in seconds (``None``: the beginning).
        end: segment end in seconds (``None``: the end of the file).
        sample_rate: the rate of the returned samples.

    Returns:
        ``(samples,)`` float32 array in [-1, 1].

    Raises:
        AudioError: the file is missing, empty, unreadable, has zero samples, contains
            NaN or infinite samples, or the segment lies outside the file.
    """
    p = _check_file(path)
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
            total = f.frames
            first = 0 if start is None else int(round(start * sr))
            last = total if end is None else int(round(end * sr))
            if start is not None and (start < 0 or first > total):
                raise AudioError(p, f"segment start {start:.3f} s lies outside the file ({total / sr:.3f} s)")
            if end is not None and end <= (start or 0.0):
                raise AudioError(p, f"segment end {end:.3f} s is not after its start {start or 0.0:.3f} s")
            if last > total:
                # Annotated end times of real corpora overshoot the file by a few ms; more is an error.
                if (last - total) / sr > 0.05:
                    raise AudioError(p, f"segment end {end:.3f} s lies outside the file ({total / sr:.3f} s)")
                last = total
            f.seek(first)
            data = f.read(frames=max(last - first, 0), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(p, f"cannot be read as audio ({_short(exc)}); is it truncated or not an audio file?") from None
    if data.shape[0] == 0:
        raise AudioError(p, "has no samples (0 s of audio)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(p, "contains NaN or infinite samples")
    return resample(mono, sr, sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float array with soxr (high quality); a no-op at equal rates."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if from_rate == to_rate:
        return x
    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def prepare_waveform(samples: np.ndarray, sample_rate: int, *, name: str = "<array>") -> np.ndarray:
    """Bring an in-memory signal to the form :func:`load_audio` returns.

    Args:
        samples: ``(samples,)`` or ``(samples, channels)`` array.
        sample_rate: its rate in Hz.
        name: what to call the signal in errors.

    Raises:
        AudioError: empty, non-finite, or more than two dimensions.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioError(name, f"expected (samples,) or (samples, channels), got shape {x.shape}")
    if x.size == 0:
        raise AudioError(name, "has no samples (0 s of audio)")
    if not np.isfinite(x).all():
        raise AudioError(name, "contains NaN or infinite samples")
    return resample(x, int(sample_rate), SAMPLE_RATE)


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "does not exist")
    if not p.is_file():
        raise AudioError(p, "is not a file")
    if p.stat().st_size == 0:
        raise AudioError(p, "is empty (0 bytes)")
    return p


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
